"""An LXD instance that lands as a container on the secondary (`land_as: container`), on fake drivers: the plan
places it on a container host, the run moves it through the LXD driver and finds it there through the container
driver, failing back makes it an instance again, and points, disaster restarts and drills treat it as a container
on the secondary."""

from __future__ import annotations

from pathlib import Path

import pytest

from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.engine.runner import Engine
from drorch.engine.steps_from_plan import plan_findings
from drorch.errors import PlaybookError
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import Action, RunState, StepState
from drorch.plan.planner import plan
from drorch.reach import snapshot
from drorch.recovery.shipping import protect
from drorch.store.sql_store import Store
from tests.support.cli import drorch
from tests.support.shop import fake_drivers, move, uri

LANDING = """\
name: landing
primary: a
secondary: b
sites:
  a: {hosts: [{name: a1, lxd: "fake://a1/lxd"}]}
  b:
    hosts:
      - {name: b1, lxd: "fake://b1/lxd", capacity: {vcpus: 64, memory_mib: 65536}}
      - {name: b2, docker: "fake://b2/docker", capacity: {vcpus: 64, memory_mib: 65536}}
mappings:
  images: {0123456789ab: "shop/app:1"}
workloads:
  - {name: app, kind: lxd, land_as: container}
  - {name: sys, kind: lxd}
"""


@pytest.fixture
def pb() -> Playbook:
    return parse_playbook(LANDING, "landing.yaml")


@pytest.fixture
def cloud(pb: Playbook) -> FakeCloud:
    c = FakeCloud(polls_per_move=1)
    for site, host in (("a", 0), ("b", 0)):
        c.sites[uri(pb, WorkloadKind.LXD, site, host)] = FakeSite()
    c.sites[uri(pb, WorkloadKind.CONTAINER, "b", 1)] = FakeSite()
    for name in ("app", "sys"):
        c.sites[uri(pb, WorkloadKind.LXD, "a")].workloads[name] = FakeWorkload(WorkloadKind.LXD, counter=42)
    return c


def on(cloud: FakeCloud, pb: Playbook, kind: WorkloadKind, site: str, host: int = 0) -> dict[str, tuple[bool, int]]:
    return {n: (w.running, w.counter) for n, w in cloud.sites[uri(pb, kind, site, host)].workloads.items()
            if w.kind is kind}


def test_it_is_placed_on_a_container_host_and_the_rest_on_lxd(cloud: FakeCloud, pb: Playbook) -> None:
    items = {i.workload: i for i in plan(pb, snapshot(pb, fake_drivers(cloud)), "a", "b").items}
    assert (items["app"].action, items["app"].to_host, items["app"].at_target) == (Action.MOVE, "b2",
                                                                                    WorkloadKind.CONTAINER)
    assert (items["app"].kind, items["app"].strategy, items["app"].at_source) == ("lxd", "redeploy", "lxd")
    assert (items["sys"].to_host, items["sys"].target_kind) == ("b1", None)


def test_it_lands_as_a_container_and_comes_back_as_an_instance(cloud: FakeCloud, store: Store, pb: Playbook
                                                                ) -> None:
    engine = Engine(store, fake_drivers(cloud), poll_seconds=0)
    run = move(engine, pb, "a", "b")
    assert run.state is RunState.SUCCEEDED, run.error
    assert on(cloud, pb, WorkloadKind.CONTAINER, "b", 1) == {"app": (True, 1)}  # redeployed: counts from 1
    assert on(cloud, pb, WorkloadKind.LXD, "b") == {"sys": (True, 42)}
    step = next(s for s in store.steps(run.id or 0) if s.workload == "app")
    assert (step.kind, step.source_kind, step.target_kind, step.to_host) == ("lxd", None, "container", "b2")

    items = {i.workload: i for i in plan(pb, snapshot(pb, fake_drivers(cloud)), "a", "b").items}
    assert items["app"].action is Action.ALREADY  # found as the container it runs as

    back = move(engine, pb, "b", "a", "failback")
    assert back.state is RunState.SUCCEEDED, back.error
    assert on(cloud, pb, WorkloadKind.LXD, "a") == {"app": (True, 1), "sys": (True, 42)}
    assert on(cloud, pb, WorkloadKind.CONTAINER, "b", 1) == {}
    step = next(s for s in store.steps(back.id or 0) if s.workload == "app")
    assert (step.source_kind, step.target_kind, step.state) == ("container", None, StepState.SUCCEEDED)


