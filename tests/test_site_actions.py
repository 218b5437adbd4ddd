"""The automatic takeover's actions at a site over the fake drivers: the probe of the other site, a stop from
inside, whether the secondary could take over now, and the automatic run it starts."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from drorch.drivers.fake import FakeCloud
from drorch.engine.runner import Engine
from drorch.errors import DrorchError
from drorch.model.playbook import Playbook
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import RunState
from drorch.recovery.shipping import protect
from drorch.recovery.site_actions import SiteActions
from drorch.store.sql_store import Store
from tests.support.shop import KINDS, auto_failover_playbook, fake_drivers, site_of, uri

GATES = [("key won", True, "held by me of site b")]


def at(site: str, pb: Playbook, cloud: FakeCloud, store: Store) -> SiteActions:
    drivers = fake_drivers(cloud)
    return SiteActions(pb, "shop.yaml", site, drivers, store, Engine(store, drivers, poll_seconds=0))


def lose(cloud: FakeCloud, pb: Playbook, site: str) -> None:
    for kind in KINDS:
        cloud.sites[uri(pb, kind, site)].reachable = False


def running(cloud: FakeCloud, pb: Playbook, site: str) -> list[str]:
    return [w.name or "" for w in pb.workloads if site in site_of(cloud, pb, w.kind, w.name or "")]


@pytest.fixture
def auto() -> Playbook:
    return parse_playbook(auto_failover_playbook(["true"]), "shop.yaml")


def test_each_site_sees_where_the_workloads_run_and_whether_the_other_answers(
        auto: Playbook, cloud: FakeCloud, store: Store) -> None:
    a, b = at("a", auto, cloud, store), at("b", auto, cloud, store)
    assert a.runs_here() and not b.runs_here()
    assert b.primary_answers() == {"a1"} and b.probed == {"a1": None}
    lose(cloud, auto, "a")
    assert b.primary_answers() == frozenset() and "does not answer" in (b.probed["a1"] or "")
    assert not a.runs_here()  # its own hosts silent: nothing it could keep running


def test_a_stop_from_inside_stops_every_workload_of_the_site(auto: Playbook, cloud: FakeCloud, store: Store) -> None:
    ok, said = at("a", auto, cloud, store).stop_here()
    assert ok and said.startswith("stopped ") and running(cloud, auto, "a") == []
    assert at("a", auto, cloud, store).stop_here() == (True, "none of shop's workloads runs here")
    lose(cloud, auto, "a")
    ok, said = at("a", auto, cloud, store).stop_here()
    assert not ok and "not stopped:" in said


def test_ready_needs_the_newest_points_younger_than_max_rpo(auto: Playbook, cloud: FakeCloud, store: Store) -> None:
    b = at("b", auto, cloud, store)
    ok, said = b.ready()
    assert not ok and "vm db: site b holds no copy of it to start from" in said
    protect(auto, fake_drivers(cloud), store)
    lose(cloud, auto, "a")
    assert b.ready() == (True, "3 workloads to start, newest points at most 0 s old")
    for p in store.points(auto.name):
        p.cut_at = p.instant.replace(tzinfo=UTC) - timedelta(seconds=1000)
        store.save(p)
    ok, said = b.ready()
    assert not ok and "over 900 s" in said


def test_the_takeover_is_an_automatic_disaster_run_fenced_by_its_own_step(
        auto: Playbook, cloud: FakeCloud, store: Store) -> None:
    protect(auto, fake_drivers(cloud), store)
    lose(cloud, auto, "a")
    b = at("b", auto, cloud, store)
    run_id = b.fail_over([*GATES, ("fenced", True, "by the run")], None)
    for thread in b.runs:
        thread.join(10)
    run = store.run(run_id)
    assert run.state is RunState.SUCCEEDED and run.mode == "disaster"
    assert json.loads(run.automatic or "") == [["key won", True, "held by me of site b"],
                                                ["fenced", True, "by the run"]]
    assert store.steps(run_id)[0].outcome == "no copy ran on the answering hosts (none); hosts a1 fenced by true"
    assert running(cloud, auto, "b") == ["db", "cache", "web"]


def test_without_a_fencing_command_only_the_primary_s_own_stop_vouches(cloud: FakeCloud, store: Store,
                                                                      tmp_path: Path) -> None:
    pb = parse_playbook(auto_failover_playbook(None), "shop.yaml")
    protect(pb, fake_drivers(cloud), store)
    lose(cloud, pb, "a")
    b = at("b", pb, cloud, store)
    assert b.fence() == (False, "no fencing.command, and site a did not say it stopped")
    with pytest.raises(DrorchError, match="site a cannot be fenced"):
        b.fail_over(GATES, None)
    run_id = b.fail_over(GATES, "stopped by site a itself at 10:00:00, as it told the witness")
    for thread in b.runs:
        thread.join(10)
    assert store.run(run_id).state is RunState.SUCCEEDED
    assert store.steps(run_id)[0].outcome == ("no copy ran on the answering hosts (none); hosts a1 stopped by "
                                              "site a itself at 10:00:00, as it told the witness")
