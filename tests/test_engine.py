from __future__ import annotations

import os

import pytest

from drorch.drivers.base import Endpoint, MoveRequest
from drorch.drivers.fake import FakeCloud
from drorch.engine.runner import Engine
from drorch.errors import UsageError, WorkloadBusy
from drorch.model.playbook import Host, Mappings, Playbook, Strategy, WorkloadKind
from drorch.model.records import RunState, StepState
from drorch.reach import RunSites
from drorch.store.rows import Step
from drorch.store.sql_store import Store
from tests.support.runs import held_by
from tests.support.shop import fake_drivers, move, site_of, uri


def counter(cloud: FakeCloud, pb: Playbook, kind: WorkloadKind, name: str, site: str) -> int:
    return cloud.sites[uri(pb, kind, site)].workloads[name].counter


def test_failover_moves_every_workload_and_records_each_step(
    engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook
) -> None:
    run = move(engine, playbook, "a", "b", "failover")
    assert run.state is RunState.SUCCEEDED and run.ended_at is not None
    for w in playbook.workloads:
        assert site_of(cloud, playbook, w.kind, w.name) == ["b"]
    assert counter(cloud, playbook, WorkloadKind.VM, "db", "b") == 42  # live: state kept
    assert counter(cloud, playbook, WorkloadKind.CONTAINER, "cache", "b") == 42  # checkpoint: state kept
    assert counter(cloud, playbook, WorkloadKind.CONTAINER, "web", "b") == 1  # redeploy: fresh
    stored = store.run(run.id or 0)
    assert stored.state is RunState.SUCCEEDED
    steps = store.steps(run.id or 0)
    assert [(s.workload, s.state) for s in steps] == [
        ("db", StepState.SUCCEEDED), ("cache", StepState.SUCCEEDED), ("web", StepState.SUCCEEDED)]
    assert all(s.started_at and s.ended_at and s.started_at <= s.ended_at for s in steps)
    assert all(s.outcome == "running on site b" and s.error is None and s.handle for s in steps)


def test_second_failover_finds_everything_in_place(engine: Engine, store: Store, playbook: Playbook) -> None:
    move(engine, playbook, "a", "b", "failover")
    again = move(engine, playbook, "a", "b", "failover")
    assert again.state is RunState.SUCCEEDED
    assert {s.outcome for s in store.steps(again.id or 0)} == {"already running on site b"}


def test_failback_brings_everything_home(engine: Engine, cloud: FakeCloud, playbook: Playbook) -> None:
    move(engine, playbook, "a", "b", "failover")
    run = move(engine, playbook, "b", "a", "failback")
    assert run.state is RunState.SUCCEEDED
    for w in playbook.workloads:
        assert site_of(cloud, playbook, w.kind, w.name) == ["a"]
    assert counter(cloud, playbook, WorkloadKind.VM, "db", "a") == 42


def test_unreachable_target_fails_every_step_and_moves_nothing(
    engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook
) -> None:
    for w in playbook.workloads:
        cloud.sites[uri(playbook, w.kind, "b")].reachable = False
    run = move(engine, playbook, "a", "b", "failover")
    assert run.state is RunState.FAILED and run.error == "3 of 3 steps failed"
    steps = store.steps(run.id or 0)
    assert all(s.state is StepState.FAILED and "site b" in (s.error or "") for s in steps)
    for w in playbook.workloads:
        assert cloud.sites[uri(playbook, w.kind, "a")].workloads[w.name].running


def test_one_failed_move_makes_the_run_partial(
    engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook
) -> None:
    cloud.fail["db"] = "live migration of db failed: connection reset by peer"
    run = move(engine, playbook, "a", "b", "failover")
    assert run.state is RunState.PARTIAL
    db = store.steps(run.id or 0)[0]
    assert db.state is StepState.FAILED and db.error == "live migration of db failed: connection reset by peer"
    assert site_of(cloud, playbook, WorkloadKind.VM, "db") == ["a"]


