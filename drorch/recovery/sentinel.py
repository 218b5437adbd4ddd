"""One daemon's part in a playbook's automatic failover, one turn at a time (the daemon turns it every third of
the lease).

At the active site it keeps the playbook's key, renewing its lease; when it cannot reach a majority before the
lease ends (as measured here, from when the last renewal was sent: never later than the witness's own end), it
does what `on_lost_quorum` says: `stop` stops the site's workloads through their daemons, a fence from inside,
and says so to the witness as soon as it can be heard. A site whose key another site holds keeps its workloads
stopped: it is stale, never failed back to on its own.

At the other site it watches the witness and probes every host of the primary itself; when every gate holds
(`model.takeover`), it wins the key in a majority transaction, fences, checks readiness and the age of the
newest points, and only then starts the failover. Any of these missing: it says which and acts no further.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from drorch.errors import DrorchError, QuorumLost
from drorch.model.auto_failover import AutoFailover, OnLostQuorum
from drorch.model.takeover import Gate, Sighting, Verdict, Watch, judge
from drorch.witness.witness_base import Holding, Witness


class Role(StrEnum):
    ACTIVE = "active"  # this site holds the key
    STANDBY = "standby"  # the other site holds it, or no one: watching
    STALE = "stale"  # the other site holds it while this site was active: its workloads stay stopped
    CUT_OFF = "cut off"  # no majority answers this daemon
    FAILED = "failed"  # the turn could not finish: said why


class Actions(Protocol):
    """What a turn may do beyond the witness, given by the daemon: each returns whether it held, and why."""

    def runs_here(self) -> bool:
        """The playbook's workloads run at this daemon's site."""

    def runs_nothing_here(self) -> bool:
        """Every host of this site answered, and none of the playbook's workloads runs here."""

    def primary_answers(self) -> frozenset[str]:
        """The hosts of the other site that answered a probe just now."""

    def stop_here(self) -> tuple[bool, str]:
        """This site's workloads of the playbook stopped."""

    def fence(self) -> tuple[bool, str]:
        """Whether the run's fence step can fence the other site's silent hosts (fencing.command), and how."""

    def ready(self) -> tuple[bool, str]:
        """Readiness passes, and the newest point of every workload is younger than max_rpo_s."""

    def fail_over(self, why: list[tuple[str, bool, str]], vouched: str | None) -> int:
        """The failover (disaster, newest points) started as an automatic run, `vouched` standing for the other
        site's silent hosts when it said it stopped; its id. Raises DrorchError when it cannot start."""


@dataclass
class Turn:
    """What one turn saw and did."""

    role: Role
    said: str
    gates: list[tuple[str, bool, str]] = field(default_factory=list)
    run: int | None = None


