"""The daemon's sentinels over the real SQLite store, the fake drivers and a fake witness: which playbooks are
armed, what each turn records, and a lost primary taken over by the secondary's watcher in real time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drorch.daemon.sentinels import Watcher, decision, watchers
from drorch.daemon.shutdown import stopping
from drorch.drivers.fake import FakeCloud
from drorch.engine.fencing import Vouch
from drorch.engine.runner import Engine
from drorch.model.playbook import Playbook
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import Operation, RunState
from drorch.recovery.sentinel import Role, Turn
from drorch.recovery.shipping import protect
from drorch.recovery.site_actions import SiteActions
from drorch.store.sql_store import Store
from drorch.witness.fake_witness import FakeWitness
from tests.support.runs import Crash, crash_at, interrupted
from tests.support.shop import KINDS, PLAYBOOK, auto_failover_playbook, fake_drivers, site_of, uri

Said = list[tuple[str, dict[str, object]]]


@pytest.fixture
def said() -> Said:
    return []


@pytest.fixture
def stop_after() -> Iterator[None]:
    """The daemon's stop signal clear while the test runs (a test before may have left it set), and after."""
    stopping.clear()
    yield
    stopping.clear()


def test_only_playbooks_with_auto_failover_at_the_daemon_s_site_are_armed(tmp_path: Path, store: Store,
                                                                          said: Said) -> None:
    auto = parse_playbook(auto_failover_playbook(["true"]), "shop.yaml")
    plain = parse_playbook(PLAYBOOK.replace("name: shop", "name: plain"), "plain.yaml")
    books = {tmp_path / "shop.yaml": auto, tmp_path / "plain.yaml": plain}

    def event(what: str, **fields: object) -> None:
        said.append((what, fields))

    assert watchers(books, None, store, "h:1", 3, event) == []
    assert said == [("auto-failover not armed", {"playbook": "shop",
                                                 "why": "the daemon was started without --site"})]
    assert watchers(books, "c", store, "h:1", 3, event) == [] and said[-1][1]["why"] == "the playbook has no site c"
    assert [w.site for w in watchers(books, "b", store, "h:1", 3, event)] == ["b"]


def test_a_turn_s_decision() -> None:
    assert decision(Turn(Role.ACTIVE, "automatic failover started: run 3", [("ready", True, "")], 3)) == "failed over"
    assert decision(Turn(Role.ACTIVE, "key held, no failover", [("key won", True, ""), ("ready", False, "")])) == "held"
    assert decision(Turn(Role.STANDBY, "waiting")) == "standby"


def test_the_secondary_s_watcher_takes_a_lost_primary_over_and_records_each_turn(
        fake_cli: None, cloud: FakeCloud, store: Store, tmp_path: Path, said: Said, stop_after: None) -> None:
    text = auto_failover_playbook(["true"], after_s=2, acquire_after_s=0, lease_s=2)
    path = tmp_path / "shop.yaml"
    path.write_text(text)
    pb: Playbook = parse_playbook(text, str(path))
    protect(pb, fake_drivers(cloud), store)
    witness = FakeWitness(lambda: datetime.now(UTC))
    witness.claim("shop", "a", "h:1", 2)  # site a's daemon, lost with its site: never renewed
    for kind in KINDS:
        cloud.sites[uri(pb, kind, "a")].reachable = False
    watcher = Watcher(path, pb, "b", store, "h:2", 3, lambda what, **f: said.append((what, f)),
                      witness=lambda _settings: witness)
    watcher.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ([r for r in store.runs() if r.state is RunState.SUCCEEDED] and [
            t for t in store.sentinel_turns("shop") if t.said == "key renewed"]):
        time.sleep(0.1)
    stopping.set()
    watcher.join()
    (run,) = store.runs_of(Operation.FAILOVER, "shop")
    assert run.state is RunState.SUCCEEDED and run.mode == "disaster" and json.loads(run.automatic or "")
    assert [w.name for w in pb.workloads if "b" in site_of(cloud, pb, w.kind, w.name or "")] == ["db", "cache", "web"]
    (turn,) = store.sentinel_turns("shop")
    assert (turn.daemon, turn.site, turn.role) == ("h:2", "b", "active")
    assert json.loads(turn.gates)["silent"] == {}  # the last turn renewed the key; it probed nothing
    started = [f for what, f in said if what == "auto-failover" and f.get("run")]
    assert len(started) == 1 and started[0]["said"] == f"automatic failover started: run {run.id}"


