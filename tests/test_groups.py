"""Consistency groups over the fake drivers and the real SQLite store: one instant for every member, the freeze
bounded and never left behind, points that say what they are worth, and restarts from one cut."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from drorch.drivers.base import Frozen
from drorch.drivers.fake import FakeCloud
from drorch.engine.runner import Engine
from drorch.errors import NoSuchPoint, PlaybookError
from drorch.model.groups import Consistency
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import StepState, utcnow
from drorch.process import owner
from drorch.recovery import point_choice, readiness, shipping
from drorch.store.rows import OpenFreeze
from drorch.store.sql_store import Store
from tests.support.cli import drorch
from tests.support.shop import PLAYBOOK, fake_drivers, uri

VM, CONTAINER = WorkloadKind.VM, WorkloadKind.CONTAINER


def grouped(extra: str = "", quiesce: bool = True, **protect: object) -> Playbook:
    """The shop with its three workloads in group `app`: the VM quiesced, the containers joining by name."""
    doc = yaml.safe_load(PLAYBOOK)
    doc["workloads"][0].update(group="app", quiesce=quiesce)
    doc["groups"] = [{"name": "app", "members": ["cache", "web"]}]
    doc["protect"] = {"keep": 5, **protect}
    doc.update(yaml.safe_load(extra) or {})
    return parse_playbook(yaml.safe_dump(doc), "shop.yaml")


def workload(cloud: FakeCloud, pb: Playbook, kind: WorkloadKind, name: str, site: str = "a"):  # type: ignore[no-untyped-def]  # a FakeWorkload
    return cloud.sites[uri(pb, kind, site)].workloads[name]


def test_members_join_by_entry_or_by_list_and_misfits_are_refused() -> None:
    pb = grouped()
    assert pb.group("app").members == ["cache", "web", "db"] and pb.group_of(pb.workloads[1], "cache") == "app"
    assert pb.max_freeze_ms("app") == 2000
    doc = yaml.safe_load(PLAYBOOK)
    doc["groups"] = [{"name": "app", "members": ["nope", "web"]}, {"name": "two", "members": ["web"]}]
    doc["workloads"][1].update(quiesce=True, hooks={"pre_freeze": [{"run": ["true"], "inside": True}]})
    with pytest.raises(PlaybookError) as err:
        parse_playbook(yaml.safe_dump(doc), "shop.yaml")
    said = "\n".join(err.value.problems)
    assert "'nope' is no workload entry's name" in said and "'web' is in group 'app' already" in said
    assert "quiesce freezes a VM's filesystems" in said and "only a VM's guest agent runs commands inside" in said


def test_a_group_is_frozen_together_cut_released_and_only_then_sent(cloud: FakeCloud, store: Store) -> None:
    pb = grouped()
    points = shipping.protect(pb, fake_drivers(cloud), store).points
    events = cloud.events
    last_freeze = max(i for i, e in enumerate(events) if e.startswith("freeze"))
    cuts = [i for i, e in enumerate(events) if e.startswith("cut")]
    thaws = [i for i, e in enumerate(events) if e.startswith("thaw")]
    sends = [i for i, e in enumerate(events) if e.startswith("send")]
    assert len(cuts) == len(thaws) == len(sends) == 3, events
    assert last_freeze < min(cuts) and max(cuts) < min(thaws) and max(thaws) < min(sends), events
    assert {p.cut for p in points} == {points[0].cut} and points[0].cut.startswith("app@")
    for p in points:
        assert p.complete and p.group == "app" and p.warning is None
        assert p.frozen_at <= p.cut_at <= p.frozen_at + timedelta(milliseconds=p.freeze_ms)
    assert {p.workload: p.consistency for p in points} == {
        "db": Consistency.APPLICATION, "cache": Consistency.FILESYSTEM, "web": Consistency.FILESYSTEM}
    assert store.freezes("shop") == []  # the journal is closed once every member is released
    assert all(w.frozen is None for s in cloud.sites.values() for w in s.workloads.values())


def test_each_member_ships_its_state_at_the_cut_not_at_the_send(cloud: FakeCloud, store: Store) -> None:
    """The application runs on between the release and the send; the points hold the cut's state."""
    pb = grouped()
    drivers = fake_drivers(cloud)
    original = drivers[VM].cut

    def cut_then_write(request, retention, held):  # type: ignore[no-untyped-def]  # the driver's own signature
        done = original(request, retention, held)
        workload(cloud, pb, VM, request.workload).counter += 1000  # after the cut: not in the point
        return done

    drivers[VM].cut = cut_then_write  # type: ignore[method-assign]  # a writer that runs on after the cut
    shipping.protect(pb, drivers, store)
    assert list(cloud.sites[uri(pb, VM, "b")].points["db"].values()) == [42]


