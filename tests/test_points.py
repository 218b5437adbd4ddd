"""Recovery points in time: chains of point volumes as a site's names say them, retention that never drops a
volume a kept point reads, and the choice of a point for a disaster restart or a drill (--point)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from drorch.drivers.fake import FakeCloud
from drorch.drivers.libvirt._vm_points import (
    PointVolume,
    base_volume,
    chain,
    intact,
    merges,
    needed,
    point_name,
    point_volumes,
    removable,
    stamp_of,
    superseded,
    volume_name,
)
from drorch.engine.runner import Engine
from drorch.errors import MoveFailed, NoSuchPoint
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import StepState, utcnow
from drorch.model.run_settings import Protect
from drorch.recovery import point_choice, shipping
from drorch.store.rows import RecoveryPoint
from drorch.store.sql_store import Store
from tests.support.cli import drorch
from tests.support.shop import PLAYBOOK, fake_drivers, uri

DISK = "db.qcow2"


def pool(*points: tuple[str, str | None]) -> list[str]:
    """A pool's volume names: the disk's points (time, parent) among other volumes."""
    return ["other.qcow2", "other.qcow2@point-1", DISK, *(volume_name(DISK, s, p) for s, p in points)]


def test_a_pool_says_each_point_and_what_it_builds_on() -> None:
    vols = point_volumes(pool(("1", None), ("2", "1"), ("3", "2"), ("4", None)), DISK)
    assert sorted(vols) == ["1", "2", "3", "4"]
    assert [v.stamp for v in chain(vols, "3")] == ["3", "2", "1"]
    assert chain(vols, "4") == [PointVolume(f"{DISK}@point-4", "4", None)]
    assert vols["3"].kind == "incremental" and vols["4"].kind == "full"
    assert base_volume(vols["3"].name) == DISK and stamp_of(point_name("2026")) == "2026"
    assert stamp_of("point20261130T1") == "20261130T1"  # as earlier versions named full points


def test_a_chain_missing_a_volume_is_named() -> None:
    vols = point_volumes(pool(("2", "1"), ("3", "2")), DISK)
    with pytest.raises(MoveFailed, match=r"point point-3 \(which builds on point-1\): the volume of point-1 is "
                                         "missing"):
        chain(vols, "3")
    assert not intact(vols, "3") and not intact(vols, "9")
    loop = {"1": PointVolume("a", "1", "2"), "2": PointVolume("b", "2", "1")}
    with pytest.raises(MoveFailed, match="in a loop"):
        chain(loop, "1")


def test_nothing_is_removed_from_a_pool_that_lists_a_kept_chain_with_a_gap() -> None:
    """A pool listed while a volume is missing from its list: what lies under the gap may be read."""
    whole = pool(("1", None), ("2", "1"), ("3", "2"), ("4", "3"))
    assert removable(whole, DISK, ["4", "2"]) == []  # 4 reads 3
    assert removable([*whole, volume_name(DISK, "3", "1")], DISK, ["4"]) == [volume_name(DISK, "3", "1")]
    assert removable(pool(("1", None), ("2", "1"), ("3", None)), DISK, ["3"]) == [
        volume_name(DISK, "1", None), volume_name(DISK, "2", "1")]
    with pytest.raises(MoveFailed, match="lists the chain of point-4 with a gap: no volume removed"):
        removable([n for n in whole if n != volume_name(DISK, "2", "1")], DISK, ["4"])


@given(st.lists(st.booleans(), min_size=1, max_size=30), st.integers(1, 10))
def test_retention_keeps_every_volume_a_kept_point_reads(fulls: list[bool], keep: int) -> None:
    """However fulls and increments alternate, the volumes kept are exactly those the kept points read."""
    points: list[tuple[str, str | None]] = []
    for i, full in enumerate(fulls):
        points.append((f"{i:04d}", None if full or not points else points[-1][0]))
    vols = point_volumes(pool(*points), DISK)
    kept = sorted(vols)[-keep:]
    names = needed(vols, kept)
    assert names == {v.name for s in kept for v in chain(vols, s)}
    oldest_read = chain(vols, kept[0])[-1].stamp  # chains only reach back in time
    assert all(vols[s].name not in names for s in vols if s < oldest_read)


def _points(store: Store, *minutes_ago: int, site: str = "b") -> list[RecoveryPoint]:
    now = utcnow()
    made = [RecoveryPoint(playbook="shop", workload="db", kind="vm", site=site, name=f"point-{m}",
                          taken_at=now - timedelta(minutes=m), point_kind="incremental", chain=2)
            for m in minutes_ago]
    store.add_points(made)
    return made


def test_a_point_in_time_is_the_newest_taken_at_or_before_it(store: Store) -> None:
    _points(store, 30, 20, 10)
    _points(store, 5, site="a")  # the other direction's points are not candidates
    kept = store.points("shop")
    now = utcnow()
    pick = point_choice.points_at
    assert pick(kept, "b", None, [("vm", "db")])[("vm", "db")].name == "point-10"
    assert pick(kept, "b", now - timedelta(minutes=15), [("vm", "db")])[("vm", "db")].name == "point-20"
    assert pick(kept, "b", now - timedelta(minutes=20), [("vm", "db")])[("vm", "db")].name == "point-20"
    assert pick(kept, "b", None, [("container", "web")]) == {}  # nothing kept: the site's own copy
    with pytest.raises(NoSuchPoint, match=r"vm db has no recovery point on site b taken at or before .* UTC; it "
                                          r"keeps: .*\(incremental\), .*\(incremental\), .*\(incremental\)"):
        pick(kept, "b", now - timedelta(hours=1), [("vm", "db")])


def test_a_disaster_restart_starts_from_the_point_asked_for(cloud: FakeCloud, store: Store, engine: Engine,
                                                            playbook: Playbook) -> None:
    """Three points of different counts; a disaster restart from the middle one runs with its count, and the
    step records which point it was."""
    playbook = playbook.model_copy(update={"protect": Protect(interval_s=60, keep=3)})
    vm = cloud.sites[uri(playbook, WorkloadKind.VM, "a")].workloads["db"]
    for count in (100, 200, 300, 400):
        vm.counter = count
        shipping.protect(playbook, fake_drivers(cloud), store)
    times = sorted(p.taken_at for p in store.points("shop") if p.workload == "db")
    held = cloud.sites[uri(playbook, WorkloadKind.VM, "b")].points["db"]
    assert len(times) == 3 and list(held.values()) == [200, 300, 400]  # the site keeps what the store lists
    cloud.sites[uri(playbook, WorkloadKind.VM, "a")].reachable = False
    run = engine.operate(playbook, "shop.yaml", "failover", "a", "b", disaster=True, confirmed=True,
                         point_at=times[1])
    step = next(s for s in store.steps(run.id or 0) if s.workload == "db")
    assert step.state is StepState.SUCCEEDED, step.error
    assert json.loads(step.detail or "{}")["point"].endswith("-count-300")
    assert cloud.sites[uri(playbook, WorkloadKind.VM, "b")].workloads["db"].counter == 300


def test_point_options_are_checked(capsys: pytest.CaptureFixture[str], playbook_file: Path, fake_cli: None) -> None:
    code, _, err = drorch(capsys, "failover", "--point", "2026-11-30T10:00:00", str(playbook_file))
    assert code == 2 and "--point goes with --disaster" in err
    code, _, err = drorch(capsys, "drill", "--point", "yesterday", str(playbook_file))
    assert code == 2 and "'yesterday' is neither a time like" in err


def test_a_drill_from_a_point_not_kept_lists_those_kept(capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                                        playbook: Playbook, cloud: FakeCloud, store: Store,
                                                        fake_cli: None) -> None:
    shipping.protect(playbook, fake_drivers(cloud), store)
    code, out, err = drorch(capsys, "drill", "--point", "2000-01-01T00:00:00", str(playbook_file))
    assert code == 2 and "has no recovery point on site b taken at or before 2000-01-01T00:00:00 UTC" in err
    code, out, _ = drorch(capsys, "protect", "status", "--points", str(playbook_file))
    line = r"^    \S+ UTC  full +128\.0 MiB, chain of 1  crash  point-000001-count-42$"
    assert code == 0 and re.search(line, out, re.M)


def test_a_lost_site_that_returns_has_its_stale_copies_named_and_pruned(
        capsys: pytest.CaptureFixture[str], playbook_file: Path, playbook: Playbook, cloud: FakeCloud, store: Store,
        engine: Engine, fake_cli: None) -> None:
    """Protect, lose site a, restart on b; a comes back holding stopped copies: status names them (and no
    shipped copy), prune removes them and nothing else."""
    shipping.protect(playbook, fake_drivers(cloud), store)
    code, out, _ = drorch(capsys, "status", str(playbook_file))
    assert code == 0 and "stale" not in out  # shipped copies on b are not stale
    home = cloud.sites[uri(playbook, WorkloadKind.VM, "a")]
    home.reachable = False
    engine.operate(playbook, "shop.yaml", "failover", "a", "b", disaster=True, confirmed=True)
    home.reachable = True
    for w in home.workloads.values():
        w.running = False  # the site went down with them
    code, out, _ = drorch(capsys, "status", str(playbook_file), "--json")
    stale = json.loads(out)["stale"]
    assert code == 0 and {(x["kind"], x["workload"], x["site"]) for x in stale} == {
        ("vm", "db", "a"), ("container", "cache", "a"), ("container", "web", "a")}
    code, out, _ = drorch(capsys, "status", str(playbook_file))
    assert "stale: site a host a1 holds a stale copy of vm db, which runs elsewhere: stopped vm db" in out
    code, out, _ = drorch(capsys, "prune", str(playbook_file))
    assert code == 0 and out.count("removed from site a host a1") == 3
    assert "db" not in home.workloads and cloud.sites[uri(playbook, WorkloadKind.VM, "b")].workloads["db"].running
    code, out, _ = drorch(capsys, "prune", str(playbook_file))
    assert out.strip() == "no stale copies"


def test_a_point_without_a_name_is_listed_without_one(capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                                      store: Store, fake_cli: None) -> None:
    """A redeployed container's point is its image and config: the store records no name for it."""
    store.add_points([RecoveryPoint(playbook="shop", workload="web", kind="container", site="b", size_bytes=0)])
    _, out, _ = drorch(capsys, "protect", "status", "--points", str(playbook_file))
    (row,) = [ln for ln in out.splitlines() if ln.startswith("    ")]
    assert "None" not in row and row.endswith("-"), row


