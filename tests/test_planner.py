"""The planner over hand-made and generated snapshots: placement, tiers, mappings, ordering, determinism."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import Action
from drorch.plan.inventory import HostFacts, HostInventory, Snapshot, WorkloadInfo
from drorch.plan.placement import Size
from drorch.plan.planner import MOVING, Plan, plan

VM, CT = WorkloadKind.VM, WorkloadKind.CONTAINER
TIERS = {"gold": {"priority": 0, "on_shortage": "required"},
         "silver": {"priority": 1, "on_shortage": "degrade"},
         "bronze": {"priority": 2, "on_shortage": "skip"}}


def playbook(workloads: list[dict[str, Any]], dr_hosts: dict[str, tuple[int, int]], **extra: Any) -> Playbook:
    return Playbook.model_validate({
        "name": "t", "primary": "a", "secondary": "b",
        "sites": {
            "a": {"hosts": [{"name": "a1", "libvirt": "qemu+tcp://a1/system", "docker": "tcp://a1:2375"}]},
            "b": {"hosts": [{"name": n, "libvirt": f"qemu+tcp://{n}/system", "docker": f"tcp://{n}:2375",
                             "capacity": {"vcpus": c, "memory_mib": m}} for n, (c, m) in dr_hosts.items()]},
        },
        "tiers": TIERS, "defaults": {"tier": "silver"}, "workloads": workloads, **extra,
    })


def snap(pb: Playbook, on_a: list[WorkloadInfo], on_b: list[WorkloadInfo] = ()) -> Snapshot:  # type: ignore[assignment]
    facts = {k: HostFacts(networks=("prod-net", "dr-net", "none")) for k in WorkloadKind}
    home = {k: HostFacts(vcpus=64, memory_mib=65536, networks=("prod-net", "none")) for k in WorkloadKind}
    hosts = [HostInventory("a", "a1", home, {}, list(on_a))]  # capacity discovered, not declared
    for h in pb.hosts("b"):
        hosts.append(HostInventory("b", h.name, dict(facts), {}, [w for w in on_b if w.host == h.name]))
    return Snapshot(hosts)


def vm(name: str, mib: int, vcpus: int = 1, host: str = "a1", site: str = "a", **kw: Any) -> WorkloadInfo:
    return WorkloadInfo(name, VM, site, True, mib, vcpus, host=host, **kw)


def ct(name: str, mib: int, host: str = "a1", site: str = "a", **kw: Any) -> WorkloadInfo:
    return WorkloadInfo(name, CT, site, True, mib, 1, image="img:1", host=host, **kw)


def by_name(p: Plan) -> dict[str, Any]:
    return {i.workload: i for i in p.items}


def test_required_degrade_and_skip_in_one_plan() -> None:
    pb = playbook([
        {"name": "db", "kind": "vm", "tier": "gold"},
        {"name": "cache", "kind": "container", "strategy": "checkpoint", "dr_resources": {"memory_mib": 64}},
        {"name": "batch", "kind": "container", "tier": "bronze"},
    ], {"b1": (2, 320)})
    p = plan(pb, snap(pb, [vm("db", 128), ct("cache", 256), ct("batch", 256)]), "a", "b")
    items = by_name(p)
    assert p.problems == ()
    assert (items["db"].action, items["db"].to_host, items["db"].after) == (Action.MOVE, "b1", Size(1, 128))
    assert (items["cache"].action, items["cache"].after) == (Action.DEGRADE, Size(1, 64))
    assert "runs with 1 vCPU, 64 MiB instead of 1 vCPU, 256 MiB" in items["cache"].reason
    assert (items["batch"].action, items["batch"].to_host, items["batch"].after) == (Action.SKIP, None, None)
    assert items["batch"].reason == ("left behind: site b is short of room: needs 1 vCPU, 256 MiB, "
                                     "most free 0 vCPU, 128 MiB")


def test_a_required_workload_that_does_not_fit_is_a_problem_at_its_entry() -> None:
    pb = playbook([{"name": "big", "kind": "vm", "tier": "gold"}], {"b1": (8, 1024)})
    p = plan(pb, snap(pb, [vm("big", 4096)]), "a", "b")
    assert by_name(p)["big"].action is Action.UNPLACED
    assert p.problems == ((("workloads", 0), "vm 'big' does not fit: site b is short of room: needs 1 vCPU, "
                                             "4096 MiB, most free 8 vCPU, 1024 MiB"),)


def test_a_live_migration_cannot_be_degraded() -> None:
    pb = playbook([{"name": "v", "kind": "vm", "strategy": "live", "dr_resources": {"memory_mib": 512}}],
                  {"b1": (8, 1024)})
    p = plan(pb, snap(pb, [vm("v", 2048)]), "a", "b")
    assert by_name(p)["v"].action is Action.UNPLACED
    assert "a live move cannot change its size" in p.problems[0][1]
    cold = playbook([{"name": "v", "kind": "vm", "strategy": "cold", "dr_resources": {"memory_mib": 512}}],
                    {"b1": (8, 1024)})
    assert by_name(plan(cold, snap(cold, [vm("v", 2048)]), "a", "b"))["v"].after == Size(1, 512)


def test_best_fit_packs_and_anti_affinity_spreads() -> None:
    pb = playbook([{"match": "web-*", "kind": "container", "anti_affinity": "web"},
                   {"name": "db", "kind": "vm"}], {"b1": (8, 1000), "b2": (8, 600), "b3": (8, 2000)})
    p = plan(pb, snap(pb, [ct("web-1", 300), ct("web-2", 300), vm("db", 500)]), "a", "b")
    items = by_name(p)
    assert items["db"].to_host == "b2"  # the tightest fit
    assert {items["web-1"].to_host, items["web-2"].to_host} == {"b1", "b3"}  # apart, and not on full b2


def test_anti_affinity_with_one_host_leaves_the_second_member_short() -> None:
    pb = playbook([{"match": "web-*", "kind": "container", "anti_affinity": "web", "tier": "bronze"}],
                  {"b1": (8, 4000)})
    p = plan(pb, snap(pb, [ct("web-1", 100), ct("web-2", 100)]), "a", "b")
    assert sorted(i.action for i in p.items) == [Action.MOVE, Action.SKIP]
    (skipped,) = [i for i in p.items if i.action is Action.SKIP]
    assert skipped.reason == ("left behind: every host of site b with room for 1 vCPU, 100 MiB already holds a "
                              "member of anti-affinity group 'web'")  # not "short of room" beside free room


def test_selection_by_glob_and_labels_and_names_beating_patterns() -> None:
    pb = playbook([{"labels": {"app": "shop"}, "kind": "container", "tier": "bronze"},
                   {"name": "shop-db", "kind": "container", "tier": "gold"},
                   {"match": "vm-*", "kind": "vm"}], {"b1": (8, 4000)})
    workloads = [ct("shop-web", 100, labels={"app": "shop"}), ct("shop-db", 100, labels={"app": "shop"}),
                 ct("other", 100, labels={"app": "blog"}), vm("vm-1", 100), vm("other-vm", 100)]
    items = by_name(plan(pb, snap(pb, workloads), "a", "b"))
    assert sorted(items) == ["shop-db", "shop-web", "vm-1"]
    assert items["shop-db"].tier == "gold" and items["shop-web"].tier == "bronze"


def test_what_runs_on_the_target_already_keeps_its_room() -> None:
    pb = playbook([{"name": "v1", "kind": "vm"}, {"name": "v2", "kind": "vm", "tier": "bronze"}],
                  {"b1": (8, 1000)})
    p = plan(pb, snap(pb, [vm("v2", 600)], [vm("v1", 600, host="b1", site="b")]), "a", "b")
    items = by_name(p)
    assert items["v1"].action is Action.ALREADY and items["v1"].to_host == "b1"
    assert items["v2"].action is Action.SKIP


def test_named_workload_found_nowhere_points_at_its_name() -> None:
    pb = playbook([{"name": "ghost", "kind": "vm"}], {"b1": (8, 1000)})
    assert plan(pb, snap(pb, []), "a", "b").problems == (
        (("workloads", 0, "name"), "vm 'ghost' runs neither on site a nor on site b"),)


def test_an_unreachable_target_blocks_its_workloads_and_not_the_others() -> None:
    pb = playbook([{"name": "v", "kind": "vm"}, {"name": "c", "kind": "container"}], {"b1": (8, 1000)})
    s = snap(pb, [vm("v", 100), ct("c", 100)])
    s.hosts[1].errors[VM] = "site b: libvirt at qemu+tcp://b1/system does not answer: refused"
    items = by_name(plan(pb, s, "a", "b"))
    assert (items["v"].action, items["v"].reason) == (Action.BLOCKED, s.hosts[1].errors[VM])
    assert items["c"].action is Action.MOVE


def test_failing_back_inverts_the_mappings() -> None:
    pb = playbook([{"name": "v", "kind": "vm"},
                   {"name": "c", "kind": "container", "mappings": {"images": {"img:1": "dr/img:1"}}}],
                  {"b1": (8, 1000)}, mappings={"networks": {"prod-net": "dr-net"}, "ports": {80: 8080}})
    there = by_name(plan(pb, snap(pb, [vm("v", 100), ct("c", 100)]), "a", "b"))
    assert there["v"].mappings.network("prod-net") == "dr-net"
    assert there["c"].mappings.image("img:1") == "dr/img:1" and there["c"].mappings.port(80) == 8080
    back = by_name(plan(pb, snap(pb, [], [vm("v", 100, host="b1", site="b"), ct("c", 100, host="b1", site="b")]),
                        "b", "a"))
    assert back["v"].mappings.network("dr-net") == "prod-net"
    assert back["c"].mappings.image("dr/img:1") == "img:1" and back["c"].mappings.port(8080) == 80
    assert back["v"].from_host == "b1" and back["v"].to_host == "a1"


def test_waves_in_order_and_dependencies_first() -> None:
    pb = playbook([{"name": "app", "kind": "container", "wave": "apps", "depends_on": ["cache", "db"]},
                   {"name": "cache", "kind": "container", "wave": "apps", "depends_on": ["db"]},
                   {"name": "db", "kind": "vm", "wave": "data"},
                   {"name": "web", "kind": "container", "wave": "apps", "tier": "gold"}],
                  {"b1": (8, 4000)}, waves=[{"name": "data"}, {"name": "apps", "parallel": 2}])
    p = plan(pb, snap(pb, [ct("app", 10), ct("cache", 10), vm("db", 10), ct("web", 10)]), "a", "b")
    assert [(i.seq, i.wave, i.workload) for i in p.items] == [
        (1, "data", "db"), (2, "apps", "web"), (3, "apps", "cache"), (4, "apps", "app")]
    assert p.problems == ()


def test_a_dependency_on_a_later_wave_or_a_cycle_through_globs_is_a_problem() -> None:
    pb = playbook([{"name": "app", "kind": "container", "wave": "one", "depends_on": ["db-1"]},
                   {"match": "db-*", "kind": "vm", "wave": "two"},
                   {"match": "x-*", "kind": "container", "depends_on": ["x-2"]}],
                  {"b1": (8, 4000)}, waves=[{"name": "one"}, {"name": "two"}])
    p = plan(pb, snap(pb, [ct("app", 10), vm("db-1", 10), ct("x-1", 10), ct("x-2", 10)]), "a", "b")
    assert (("workloads", 0, "depends_on"), "'app' depends on 'db-1', which moves in the later wave 'two'") \
        in p.problems
    assert (("workloads", 2, "depends_on"), "dependency cycle through 'x-2'") in p.problems


def test_a_move_whose_dependency_stays_behind_says_so() -> None:
    pb = playbook([{"name": "db", "kind": "vm", "tier": "bronze"},
                   {"name": "app", "kind": "container", "depends_on": ["db"]}], {"b1": (8, 100)})
    items = by_name(plan(pb, snap(pb, [vm("db", 500), ct("app", 50)]), "a", "b"))
    assert items["db"].action is Action.SKIP
    assert items["app"].reason == "depends on db, which will not move"


# --- properties ---------------------------------------------------------------------------------------------

@st.composite
def estates(draw: st.DrawFn) -> tuple[Playbook, Snapshot]:
    hosts = {f"b{i}": (draw(st.integers(1, 16)), draw(st.integers(256, 8192)))
             for i in range(draw(st.integers(1, 6)))}
    workloads, infos = [], []
    for i in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["vm", "container"]))
        mib = draw(st.integers(64, 4096))
        entry: dict[str, Any] = {"name": f"w{i}", "kind": kind, "tier": draw(st.sampled_from(list(TIERS)))}
        entry["strategy"] = "cold" if kind == "vm" else "redeploy"
        if draw(st.booleans()):
            entry["dr_resources"] = {"memory_mib": draw(st.integers(32, mib))}
        if draw(st.integers(0, 3)) == 0:
            entry["anti_affinity"] = draw(st.sampled_from(["g1", "g2"]))
        workloads.append(entry)
        vcpus = draw(st.integers(1, 4))
        infos.append(vm(f"w{i}", mib, vcpus) if kind == "vm" else WorkloadInfo(f"w{i}", CT, "a", True, mib, vcpus,
                                                                               host="a1"))
    pb = playbook(workloads, hosts)
    return pb, snap(pb, infos)


def capacity(pb: Playbook) -> dict[str, Size]:
    return {h.name: Size(h.capacity.vcpus, h.capacity.memory_mib) for h in pb.hosts("b") if h.capacity}


@settings(max_examples=150, deadline=None)
@given(estates())
def test_no_host_is_ever_over_capacity(estate: tuple[Playbook, Snapshot]) -> None:
    pb, s = estate
    used = {name: Size() for name in capacity(pb)}
    for i in plan(pb, s, "a", "b").items:
        if i.action in MOVING:
            assert i.to_host is not None and i.after is not None
            used[i.to_host] = used[i.to_host] + i.after
    for name, cap in capacity(pb).items():
        assert used[name].fits(cap), f"{name} holds {used[name]} but has {cap}"


@settings(max_examples=150, deadline=None)
@given(estates())
def test_required_workloads_are_placed_whenever_they_fit(estate: tuple[Playbook, Snapshot]) -> None:
    pb, s = estate
    p = plan(pb, s, "a", "b")
    used = {name: Size() for name in capacity(pb)}
    groups: dict[str, set[str]] = {name: set() for name in used}
    specs = {w.name: w for w in pb.workloads}
    for i in p.items:
        if i.action in MOVING:
            used[i.to_host] = used[i.to_host] + i.after  # type: ignore[index,operator]
            if specs[i.workload].anti_affinity:
                groups[i.to_host].add(specs[i.workload].anti_affinity)  # type: ignore[index,arg-type]
    for i in p.items:
        assert not (i.tier == "gold" and i.action is Action.SKIP)
        if i.tier == "gold" and i.action is Action.UNPLACED:
            group = specs[i.workload].anti_affinity
            room = [n for n, cap in capacity(pb).items()
                    if i.before.fits(cap - used[n]) and (group is None or group not in groups[n])]
            assert room == [], f"{i.workload} ({i.before}) was left out but fits on {room}"


@settings(max_examples=60, deadline=None)
@given(estates(), st.randoms(use_true_random=False))
def test_the_same_inputs_give_the_same_plan(estate: tuple[Playbook, Snapshot], rnd: random.Random) -> None:
    pb, s = estate
    first = plan(pb, s, "a", "b")
    shuffled = Snapshot([HostInventory(h.site, h.host, h.facts, h.errors, rnd.sample(h.workloads, len(h.workloads)))
                         for h in rnd.sample(s.hosts, len(s.hosts))])
    assert plan(pb, shuffled, "a", "b") == first
    assert plan(pb, Snapshot.from_json(s.to_json()), "a", "b") == first


def test_plan_as_json_keeps_what_a_script_needs() -> None:
    pb = playbook([{"name": "v", "kind": "vm", "tier": "gold"}], {"b1": (8, 1000)},
                  mappings={"networks": {"prod-net": "dr-net"}})
    raw = plan(pb, snap(pb, [vm("v", 100)]), "a", "b").to_dict()
    assert raw["items"] == [{
        "seq": 1, "wave": "default", "workload": "v", "kind": "vm", "tier": "gold", "strategy": "live",
        "action": "move", "from_host": "a1", "to_host": "b1", "before": {"vcpus": 1, "memory_mib": 100},
        "after": {"vcpus": 1, "memory_mib": 100}, "reason": "", "entry": 0, "depends_on": [],
        "mappings": {"networks": {"prod-net": "dr-net"}, "storage": {}, "images": {}, "ports": {},
                     "paths": {}, "profiles": {}, "addresses": {}},
        "source_kind": None, "target_kind": None, "addresses": [],
    }]
    assert raw["problems"] == []


def test_planning_pauses_the_cycle_collector_and_restores_it() -> None:
    import gc

    pb, snap = _estate_for_gc()
    assert gc.isenabled()
    plan(pb, snap, "a", "b")
    assert gc.isenabled()
    gc.disable()
    try:
        plan(pb, snap, "a", "b")
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


def _estate_for_gc() -> tuple[Playbook, Snapshot]:
    pb = Playbook.model_validate({"name": "p", "primary": "a", "secondary": "b",
                                  "sites": {"a": {"hosts": [{"name": "a1", "libvirt": "test:///a"}]},
                                            "b": {"hosts": [{"name": "b1", "libvirt": "test:///b"}]}},
                                  "workloads": [{"match": "*", "kind": "vm", "strategy": "cold"}]})
    inv = HostInventory("a", "a1", {WorkloadKind.VM: HostFacts()})
    inv.workloads.append(WorkloadInfo(name="w", kind=WorkloadKind.VM, site="a", running=True, vcpus=1,
                                      memory_mib=1, host="a1"))
    return pb, Snapshot([inv, HostInventory("b", "b1", {WorkloadKind.VM: HostFacts()})])