def test_a_hook_quiesces_the_group_on_this_machine_with_the_run_context(cloud: FakeCloud, store: Store,
                                                                        tmp_path: Path) -> None:
    said = tmp_path / "said"
    script = (f"import os; open({str(said)!r}, 'a').write(os.environ['DRORCH_GROUP'] + ' ' + "
              "os.environ['DRORCH_MEMBERS'] + '\\n')")
    hooks = {"pre_freeze": [{"run": [sys.executable, "-c", script]}], "post_thaw": [{"run": ["true"]}]}
    pb = grouped(yaml.safe_dump({"groups": [{"name": "app", "members": ["cache", "web"], "hooks": hooks}]}))
    points = shipping.protect(pb, fake_drivers(cloud), store).points
    assert said.read_text() == "app db cache web\n"
    assert {p.consistency for p in points} == {Consistency.APPLICATION}
    failing = {"pre_freeze": [{"run": ["false"]}], "post_thaw": [{"run": [sys.executable, "-c", "exit(3)"]}]}
    pb = grouped(yaml.safe_dump({"groups": [{"name": "app", "members": ["cache", "web"], "hooks": failing}]}))
    points = shipping.protect(pb, fake_drivers(cloud), store).points
    assert {p.consistency for p in points} == {Consistency.FILESYSTEM}
    assert all("a pre_freeze hook failed (false: failed: exit 1)" in (p.warning or "") for p in points)
    assert all("exit(3): failed: exit 3" in (p.warning or "") for p in points)  # post_thaw, run while sending


def test_a_guest_agent_that_does_not_answer_gives_a_crash_consistent_point_said_with_exit_5(
        capsys: pytest.CaptureFixture[str], cloud: FakeCloud, store: Store, tmp_path: Path, fake_cli: None) -> None:
    pb_file = tmp_path / "shop.yaml"
    doc = yaml.safe_load(PLAYBOOK)
    doc["workloads"][0]["quiesce"] = True
    pb_file.write_text(yaml.safe_dump(doc))
    pb = parse_playbook(pb_file.read_text(), str(pb_file))
    workload(cloud, pb, VM, "db").agent = False
    code, out, _ = drorch(capsys, "protect", "ship", str(pb_file))
    assert code == 5, out
    assert "db" in out and "crash-consistent" in out and "the guest agent of db does not answer" in out
    db = next(p for p in store.points("shop") if p.workload == "db")
    assert db.complete and db.consistent is Consistency.CRASH and db.cut is None
    assert workload(cloud, pb, VM, "db").frozen is None and store.freezes("shop") == []
    code, out, _ = drorch(capsys, "protect", "status", "--points", str(pb_file))
    assert code == 0 and "crash" in out


def test_in_a_group_a_vm_whose_agent_refuses_is_paused_for_the_groups_instant(cloud: FakeCloud,
                                                                              store: Store) -> None:
    pb = grouped()
    workload(cloud, pb, VM, "db").agent = False
    points = shipping.protect(pb, fake_drivers(cloud), store).points
    db = next(p for p in points if p.workload == "db")
    assert db.consistency is Consistency.CRASH and db.cut == points[1].cut  # one instant still
    assert "its filesystems could not be frozen" in (db.warning or "")
    assert cloud.events.count("freeze db") == 1 and cloud.events.count("thaw db") == 1


def test_a_cut_that_outlasts_the_bound_is_released_by_the_watchdog_and_taken_again_crash_consistent(
        cloud: FakeCloud, store: Store) -> None:
    pb = grouped(max_freeze_ms=50)
    cloud.cut_delay_s = 0.12  # each cut (they run at once) outlasts the bound
    points = shipping.protect(pb, fake_drivers(cloud), store).points
    assert all(p.complete and p.consistency is Consistency.CRASH for p in points)
    assert all("held past max_freeze_ms (50 ms)" in (p.warning or "") for p in points)
    assert all(w.frozen is None for s in cloud.sites.values() for w in s.workloads.values())
    assert sorted(cloud.events[-9:-6]) == ["cut cache", "cut db", "cut web"]  # taken again, unfrozen, then sent
    assert all(p.freeze_ms is not None and p.freeze_ms < 120 for p in points)  # released at the bound