def test_without_a_protect_section_the_documented_three_points_are_kept(
        capsys: pytest.CaptureFixture[str], playbook_file: Path, store: Store, fake_cli: None) -> None:
    for _ in range(4):
        assert drorch(capsys, "protect", "ship", str(playbook_file))[0] == 0
    kept = [(p.kind, p.workload) for p in store.points("shop") if p.complete]
    assert sorted(set(kept)) == [("container", "cache"), ("container", "web"), ("vm", "db")]
    assert all(kept.count(k) == 3 for k in set(kept)), kept


def test_a_protect_section_needs_no_interval(capsys: pytest.CaptureFixture[str], tmp_path: Path, store: Store,
                                             fake_cli: None) -> None:
    path = tmp_path / "keep.yaml"
    path.write_text(PLAYBOOK + "protect: {keep: 2}\n")
    for _ in range(3):
        assert drorch(capsys, "protect", "ship", str(path))[0] == 0
    code, out, _ = drorch(capsys, "protect", "status", str(path))
    assert code == 0 and out.count("2 kept") == 3 and "target" not in out, out


def test_after_a_dr_cycle_the_way_backs_points_are_history_out_of_rpo_and_metrics(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, store: Store, fake_cli: None) -> None:
    """Protect, fail over, reprotect the other way, fail back, protect: the points kept on site a for the way back
    are no longer what any workload's RPO is measured by, nor alerted on; they are listed as history."""
    path = tmp_path / "cycle.yaml"
    path.write_text(PLAYBOOK + "protect: {interval_s: 20}\n")
    for args in (["protect", "ship"], ["failover"], ["protect", "ship", "--failback"], ["failback"],
                 ["protect", "ship"]):
        assert drorch(capsys, *args, str(path))[0] == 0, args
    code, out, _ = drorch(capsys, "metrics", str(path))
    ages = [s for f in text_string_to_metric_families(out) for s in f.samples if s.name == "drorch_rpo_age_seconds"]
    assert code == 0 and {s.labels["site"] for s in ages} == {"b"} and len(ages) == 3
    code, out, _ = drorch(capsys, "protect", "status", "--points", str(path))
    current, history = out.split("history:")
    assert code == 0 and " site a:" not in current and current.count(" site b: ok ") == 3, out  # 2 points each:
    # the one before the cycle counts again once the workloads are protected towards b again
    assert history.count(" site a: kept ") == 3 and history.count(" UTC  full ") == 3, out
    code, out, _ = drorch(capsys, "protect", "status", "--points", "--json", str(path))
    rows = {(r["workload"], r["site"]): (r["history"], r["stale"], len(r["kept"])) for r in json.loads(out)}
    assert code == 0 and rows == {**{(w, "b"): (False, False, 2) for w in ("db", "cache", "web")},
                                  **{(w, "a"): (True, False, 1) for w in ("db", "cache", "web")}}, rows
    assert {p.site for p in store.points("shop") if p.retired_at is not None} == {"a"}


