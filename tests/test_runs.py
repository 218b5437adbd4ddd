"""Runs as persisted state machines: crashes and resume, locks, parallel waves, hooks, approvals,
failure policies, disaster restarts with fencing, commit windows and reports, over the fake drivers."""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.engine import commit_window
from drorch.engine.fencing import FencingRequired
from drorch.engine.live_run import StepEvent
from drorch.engine.runner import Engine
from drorch.errors import UsageError, WorkloadBusy
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import RunState, StepState, utcnow
from drorch.model.run_report import timeline
from drorch.recovery.shipping import protect
from drorch.store.sql_store import Store
from tests.support.runs import Crash, crash_at, interrupted
from tests.support.shop import KINDS, PLAYBOOK, fake_drivers, move, site_of, uri


def fresh_cloud(pb: Playbook) -> FakeCloud:
    c = FakeCloud(polls_per_move=2)
    for w in pb.workloads:
        assert w.name is not None
        for site in ("a", "b"):
            c.sites.setdefault(uri(pb, w.kind, site), FakeSite())
        c.sites[uri(pb, w.kind, "a")].workloads[w.name] = FakeWorkload(w.kind, counter=42)
    return c


def placements(cloud: FakeCloud, pb: Playbook) -> dict[str, list[str]]:
    return {w.name or "": site_of(cloud, pb, w.kind, w.name or "") for w in pb.workloads}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=1, max_value=6))
def test_a_run_that_dies_at_any_transition_is_finished_by_resume(tmp_path_factory: pytest.TempPathFactory,
                                                                  n: int) -> None:
    pb = parse_playbook(PLAYBOOK, "shop.yaml")
    cloud = fresh_cloud(pb)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('s') / 'drorch.db'}")
    with pytest.raises(Crash):
        Engine(store, fake_drivers(cloud), report=crash_at(n), poll_seconds=0).operate(pb, "shop.yaml", "failover",
                                                                                        "a", "b")
    assert all(len(sites) <= 1 for sites in placements(cloud, pb).values())
    interrupted(store, 1)
    with pytest.raises(WorkloadBusy, match="interrupted run 1"):
        move(Engine(store, fake_drivers(cloud), poll_seconds=0), pb, "a", "b")
    run = Engine(store, fake_drivers(cloud), poll_seconds=0).resume(pb, store.run(1))
    assert run.state is RunState.SUCCEEDED
    assert placements(cloud, pb) == {"db": ["b"], "cache": ["b"], "web": ["b"]}
    b = cloud.sites
    assert b[uri(pb, WorkloadKind.VM, "b")].workloads["db"].counter == 42
    assert b[uri(pb, WorkloadKind.CONTAINER, "b")].workloads["cache"].counter == 42
    assert store.run_locks(1) == []


def test_resume_refuses_a_run_that_is_alive_or_done(engine: Engine, store: Store, playbook: Playbook) -> None:
    run = move(engine, playbook, "a", "b")
    with pytest.raises(UsageError, match="succeeded: nothing to resume"):
        engine.resume(playbook, store.run(run.id or 0))


def test_a_failed_run_is_resumed_once_the_cause_is_gone(engine: Engine, store: Store, cloud: FakeCloud,
                                                        playbook: Playbook) -> None:
    cloud.fail["db"] = "Disconnected from qemu+tcp://b: end of file"
    run = move(engine, playbook, "a", "b")
    assert run.state is RunState.PARTIAL and store.run_locks(run.id or 0) == []
    assert store.steps(1)[0].error == "Disconnected from qemu+tcp://b: end of file"
    assert engine.resume(playbook, store.run(1)).state is RunState.SUCCEEDED
    assert placements(cloud, playbook) == {"db": ["b"], "cache": ["b"], "web": ["b"]}


