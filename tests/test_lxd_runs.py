"""LXD workloads in a run, on fake drivers: a playbook mixes them with VMs and containers, on hosts that run LXD
beside libvirt and Docker; each kind goes to its own driver and lands on the target."""

from __future__ import annotations

from drorch.drivers.base import HostFacts
from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.engine.runner import Engine
from drorch.engine.steps_from_plan import check_playbook
from drorch.model.playbook import WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import RunState
from drorch.reach import snapshot
from drorch.store.sql_store import Store
from tests.support.shop import fake_drivers, move, site_of, uri

MIXED = """\
name: mixed
primary: a
secondary: b
sites:
  a: {hosts: [{name: a1, libvirt: "fake://a1/libvirt", docker: "fake://a1/docker", lxd: "fake://a1/lxd"}]}
  b: {hosts: [{name: b1, libvirt: "fake://b1/libvirt", docker: "fake://b1/docker", lxd: "fake://b1/lxd"}]}
workloads:
  - {name: db, kind: vm}
  - {name: web, kind: container, strategy: redeploy}
  - {name: sys, kind: lxd}
  - {name: live-sys, kind: lxd, strategy: stateful}
"""


def cloud_of(text: str, checkpoints: bool) -> tuple[FakeCloud, Engine]:
    pb = parse_playbook(text, "mixed.yaml")
    cloud = FakeCloud(polls_per_move=1)
    for site in ("a", "b"):
        for kind in WorkloadKind:
            cloud.sites[uri(pb, kind, site)] = FakeSite(checkpoints=checkpoints)
    for w in pb.workloads:
        cloud.sites[uri(pb, w.kind, "a")].workloads[w.name or ""] = FakeWorkload(w.kind, counter=42)
    return cloud, Engine(Store(), fake_drivers(cloud), poll_seconds=0)


def test_lxd_instances_move_beside_vms_and_containers(store: Store) -> None:
    cloud, engine = cloud_of(MIXED, checkpoints=True)
    pb = parse_playbook(MIXED, "mixed.yaml")
    run = move(engine, pb, "a", "b")
    assert run.state is RunState.SUCCEEDED
    for w in pb.workloads:
        assert site_of(cloud, pb, w.kind, w.name or "") == ["b"], w.name
    steps = {s.workload: s for s in store.steps(run.id or 0)}
    assert (steps["sys"].kind, steps["sys"].strategy, steps["sys"].to_host) == ("lxd", "copy", "b1")
    assert cloud.sites[uri(pb, WorkloadKind.LXD, "b")].workloads["sys"].counter == 42


def test_a_stateful_move_that_cannot_keep_its_state_ends_with_warnings(store: Store) -> None:
    cloud, engine = cloud_of(MIXED, checkpoints=False)
    pb = parse_playbook(MIXED, "mixed.yaml")
    run = move(engine, pb, "a", "b")
    assert run.state is RunState.SUCCEEDED_WITH_WARNINGS
    step = next(s for s in store.steps(run.id or 0) if s.workload == "live-sys")
    assert "live state could not move" in (step.warning or "")
    assert site_of(cloud, pb, WorkloadKind.LXD, "live-sys") == ["b"]


def test_points_of_an_instance_whose_network_a_mapping_renames_are_nothing_to_warn_of(store: Store) -> None:
    """A point is a snapshot taken where it is kept, of the copy with the names mapped: a protected instance
    whose network and pool site b knows only by their mapped names ships as any other."""
    text = MIXED + "protect: {interval_s: 60}\nmappings: {networks: {prod-br: dr-br}, storage: {fast: dr-fast}}\n"
    pb = parse_playbook(text, "mixed.yaml")
    cloud, _ = cloud_of(text, checkpoints=True)
    sys_a = cloud.sites[uri(pb, WorkloadKind.LXD, "a")].workloads["sys"]
    sys_a.networks, sys_a.pools = ("prod-br",), ("fast",)
    cloud.sites[uri(pb, WorkloadKind.LXD, "b")].facts = HostFacts(vcpus=64, memory_mib=65536, networks=("dr-br",),
                                                                  pools=("dr-fast",))
    drivers = fake_drivers(cloud)
    _, findings = check_playbook(pb, snapshot(pb, drivers), drivers)
    assert [f.message for f in findings if "live-sys" not in f.message] == []


def test_validate_warns_that_a_stateful_move_may_be_a_copy() -> None:
    """LXD's API does not say whether its server has CRIU: validate says what happens without it."""
    pb = parse_playbook(MIXED, "mixed.yaml")
    cloud, _ = cloud_of(MIXED, checkpoints=True)
    drivers = fake_drivers(cloud)
    _, findings = check_playbook(pb, snapshot(pb, drivers), drivers)
    assert [(f.loc, f.error, f.message) for f in findings] == [
        (("workloads", 3, "strategy"), False, "lxd live-sys: a stateful move needs CRIU on the LXD servers of site a "
         "host a1 and site b host b1, which LXD's API does not show; without it the move is a copy, stopped and "
         "started again (exit 5)")]
