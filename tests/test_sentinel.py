"""The sentinels of both sites over a fake witness and a fake world, turned every 2 s of a fake clock: a lost
primary is taken over once every gate held and only then; no other trouble makes a failover; a primary that
loses its quorum stops its workloads before the secondary could start them; never two sites running."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from drorch.errors import QuorumLost
from drorch.model.auto_failover import AutoFailover, Etcd, EtcdMember, OnLostQuorum
from drorch.recovery.sentinel import Role, Sentinel, Turn
from drorch.witness.fake_witness import FakeWitness
from drorch.witness.witness_base import Holding, Witness

T0 = datetime(2026, 12, 7, tzinfo=UTC)
SETTINGS = AutoFailover(etcd=Etcd(endpoints=[EtcdMember(url=f"https://e{p}:2379", site=p) for p in "abw"]),
                        after_s=20, acquire_after_s=10, lease_s=6)


@dataclass
class World:
    """Both sites as the sentinels see them: where the workloads run, which daemons can reach the witness's
    majority, whose hosts answer whom."""

    now: datetime = T0
    running: dict[str, bool] = field(default_factory=lambda: {"a": True, "b": False})
    reaches_quorum: dict[str, bool] = field(default_factory=lambda: {"a": True, "b": True})
    hosts_up: dict[str, bool] = field(default_factory=lambda: {"a": True, "b": True})
    cut: bool = False  # a and b cannot reach each other
    fence_works: bool = True
    ready: bool = True
    events: list[tuple[float, str]] = field(default_factory=list)
    both_ran: bool = False

    def at(self) -> float:
        return (self.now - T0).total_seconds()


class Reach(Witness):
    """The shared witness as one site's daemon reaches it."""

    def __init__(self, world: World, site: str, witness: FakeWitness) -> None:
        self.world, self.site, self.witness = world, site, witness

    def _ok(self) -> FakeWitness:
        if not self.world.reaches_quorum[self.site]:
            raise QuorumLost("no majority of the etcd cluster answered")
        return self.witness

    def holder(self, playbook: str) -> Holding | None:
        return self._ok().holder(playbook)

    def claim(self, playbook: str, site: str, daemon: str, lease_s: float) -> Holding:
        return self._ok().claim(playbook, site, daemon, lease_s)

    def renew(self, hold: Holding) -> bool:
        return self._ok().renew(hold)

    def release(self, hold: Holding) -> None:
        self._ok().release(hold)

    def say_stopped(self, playbook: str, site: str, at: datetime) -> None:
        self._ok().say_stopped(playbook, site, at)

    def stopped_at(self, playbook: str, site: str) -> datetime | None:
        return self._ok().stopped_at(playbook, site)


@dataclass
class Site:
    world: World
    site: str
    other: str

    def runs_here(self) -> bool:
        return self.world.running[self.site]

    def runs_nothing_here(self) -> bool:
        return self.world.hosts_up[self.site] and not self.world.running[self.site]

    def primary_answers(self) -> frozenset[str]:
        up = self.world.hosts_up[self.other] and not self.world.cut
        return frozenset({f"{self.other}1"}) if up else frozenset()

    def stop_here(self) -> tuple[bool, str]:
        if self.world.running[self.site]:
            self.world.events.append((self.world.at(), f"{self.site} stopped"))
        self.world.running[self.site] = False
        return True, "the workloads stopped"

    def fence(self) -> tuple[bool, str]:
        return self.world.fence_works, "by the run" if self.world.fence_works else "no fencing.command"

    def ready(self) -> tuple[bool, str]:
        return self.world.ready, "ready" if self.world.ready else "not ready: no point of db"

    def fail_over(self, why: list[tuple[str, bool, str]], vouched: str | None) -> int:
        """The run: its fence step first (the other site's own stop vouches, or the fence is made), then the
        restarts."""
        if vouched is None:
            self.world.events.append((self.world.at(), f"{self.other} fenced"))
            self.world.running[self.other] = False
        self.world.events.append((self.world.at(), f"failover to {self.site}"))
        self.world.running[self.site] = True
        return len(self.world.events)


