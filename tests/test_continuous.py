"""Continuous protection: tiered retention (what the tiers keep, that thinning at each ship keeps exactly what they
would choose from every point ever taken, the store and the site keeping the same points), units shipped at once
within their bounds, and a ship still running never begun twice."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from drorch.drivers import fake
from drorch.drivers.fake import FakeCloud
from drorch.errors import ExitCode, PlaybookError
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import Operation, RunState
from drorch.model.retention import RetentionTier, kept
from drorch.recovery import shipping
from drorch.store.rows import Lock, Run
from drorch.store.sql_store import Store
from tests.support.cli import drorch
from tests.support.shop import PLAYBOOK, fake_drivers, uri

T0 = datetime(2026, 12, 1)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_each_tier_keeps_the_newest_point_of_each_of_its_periods() -> None:
    """Every point for 60 s, one per 60 s for 10 min, one per 10 min for an hour."""
    tiers = [RetentionTier(for_s=60), RetentionTier(every_s=60, for_s=600), RetentionTier(every_s=600, for_s=3600)]
    points = [(s, at(s)) for s in range(0, 3600, 15)]  # a point every 15 s for an hour
    chosen = kept(points, at(3585), 1, tiers)
    assert {s for s in chosen if s > 3525} == {3540, 3555, 3570, 3585}  # the last minute: all
    assert {s for s in chosen if 2985 < s <= 3525} == {s for s in range(3045, 3526, 60)}  # the newest of each minute
    assert {s for s in chosen if s <= 2985} == {585, 1185, 1785, 2385, 2985}  # the newest of each 10 minutes
    assert kept(points, at(3585), 3, []) == {3555, 3570, 3585}  # no tiers: the `keep` newest


def test_tiers_are_listed_from_the_youngest_points_to_the_oldest() -> None:
    base = yaml.safe_load(PLAYBOOK)
    base["protect"] = {"retention": [{"every_s": 60, "for_s": 600}, {"for_s": 60}]}
    with pytest.raises(PlaybookError, match=r"tier for 60 s comes after one for 600 s.*tier every 0 s keeps more"):
        parse_playbook(yaml.safe_dump(base), "shop.yaml")


ships = st.lists(st.floats(min_value=0.001, max_value=400, allow_nan=False), min_size=1, max_size=60)
tier_lists = st.lists(st.tuples(st.sampled_from([0, 1, 7, 30, 60, 600]), st.floats(1, 5000)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(ships, tier_lists, st.integers(1, 4))
def test_thinning_at_each_ship_keeps_what_the_tiers_choose_from_every_point(
        gaps: list[float], raw: list[tuple[int, float]], keep: int) -> None:
    """Whatever the ship times, points dropped earlier are never the ones the tiers would want now."""
    tiers = [RetentionTier(every_s=e, for_s=f) for e, f in raw]
    held: set[int] = set()
    times: dict[int, datetime] = {}
    now = T0
    for i, gap in enumerate(gaps):
        now += timedelta(seconds=gap)
        times[i] = now
        held = kept([(k, times[k]) for k in held | {i}], now, keep, tiers)
        assert held == kept(list(times.items()), now, keep, tiers)
        assert i in held  # the newest point always stays


def test_the_store_and_the_site_keep_the_tiers_choice(cloud: FakeCloud, store: Store) -> None:
    """Ships of the shop with tiers of fractions of a second: after each, the store's points and the fake site's
    are exactly what the tiers choose from every point taken."""
    pb = shop(keep=1, retention=[{"for_s": 0.3}, {"every_s": 0.5, "for_s": 3}])
    drivers = fake_drivers(cloud)
    taken: dict[str, datetime] = {}
    for _ in range(14):
        points = shipping.protect(pb, drivers, store).points
        point = next(p for p in points if p.workload == "db")
        assert point.name and point.cut_at
        taken[point.name] = point.cut_at
        chosen = kept(list(taken.items()), point.cut_at, 1, pb.protect.retention if pb.protect else [])
        recorded = {p.name for p in store.points("shop") if p.workload == "db"}
        on_site = set(cloud.sites[uri(pb, WorkloadKind.VM, "b")].points["db"])
        assert recorded == on_site == chosen
        time.sleep(0.12)
    assert 3 <= len(chosen) < len(taken)  # some thinned, some kept by each tier


def test_a_point_is_recorded_before_its_ship_thins_the_older_ones(cloud: FakeCloud, store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Thinning (a VM's merges take seconds) does not delay the point that the RPO counts from: when it runs the
    new point is in the store already, and what it dropped is said on that point's record."""
    pb = shop(keep=1)
    drivers = fake_drivers(cloud)
    shipping.protect(pb, drivers, store)
    recorded_at_thin: list[set[str | None]] = []
    thin = fake.FakeCut.thin

    def watched(cut: fake.FakeCut) -> str:
        recorded_at_thin.append({p.name for p in store.points("shop") if p.workload == "db"})
        return thin(cut)

    monkeypatch.setattr(fake.FakeCut, "thin", watched)
    db = next(p for p in shipping.protect(pb, drivers, store).points if p.workload == "db")
    assert any(db.name in names and len(names) == 2 for names in recorded_at_thin), recorded_at_thin
    (row,) = [p for p in store.points("shop") if p.workload == "db"]
    assert row.name == db.name and row.detail and row.detail.endswith("; 1 older points dropped"), row.detail
    assert [e for e in cloud.events if e.endswith(" db")][-2:] == ["send db", "thin db"]