def test_a_resume_brings_back_what_stopped_on_the_target_since_it_moved_and_says_what_was_lost(
        engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    cloud.fail["db"] = "Disconnected from qemu+tcp://b: end of file"
    assert move(engine, playbook, "a", "b").state is RunState.PARTIAL
    cloud.sites[uri(playbook, WorkloadKind.CONTAINER, "b")].workloads["cache"].running = False  # its daemon died
    run = engine.resume(playbook, store.run(1))
    assert run.state is RunState.SUCCEEDED_WITH_WARNINGS  # not plain "succeeded": cache lost its memory
    steps = {s.workload: s for s in store.steps(1)}
    assert steps["db"].state is StepState.SUCCEEDED and steps["web"].state is StepState.SUCCEEDED
    assert steps["cache"].state is StepState.SUCCEEDED
    assert steps["cache"].warning == ("found stopped on site b when the run was resumed; started on site b as it "
                                      "was: what it held in memory since the move is lost")
    assert placements(cloud, playbook) == {"db": ["b"], "cache": ["b"], "web": ["b"]}


def test_a_run_ends_on_facts_a_workload_that_stopped_on_its_target_before_the_end_fails_its_step(
        store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    """cache moves, then its daemon on site b dies while web is still moving: the run may not say cache runs."""
    on_b = cloud.sites[uri(playbook, WorkloadKind.CONTAINER, "b")].workloads

    def report(ev: StepEvent) -> None:
        if ev.step.workload == "web" and ev.step.state is StepState.RUNNING and "cache" in on_b:
            on_b["cache"].running = False

    run = move(Engine(store, fake_drivers(cloud), report=report, poll_seconds=0), playbook, "a", "b")
    assert run.state is RunState.PARTIAL and run.error == "1 of 3 steps failed"
    steps = {s.workload: s for s in store.steps(1)}
    assert steps["cache"].state is StepState.FAILED
    assert steps["cache"].error == ("cache got to site b, but was found stopped there when the run ended: drorch "
                                    "resume 1 starts it again")
    resumed = Engine(store, fake_drivers(cloud), poll_seconds=0).resume(playbook, store.run(1))
    assert resumed.state is RunState.SUCCEEDED_WITH_WARNINGS and on_b["cache"].running
    assert store.steps(1)[1].warning == ("found stopped on site b when the run was resumed; started on site b as it "
                                         "was: what it held in memory since the move is lost")


def test_a_resume_moves_again_what_left_the_target_and_fails_what_is_nowhere(
        engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    cloud.fail["db"] = "Disconnected from qemu+tcp://b: end of file"
    assert move(engine, playbook, "a", "b").state is RunState.PARTIAL
    containers = {s: cloud.sites[uri(playbook, WorkloadKind.CONTAINER, s)].workloads for s in ("a", "b")}
    containers["a"]["web"] = containers["b"].pop("web")  # someone took it home again
    del containers["b"]["cache"]  # removed by hand: nothing of it anywhere
    run = engine.resume(playbook, store.run(1))
    assert run.state is RunState.PARTIAL
    steps = {s.workload: s for s in store.steps(1)}
    assert steps["web"].state is StepState.SUCCEEDED and steps["db"].state is StepState.SUCCEEDED
    assert steps["cache"].state is StepState.FAILED
    assert steps["cache"].error == "container cache is running neither on site a nor on site b"
    assert placements(cloud, playbook) == {"db": ["b"], "cache": [], "web": ["b"]}


def test_abort_of_an_interrupted_run_settles_it_against_reality(store: Store, cloud: FakeCloud,
                                                                playbook: Playbook) -> None:
    with pytest.raises(Crash):
        Engine(store, fake_drivers(cloud), report=crash_at(3), poll_seconds=0).operate(
            playbook, "shop.yaml", "failover", "a", "b")
    interrupted(store, 1)
    run = Engine(store, fake_drivers(cloud)).abort(playbook, store.run(1))
    assert run.state is RunState.ABORTED and store.run_locks(1) == []
    states = {s.workload: s.state for s in store.steps(1)}
    assert states["db"] is StepState.SUCCEEDED  # it had reached site b
    assert states["web"] is StepState.CANCELLED
    assert move(Engine(store, fake_drivers(cloud), poll_seconds=0), playbook, "a", "b").state is RunState.SUCCEEDED


def test_abort_asks_a_live_run_to_stop(store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    cloud.polls_per_move = 10**6  # a move that would never end
    engine = Engine(store, fake_drivers(cloud), poll_seconds=0.01)
    result: list[RunState] = []
    worker = threading.Thread(target=lambda: result.append(move(engine, playbook, "a", "b").state))
    worker.start()
    wait_for(lambda: any(s.state is StepState.RUNNING for s in store.steps(1)) if store.runs() else False)
    assert Engine(store, {}).abort(playbook, store.run(1), wait_seconds=30).state is RunState.ABORTED
    worker.join(10)
    assert result == [RunState.ABORTED]
    assert placements(cloud, playbook) == {"db": ["a"], "cache": ["a"], "web": ["a"]}
    assert [s.state for s in store.steps(1)] == [StepState.CANCELLED] * 3


def wait_for(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


WIDE = """\
name: wide
primary: a
secondary: b
sites:
  a: {hosts: [{name: a1, docker: "fake://a1/docker"}]}
  b: {hosts: [{name: b1, docker: "fake://b1/docker", max_moves: 2}]}
waves:
  - {name: first, parallel: 4}
workloads:
  - {name: c1, kind: container, wave: first}
  - {name: c2, kind: container, wave: first}
  - {name: c3, kind: container, wave: first}
  - {name: c4, kind: container, wave: first, depends_on: [c1]}
"""


def test_a_wave_moves_in_parallel_within_its_host_limit_and_dependencies(store: Store) -> None:
    pb = parse_playbook(WIDE, "wide.yaml")
    cloud = fresh_cloud(pb)
    cloud.polls_per_move = 20
    running: set[str] = set()
    most = [0]
    ended: dict[str, float] = {}
    started: dict[str, float] = {}
    lock = threading.Lock()

    def report(ev: StepEvent) -> None:
        with lock:
            if ev.step.state is StepState.RUNNING:
                running.add(ev.step.workload)
                started.setdefault(ev.step.workload, time.monotonic())
            else:
                running.discard(ev.step.workload)
                ended[ev.step.workload] = time.monotonic()
            most[0] = max(most[0], len(running))

    run = Engine(store, fake_drivers(cloud), report=report, poll_seconds=0.002).operate(pb, "w", "failover", "a", "b")
    assert run.state is RunState.SUCCEEDED
    assert most[0] == 2  # parallel 4, but host b1 takes two moves at once
    assert started["c4"] >= ended["c1"]


HOOKED = PLAYBOOK.replace(
    "  - {name: db, kind: vm, strategy: live}\n",
    "  - name: db\n    kind: vm\n    hooks:\n      before: %s\n      after: %s\n",
)


@pytest.fixture
def http_ok() -> Iterator[str]:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hooked(tmp_path: Path, after: str) -> Playbook:
    out, script = tmp_path / "env.json", tmp_path / "hook.py"
    script.write_text("import json, os\n"
                      "ctx = {k: v for k, v in os.environ.items() if k.startswith('DRORCH_')}\n"
                      f"json.dump(ctx, open({str(out)!r}, 'w'))\n")
    before = json.dumps([{"run": [sys.executable, str(script)]}])
    return parse_playbook(HOOKED % (before, f"[{after}]"), "shop.yaml")


def test_hooks_get_the_runs_context_and_checks_pass(store: Store, tmp_path: Path, http_ok: str) -> None:
    pb = hooked(tmp_path, f"{{http: '{http_ok}/ok'}}")
    cloud = fresh_cloud(pb)
    run = Engine(store, fake_drivers(cloud), poll_seconds=0).operate(pb, "shop.yaml", "failover", "a", "b")
    assert run.state is RunState.SUCCEEDED
    env = json.loads((tmp_path / "env.json").read_text())
    assert {k: env[k] for k in ("DRORCH_MODE", "DRORCH_DIRECTION", "DRORCH_WAVE", "DRORCH_WORKLOAD",
                                "DRORCH_TARGET_SITE", "DRORCH_TARGET_HOST", "DRORCH_HOOK_PHASE")} == {
        "DRORCH_MODE": "planned", "DRORCH_DIRECTION": "failover", "DRORCH_WAVE": "default", "DRORCH_WORKLOAD": "db",
        "DRORCH_TARGET_SITE": "b", "DRORCH_TARGET_HOST": "b1", "DRORCH_HOOK_PHASE": "before"}
    assert f"http {http_ok}/ok: ok" in (store.steps(1)[0].outcome or "")


def test_a_failing_check_fails_the_step_or_only_warns(store: Store, tmp_path: Path, http_ok: str) -> None:
    pb = hooked(tmp_path, f"{{tcp: '127.0.0.1:{closed_port()}', retries: 1, delay: 0}}")
    cloud = fresh_cloud(pb)
    run = Engine(store, fake_drivers(cloud), poll_seconds=0).operate(pb, "shop.yaml", "failover", "a", "b")
    assert run.state is RunState.PARTIAL
    db = store.steps(1)[0]
    assert db.state is StepState.FAILED and "after hooks: tcp 127.0.0.1:" in (db.error or "")
    assert "failed after 2 attempts" in (db.error or "")

    pb = hooked(tmp_path, f"{{http: '{http_ok}/down', on_error: continue}}")
    cloud = fresh_cloud(pb)
    run = Engine(store, fake_drivers(cloud), poll_seconds=0).operate(pb, "shop.yaml", "failover", "a", "b")
    assert run.state is RunState.SUCCEEDED
    assert "HTTP 503" in (store.steps(run.id or 0)[0].outcome or "")


def test_a_failing_before_hook_leaves_the_workload_home(store: Store, tmp_path: Path) -> None:
    pb = parse_playbook(HOOKED % ("[{run: ['false']}]", "[]"), "shop.yaml")
    cloud = fresh_cloud(pb)
    Engine(store, fake_drivers(cloud), poll_seconds=0).operate(pb, "shop.yaml", "failover", "a", "b")
    assert site_of(cloud, pb, WorkloadKind.VM, "db") == ["a"]
    assert store.steps(1)[0].error == "before hooks: false: failed: exit 1"


WAVES = PLAYBOOK.replace("workloads:\n", """\
waves:
  - {name: data, on_failure: %s}
  - {name: front, approval: %s, hooks: {before: [{run: ['true']}]}}
workloads:
""").replace("strategy: live}", "strategy: live, wave: data}").replace(
    "strategy: checkpoint}", "strategy: checkpoint, wave: data}").replace(
    "strategy: redeploy}", "strategy: redeploy, wave: front}")


def test_rollback_policy_moves_back_what_the_run_moved(store: Store) -> None:
    pb = parse_playbook(WAVES % ("rollback", "false"), "shop.yaml")
    cloud = fresh_cloud(pb)
    cloud.fail["cache"] = "restore failed"
    run = Engine(store, fake_drivers(cloud), poll_seconds=0).operate(pb, "shop.yaml", "failover", "a", "b")
    assert run.state is RunState.ROLLED_BACK
    assert placements(cloud, pb) == {"db": ["a"], "cache": ["a"], "web": ["a"]}
    steps = {(s.workload, s.action): s.state for s in store.steps(1)}
    assert steps[("db", "move")] is StepState.ROLLED_BACK and steps[("db", "rollback")] is StepState.SUCCEEDED
    assert steps[("web", "move")] is StepState.CANCELLED


def test_abort_policy_stops_later_waves(store: Store) -> None:
    pb = parse_playbook(WAVES % ("abort", "false"), "shop.yaml")
    cloud = fresh_cloud(pb)
    cloud.fail["cache"] = "restore failed"
    run = Engine(store, fake_drivers(cloud), poll_seconds=0).operate(pb, "shop.yaml", "failover", "a", "b")
    assert run.state is RunState.PARTIAL
    assert placements(cloud, pb) == {"db": ["b"], "cache": ["a"], "web": ["a"]}


def test_an_approval_pauses_the_run_until_approved(store: Store) -> None:
    pb = parse_playbook(WAVES % ("abort", "true"), "shop.yaml")
    cloud = fresh_cloud(pb)
    engine = Engine(store, fake_drivers(cloud), poll_seconds=0)
    result: list[RunState] = []
    worker = threading.Thread(target=lambda: result.append(engine.operate(pb, "s", "failover", "a", "b").state))
    worker.start()
    wait_for(lambda: bool(store.runs()) and any(s.state is StepState.WAITING for s in store.steps(1)))
    assert placements(cloud, pb) == {"db": ["b"], "cache": ["b"], "web": ["a"]}
    assert commit_window.approve(store, 1, "ops").outcome == "approved by ops"
    worker.join(10)
    assert result == [RunState.SUCCEEDED]
    assert placements(cloud, pb) == {"db": ["b"], "cache": ["b"], "web": ["b"]}
    assert [s.kind for s in store.steps(1)] == ["vm", "container", "approval", "hook", "container"]


def test_disaster_refuses_without_fencing_then_starts_the_shipped_copies(store: Store, cloud: FakeCloud,
                                                                          playbook: Playbook) -> None:
    drivers = fake_drivers(cloud)
    points = protect(playbook, drivers, store).points
    assert [(p.complete, p.error) for p in points] == [(True, None)] * 3
    for site in ("a",):
        for kind in KINDS:
            cloud.sites[uri(playbook, kind, site)].reachable = False
    engine = Engine(store, drivers, poll_seconds=0)
    with pytest.raises(FencingRequired, match="site a cannot be fenced"):
        engine.operate(playbook, "shop.yaml", "failover", "a", "b", disaster=True)
    assert store.runs() == [] and store.run_locks(0) == []
    run = engine.operate(playbook, "shop.yaml", "failover", "a", "b", disaster=True, confirmed=True)
    assert run.state is RunState.SUCCEEDED and run.mode == "disaster"
    fence = store.steps(1)[0]
    assert fence.kind == "fence" and "declared down by the operator" in (fence.outcome or "")
    b = {k: cloud.sites[uri(playbook, k, "b")].workloads for k in KINDS}
    assert all(w.running for ws in b.values() for w in ws.values())
    assert b[WorkloadKind.CONTAINER]["cache"].counter == 42  # from what was shipped


def test_disaster_fences_a_primary_that_still_answers(store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    drivers = fake_drivers(cloud)
    protect(playbook, drivers, store)
    run = Engine(store, drivers, poll_seconds=0).operate(playbook, "s", "failover", "a", "b", disaster=True)
    assert run.state is RunState.SUCCEEDED
    assert placements(cloud, playbook) == {"db": ["b"], "cache": ["b"], "web": ["b"]}
    assert "vm db on a1" in (store.steps(1)[0].outcome or "").split("destroyed ")[1]


def test_the_fence_step_asks_every_host_of_the_primary_even_with_nothing_of_its_kind_to_stop(
        store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    """The primary answers and runs nothing any more (its copies were stopped by hand): the fence says which hosts
    and daemons answered."""
    drivers = fake_drivers(cloud)
    protect(playbook, drivers, store)
    for kind in KINDS:
        cloud.sites[uri(playbook, kind, "a")].workloads.clear()
    run = Engine(store, drivers, poll_seconds=0).operate(playbook, "s", "failover", "a", "b", disaster=True)
    assert run.state is RunState.SUCCEEDED
    fence = store.steps(run.id or 0)[0]
    assert fence.outcome == "site a fenced: no copy ran on the answering hosts (a1 (container), a1 (vm))"



def test_a_primary_that_falls_silent_before_its_fence_fails_the_fence_and_nothing_starts(
        store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    drivers = fake_drivers(cloud)
    protect(playbook, drivers, store)

    def silenced(ev: StepEvent) -> None:  # after the plan, as the fence step begins
        if ev.step.kind == "fence" and ev.step.state is StepState.RUNNING:
            cloud.sites[uri(playbook, WorkloadKind.CONTAINER, "a")].reachable = False

    run = Engine(store, drivers, report=silenced, poll_seconds=0).operate(playbook, "s", "failover", "a", "b",
                                                                           disaster=True)
    fence = store.steps(run.id or 0)[0]
    assert run.state is RunState.FAILED and fence.state is StepState.FAILED
    assert fence.error == "hosts a1 of site a do not answer and were not fenced"
    assert [s.state for s in store.steps(run.id or 0)[1:]] == [StepState.CANCELLED] * 3
    assert not [w for k in KINDS for w in cloud.sites[uri(playbook, k, "b")].workloads.values() if w.running]


def test_disaster_with_a_fencing_command(store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    drivers = fake_drivers(cloud)
    protect(playbook, drivers, store)
    for kind in KINDS:
        cloud.sites[uri(playbook, kind, "a")].reachable = False
    for command, state in (("['false']", RunState.FAILED), ("['true']", RunState.SUCCEEDED)):
        pb = parse_playbook(PLAYBOOK + f"fencing: {{command: {command}}}\n", "shop.yaml")
        run = Engine(store, drivers, poll_seconds=0).operate(pb, "s", "failover", "a", "b", disaster=True)
        assert run.state is state
        running_on_b = [w.name for w in playbook.workloads if "b" in site_of(cloud, playbook, w.kind, w.name or "")]
        assert running_on_b == ([] if state is RunState.FAILED else ["db", "cache", "web"])


COMMIT = PLAYBOOK + "commit: {window_s: 3600, default: %s}\n"


def test_a_failover_waits_for_commit_and_holds_its_workloads(store: Store) -> None:
    pb = parse_playbook(COMMIT % "commit", "shop.yaml")
    cloud = fresh_cloud(pb)
    engine = Engine(store, fake_drivers(cloud), poll_seconds=0)
    run = move(engine, pb, "a", "b")
    assert run.state is RunState.PENDING_COMMIT and run.commit_deadline is not None
    with pytest.raises(WorkloadBusy, match="drorch commit 1 or drorch rollback 1"):
        move(engine, pb, "b", "a", "failback")
    assert commit_window.commit(store, 1).state is RunState.SUCCEEDED
    assert move(engine, pb, "b", "a", "failback").state is RunState.SUCCEEDED


def test_rollback_and_an_expired_window_take_the_default(store: Store) -> None:
    pb = parse_playbook(COMMIT % "rollback", "shop.yaml")
    cloud = fresh_cloud(pb)
    engine = Engine(store, fake_drivers(cloud), poll_seconds=0)
    move(engine, pb, "a", "b")
    assert commit_window.expired(store) == []
    run = store.run(1)
    run.commit_deadline = utcnow() - timedelta(seconds=1)
    store.save(run)
    (late,) = commit_window.expired(store)
    assert engine.settle(pb, late).state is RunState.ROLLED_BACK
    assert placements(cloud, pb) == {"db": ["a"], "cache": ["a"], "web": ["a"]}
    assert store.run_locks(1) == []


def test_report_gives_each_step_its_time_and_the_rto(engine: Engine, store: Store, playbook: Playbook) -> None:
    run = move(engine, playbook, "a", "b")
    doc = timeline(store.run(run.id or 0), store.steps(run.id or 0))
    assert [s["workload"] for s in doc["steps"]] == ["db", "cache", "web"]
    assert all(s["duration_s"] is not None and s["duration_s"] >= 0 for s in doc["steps"])
    assert doc["rto_s"] == max(doc["workload_rto_s"].values()) and set(doc["workload_rto_s"]) == {
        "vm/db", "container/cache", "container/web"}


def test_recovery_points_are_recorded_kept_and_aged(store: Store, cloud: FakeCloud) -> None:
    from drorch.recovery.rpo import rpo_status

    pb = parse_playbook(PLAYBOOK + "protect: {interval_s: 10, keep: 2}\n", "shop.yaml")
    drivers = fake_drivers(cloud)
    for _ in range(3):
        protect(pb, drivers, store)
    points = store.points("shop")
    assert len(points) == 6 and {p.workload for p in points} == {"db", "cache", "web"}  # 2 kept of each
    assert all(p.complete and p.size_bytes == 128 << 20 and p.site == "b" for p in points)
    rows = rpo_status(pb, points)
    assert [(r.workload, r.points, r.stale) for r in rows] == [("cache", 2, False), ("web", 2, False),
                                                                 ("db", 2, False)]
    assert all(r.target_s == 20 and r.age_s is not None and r.age_s < 20 for r in rows)
    later = rpo_status(pb, points, now=utcnow() + timedelta(seconds=30))
    assert all(r.stale for r in later)
    cloud.sites[uri(pb, WorkloadKind.VM, "b")].reachable = False
    protect(pb, drivers, store)
    db = next(r for r in rpo_status(pb, store.points("shop")) if r.workload == "db")
    assert db.points == 2 and "does not answer" in (db.last_error or "")