class Sentinel:
    def __init__(self, playbook: str, site: str, other: str, settings: AutoFailover, witness: Witness,
                 actions: Actions, identity: str, clock: Callable[[], datetime], takes_over: bool = True) -> None:
        self.playbook, self.site, self.other, self.settings = playbook, site, other, settings
        self.takes_over = takes_over  # the secondary's: the primary is never failed back to on its own
        self.witness, self.actions, self.identity, self.clock = witness, actions, identity, clock
        self.watch = Watch()
        self.hold: Holding | None = None
        self.renewed_at: datetime | None = None  # when the last renewal that succeeded was sent
        self.stopped = False  # this site's workloads were stopped by this sentinel
        self.unsaid: datetime | None = None  # when they were, not yet told to the witness
        self.paused = False
        self.last_automatic: datetime | None = None
        self.held: tuple[datetime, list[tuple[str, bool, str]]] | None = None  # a takeover held back at a gate
        self.approved: tuple[datetime, str] | None = None  # the operator's last approval, and who gave it

    def turn(self) -> Turn:
        now = self.clock()
        self._say_stopped()
        if self.hold is not None:
            return self._keep(now)
        try:
            hold = self.witness.holder(self.playbook)
        except QuorumLost as exc:
            self.watch.saw(Sighting(now, False, None, self.actions.primary_answers()))
            return Turn(Role.CUT_OFF, str(exc))
        if hold is not None and hold.site == self.site:
            return self._share(hold, now)
        if hold is not None:
            stale = self.stopped or not self.takes_over or self.actions.runs_here()
            return self._stale(hold) if stale else self._standby(hold, now)
        if self.actions.runs_here():
            return self._claim(now)
        return self._standby(None, now)

    def _stop(self) -> str:
        """This site's workloads stopped; the witness told so as soon as it hears (the other site's fence)."""
        ok, said = self.actions.stop_here()
        if ok and not self.stopped:
            self.stopped, self.unsaid = True, self.clock()
        return said

    def _say_stopped(self) -> None:
        if self.unsaid is None:
            return
        try:
            self.witness.say_stopped(self.playbook, self.site, self.unsaid)
        except QuorumLost:
            return  # said at a later turn
        self.unsaid = None

    def _keep(self, now: datetime) -> Turn:
        """Renew the key this daemon holds; on a lease that ends without a majority, do as on_lost_quorum says."""
        assert self.hold is not None
        try:
            if self.witness.renew(self.hold):
                self.renewed_at = now
                if self.paused and self.actions.runs_nothing_here():
                    return self._let_go(self.hold)
                if self.held is not None and self.approved is not None and self.approved[0] >= self.held[0]:
                    before = ("key won", *map(str, Gate))  # the gates a retry keeps; the rest are asked again
                    gates = [g for g in self.held[1] if g[0] in before]
                    with self._kept():
                        return self._start(now, gates)
                return Turn(Role.ACTIVE, "key renewed" if self.held is None else self._held_said())
            why = "the key's lease ended before it was renewed"
        except QuorumLost as exc:
            assert self.renewed_at is not None
            if now < self.renewed_at + timedelta(seconds=self.settings.lease_s):
                return Turn(Role.CUT_OFF, f"{exc}; the lease holds until "
                            f"{self.renewed_at + timedelta(seconds=self.settings.lease_s):%H:%M:%S}")
            why = f"{exc}, and the lease has ended"
        self.hold = None
        return self._lost(why)

    def _lost(self, why: str) -> Turn:
        if self.settings.on_lost_quorum is OnLostQuorum.NONE:
            return Turn(Role.CUT_OFF, f"{why}: on_lost_quorum is none, the workloads run on")
        return Turn(Role.CUT_OFF, f"{why}: {self._stop()}")

    def _share(self, hold: Holding, now: datetime) -> Turn:
        """Another daemon of this site holds the key: its lease renewed from here too, so that its death does
        not end the site's hold."""
        try:
            renewed = self.witness.renew(hold)
            if renewed and self.paused and self.actions.runs_nothing_here():
                return self._let_go(hold)
        except QuorumLost as exc:
            return Turn(Role.CUT_OFF, str(exc))
        self.watch = Watch()
        return Turn(Role.ACTIVE, f"key held by {hold.daemon} of this site" + ("" if renewed else ", just ended"))

    def _let_go(self, hold: Holding) -> Turn:
        """Paused, and the workloads run elsewhere (failed back by hand): the key goes to the site that runs them."""
        self.witness.release(hold)
        self.hold = None
        return Turn(Role.STANDBY, "paused, and none of the workloads runs here: the key let go for the site that "
                    "runs them")

    def _stale(self, hold: Holding) -> Turn:
        """The other site holds the key: this site's workloads are stopped and stay so (while paused, an operator
        at work, nothing is stopped)."""
        if self.paused:
            said = "paused: nothing stopped"
        else:
            said = self._stop() if self.actions.runs_here() else "the workloads stay stopped"
        return Turn(Role.STALE, f"site {hold.site} holds the key since {hold.since:%Y-%m-%d %H:%M:%S}: {said}")

    def _claim(self, now: datetime) -> Turn:
        hold = self.witness.claim(self.playbook, self.site, self.identity, self.settings.lease_s)
        if hold.site != self.site:
            return self._stale(hold)
        if hold.daemon == self.identity:
            self.hold, self.renewed_at, self.stopped = hold, now, False
            return Turn(Role.ACTIVE, "key taken")
        return self._share(hold, now)

    def _standby(self, hold: Holding | None, now: datetime) -> Turn:
        if not self.takes_over:
            return Turn(Role.STANDBY, f"site {self.site} is the primary: it is failed back to by hand only")
        self.watch.saw(Sighting(now, True, hold.site if hold else None, self.actions.primary_answers()))
        verdict = judge(self.watch, self.settings, now, self.paused, self.last_automatic)
        gates = [(str(g), ok, said) for g, ok, said in verdict.gates]
        if not verdict.go:
            return Turn(Role.STANDBY, f"waiting: {_waiting(verdict)}", gates)
        return self._take_over(now, gates)

    def _take_over(self, now: datetime, gates: list[tuple[str, bool, str]]) -> Turn:
        """Every gate held: the key won, the primary fenced, readiness and the points checked, then the run."""
        hold = self.witness.claim(self.playbook, self.site, self.identity, self.settings.lease_s)
        won = hold.site == self.site and hold.daemon == self.identity
        gates.append(("key won", won, f"held by {hold.daemon} of site {hold.site}"))
        if not won:
            return Turn(Role.STANDBY, "another daemon took the key", gates)
        self.hold, self.renewed_at = hold, now
        with self._kept():
            return self._start(now, gates)

    @contextlib.contextmanager
    def _kept(self) -> Iterator[None]:
        """The key renewed every third of its lease while the takeover's slow parts run (readiness, the run's
        plan and pre-flight): a turn may last longer than the lease."""
        done = threading.Event()

        def keep() -> None:
            while not done.wait(self.settings.lease_s / 3):
                hold = self.hold
                with contextlib.suppress(QuorumLost):
                    if hold is not None and self.witness.renew(hold):
                        self.renewed_at = self.clock()

        keeper = threading.Thread(target=keep, name=f"drorch-key-{self.playbook}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _start(self, now: datetime, gates: list[tuple[str, bool, str]]) -> Turn:
        """The key won: fenced (or the other site's own stop taken), ready, then the run. A takeover held back at a
        gate goes on once approved, the operator vouching for the other site's silent hosts."""
        approved = self.held is not None and self.approved is not None and self.approved[0] >= self.held[0]
        said_stop = self.witness.stopped_at(self.playbook, self.other)
        vouched = None
        if said_stop is not None and self.watch.silent_since is not None and said_stop >= self.watch.silent_since:
            vouched = f"stopped by site {self.other} itself at {said_stop:%H:%M:%S}, as it told the witness"
            gates.append(("fenced", True, vouched))
        else:
            gates.append(("fenced", *self.actions.fence()))
        fenced = gates[-1][1]
        if approved and self.approved is not None:
            by = f"{self.approved[1]} at {self.approved[0]:%H:%M:%S}"
            gates.append(("approved", True, f"by {by}"))
            vouched = vouched or f"declared down by {by} (drorch auto-failover approve)"
        if fenced or approved:
            gates.append(("ready", *self.actions.ready()))
        run = None
        if approved or all(ok for _, ok, _ in gates):
            try:
                run = self.actions.fail_over(gates, vouched)
            except DrorchError as exc:
                gates.append(("run started", False, str(exc)))
        if run is None:
            self.held = (now, gates)
            return Turn(Role.ACTIVE, self._held_said(), gates)
        self.held = None
        self.last_automatic = now
        return Turn(Role.ACTIVE, f"automatic failover started: run {run}", gates, run)

    def _held_said(self) -> str:
        assert self.held is not None
        failed = next(f"{g} ({said})" for g, ok, said in self.held[1] if not ok)
        return (f"key held, no failover: {failed} did not hold; drorch auto-failover approve {self.playbook} "
                "goes on")


def _waiting(verdict: Verdict) -> str:
    gate = verdict.waiting
    said = next(s for g, _, s in verdict.gates if g is gate)
    return f"{gate} ({said})" if gate is not Gate.NOT_PAUSED else said