def test_a_member_that_fails_leaves_its_groups_cut_incomplete_and_restarts_use_the_last_whole_one(
        cloud: FakeCloud, store: Store, engine: Engine) -> None:
    pb = grouped()
    shipping.protect(pb, fake_drivers(cloud), store)
    for name, kind in (("db", VM), ("cache", CONTAINER), ("web", CONTAINER)):
        workload(cloud, pb, kind, name).counter = 77
    cloud.fail["cut web"] = "web's daemon did not answer"
    points = shipping.protect(pb, fake_drivers(cloud), store).points
    web = next(p for p in points if p.workload == "web")
    assert not web.complete and web.error == "web's daemon did not answer"
    assert all("group app's cut is incomplete: web (web's daemon did not answer)" in (p.warning or "")
               for p in points if p.complete)
    readiness.check(pb, fake_drivers(cloud), store)
    state = readiness.current(store, "shop")
    assert state is not None and not state.ready
    (mixed,) = [p for p in state.problems if p.startswith("group app")]
    assert "its members' newest points are not of one cut" in mixed and "a restart starts from its cut of" in mixed
    for kind in (VM, CONTAINER):
        cloud.sites[uri(pb, kind, "a")].reachable = False  # site a lost
    run = engine.operate(pb, "shop.yaml", "failover", "a", "b", disaster=True, confirmed=True)
    steps = {s.workload: s for s in store.steps(run.id or 0) if s.workload in ("db", "cache", "web")}
    assert all(s.state is StepState.SUCCEEDED for s in steps.values()), [s.error for s in steps.values()]
    cuts = {json.loads(s.detail or "{}").get("cut") for s in steps.values()}
    assert len(cuts) == 1 and None not in cuts  # all from the first cut, the newest whole one
    assert "from cut app@" in (steps["db"].outcome or "")
    assert workload(cloud, pb, VM, "db", "b").counter == 42  # not the 77 of the incomplete cut


def test_a_point_in_time_between_two_cuts_takes_every_member_from_the_earlier(cloud: FakeCloud,
                                                                             store: Store) -> None:
    pb = grouped()
    first = shipping.protect(pb, fake_drivers(cloud), store).points
    second = shipping.protect(pb, fake_drivers(cloud), store).points
    wanted = [("vm", "db"), ("container", "cache"), ("container", "web")]
    between = first[0].cut_at + (second[0].cut_at - first[0].cut_at) / 2
    chosen = point_choice.points_at(store.points("shop"), "b", between, wanted, point_choice.group_keys(pb, wanted))
    assert {p.cut for p in chosen.values()} == {first[0].cut}
    with pytest.raises(NoSuchPoint, match=r"group app has no cut on site b taken at or before .* its cuts: .*whole"):
        point_choice.points_at(store.points("shop"), "b", first[0].cut_at - timedelta(seconds=5), wanted,
                           point_choice.group_keys(pb, wanted))


def test_a_freeze_whose_process_died_is_released_by_the_next_command(cloud: FakeCloud, store: Store,
                                                                   tmp_path: Path) -> None:
    pb = grouped()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    workload(cloud, pb, VM, "db").frozen = Frozen.FILESYSTEMS
    store.save(OpenFreeze(playbook="shop", workload="db", kind="vm", site="a", host="a1", how="filesystems",
                          owner=f"{socket.gethostname()}:{dead.pid}", release_by=utcnow() + timedelta(hours=1)))
    alive = OpenFreeze(playbook="shop", workload="web", kind="container", site="a", host="a1", how="paused",
                       owner=owner(), release_by=utcnow() + timedelta(hours=1))
    store.save(alive)
    readiness.check(pb, fake_drivers(cloud), store)
    assert workload(cloud, pb, VM, "db").frozen is None
    assert [f.workload for f in store.freezes("shop")] == ["web"]  # its process lives, within its bound


def test_a_drill_of_a_group_clones_every_member_from_its_newest_whole_cut(cloud: FakeCloud, store: Store,
                                                                          engine: Engine) -> None:
    pb = grouped()
    first = shipping.protect(pb, fake_drivers(cloud), store).points
    for name, kind in (("db", VM), ("cache", CONTAINER), ("web", CONTAINER)):
        workload(cloud, pb, kind, name).counter = 77
    cloud.fail["cut cache"] = "cache's daemon did not answer"
    shipping.protect(pb, fake_drivers(cloud), store)  # db and web at 77, cache failed: an incomplete cut
    run = engine.drill(pb, "shop.yaml", hold_s=0)
    clones = [s for s in store.steps(run.id or 0) if s.workload in ("db", "cache", "web")]
    assert len(clones) == 3 and all(s.state is StepState.SUCCEEDED for s in clones), [s.error for s in clones]
    assert all(f"from cut {first[0].cut}" in (s.outcome or "") for s in clones), [s.outcome for s in clones]
    assert all(json.loads(s.detail or "{}")["point"]["name"].endswith("-count-42") for s in clones)