@given(st.lists(st.booleans(), min_size=1, max_size=25), st.data())
def test_thinning_merges_so_kept_points_read_only_kept_points_and_stay_whole_at_every_step(
        fulls: list[bool], data: st.DataObject) -> None:
    """Any points kept of any chain: the merges leave each kept point reading only kept points' volumes and its
    chain's full copy, and a merge cut short after any of its steps (copy made, committed, old volume removed)
    leaves every kept point reading what it read before."""
    points: list[tuple[str, str | None]] = []
    for i, full in enumerate(fulls):
        points.append((f"{i:04d}", None if full or not points else points[-1][0]))
    names = set(pool(*points))
    stamps = [s for s, _ in points]
    kept = {stamps[-1], *data.draw(st.sets(st.sampled_from(stamps)))}

    def reads(names: set[str]) -> dict[str, list[str]]:
        vols = point_volumes(names, DISK)
        return {s: [v.stamp for v in chain(vols, s)] for s in kept}

    def content(names: set[str]) -> dict[str, set[str]]:
        """What each kept point is made of: the points whose changes its chain holds."""
        vols = point_volumes(names, DISK)
        return {s: set().union(*(made_of.get(v.name, {v.stamp}) for v in chain(vols, s))) for s in kept}

    made_of: dict[str, set[str]] = {}
    before = content(names)
    for m in merges(point_volumes(names, DISK), kept):
        vols = point_volumes(names, DISK)
        new = volume_name(DISK, m.point, m.parent)
        merged = set().union(*(made_of.get(vols[s].name, {s}) for s in (m.point, *m.over, m.base)))
        names.add(new)  # the copy of the base, then the commit into it: the old volume is still read
        assert content(names) == before
        made_of[new] = merged
        names.discard(vols[m.point].name)  # the old volume removed: the merged one is read
        assert content(names) == before
    names -= set(removable(names, DISK, kept))
    assert superseded(names, DISK) == []
    assert content(names) == before
    vols = point_volumes(names, DISK)
    assert all(set(r) <= kept | {r[-1]} and vols[r[-1]].parent is None for r in reads(names).values())
    assert all(vols[s].parent is None for r in reads(names).values() for s in r if s not in kept)