def test_checkpoint_falls_back_to_redeploy_and_the_run_says_so(
    engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook
) -> None:
    cloud.sites[uri(playbook, WorkloadKind.CONTAINER, "b")].checkpoints = False
    run = move(engine, playbook, "a", "b", "failover")
    assert run.state is RunState.SUCCEEDED_WITH_WARNINGS
    cache = store.steps(run.id or 0)[1]
    assert cache.state is StepState.SUCCEEDED
    assert cache.warning == "redeployed from its image: checkpoints do not work here"
    assert [s.warning for s in store.steps(run.id or 0) if s.workload != "cache"] == [None, None]
    assert counter(cloud, playbook, WorkloadKind.CONTAINER, "cache", "b") == 1


def test_a_workload_held_by_a_live_run_is_refused(
    engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook
) -> None:
    holder = held_by(store, os.getpid())
    with pytest.raises(WorkloadBusy, match=f"held by run {holder.id}"):
        move(engine, playbook, "a", "b", "failover")
    assert len(store.runs()) == 1  # nothing new recorded, nothing moved
    assert site_of(cloud, playbook, WorkloadKind.VM, "db") == ["a"]


def test_a_run_whose_process_died_holds_its_workloads_until_resumed_or_aborted(
    engine: Engine, store: Store, playbook: Playbook
) -> None:
    holder = held_by(store, pid=2**22 + 12345)  # above pid_max: no such process
    with pytest.raises(WorkloadBusy, match=f"interrupted run {holder.id} .*drorch resume {holder.id}"):
        move(engine, playbook, "a", "b", "failover")


def test_reporter_sees_every_transition(store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    from tests.support.shop import fake_drivers

    events: list[tuple[str, StepState, bool]] = []
    engine = Engine(store, fake_drivers(cloud), report=lambda e: events.append(
        (e.step.workload, e.step.state, e.progress is not None)))
    move(engine, playbook, "a", "b")
    db = [(st, p) for w, st, p in events if w == "db"]
    assert db[0] == (StepState.RUNNING, False)
    assert (StepState.RUNNING, True) in db
    assert db[-1] == (StepState.SUCCEEDED, True)


def test_a_run_resolves_its_hosts_once_and_no_step_searches_the_playbook(
    engine: Engine, store: Store, cloud: FakeCloud, playbook: Playbook, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.locks.claim(playbook):
        the_plan, _snap = engine.plan(playbook, "a", "b", disaster=False)
        run = engine.start(playbook, the_plan, "shop.yaml", "failover")
    asked: list[str] = []
    hosts = Playbook.hosts

    def counted(pb: Playbook, site: str) -> list[Host]:
        asked.append(site)
        return hosts(pb, site)

    monkeypatch.setattr(Playbook, "hosts", counted)
    assert engine.execute(playbook, run).state is RunState.SUCCEEDED
    # RunSites: each site's hosts once per kind, however many steps the run has.
    assert sorted(asked) == sorted(list(playbook.sites) * len(WorkloadKind))


def test_run_sites_name_a_host_dropped_from_the_playbook_and_keep_a_recorded_request(
        cloud: FakeCloud, playbook: Playbook) -> None:
    sites = RunSites.of(playbook, fake_drivers(cloud))
    b1 = sites.host("b", "b1", WorkloadKind.VM)
    with pytest.raises(UsageError, match="site b host gone is no longer in the playbook"):
        sites.host("b", "gone", WorkloadKind.VM)
    gone = Endpoint("b", "fake://gone/libvirt", None, "gone")
    req = MoveRequest("db", Strategy.LIVE, b1, gone, Mappings())
    step = Step(run_id=1, seq=1, workload="db", kind="vm", strategy="live", source_site="b", target_site="b",
                request=req.to_json())
    again = sites.request(step)
    assert again.source == b1 and again.target == gone