def sentinels(world: World, *sites: str) -> tuple[FakeWitness, dict[str, Sentinel]]:
    witness = FakeWitness(clock=lambda: world.now)
    made = {}
    for name in sites:
        site = name[0]
        other = "b" if site == "a" else "a"
        made[name] = Sentinel("shop", site, other, SETTINGS, Reach(world, site, witness), Site(world, site, other),
                              f"{name}:1", lambda: world.now)
    return witness, made


def run(world: World, sentinels_: dict[str, Sentinel], seconds: float, alive: set[str] | None = None
        ) -> dict[str, list[Turn]]:
    """Turn every living sentinel every 2 s for `seconds`, checking that the workloads never run at both sites."""
    turns: dict[str, list[Turn]] = {n: [] for n in sentinels_}
    end = world.now + timedelta(seconds=seconds)
    while world.now < end:
        for name, s in sentinels_.items():
            if alive is None or name in alive:
                turns[name].append(s.turn())
        world.both_ran |= all(world.running.values())
        world.now += timedelta(seconds=2)
    return turns


def settled(world: World) -> tuple[World, dict[str, Sentinel]]:
    _, made = sentinels(world, "a", "b")
    turns = run(world, made, 10)
    assert turns["a"][-1].role is Role.ACTIVE and turns["b"][-1].role is Role.STANDBY
    return world, made


def test_a_lost_site_is_taken_over_once_after_its_silence_and_its_key_lasted() -> None:
    world, made = settled(World())
    lost_at = world.at()
    world.hosts_up["a"], world.running["a"], world.reaches_quorum["a"] = False, False, False
    turns = run(world, made, 60, alive={"b"})
    (failover,) = [t for t in turns["b"] if t.run is not None]
    when = next(at for at, what in world.events if what == "failover to b")
    assert lost_at + SETTINGS.after_s <= when <= lost_at + SETTINGS.after_s + SETTINGS.acquire_after_s + 4
    assert [g for g, ok, _ in failover.gates] == ["not paused", "key expired", "primary silent", "window",
                                                  "key won", "fenced", "ready"]
    assert all(ok for _, ok, _ in failover.gates) and world.running == {"a": False, "b": True}
    assert turns["b"][-1].role is Role.ACTIVE and not world.both_ran


@pytest.mark.parametrize("trouble", ["b cut from a, a reaching the witness", "a's daemon killed",
                                     "a back within after_s", "the witness lost a moment"])
def test_no_other_trouble_makes_a_failover(trouble: str) -> None:
    world, made = settled(World())
    alive = {"a", "b"}
    if trouble.startswith("b cut"):
        world.cut = True
    elif trouble == "a's daemon killed":
        alive = {"b"}  # its hosts answer on
    elif trouble == "a back within after_s":
        world.hosts_up["a"] = False
        run(world, made, 14)
        world.hosts_up["a"] = True
        run(world, made, 2)
        world.hosts_up["a"] = False
    else:
        world.reaches_quorum["b"] = False
        run(world, made, 4)
        world.reaches_quorum["b"] = True
    turns = run(world, made, 60 if trouble != "a back within after_s" else 16, alive=alive)
    assert not [e for e in world.events if e[1].startswith("failover")], (trouble, world.events, turns["b"][-1])
    assert world.running == {"a": True, "b": False}


def test_a_primary_cut_from_everyone_stops_its_workloads_before_the_secondary_starts_them() -> None:
    world = World()
    witness, made = sentinels(world, "a", "b")
    run(world, made, 10)
    world.reaches_quorum["a"], world.cut = False, True
    turns = run(world, made, 60)
    stopped = next(at for at, what in world.events if what == "a stopped")
    started = next(at for at, what in world.events if what == "failover to b")
    assert stopped < started and not world.both_ran
    assert turns["a"][-1].role is Role.CUT_OFF and world.running == {"a": False, "b": True}
    assert witness.stopped_at("shop", "a") is None  # not heard yet
    world.reaches_quorum["a"], world.cut = True, False
    turns = run(world, made, 4)
    assert witness.stopped_at("shop", "a") == T0 + timedelta(seconds=stopped)  # heard once a majority answers
    assert turns["a"][-1].role is Role.STALE


def test_with_on_lost_quorum_none_the_primary_only_says_so() -> None:
    world, made = settled(World())
    made["a"].settings = SETTINGS.model_copy(update={"on_lost_quorum": OnLostQuorum.NONE})
    world.reaches_quorum["a"] = False
    turns = run(world, made, 12, alive={"a"})
    assert world.running["a"] and any("on_lost_quorum is none, the workloads run on" in t.said for t in turns["a"])


