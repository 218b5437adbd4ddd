"""The metrics a scrape reads from the state store, parsed by prometheus_client's own parser and checked against
the rows they come from."""

from __future__ import annotations

import json
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from drorch.daemon.sentinels import set_paused
from drorch.model.groups import Consistency
from drorch.model.playbook import Playbook
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import Action, Operation, RunState, StepState, utcnow
from drorch.store.rows import DaemonRow, Lease, ReadinessCheck, RecoveryPoint, Run, Step
from drorch.store.sql_store import Store
from drorch.store.takeover_rows import SentinelTurn
from drorch.web.metrics import StoreCollector, exposition
from tests.support.shop import PLAYBOOK

PROTECTED = PLAYBOOK + "protect: {interval_s: 60, rpo_s: 300, keep: 3}\n"


def scrape(store: Store, pb: Playbook) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample by metric name, keyed by its labels."""
    text = exposition(StoreCollector(store, lambda: {pb.name: pb})).decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def run(store: Store, operation: str, state: RunState, took_s: float, steps: list[tuple[str, str, float]]) -> Run:
    start = utcnow() - timedelta(hours=1)
    r = Run(operation=operation, playbook="shop", playbook_path="shop.yaml", source_site="a", target_site="b",
            state=state, pid=1, host="h", started_at=start, ended_at=start + timedelta(seconds=took_s))
    store.add_run(r, [Step(run_id=0, seq=i, workload=w, kind=k, strategy="live", source_site="a", target_site="b",
                           action=Action.DRILL if operation == Operation.DRILL else Action.MOVE,
                           state=StepState.SUCCEEDED,
                           started_at=start, ended_at=start + timedelta(seconds=s))
                      for i, (k, w, s) in enumerate(steps, 1)])
    return r


def test_a_scrape_says_what_the_store_holds(store: Store) -> None:
    pb = parse_playbook(PROTECTED, "shop.yaml")
    now = utcnow()
    store.add_points([
        RecoveryPoint(playbook="shop", workload="db", kind="vm", site="b", taken_at=now - timedelta(seconds=400),
                      size_bytes=1 << 30, point_kind="full"),
        RecoveryPoint(playbook="shop", workload="db", kind="vm", site="b", taken_at=now - timedelta(seconds=100),
                      cut_at=now - timedelta(seconds=104), size_bytes=1 << 20, point_kind="incremental",
                      consistency=Consistency.APPLICATION, cut="app@1"),
        RecoveryPoint(playbook="shop", workload="db", kind="vm", site="b", taken_at=now - timedelta(seconds=10),
                      complete=False, error="disk gone"),
        RecoveryPoint(playbook="shop", workload="cache", kind="container", site="b",
                      taken_at=now - timedelta(seconds=50), size_bytes=4096),
    ])
    run(store, "failover", RunState.SUCCEEDED, 42.0, [("vm", "db", 3.0), ("container", "cache", 0.5)])
    run(store, "failover", RunState.PARTIAL, 700.0, [("vm", "db", 650.0)])
    run(store, Operation.DRILL, RunState.SUCCEEDED, 90.0,
        [("vm", "db-drill-3", 20.0), ("container", "cache-drill-3", 31.0)])
    store.add_run(Run(operation="failback", playbook="shop", playbook_path="shop.yaml", source_site="b",
                      target_site="a", state=RunState.RUNNING, pid=1, host="h"),
                  [Step(run_id=0, seq=1, workload="db", kind="vm", strategy="live", source_site="b", target_site="a",
                        action="move", state=StepState.RUNNING, started_at=utcnow())])
    store.save(ReadinessCheck(playbook="shop", ready=False, problems=json.dumps(["site b host b1: does not answer"]),
                              hosts=json.dumps([{"site": "a", "host": "a1", "answered": True, "error": None},
                                                {"site": "b", "host": "b1", "answered": False, "error": "down"}]),
                              records=json.dumps([{"name": "db.lab.example.", "type": "A", "values": ["10.31.0.5"],
                                                   "workload": "db", "points_at": "a", "runs_on": "b",
                                                   "right": False}])),
               DaemonRow(identity="h:1", leader=True, heartbeat_at=now - timedelta(seconds=2), lease_s=15),
               DaemonRow(identity="h:2", leader=True, heartbeat_at=now - timedelta(seconds=60), lease_s=15),
               Lease(name="scheduler", holder="h:1", expires_at=now + timedelta(seconds=13)))

    store.ship_skipped("shop", [("vm", "db")], "still shipping")
    store.ship_skipped("shop", [("vm", "db")], "still shipping")

    m = scrape(store, pb)
    db = (("kind", "vm"), ("playbook", "shop"), ("site", "b"), ("workload", "db"))
    assert 104 <= m["drorch_rpo_age_seconds"][db] < 110  # since its cut; the newest complete point, not the failed one
    assert 104 <= m["drorch_playbook_rpo_age_seconds"][(("playbook", "shop"), ("site", "b"))] < 110  # the worst
    assert m["drorch_protect_skipped_total"] == {(("kind", "vm"), ("playbook", "shop"), ("workload", "db")): 2}
    assert m["drorch_rpo_target_seconds"][db] == 300
    assert m["drorch_points_kept"][db] == 2
    assert m["drorch_point_newest_bytes"][db] == 1 << 20
    assert m["drorch_point_newest_info"][(*db[:2], ("point_kind", "incremental"), *db[2:])] == 1
    assert m["drorch_point_newest_consistency"][(("consistency", "application"), ("cut", "app@1"), *db)] == 1
    cache = (("kind", "container"), ("playbook", "shop"), ("site", "b"), ("workload", "cache"))
    assert m["drorch_point_newest_consistency"][(("consistency", "crash"), ("cut", ""), *cache)] == 1
    assert abs(m["drorch_point_newest_timestamp_seconds"][db] - (now.timestamp() - 100)) < 1
    shop = (("playbook", "shop"),)
    assert m["drorch_ready"][shop] == 0
    assert m["drorch_site_up"][(("playbook", "shop"), ("site", "a"))] == 1
    assert m["drorch_site_up"][(("playbook", "shop"), ("site", "b"))] == 0
    assert m["drorch_dns_record_right"] == {
        (("playbook", "shop"), ("record", "db.lab.example."), ("type", "A"), ("workload", "db")): 0}
    assert m["drorch_drill_last_success"][shop] == 1
    assert 30 < m["drorch_drill_last_rto_seconds"][shop] < 32  # to the last clone that ran
    assert m["drorch_runs_started_total"][(("operation", "failover"), ("playbook", "shop"))] == 2
    assert m["drorch_runs_started_total"][(("operation", "failback"), ("playbook", "shop"))] == 1
    assert m["drorch_runs_ended_total"][(("operation", "failover"), ("outcome", "partial"), ("playbook", "shop"))] == 1
    assert (("operation", "failback"), ("outcome", "running"), ("playbook", "shop")) not in m["drorch_runs_ended_total"]
    assert m["drorch_moves_in_progress"][shop] == 1
    failovers = (("operation", "failover"),)
    assert m["drorch_run_duration_seconds_count"][failovers] == 2
    assert abs(m["drorch_run_duration_seconds_sum"][failovers] - 742.0) < 0.01  # julianday: to the millisecond
    assert m["drorch_run_duration_seconds_bucket"][(("le", "60.0"), *failovers)] == 1
    assert m["drorch_run_duration_seconds_bucket"][(("le", "+Inf"), *failovers)] == 2
    assert m["drorch_step_duration_seconds_count"][(("kind", "vm"),)] == 3
    assert m["drorch_step_duration_seconds_bucket"][(("kind", "container"), ("le", "1.0"))] == 1
    assert m["drorch_daemon_leader"] == {(("daemon", "h:1"),): 1, (("daemon", "h:2"),): 0}  # h:2 is gone
    assert m["drorch_daemon_up"] == {(("daemon", "h:1"),): 1, (("daemon", "h:2"),): 0}
    assert 12 <= m["drorch_lease_expiry_seconds"][(("holder", "h:1"),)] <= 13


def test_automatic_failover_is_scraped_from_each_live_daemon_s_last_turn(store: Store) -> None:
    """Site a's daemon stale, site b's holding the key after a takeover whose probes found a1 silent; a daemon gone
    says nothing; the pause row is the playbook's."""
    pb = parse_playbook(PLAYBOOK, "shop.yaml")
    now = utcnow()
    store.save(DaemonRow(identity="h:1", lease_s=15), DaemonRow(identity="h:2", lease_s=15),
               DaemonRow(identity="h:3", lease_s=15, heartbeat_at=now - timedelta(minutes=5)))
    silent = json.dumps({"gates": [], "silent": {"a1": "site a: does not answer"}})
    store.save(SentinelTurn(daemon="h:1", playbook="shop", site="a", role="stale", decision="stale", said="x"),
               SentinelTurn(daemon="h:2", playbook="shop", site="b", role="active", decision="active", said="y",
                            gates=silent),
               SentinelTurn(daemon="h:3", playbook="shop", site="b", role="standby", decision="held", said="z"))
    automatic = run(store, Operation.FAILOVER, RunState.SUCCEEDED, 30, [])
    automatic.automatic = json.dumps([["key won", True, "held by h:2 of site b"]])
    store.save(automatic)
    set_paused(store, "shop", True, "ops")
    got = scrape(store, pb)
    assert got["drorch_auto_failover_key_holder"] == {(("playbook", "shop"), ("site", "a")): 0.0,
                                                     (("playbook", "shop"), ("site", "b")): 1.0}
    assert set(got["drorch_auto_failover_armed"].values()) == {0.0}
    assert got["drorch_auto_failover_last_decision"] == {
        (("daemon", "h:1"), ("decision", "stale"), ("playbook", "shop"), ("site", "a")): 1.0,
        (("daemon", "h:2"), ("decision", "active"), ("playbook", "shop"), ("site", "b")): 1.0}
    assert got["drorch_auto_failover_probe_failures"][(("daemon", "h:2"), ("playbook", "shop"), ("site", "b"))] == 1
    assert got["drorch_auto_failover_last_run_timestamp_seconds"] == {
        (("playbook", "shop"),): automatic.started_at.timestamp()}