def shop(site_b: int | None = None, **protect: object) -> Playbook:
    raw = yaml.safe_load(PLAYBOOK)
    raw["protect"] = protect
    if site_b:
        raw["sites"]["b"]["max_moves"] = site_b
    return Playbook.model_validate(raw)


@pytest.mark.parametrize("parallel, site_bound, at_once", [(3, None, 3), (1, None, 1), (4, 1, 1)])
def test_units_ship_at_once_within_parallel_and_the_sites_bounds(
        cloud: FakeCloud, store: Store, parallel: int, site_bound: int | None, at_once: int) -> None:
    pb = shop(site_bound, parallel=parallel)
    cloud.cut_delay_s = 0.3
    began = time.monotonic()
    done = shipping.protect(pb, fake_drivers(cloud), store)
    took = time.monotonic() - began
    assert [p.workload for p in done.points if p.complete] and len(done.points) == 3 and not done.skipped
    rounds = -(-3 // at_once)
    assert rounds * 0.3 <= took < rounds * 0.3 + 0.25, took


def test_a_unit_still_shipping_is_skipped_counted_and_said(cloud: FakeCloud, store: Store,
                                                          capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                                          fake_cli: None) -> None:
    """A ship of db still runs (its lock held by a live process): the next ship begins the others only; a lock
    left by a process that died is taken over."""
    host = socket.gethostname()
    assert store.take_locks(["ship/shop/vm/db"], None, os.getpid(), host) is None
    code, out, err = drorch(capsys, "protect", "ship", str(playbook_file))
    assert code == ExitCode.PARTIAL, (out, err)
    assert re.search(r"^SKIPPED: vm/db not shipped: its ship begun at \d\d:\d\d:\d\d UTC by pid \d+ on .+ still "
                     r"runs$", err, re.M), err
    assert "db" not in out and "cache" in out and "web" in out
    (skip,) = store.skipped_ships("shop")
    assert (skip.kind, skip.workload, skip.count) == ("vm", "db", 1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.drop_lock(Lock(key="ship/shop/vm/db", run_id=None, pid=os.getpid(), host=host))
    assert store.take_locks(["ship/shop/vm/db"], None, dead.pid, host) is None
    code, out, err = drorch(capsys, "protect", "ship", str(playbook_file))
    assert code == ExitCode.OK and "db" in out and "SKIPPED" not in err, (out, err)
    assert store.take_locks(["ship/shop/vm/db"], None, os.getpid(), host) is None  # let go once shipped


def test_the_daemons_protection_begins_due_units_without_waiting_and_never_twice(
        cloud: FakeCloud, store: Store, playbook_file: Path, fake_cli: None) -> None:
    """Each due time begins the units not still shipping and returns at once; one still shipping is skipped
    and counted; the plan is made again only when something could have changed it."""
    from drorch.recovery.continuous import Ended, Protector

    ended: list[Ended] = []
    protector = Protector(playbook_file, store, lambda _pb, s: ended.append(s))

    def ends(count: int) -> None:
        deadline = time.monotonic() + 5
        while len(ended) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(ended) == count

    cloud.cut_delay_s = 0.4
    try:
        began = time.monotonic()
        first = protector.tick()
        assert time.monotonic() - began < 0.3 and sorted(first.begun) == ["container/cache", "container/web",
                                                                         "vm/db"]
        assert first.planned_ms is not None
        second = protector.tick()  # all three still cutting
        assert second.begun == [] and len(second.skipped) == 3 and second.planned_ms is None
        assert all(re.fullmatch(r"\S+: its ship begun \d\.\d s ago still runs", s) for s in second.skipped)
        assert {(r.workload, r.count) for r in store.skipped_ships("shop")} == {("db", 1), ("cache", 1), ("web", 1)}
        ends(3)
        assert sorted(s.unit for s in ended) == ["container/cache", "container/web", "vm/db"]
        assert all(isinstance(s.points, list) and s.points[0].complete and s.took_s >= 0.4 for s in ended)
        cloud.cut_delay_s = 0
        cloud.fail["cut db"] = "the source host stopped answering"
        assert sorted(protector.tick().begun) == ["container/cache", "container/web", "vm/db"]
        ends(6)
        assert protector.tick().planned_ms is not None  # a unit failed: planned again
        ends(9)
        assert protector.tick().planned_ms is None  # nothing changed: the plan is reused
        ends(12)
        store.save(Run(playbook="shop", operation=Operation.FAILOVER, playbook_path=str(playbook_file), source_site="a",
                       target_site="b", state=RunState.SUCCEEDED, pid=1, host="h"))
        assert protector.tick().planned_ms is not None  # a run since: planned again
    finally:
        protector.close()
    assert len([p for p in store.points("shop") if p.workload == "db" and p.complete]) == 3  # the keep