def test_a_primary_that_returns_finds_the_key_taken_and_stays_stopped() -> None:
    world, made = settled(World())
    world.hosts_up["a"], world.reaches_quorum["a"] = False, False
    run(world, made, 40, alive={"b"})
    assert world.running["b"]
    world.hosts_up["a"], world.reaches_quorum["a"], world.running["a"] = True, True, True  # its guests came back
    made["a"].hold = None  # a new daemon
    turns = run(world, made, 6)
    assert turns["a"][-1].role is Role.STALE and world.running == {"a": False, "b": True}
    assert not [e for e in world.events if e[1] == "failover to a"]


def test_two_daemons_at_the_secondary_start_one_run() -> None:
    world = World()
    _, made = sentinels(world, "a", "b", "b2")
    run(world, made, 10)
    world.hosts_up["a"], world.running["a"], world.reaches_quorum["a"] = False, False, False
    turns = run(world, made, 60, alive={"b", "b2"})
    assert [what for _, what in world.events if what.startswith("failover")] == ["failover to b"]
    assert {turns["b"][-1].role, turns["b2"][-1].role} == {Role.ACTIVE}


@pytest.mark.parametrize(("fence_works", "ready", "held_back"), [(False, True, "fenced"), (True, False, "ready")])
def test_a_failed_fence_or_readiness_holds_the_key_and_starts_nothing_until_approved(
        fence_works: bool, ready: bool, held_back: str) -> None:
    world, made = settled(World(fence_works=fence_works, ready=ready))
    world.hosts_up["a"], world.reaches_quorum["a"], world.running["a"] = False, False, False
    turns = run(world, made, 40, alive={"b"})
    assert not world.running["b"]
    assert turns["b"][-1].said.startswith(f"key held, no failover: {held_back} ("), turns["b"][-1]
    assert turns["b"][-1].said.endswith("did not hold; drorch auto-failover approve shop goes on")
    made["b"].approved = (world.now - timedelta(hours=1), "ops")  # an approval older than the hold counts not
    assert not any(t.run for t in run(world, made, 4, alive={"b"})["b"]) and not world.running["b"]
    approved_at = made["b"].approved = (world.now, "ops")
    started = [t for t in run(world, made, 4, alive={"b"})["b"] if t.run]
    assert len(started) == 1 and world.running["b"]
    assert ("approved", True, f"by ops at {approved_at[0]:%H:%M:%S}") in started[0].gates
    assert (held_back, False) in [(g, ok) for g, ok, _ in started[0].gates]


def test_a_paused_sentinel_and_the_window_start_nothing() -> None:
    world, made = settled(World())
    made["b"].paused = True
    world.hosts_up["a"], world.reaches_quorum["a"], world.running["a"] = False, False, False
    turns = run(world, made, 40, alive={"b"})
    assert not world.running["b"] and "paused" in turns["b"][-1].said
    made["b"].paused, made["b"].last_automatic = False, world.now - timedelta(hours=1)
    turns = run(world, made, 10, alive={"b"})
    assert not world.running["b"] and "window" in turns["b"][-1].said


def test_a_failback_by_hand_while_paused_hands_the_key_to_the_site_that_runs_the_workloads() -> None:
    world, made = settled(World())
    world.hosts_up["a"], world.running["a"], world.reaches_quorum["a"] = False, False, False
    run(world, made, 60, alive={"b"})
    world.hosts_up["a"], world.reaches_quorum["a"] = True, True
    turns = run(world, made, 6)
    assert turns["a"][-1].role is Role.STALE and world.running == {"a": False, "b": True}
    for s in made.values():
        s.paused = True
    world.running = {"a": True, "b": False}  # drorch failback, by hand
    turns = run(world, made, 8)
    assert "the key let go" in turns["b"][0].said and turns["a"][-1].role is Role.ACTIVE
    for s in made.values():
        s.paused = False
    turns = run(world, made, 30)
    assert turns["a"][-1].role is Role.ACTIVE and turns["b"][-1].role is Role.STANDBY
    assert world.running == {"a": True, "b": False} and not world.both_ran
