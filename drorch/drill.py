"""DR drills: the playbook brought up on the secondary from its recovery points, in isolation, checked,
timed, and torn down, while the originals run on untouched.

A drill is a run like a failover: each clone is a step written before and after it acts, and a last
teardown step removes every clone and the drill's network, whatever happened before it. Clone and
network names follow from the run's id, so a drill that died at any point can be torn down later by
`clean_up`, which every drill and every daemon start call.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from drorch.drivers.base import Driver, Endpoint
from drorch.engine import Engine
from drorch.errors import DrorchError
from drorch.hooks import run_hooks
from drorch.host import run_alive
from drorch.live import Reporter, StepEvent
from drorch.planner import Action, PlanItem, disaster_plan
from drorch.playbook import Playbook, WorkloadKind
from drorch.playbook_file import load_playbook
from drorch.protection import points_at
from drorch.records import (
    DRILL,
    FINAL_RUN_STATES,
    RunState,
    StepKind,
    StepState,
    clone_name,
    naive,
    network_name,
    run_outcome,
    utcnow,
)
from drorch.sites import host_endpoint, snapshot
from drorch.store import Lock, RecoveryPoint, Run, Step, Store

POLL_SECONDS = 0.5
TEARDOWN = "drill clones"


def drill_key(playbook: str) -> str:
    """A drill's lock: one drill of a playbook at a time; failovers take other keys and are never held up."""
    return f"drill/{playbook}"


def _step(item: PlanItem, source: str, target: str, point: RecoveryPoint | None, now: datetime,
          chosen: bool) -> Step:
    drilled = item.action is Action.RESTART
    detail: dict[str, Any] = {}
    if point is not None:
        detail["point"] = {"taken_at": point.taken_at.isoformat(), "name": point.name, "chosen": chosen}
        detail["rpo_s"] = (naive(now) - naive(point.taken_at)).total_seconds()
    return Step(run_id=0, seq=item.seq, kind=item.kind, workload=item.workload, strategy=item.strategy,
                source_site=source, target_site=target, wave=item.wave, action=DRILL if drilled else item.action,
                to_host=item.to_host, outcome=None if drilled else item.reason, detail=json.dumps(detail))


