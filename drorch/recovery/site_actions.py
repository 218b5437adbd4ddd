"""The automatic takeover's actions at one site (recovery.sentinel.Actions), through the playbook's drivers and
the engine: a brief probe of the other site's hosts, this site's workloads stopped from inside, whether the
secondary could take over now, and the takeover itself as an ordinary journaled run marked automatic."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping

from drorch.drivers.base import Driver
from drorch.engine.fencing import Vouch
from drorch.engine.runner import Engine
from drorch.engine.steps_from_plan import plan_findings
from drorch.errors import DrorchError
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import Action, Operation
from drorch.plan.planner import disaster_plan
from drorch.reach import host_endpoint, probe, snapshot
from drorch.recovery.rpo import missing_points, rpo_status
from drorch.store.contract import StateStore
from drorch.store.rows import Run

log = logging.getLogger("drorch.daemon")


class SiteActions:
    def __init__(self, pb: Playbook, path: str, site: str, drivers: Mapping[WorkloadKind, Driver],
                 store: StateStore, engine: Engine) -> None:
        self.pb, self.path, self.site, self.drivers, self.store, self.engine = pb, path, site, drivers, store, engine
        self.other = pb.secondary if site == pb.primary else pb.primary
        self.probed: dict[str, str | None] = {}  # the other site's hosts at the last probe, and why each was silent
        self.runs: list[threading.Thread] = []

    def _mine(self) -> list[tuple[str, WorkloadKind, str, bool]]:
        """(host, kind, name, running) of the playbook's workloads this site's hosts hold; raises DrorchError
        naming a host of this site that does not answer."""
        snap = snapshot(self.pb, self.drivers, brief=True, sites=[self.site])
        silent = [e for inv in snap.hosts for e in inv.errors.values()]
        if silent:
            raise DrorchError("; ".join(silent))
        return [(inv.host, info.kind, info.name, info.running) for inv in snap.hosts for info in inv.workloads
                if self.pb.spec_of(info.kind, info.name, info.labels, site=self.site) is not None]

    def runs_here(self) -> bool:
        try:
            return any(running for *_, running in self._mine())
        except DrorchError:
            return False  # a host of its own that does not answer runs nothing this daemon could keep

    def runs_nothing_here(self) -> bool:
        try:
            return not any(running for *_, running in self._mine())
        except DrorchError:
            return False  # a silent host may run one

    def primary_answers(self) -> frozenset[str]:
        self.probed = probe(self.pb, self.drivers, self.other)
        return frozenset(host for host, why in self.probed.items() if why is None)

    def stop_here(self) -> tuple[bool, str]:
        stopped, failed = [], []
        try:
            for host, kind, name, running in self._mine():
                if running and self.drivers[kind].fence(name, host_endpoint(self.pb, self.site, host, kind)):
                    stopped.append(f"{kind} {name} on {host}")
        except DrorchError as exc:
            failed.append(str(exc))
        said = f"stopped {', '.join(stopped)}" if stopped else f"none of {self.pb.name}'s workloads runs here"
        return not failed, f"{said}; not stopped: {'; '.join(failed)}" if failed else said

    def fence(self) -> tuple[bool, str]:
        if self.pb.fencing.command:
            return True, f"the run's fence step runs {self.pb.fencing.command[0]} on each silent host"
        return False, f"no fencing.command, and site {self.other} did not say it stopped"

    def ready(self) -> tuple[bool, str]:
        """The disaster plan fits this site and passes its pre-flight, and the newest point of every workload it
        starts is whole and younger than max_rpo_s."""
        assert self.pb.auto_failover is not None
        try:
            snap = snapshot(self.pb, self.drivers, brief=True, sites=[self.site])
            the_plan = disaster_plan(self.pb, snap, self.other, self.site)
            problems = [f.message for f in plan_findings(self.pb, snap, the_plan, self.drivers) if f.error]
            kept = self.store.points(self.pb.name)
            rows = {(r.kind, r.workload): r for r in rpo_status(self.pb, kept, missing=missing_points(
                self.pb, self.drivers, kept)) if r.site == self.site}
        except DrorchError as exc:
            return False, str(exc)
        limit = self.pb.auto_failover.max_rpo_s
        ages = []
        for item in the_plan.items:
            if item.action in (Action.BLOCKED, Action.UNPLACED):
                problems.append(f"{item.kind} {item.workload}: {item.reason}")
            if item.action is not Action.RESTART:
                continue
            r = rows.get((str(item.kind), item.workload))
            if r is None or r.age_s is None:
                problems.append(f"{item.kind} {item.workload}: no recovery point on site {self.site}")
            elif r.missing:
                problems.append(f"{item.kind} {item.workload}: kept points not whole: {'; '.join(r.missing)}")
            elif r.age_s > limit:
                problems.append(f"{item.kind} {item.workload}: newest point {r.age_s:.0f} s old, over {limit:g} s")
            else:
                ages.append(r.age_s)
        if problems:
            return False, "; ".join(problems)
        return True, f"{len(ages)} workloads to start, newest points at most {max(ages, default=0):.0f} s old"

    def fail_over(self, why: list[tuple[str, bool, str]], vouched: str | None) -> int:
        """Recorded here, executed in a thread of its own: the sentinel's turns go on renewing the key."""
        run = self.engine.begin(self.pb, self.path, Operation.FAILOVER, self.other, self.site, True,
                                Vouch(why=vouched, automatic=json.dumps(why)))
        self.execute(run)
        return run.id or 0

    def execute(self, run: Run, resume: bool = False) -> None:
        def drive() -> None:
            try:
                if resume:
                    self.engine.resume(self.pb, run, owner_gone=True)
                else:
                    self.engine.execute(self.pb, run)
            except DrorchError as exc:  # the run's own record says how far it went
                log.warning(json.dumps({"playbook": self.pb.name, "run": run.id, "error": str(exc)}))
        thread = threading.Thread(target=drive, name=f"drorch-automatic-run-{run.id}")
        thread.start()
        self.runs = [t for t in self.runs if t.is_alive()] + [thread]
