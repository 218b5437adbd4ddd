"""What the state store promises (drorch.store.contract.StateStore), whatever database holds it: run against SQLite
here and against PostgreSQL on the lab. A subclass provides the fixture `store_url`, an empty store's URL.
`History` (the standard library's reader of `drorch history`) is held to the store's answers about the same rows.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from drorch.errors import DamagedRow, NotFound
from drorch.model.groups import Consistency
from drorch.model.records import Action, Mode, Operation, RunState, StepKind, StepState, utcnow
from drorch.store.contract import StateStore
from drorch.store.history import History
from drorch.store.rows import Lock, OpenFreeze, ReadinessCheck, RecoveryPoint, Run, Step
from drorch.store.sql_store import Store


def new_run(operation: Operation = Operation.FAILOVER, playbook: str = "shop",
            steps: int = 2) -> tuple[Run, list[Step]]:
    run = Run(operation=operation, mode=Mode.PLANNED, playbook=playbook, playbook_path=f"{playbook}.yaml",
              source_site="a", target_site="b", state=RunState.RUNNING, pid=7, host="h")
    return run, [Step(run_id=0, seq=n, workload=f"w{n}", kind="vm", strategy="live", source_site="a",
                      target_site="b", wave="default", action=Action.MOVE, state=StepState.PENDING)
                 for n in range(1, steps + 1)]


def point(workload: str, site: str, age_s: float, playbook: str = "shop") -> RecoveryPoint:
    return RecoveryPoint(playbook=playbook, workload=workload, kind="vm", site=site,
                         taken_at=utcnow() - timedelta(seconds=age_s), name=f"{workload}-{age_s:g}")


class StoreContract:
    @pytest.fixture
    def store(self, store_url: str) -> Store:
        return Store(store_url)

    def test_the_store_offers_the_whole_contract(self, store: Store) -> None:
        assert isinstance(store, StateStore)
        offered = {n for n in dir(StateStore) if not n.startswith("_")} - {"url"}
        assert offered and all(callable(getattr(store, n)) for n in offered)

    def test_a_run_and_its_steps_read_back_as_written_with_their_types(self, store: Store) -> None:
        run, steps = new_run()
        store.add_run(run, steps)
        assert run.id is not None
        back = store.run(run.id)
        assert (back.operation, back.mode, back.state) == (Operation.FAILOVER, Mode.PLANNED, RunState.RUNNING)
        assert type(back.operation) is Operation and type(back.mode) is Mode
        read = store.steps(run.id)
        assert [(s.seq, s.workload, s.action, s.run_id) for s in read] == [
            (1, "w1", Action.MOVE, run.id), (2, "w2", Action.MOVE, run.id)]
        assert all(type(s.action) is Action for s in read)

    def test_a_saved_change_is_what_the_next_read_sees(self, store: Store) -> None:
        run, steps = new_run()
        store.add_run(run, steps)
        steps[0].state, steps[0].outcome = StepState.SUCCEEDED, "moved"
        run.state, run.ended_at = RunState.PARTIAL, utcnow()
        store.save(run, steps[0])
        assert store.refresh(run).state is RunState.PARTIAL
        assert [(s.state, s.outcome) for s in store.steps(run.id or 0)] == [
            (StepState.SUCCEEDED, "moved"), (StepState.PENDING, None)]

    def test_runs_are_newest_first_and_runs_of_an_operation_oldest_first(self, store: Store) -> None:
        for op, pb in ((Operation.FAILOVER, "shop"), (Operation.DRILL, "shop"), (Operation.DRILL, "mill"),
                       (Operation.FAILBACK, "shop")):
            store.add_run(*new_run(op, pb, steps=0))
        assert [r.id for r in store.runs(3)] == [4, 3, 2]
        assert [r.id for r in store.runs_of(Operation.DRILL)] == [2, 3]
        assert [r.id for r in store.runs_of(Operation.DRILL, "mill")] == [3]

    def test_a_missing_run_is_not_found_naming_it(self, store: Store) -> None:
        with pytest.raises(NotFound, match="no run 41"):
            store.run(41)

    def test_locks_are_taken_all_or_none_and_pass_from_planning_to_the_run(self, store: Store) -> None:
        assert store.take_locks(["vm/db", "container/web"], None, 11, "h") is None
        held = store.take_locks(["container/cache", "vm/db"], None, 12, "h")
        assert held is not None and (held.key, held.pid) == ("vm/db", 11)
        assert store.take_locks(["container/cache"], None, 12, "h") is None  # the refused try took nothing
        run, steps = new_run()
        store.add_run(run, steps)
        store.hand_locks(["vm/db", "container/web"], run.id or 0)
        assert sorted(lk.key for lk in store.run_locks(run.id or 0)) == ["container/web", "vm/db"]
        store.adopt_locks(run.id or 0, 13, "other")
        assert {(lk.pid, lk.host) for lk in store.run_locks(run.id or 0)} == {(13, "other")}
        store.release_locks(run.id or 0)
        assert store.run_locks(run.id or 0) == []
        assert store.take_locks(["vm/db"], None, 14, "h") is None

    def test_a_stale_lock_is_dropped_only_while_it_is_the_one_judged_stale(self, store: Store) -> None:
        store.take_locks(["vm/db"], None, 11, "h")
        store.drop_lock(Lock(key="vm/db", run_id=None, pid=99, host="h"))  # another holder: kept
        assert store.take_locks(["vm/db"], None, 12, "h") is not None
        store.drop_lock(Lock(key="vm/db", run_id=None, pid=11, host="h"))
        assert store.take_locks(["vm/db"], None, 12, "h") is None

    def test_points_are_newest_first_retired_towards_a_site_and_dropped(self, store: Store) -> None:
        store.add_points([point("db", "b", 30), point("db", "b", 10), point("db", "a", 20), point("x", "b", 5, "mill")])
        assert [p.name for p in store.points("shop")] == ["db-10", "db-20", "db-30"]
        store.protected_towards("shop", "a", [("vm", "db")])
        assert {p.name: p.retired_at is not None for p in store.points("shop")} == {
            "db-10": True, "db-20": False, "db-30": True}
        store.protected_towards("shop", "b", [("vm", "db")])
        assert {p.name: p.retired_at is not None for p in store.points("shop")} == {
            "db-10": False, "db-20": True, "db-30": False}
        store.drop_points([p.id or 0 for p in store.points("shop") if p.name != "db-10"])
        assert [p.name for p in store.points("shop")] == ["db-10"]
        assert [p.name for p in store.points("mill")] == ["x-5"]

    def test_a_points_cut_and_consistency_read_back_as_written(self, store: Store) -> None:
        p = point("db", "b", 1)
        p.consistency, p.group, p.cut, p.cut_at, p.freeze_ms = Consistency.APPLICATION, "app", "app@1", utcnow(), 12.5
        store.add_points([p, point("old", "b", 2)])
        back = {q.workload: q for q in store.points("shop")}
        assert back["db"].consistent is Consistency.APPLICATION and type(back["db"].consistency) is Consistency
        assert (back["db"].group, back["db"].cut, back["db"].freeze_ms) == ("app", "app@1", 12.5)
        assert back["old"].consistency is None and back["old"].consistent is Consistency.CRASH  # as older stores

    def test_open_freezes_are_journaled_per_playbook_and_closed(self, store: Store) -> None:
        rows = [OpenFreeze(playbook=pb, workload=w, kind="vm", site="a", host="a1", how="paused", owner="h:1",
                           release_by=utcnow()) for pb, w in (("shop", "db"), ("shop", "web"), ("other", "x"))]
        store.save(*rows)
        assert [f.workload for f in store.freezes("shop")] == ["db", "web"]
        store.freezes_closed([rows[0].id or 0])
        assert [f.workload for f in store.freezes("shop")] == ["web"] and len(store.freezes("other")) == 1

    def test_skipped_ships_are_counted_per_workload(self, store: Store) -> None:
        store.ship_skipped("shop", [("vm", "db"), ("container", "web")], "still shipping")
        store.ship_skipped("shop", [("vm", "db")], "still shipping since 12:00")
        store.ship_skipped("other", [("vm", "db")], "x")
        rows = {(r.kind, r.workload): r for r in store.skipped_ships("shop")}
        assert {k: r.count for k, r in rows.items()} == {("vm", "db"): 2, ("container", "web"): 1}
        assert rows[("vm", "db")].why == "still shipping since 12:00" and len(store.skipped_ships()) == 3

    def test_readiness_checks_are_newest_first_within_the_limit(self, store: Store) -> None:
        store.save(*(ReadinessCheck(playbook="shop", ready=n % 2 == 0, problems=f'["p{n}"]') for n in range(3)))
        assert [c.problem_list() for c in store.readiness("shop", limit=2)] == [["p2"], ["p1"]]

    def test_a_lease_is_held_by_one_holder_until_it_expires_or_is_released(self, store: Store) -> None:
        assert store.lease("scheduler", "one", timedelta(seconds=30))
        assert store.lease("scheduler", "one", timedelta(seconds=30))  # renewed
        assert not store.lease("scheduler", "two", timedelta(seconds=30))
        store.release_lease("scheduler", "two")  # not the holder: nothing changes
        assert not store.lease("scheduler", "two", timedelta(seconds=30))
        store.release_lease("scheduler", "one")
        assert store.lease("scheduler", "two", timedelta(seconds=-1))  # taken, and expired at once
        assert store.lease("scheduler", "one", timedelta(seconds=30))

    def test_a_lease_whose_holder_is_known_gone_is_free_to_take(self, store: Store) -> None:
        assert store.lease("resume:1", "h:1", timedelta(seconds=60))
        assert not store.lease("resume:1", "h:2", timedelta(seconds=60), gone={"h:3"})
        assert store.lease("resume:1", "h:2", timedelta(seconds=60), gone={"h:1"})
        assert not store.lease("resume:1", "h:3", timedelta(seconds=60), gone={"h:1"})  # h:2 holds it now

    def test_heartbeats_keep_one_row_per_daemon_newest_first(self, store: Store) -> None:
        store.heartbeat("h:1", leader=True, lease_s=15)
        store.heartbeat("h:2", leader=False)
        store.heartbeat("h:1", leader=False, stopped=True)
        rows = store.daemons()
        assert [(d.identity, d.leader, d.stopped, d.lease_s) for d in rows] == [
            ("h:1", False, True, 15), ("h:2", False, False, None)]

    def test_a_daemon_is_gone_once_stopped_or_silent_past_its_own_lease(self, store: Store) -> None:
        store.heartbeat("h:1", leader=False, stopped=True)
        store.heartbeat("h:2", leader=True, lease_s=0.2)
        store.heartbeat("h:3", leader=False, lease_s=60)
        store.heartbeat("h:4", leader=False)  # no lease known: never judged gone
        assert store.gone_daemons() == {"h:1"}
        time.sleep(0.3)
        assert store.gone_daemons() == {"h:1", "h:2"}

    def test_history_answers_what_the_store_answers(self, store: Store, store_url: str) -> None:
        run, steps = new_run()
        store.add_run(run, steps)
        fence = Step(run_id=0, seq=3, workload="fence", kind=StepKind.FENCE, strategy="-", source_site="a",
                     target_site="b", state=StepState.SUCCEEDED, started_at=utcnow(), ended_at=utcnow())
        steps[0].state, steps[0].started_at = StepState.RUNNING, utcnow()
        store.save(steps[0])
        store.add_run(*new_run(Operation.DRILL, steps=0))
        fence.run_id = run.id or 0
        store.save(fence)
        history = History(store_url)
        assert history.runs(5) == [r.model_dump() for r in store.runs(5)]
        assert history.run(run.id or 0) == store.run(run.id or 0).model_dump()
        assert history.steps(run.id or 0) == [s.model_dump() for s in store.steps(run.id or 0)]
        with pytest.raises(NotFound):
            history.run(99)

    def test_a_row_holding_what_drorch_never_writes_is_named(self, store: Store, store_url: str) -> None:
        store.add_run(*new_run(steps=0))
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE runs SET operation = 'teleport' WHERE id = 1"))
        for read in (lambda: store.run(1), lambda: History(store_url).run(1)):
            with pytest.raises(DamagedRow, match=r"row 1 of table runs is damaged: its operation 'teleport'"):
                read()