class Drill:
    def __init__(self, store: Store, drivers: Mapping[WorkloadKind, Driver], report: Reporter | None = None,
                 stop: threading.Event | None = None) -> None:
        self.store = store
        self.drivers = drivers
        self.report = report or (lambda _e: None)
        self.stop = stop or threading.Event()  # set: clones not started yet are cancelled, the teardown still runs
        self.engine = Engine(store, drivers)
        self._write = threading.Lock()

    # --- a drill ------------------------------------------------------------------------------------------

    def run(self, pb: Playbook, playbook_path: str, hold_s: float | None = None,
            point_at: datetime | None = None) -> Run:
        """Clone, check and time every workload a disaster failover would start (from its points taken at or
        before `point_at`, or its newest), then tear it all down."""
        self.clean_up(pb.name)
        key = drill_key(pb.name)
        self.engine.locks.take([key], None)
        try:
            run, steps = self._record(pb, playbook_path, point_at)
        except BaseException:
            self.store.drop_lock(Lock(key=key, run_id=None, pid=os.getpid(), host=self.engine.host))
            raise
        self.store.hand_locks([key], run.id or 0)
        clones = [s for s in steps if s.kind != StepKind.TEARDOWN]
        try:
            self._clones(pb, run, clones)
            if any(s.state is StepState.SUCCEEDED for s in clones):
                self.stop.wait(pb.drill.hold_s if hold_s is None else hold_s)
        finally:
            self._teardown(pb, run, steps)
        return self._finish(run, steps)

    def _record(self, pb: Playbook, playbook_path: str, point_at: datetime | None) -> tuple[Run, list[Step]]:
        the_plan = disaster_plan(pb, snapshot(pb, self.drivers, brief=True), pb.primary, pb.secondary)
        points = points_at(self.store.points(pb.name), pb.secondary, point_at,
                           [(str(i.kind), i.workload) for i in the_plan.items if i.action is Action.RESTART])
        now = utcnow()
        steps = [_step(item, pb.primary, pb.secondary, points.get((str(item.kind), item.workload)), now,
                       point_at is not None) for item in the_plan.items]
        steps.append(Step(run_id=0, seq=0, kind=StepKind.TEARDOWN, workload=TEARDOWN, strategy="-",
                          source_site=pb.primary, target_site=pb.secondary, wave=StepKind.TEARDOWN))
        for seq, step in enumerate(steps, 1):
            step.seq = seq
        run = Run(operation=DRILL, mode=DRILL, playbook=pb.name, playbook_path=playbook_path,
                  source_site=pb.primary, target_site=pb.secondary, state=RunState.RUNNING, pid=os.getpid(),
                  host=self.engine.host, started_at=now)
        self.store.add_run(run, steps)
        return run, steps

    def _transition(self, run: Run, step: Step, total: int, state: StepState, **fields: object) -> None:
        with self._write:
            step.state = state
            if state is StepState.RUNNING:
                step.started_at = utcnow()
            else:
                step.ended_at = utcnow()
                step.started_at = step.started_at or step.ended_at
            for k, v in fields.items():
                setattr(step, k, v)
            self.store.save(step)
        self.report(StepEvent(run, step, total))

    def _clones(self, pb: Playbook, run: Run, clones: list[Step]) -> None:
        total = len(clones) + 1
        for wave in dict.fromkeys(s.wave or "" for s in clones):
            members = [s for s in clones if (s.wave or "") == wave]
            with ThreadPoolExecutor(max_workers=pb.parallel(wave), thread_name_prefix="drorch-drill") as pool:
                for fut in [pool.submit(self._clone, pb, run, s, total) for s in members]:
                    fut.result()

    def _clone(self, pb: Playbook, run: Run, step: Step, total: int) -> None:
        if step.action != DRILL:
            state = StepState.FAILED if step.action == Action.BLOCKED else StepState.SKIPPED
            self._transition(run, step, total, state, error=step.outcome if state is StepState.FAILED else None)
            return
        if self.stop.is_set():
            self._transition(run, step, total, StepState.CANCELLED, error="the drill was stopped before this clone")
            return
        kind = WorkloadKind(step.kind)
        driver, site = self.drivers[kind], host_endpoint(pb, step.target_site, step.to_host or "", kind)
        clone, network = clone_name(step.workload, run.id or 0), network_name(run.id or 0)
        detail = {**json.loads(step.detail or "{}"), "clone": clone, "network": network}
        self._transition(run, step, total, StepState.RUNNING, detail=json.dumps(detail))
        checks: list[dict[str, Any]] = []
        said = ""
        point = detail.get("point") or {}
        try:
            said = driver.clone(step.workload, clone, site, network, point.get("name") if point.get("chosen") else None)
            checks.append(self._running(driver, clone, site, pb.drill.check_timeout_s))
            if checks[-1]["ok"]:
                checks += self._hooks(pb, run, step, clone, network)
        except DrorchError as exc:
            checks.append({"check": "clone", "ok": False, "fatal": True, "said": str(exc)})
        detail["checks"] = checks
        failed = [c for c in checks if c["fatal"]]
        if failed:
            self._transition(run, step, total, StepState.FAILED, detail=json.dumps(detail),
                             error="; ".join(f"{c['check']}: {c['said']}" for c in failed))
        else:
            passed = sum(c["ok"] for c in checks)
            self._transition(run, step, total, StepState.SUCCEEDED, detail=json.dumps(detail),
                             outcome=f"{said}; {passed} of {len(checks)} checks passed")

    @staticmethod
    def _running(driver: Driver, clone: str, site: Endpoint, timeout: float) -> dict[str, Any]:
        """The first check: the clone is seen running on the site."""
        check = f"running on site {site.site}"
        deadline = time.monotonic() + timeout
        while True:
            info = driver.locate(clone, site)
            if info is not None and info.running:
                return {"check": check, "ok": True, "fatal": False, "said": ""}
            if time.monotonic() > deadline:
                why = "not found" if info is None else "not running"
                return {"check": check, "ok": False, "fatal": True, "said": f"{why} after {timeout:g} s"}
            time.sleep(POLL_SECONDS)

    @staticmethod
    def _hooks(pb: Playbook, run: Run, step: Step, clone: str, network: str) -> list[dict[str, Any]]:
        """The workload's checks marked `drill: true`; its other hooks may act on production and never run."""
        spec = pb.spec_of(WorkloadKind(step.kind), step.workload)
        hooks = [h for h in spec.hooks.after if h.drill] if spec else []
        env = {"DRORCH_RUN_ID": str(run.id), "DRORCH_MODE": DRILL, "DRORCH_DIRECTION": DRILL,
               "DRORCH_PLAYBOOK": run.playbook, "DRORCH_WAVE": step.wave or "", "DRORCH_WORKLOAD": step.workload,
               "DRORCH_KIND": step.kind, "DRORCH_SOURCE_SITE": step.source_site,
               "DRORCH_TARGET_SITE": step.target_site, "DRORCH_TARGET_HOST": step.to_host or "",
               "DRORCH_CLONE": clone, "DRORCH_DRILL_NETWORK": network, "DRORCH_HOOK_PHASE": "after"}
        return [{"check": r.hook.label, "ok": r.ok, "fatal": r.fatal, "said": r.message}
                for r in run_hooks(hooks, env)]

    # --- teardown -----------------------------------------------------------------------------------------

    def _teardown(self, pb: Playbook, run: Run, steps: list[Step]) -> None:
        """Remove every clone the drill may have made, then its networks; what cannot be removed is named."""
        step = next(s for s in steps if s.kind == StepKind.TEARDOWN)
        total = len(steps)
        self._transition(run, step, total, StepState.RUNNING)
        removed: list[str] = []
        left: list[str] = []
        networks: dict[tuple[WorkloadKind, str], Endpoint] = {}
        for s in steps:
            if s.action != DRILL:
                continue
            kind = WorkloadKind(s.kind)
            clone = clone_name(s.workload, run.id or 0)
            try:
                site = host_endpoint(pb, s.target_site, s.to_host or "", kind)
                networks[(kind, site.uri)] = site
                removed += self.drivers[kind].discard(clone, site)
            except (DrorchError, StopIteration) as exc:
                left.append(f"{s.kind} {clone} ({exc or 'its host is no longer in the playbook'})")
        for (kind, _uri), site in networks.items():
            network = network_name(run.id or 0)
            try:
                if self.drivers[kind].drop_network(network, site):
                    removed.append(f"{kind} network {network}")
            except DrorchError as exc:
                left.append(f"{kind} network {network} ({exc})")
        if left:
            self._transition(run, step, total, StepState.FAILED, error=f"left on site {run.target_site}: "
                             f"{', '.join(left)}", detail=json.dumps({"removed": removed}))
        else:
            self._transition(run, step, total, StepState.SUCCEEDED, detail=json.dumps({"removed": removed}),
                             outcome=f"removed {', '.join(removed)}" if removed else "nothing to remove")

    def _finish(self, run: Run, steps: list[Step]) -> Run:
        if any(s.state is StepState.CANCELLED for s in steps):
            run.state, run.error = RunState.ABORTED, "stopped before every clone was checked"
        else:
            # The clones decide: a drill none of whose clones came up failed, however clean its teardown was;
            # one whose teardown left something behind did not wholly pass.
            run.state = run_outcome(s.state for s in steps if s.kind != StepKind.TEARDOWN)
            if run.state is RunState.SUCCEEDED and any(s.state is StepState.FAILED for s in steps):
                run.state = RunState.PARTIAL
            failed = [s for s in steps if s.state is StepState.FAILED]
            run.error = f"{len(failed)} of {len(steps)} steps failed" if failed else None
        run.ended_at = utcnow()
        self.store.save(run)
        self.store.release_locks(run.id or 0)
        return run

    # --- what dead drills left ----------------------------------------------------------------------------

    def clean_up(self, playbook: str, gone: frozenset[str] = frozenset()) -> list[Run]:
        """Tear down drills whose process died, or whose teardown failed; returns the runs cleaned.
        `gone`: `host:pid` of daemons known to have stopped, on this machine or another."""
        cleaned = []
        for run in self.store.runs_of(DRILL, playbook):
            alive = run_alive(run.host, run.pid, self.engine.host) and f"{run.host}:{run.pid}" not in gone
            if run.state not in FINAL_RUN_STATES and alive:
                continue
            steps = self.store.steps(run.id or 0)
            if run.state in FINAL_RUN_STATES and all(s.state is StepState.SUCCEEDED for s in steps
                                                     if s.kind == StepKind.TEARDOWN):
                continue
            pb = load_playbook(Path(run.playbook_path))
            for s in steps:
                if s.state in (StepState.PENDING, StepState.RUNNING):
                    s.state, s.ended_at, s.error = StepState.CANCELLED, utcnow(), "the drill's process died"
                    self.store.save(s)
            self._teardown(pb, run, steps)
            if run.state not in FINAL_RUN_STATES:
                run.state, run.ended_at = RunState.FAILED, utcnow()
                run.error = f"interrupted (pid {run.pid} on {run.host} died); torn down by pid {os.getpid()}"
            self.store.save(run)
            self.store.release_locks(run.id or 0)
            cleaned.append(run)
        return cleaned