AUTOMATIC_BOUNDARIES = 8  # the fence and three restarts, each recorded before and after it acts


@pytest.mark.parametrize("n", range(1, AUTOMATIC_BOUNDARIES + 1))
def test_an_automatic_run_whose_daemon_died_at_any_boundary_is_taken_up_once_by_another(
        cloud: FakeCloud, tmp_path: Path, n: int) -> None:
    """The deciding daemon dies at the run's nth step transition; two other daemons of the site see it gone at
    their next turns: one of them resumes it, once, and every workload runs on b once."""
    store = Store(f"sqlite:///{tmp_path / 'drorch.db'}")
    pb = parse_playbook(auto_failover_playbook(["true"]), "shop.yaml")
    protect(pb, fake_drivers(cloud), store)
    for kind in KINDS:
        cloud.sites[uri(pb, kind, "a")].reachable = False
    decider = SiteActions(pb, "shop.yaml", "b", fake_drivers(cloud), store,
                          Engine(store, fake_drivers(cloud), report=crash_at(n), poll_seconds=0))
    run = decider.engine.begin(pb, "shop.yaml", Operation.FAILOVER, "a", "b", True,
                               Vouch(automatic=json.dumps([["key won", True, "h:1"]])))
    with pytest.raises(Crash):
        decider.engine.execute(pb, run)
    interrupted(store, run.id or 0)
    others = [(Watcher(Path("shop.yaml"), pb, "b", store, f"h:{i}", 3, lambda *_a, **_f: None),
               SiteActions(pb, "shop.yaml", "b", fake_drivers(cloud), store,
                           Engine(store, fake_drivers(cloud), poll_seconds=0))) for i in (2, 3)]
    for watcher, actions in others:
        watcher._take_up(actions, store.runs_of(Operation.FAILOVER, "shop"))
    for _, actions in others:
        for thread in actions.runs:
            thread.join(10)
    assert [len(actions.runs) for _, actions in others] == [1, 0]
    assert store.run(run.id or 0).state is RunState.SUCCEEDED
    assert [w.name for w in pb.workloads if "b" in site_of(cloud, pb, w.kind, w.name or "")] == ["db", "cache", "web"]
    assert store.run_locks(run.id or 0) == []


def test_a_daemon_that_died_taking_a_run_up_lets_the_next_take_it_at_once(cloud: FakeCloud, tmp_path: Path) -> None:
    """The daemon that took a run up died before it finished (its lease on the run still long): once it is known
    gone, the next daemon of the site takes the run up, not a minute later."""
    store = Store(f"sqlite:///{tmp_path / 'drorch.db'}")
    pb = parse_playbook(auto_failover_playbook(["true"]), "shop.yaml")
    protect(pb, fake_drivers(cloud), store)
    for kind in KINDS:
        cloud.sites[uri(pb, kind, "a")].reachable = False
    engine = Engine(store, fake_drivers(cloud), poll_seconds=0)
    run = engine.begin(pb, "shop.yaml", Operation.FAILOVER, "a", "b", True,
                       Vouch(automatic=json.dumps([["key won", True, "h:1"]])))
    interrupted(store, run.id or 0)
    assert store.lease(f"resume:{run.id}", "h:2", timedelta(seconds=60))  # h:2 took it up, then died
    store.heartbeat("h:2", leader=False, lease_s=3)
    watcher = Watcher(Path("shop.yaml"), pb, "b", store, "h:3", 3, lambda *_a, **_f: None)
    actions = SiteActions(pb, "shop.yaml", "b", fake_drivers(cloud), store, engine)
    watcher._take_up(actions, store.runs_of(Operation.FAILOVER, "shop"))
    assert actions.runs == []  # h:2 still counts as alive: its lease holds
    store.heartbeat("h:2", leader=False, stopped=True)
    watcher._take_up(actions, store.runs_of(Operation.FAILOVER, "shop"))
    for thread in actions.runs:
        thread.join(10)
    assert len(actions.runs) == 1 and store.run(run.id or 0).state is RunState.SUCCEEDED
