"""The daemon's part in automatic failover: for each playbook with `auto_failover`, a sentinel turned every third
of its lease in a thread of its own, whichever daemon leads the schedules (every daemon of a site renews its
site's key). Each turn is written to the store (`drorch auto-failover status`, the metrics) and logged when what
it says changes; an automatic run whose daemon died is taken up by another daemon of the site, once."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drorch.daemon.shutdown import stopping
from drorch.drivers import playbook_drivers
from drorch.engine.runner import Engine
from drorch.errors import DrorchError, QuorumLost, StoreError
from drorch.model.auto_failover import Etcd
from drorch.model.playbook import Playbook
from drorch.model.records import Operation, RunState, utcnow
from drorch.process import kill_at, run_alive
from drorch.recovery import readiness
from drorch.recovery.sentinel import Role, Sentinel, Turn
from drorch.recovery.site_actions import SiteActions
from drorch.store.rows import ReadinessCheck, Run
from drorch.store.sql_store import Store
from drorch.store.takeover_rows import SentinelTurn
from drorch.witness.etcd_witness import EtcdWitness
from drorch.witness.witness_base import Witness

log = logging.getLogger("drorch.daemon")
Event = Callable[..., None]


def set_paused(store: Store, playbook: str, on: bool, by: str) -> None:
    """`drorch auto-failover pause|resume`: read by every sentinel of the playbook at its next turn."""
    control = store.takeover_control(playbook)
    control.paused, control.paused_by = on, by if on else None
    store.replace(control)


def approve(store: Store, playbook: str, by: str) -> None:
    """`drorch auto-failover approve`: a takeover held back at a gate goes on, the operator vouching for it."""
    control = store.takeover_control(playbook)
    control.approved_at, control.approved_by = utcnow(), by
    store.replace(control)


class Watcher:
    """One playbook's sentinel at this daemon's site, in its own thread."""

    def __init__(self, path: Path, pb: Playbook, site: str, store: Store, identity: str, lease_s: float,
                 event: Event, witness: Callable[[Etcd], Witness] = EtcdWitness) -> None:
        assert pb.auto_failover is not None
        self.path, self.pb, self.site, self.store, self.identity = path, pb, site, store, identity
        self.settings, self.lease_s, self.event, self.witness = pb.auto_failover, lease_s, event, witness
        self.thread = threading.Thread(target=self._run, name=f"drorch-sentinel-{pb.name}")
        self._last = ""

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def _run(self) -> None:
        other = self.pb.secondary if self.site == self.pb.primary else self.pb.primary
        witness = self.witness(self.settings.etcd)
        try:
            with playbook_drivers(self.pb) as drivers:
                actions = SiteActions(self.pb, str(self.path), self.site, drivers, self.store,
                                      Engine(self.store, drivers, stop=stopping, kill_at=kill_at()))
                sentinel = Sentinel(self.pb.name, self.site, other, self.settings, witness, actions, self.identity,
                                    lambda: datetime.now(UTC), takes_over=self.site == self.pb.secondary)
                while True:
                    self._turn(sentinel, actions)
                    if stopping.wait(self.settings.lease_s / 3):
                        break
                for run in actions.runs:
                    run.join()  # a run under way ends its current steps (it watches `stopping`)
        finally:
            witness.close()

    def _turn(self, sentinel: Sentinel, actions: SiteActions) -> None:
        try:
            control = self.store.takeover_control(self.pb.name)
            sentinel.paused = control.paused
            sentinel.approved = None if control.approved_at is None else (
                control.approved_at.replace(tzinfo=UTC), control.approved_by or "an operator")
            automatic = [r for r in self.store.runs_of(Operation.FAILOVER, self.pb.name) if r.automatic]
            sentinel.last_automatic = max((r.started_at.replace(tzinfo=UTC) for r in automatic), default=None)
            self._take_up(actions, automatic)
        except StoreError as exc:
            self.event("state store unavailable", playbook=self.pb.name, error=str(exc))
        actions.probed = {}  # what this turn's probe finds, if it probes
        try:
            turn = sentinel.turn()
        except QuorumLost as exc:
            turn = Turn(Role.CUT_OFF, str(exc))
        except DrorchError as exc:
            turn = Turn(Role.FAILED, f"the turn failed: {exc}")
        except Exception as exc:  # a bug: said and logged with its traceback, and the next turn tried
            log.exception("sentinel turn of %s failed", self.pb.name)
            turn = Turn(Role.FAILED, f"the turn failed: {type(exc).__name__}: {exc}")
        self._record(turn, actions)

    def _record(self, turn: Turn, actions: SiteActions) -> None:
        gates = [[g, ok, said] for g, ok, said in turn.gates]
        silent = {h: why for h, why in actions.probed.items() if why}
        row = SentinelTurn(daemon=self.identity, playbook=self.pb.name, site=self.site, role=str(turn.role),
                           decision=decision(turn), said=turn.said,
                           gates=json.dumps({"gates": gates, "silent": silent}))
        try:
            self.store.replace(row)
        except StoreError as exc:
            self.event("state store unavailable", playbook=self.pb.name, error=str(exc))
        shape = f"{turn.role} {re.sub(r'[0-9]+', 'N', turn.said)}"
        if shape == self._last and turn.run is None:
            return
        self._last = shape
        told = None
        if row.decision == "held":  # told as readiness is told: the playbook's command and webhook
            told = readiness.alert(self.pb, ReadinessCheck(playbook=self.pb.name, ready=False,
                                                           problems=json.dumps([f"automatic failover: {turn.said}"])))
        self.event("auto-failover", playbook=self.pb.name, site=self.site, role=str(turn.role),
                   said=turn.said, gates=gates or None, run=turn.run, alert=told)

    def _take_up(self, actions: SiteActions, automatic: list[Run]) -> None:
        """An automatic run towards this site whose daemon is gone is resumed here: by one daemon, the one
        whose lease on it the store grants first."""
        running = [r for r in automatic if r.state is RunState.RUNNING and r.target_site == self.site]
        gone = self.store.gone_daemons() if running else frozenset()  # asked only when there is a run to judge
        for run in running:
            owner = f"{run.host}:{run.pid}"
            if owner == self.identity or (owner not in gone and run_alive(run.host, run.pid, socket.gethostname())):
                continue
            # Held while the run is taken up, until its pid names this daemon; one that died doing it lets go.
            if self.store.lease(f"resume:{run.id}", self.identity, timedelta(seconds=max(60.0, 3 * self.lease_s)),
                                gone):
                self.event("auto-failover", playbook=self.pb.name, site=self.site,
                           said=f"taking up automatic run {run.id}: its daemon {owner} is gone")
                actions.execute(run, resume=True)


def decision(turn: Turn) -> str:
    """What the turn decided, for the metrics and their alerts."""
    if turn.run is not None:
        return "failed over"
    if turn.role is Role.ACTIVE and not all(ok for _, ok, _ in turn.gates):
        return "held"
    return str(turn.role)


def watchers(playbooks: dict[Path, Playbook], site: str | None, store: Store, identity: str, lease_s: float,
             event: Event) -> list[Watcher]:
    """A watcher per playbook with auto_failover whose sites include `site`; the others are said once."""
    made = []
    for path, pb in playbooks.items():
        if pb.auto_failover is None:
            continue
        if site is None or site not in pb.sites:
            event("auto-failover not armed", playbook=pb.name,
                  why="the daemon was started without --site" if site is None else f"the playbook has no site {site}")
            continue
        made.append(Watcher(path, pb, site, store, identity, lease_s, event))
    return made