def test_a_rollback_takes_it_home_as_an_instance(cloud: FakeCloud, store: Store) -> None:
    rolled = parse_playbook(LANDING + "waves: [{name: default, on_failure: rollback}]\n", "landing.yaml")
    cloud.fail["sys"] = "the target refused it"
    run = move(Engine(store, fake_drivers(cloud), poll_seconds=0), rolled, "a", "b")
    assert run.state is RunState.ROLLED_BACK, run.error
    back = next(s for s in store.steps(run.id or 0) if s.workload == "app" and s.action == "rollback")
    assert (back.source_kind, back.target_kind, back.state) == ("container", None, StepState.SUCCEEDED)
    assert on(cloud, rolled, WorkloadKind.LXD, "a")["app"] == (True, 1)  # home, an instance again
    assert on(cloud, rolled, WorkloadKind.CONTAINER, "b", 1) == {}


def test_its_points_restarts_and_drills_are_a_container_s(cloud: FakeCloud, store: Store, pb: Playbook) -> None:
    points = protect(pb, fake_drivers(cloud), store).points
    assert all(p.complete for p in points), [p.error for p in points]
    assert {(p.kind, p.workload) for p in points} == {("lxd", "app"), ("lxd", "sys")}
    assert on(cloud, pb, WorkloadKind.CONTAINER, "b", 1) == {"app": (False, 42)}  # the copy, never started

    drill = Engine(store, fake_drivers(cloud)).drill(pb, "landing.yaml")
    assert drill.state is RunState.SUCCEEDED, drill.error
    clone = next(s for s in store.steps(drill.id or 0) if s.workload == "app")
    assert (clone.target_kind, clone.state) == ("container", StepState.SUCCEEDED)
    assert on(cloud, pb, WorkloadKind.CONTAINER, "b", 1) == {"app": (False, 42)}  # the clone is gone

    cloud.sites[uri(pb, WorkloadKind.LXD, "a")].reachable = False
    engine = Engine(store, fake_drivers(cloud), poll_seconds=0)
    run = engine.operate(pb, "landing.yaml", "failover", "a", "b", disaster=True, confirmed=True)
    assert run.state is RunState.SUCCEEDED, run.error
    assert on(cloud, pb, WorkloadKind.CONTAINER, "b", 1) == {"app": (True, 42)}
    assert on(cloud, pb, WorkloadKind.LXD, "b") == {"sys": (True, 42)}


@pytest.mark.parametrize(("entry", "said"), [
    ("{name: app, kind: lxd, land_as: vm}", "a lxd cannot land as a vm: a lxd lands as a container only"),
    ("{name: app, kind: container, land_as: lxd}", "a container cannot land as a lxd"),
    ("{name: app, kind: lxd, land_as: container, strategy: copy}",
     "a lxd that lands as a container is redeployed from its image: strategy copy does not apply"),
])
def test_a_landing_that_cannot_be_is_named(entry: str, said: str) -> None:
    text = LANDING.replace("{name: app, kind: lxd, land_as: container}", entry)
    with pytest.raises(PlaybookError, match=said):
        parse_playbook(text, "landing.yaml")


def test_a_secondary_without_a_container_engine_is_named() -> None:
    text = LANDING.replace('      - {name: b2, docker: "fake://b2/docker", capacity: {vcpus: 64, memory_mib: 65536}}\n',
                           "")
    with pytest.raises(PlaybookError, match="lxd 'app' needs a host with docker or podman on site 'b'"):
        parse_playbook(text, "landing.yaml")


def test_its_storage_is_not_looked_for_on_the_engine_nor_a_container_s_network_at_home(
        cloud: FakeCloud, store: Store, pb: Playbook) -> None:
    """It is made anew from an image: the instance's pool need not exist where it lands, and coming home it
    returns to its instance, whose names its driver checks, not to the container's network ('none')."""
    drivers = fake_drivers(cloud)
    cloud.sites[uri(pb, WorkloadKind.LXD, "a")].workloads["app"].pools = ("default",)
    out = plan(pb, snapshot(pb, drivers), "a", "b")
    assert [f.message for f in plan_findings(pb, snapshot(pb, drivers), out, drivers)] == []
    assert move(Engine(store, drivers, poll_seconds=0), pb, "a", "b").state is RunState.SUCCEEDED
    cloud.sites[uri(pb, WorkloadKind.CONTAINER, "b", 1)].workloads["app"].networks = ("none",)
    home = plan(pb, snapshot(pb, drivers), "b", "a")
    assert [f.message for f in plan_findings(pb, snapshot(pb, drivers), home, drivers)] == []


def test_the_plan_says_what_it_runs_as_on_the_target(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                     fake_cli: None) -> None:
    path = tmp_path / "landing.yaml"
    path.write_text(LANDING)
    code, out, _ = drorch(capsys, "plan", str(path))
    app = next(line for line in out.splitlines() if " app " in line)
    assert code == 0 and app.endswith("runs as a container on site b") and " b2 " in app, out
    assert "runs as" not in next(line for line in out.splitlines() if " sys " in line)
