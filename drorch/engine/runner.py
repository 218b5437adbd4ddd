"""The engine: runs an operation as a persisted state machine, phase by phase (see drorch.engine).

Every step is a row written before and after it acts; a step first looks where its workload really is,
so a run that died halfway is continued by `resume` without moving anything twice. Locks in the store
keep a playbook and each workload in one running operation at a time, and outlive a crash.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from drorch.drivers.base import Driver, Progress
from drorch.engine._drill_steps import DrillWork, clone_step, drill_outcome, teardown_step
from drorch.engine._landing_check import lost, reopen, target_of, verify
from drorch.engine._locks import Locks, drill_key, playbook_key
from drorch.engine._step_actions import CONTROL_SECONDS, StepWork
from drorch.engine._waves import Waves
from drorch.engine.commit_window import commit
from drorch.engine.fencing import NO_VOUCH, FencingRequired, Vouch
from drorch.engine.live_run import LiveRun, Reporter, StepEvent
from drorch.engine.steps_from_plan import plan_findings, steps_for
from drorch.errors import PlanRefused, UsageError, WorkloadBusy
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import load_playbook
from drorch.model.records import (
    FINAL_RUN_STATES,
    FINAL_STEP_STATES,
    Action,
    Mode,
    Operation,
    RunState,
    StepKind,
    StepState,
    run_outcome,
    utcnow,
)
from drorch.model.run_settings import CommitDefault
from drorch.plan.inventory import Snapshot
from drorch.plan.planner import ACTING, Plan, disaster_plan, plan
from drorch.plan.preflight import Finding, refuse_errors
from drorch.process import run_alive
from drorch.reach import RunSites, snapshot
from drorch.recovery.freezes import release_orphans
from drorch.recovery.point_choice import group_keys, points_at
from drorch.store.contract import StateStore
from drorch.store.rows import Lock, Run, Step

POLL_SECONDS = 0.05


class Engine:
    def __init__(
        self,
        store: StateStore,
        drivers: Mapping[WorkloadKind, Driver],
        report: Reporter | None = None,
        poll_seconds: float | None = None,  # POLL_SECONDS
        kill_at: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.report = report or (lambda _e: None)
        self.host = socket.gethostname()
        self.kill_at = kill_at  # fault injection: SIGKILL this process at its kill_at-th step transition
        self._transitions = 0
        self.writing = threading.Lock()  # steps of a wave act in threads; their writes go one at a time
        self.stop = stop or threading.Event()  # set (a daemon stopping, a signal): steps not begun are cancelled
        self.locks = Locks(store, self.host)
        work = StepWork(store, self, self.report, POLL_SECONDS if poll_seconds is None else poll_seconds)
        self.drills = DrillWork(self)
        self.waves = Waves(self, work, self.drills)

    # --- the operations ---------------------------------------------------------------------------------------

    def operate(self, pb: Playbook, playbook_path: str, operation: Operation, source: str, target: str,
                disaster: bool = False, confirmed: bool = False,
                check: Callable[[list[Finding]], None] | None = None, point_at: datetime | None = None) -> Run:
        """A failover or failback: plan, pre-flight (`check` refuses on what it finds, the plan's errors without
        it), fence (a disaster), then the run recorded and executed."""
        run = self.begin(pb, playbook_path, operation, source, target, disaster, Vouch(confirmed), check, point_at)
        return self.execute(pb, run)

    def begin(self, pb: Playbook, playbook_path: str, operation: Operation, source: str, target: str,
              disaster: bool, vouch: Vouch, check: Callable[[list[Finding]], None] | None = None,
              point_at: datetime | None = None) -> Run:
        """Everything of `operate` before the steps act: the run recorded, its locks held, none of it executed."""
        with self.locks.claim(pb):
            the_plan, snap = self.plan(pb, source, target, disaster)
            if disaster:  # first: the reason a disaster cannot start at all is the one to say
                self.fence(pb, source, snap, vouch)
            self.preflight(pb, snap, the_plan, check)
            return self.start(pb, the_plan, playbook_path, operation, disaster, vouch, point_at)

    def drill(self, pb: Playbook, playbook_path: str, hold_s: float | None = None,
              point_at: datetime | None = None) -> Run:
        """Clone, check and time every workload a disaster failover would start (from its points taken at or
        before `point_at`, or its newest), then tear it all down. When every workload runs on the secondary
        already, the way back is drilled: clones on the primary from the points shipped there."""
        self.clean_up_drills(pb.name)
        release_orphans(pb, self.drivers, self.store)
        snap = snapshot(pb, self.drivers, brief=True)
        source, target = pb.primary, pb.secondary
        the_plan = disaster_plan(pb, snap, source, target)
        if the_plan.items and all(i.action == Action.ALREADY for i in the_plan.items):
            # Everything runs on the secondary already: what a disaster there would need is the way back.
            source, target = target, source
            the_plan = disaster_plan(pb, snap, source, target)
        wanted = [(str(i.kind), i.workload) for i in the_plan.items if i.action == Action.RESTART]
        points = points_at(self.store.points(pb.name), target, point_at, wanted, group_keys(pb, wanted))
        now = utcnow()
        steps = [clone_step(item, source, target, points.get((str(item.kind), item.workload)), now,
                            point_at is not None, pb.drill.addresses) for item in the_plan.items]
        steps.append(teardown_step(source, target, pb.drill.hold_s if hold_s is None else hold_s))
        for seq, step in enumerate(steps, 1):
            step.seq = seq
        run = Run(operation=Operation.DRILL, mode=Mode.DRILL, playbook=pb.name, playbook_path=playbook_path,
                  source_site=source, target_site=target, state=RunState.RUNNING, pid=os.getpid(),
                  host=self.host, started_at=now)
        self.record(run, steps, [drill_key(pb.name)])
        return self.execute(pb, run)

    # --- the phases before a run is recorded ------------------------------------------------------------------

    def plan(self, pb: Playbook, source: str, target: str, disaster: bool) -> tuple[Plan, Snapshot]:
        release_orphans(pb, self.drivers, self.store)  # a workload a killed ship left frozen is released first
        snap = snapshot(pb, self.drivers, brief=True)
        return (disaster_plan if disaster else plan)(pb, snap, source, target), snap

    def preflight(self, pb: Playbook, snap: Snapshot, the_plan: Plan,
                  check: Callable[[list[Finding]], None] | None) -> None:
        """What `validate` checks of the plan, the drivers' live pre-flight of every move included."""
        (check or refuse_errors)(plan_findings(pb, snap, the_plan, self.drivers))

    def fence(self, pb: Playbook, source: str, snap: Snapshot, vouch: Vouch) -> None:
        """Refuse a disaster failover that could leave a workload running on both sites: every host of the source
        that could run one of the playbook's workloads must answer (and is then fenced through its daemon, by
        the run's fence step), be fenced by the playbook's command, or be vouched for. Whatever the plan, the
        secondary or the store hold, a silent host is never taken for a fenced one."""
        kinds = pb.kinds_on(source)
        down = sorted({f"host {inv.host} ({'; '.join(e for k, e in inv.errors.items() if k in kinds)})"
                       for inv in snap.site(source) if kinds & inv.errors.keys()})
        if down and not vouch.vouches and pb.fencing.command is None:
            raise FencingRequired(
                f"site {source} cannot be fenced: {', '.join(down)} does not answer, so its copies may still "
                "run; confirm the site is down with --confirm-primary-down, or set fencing.command in the playbook")

    def start(self, pb: Playbook, the_plan: Plan, playbook_path: str, operation: Operation,
              disaster: bool = False, vouch: Vouch = NO_VOUCH, point_at: datetime | None = None) -> Run:
        """Record the run and its steps and take its workloads' locks (inside `claim`). A disaster restart
        starts from the points taken at or before `point_at`, recorded on its step; the newest when None."""
        if the_plan.problems:
            raise PlanRefused([msg for _loc, msg in the_plan.problems])
        restarts = [(str(i.kind), i.workload) for i in the_plan.items if i.action == Action.RESTART]
        groups = group_keys(pb, restarts)  # a group's members start from one cut, even without --point
        wanted = restarts if point_at is not None else list(groups)
        chosen = points_at(self.store.points(pb.name), the_plan.target, point_at, wanted, groups)
        run = Run(operation=operation, playbook=pb.name, playbook_path=playbook_path, source_site=the_plan.source,
                  target_site=the_plan.target, state=RunState.RUNNING, pid=os.getpid(), host=self.host,
                  mode=Mode.DISASTER if disaster else Mode.PLANNED, automatic=vouch.automatic)
        steps = steps_for(pb, the_plan, disaster)
        if disaster:
            steps[0].detail = json.dumps(vouch.detail())
        for step in steps:
            point = chosen.get((step.kind, step.workload)) if step.action == Action.RESTART else None
            if point is not None:
                step.detail = json.dumps({**step.details(), "point": point.name,
                                          "taken_at": point.taken_at.isoformat(), "cut": point.cut})
        keys = sorted({f"{i.kind}/{i.workload}" for i in the_plan.items if i.action in ACTING})
        return self.record(run, steps, keys, [playbook_key(pb)])

    def record(self, run: Run, steps: list[Step], keys: list[str], claimed: Sequence[str] = ()) -> Run:
        """The run and its steps written, and its locks: `keys` taken first (refused before anything is
        written), then handed to the run with those this process `claimed` before."""
        self.locks.take(keys, None)
        try:
            self.store.add_run(run, steps)
        except BaseException:
            for key in keys:
                self.store.drop_lock(Lock(key=key, run_id=None, pid=os.getpid(), host=self.host))
            raise
        assert run.id is not None
        self.store.hand_locks([*claimed, *keys], run.id)
        return run

    # --- the phases of a recorded run -------------------------------------------------------------------------

    def execute(self, pb: Playbook, run: Run) -> Run:
        """Drive the run's steps that are not final yet, wave after wave, then settle the run's state. A
        drill's clones are held up a while, and its teardown runs last, whatever happened before it."""
        live = LiveRun(pb, run, self.store.steps(run.id or 0), RunSites.of(pb, self.drivers))
        last = [s for s in live.steps if s.kind == StepKind.TEARDOWN and s.state not in FINAL_STEP_STATES]
        try:
            self.waves.run(live, [s for s in live.steps if s.kind != StepKind.TEARDOWN])
            if last and any(s.action == Action.DRILL and s.state is StepState.SUCCEEDED for s in live.steps):
                self.stop.wait(last[0].details().get("hold_s", 0))
        finally:
            for s in last:
                self.drills.teardown(live, s)
        return self._finish(live)

    def verify(self, live: LiveRun) -> None:
        """A run ends on facts, not on what it once saw: a moved workload no longer where its step put it fails
        that step."""
        for step, why in lost(live.sites, live.steps):
            self.transition(live, step, StepState.FAILED, error=why)

    def commit_window(self, live: LiveRun) -> bool:
        """A failover that moved its workloads waits for commit or rollback when the playbook has a window."""
        run, window = live.run, live.pb.commit
        if run.operation != Operation.FAILOVER or window is None or run.state not in (
                RunState.SUCCEEDED, RunState.SUCCEEDED_WITH_WARNINGS, RunState.PARTIAL):
            return False
        run.state = RunState.PENDING_COMMIT
        run.commit_deadline = utcnow() + timedelta(seconds=window.window_s)
        return True

    def _finish(self, live: LiveRun) -> Run:
        run, steps = live.run, live.steps
        if run.operation == Operation.DRILL:
            run.state, run.error = drill_outcome(steps)
        else:
            self.verify(live)
            run.state = self._outcome(live)
            failed = [s for s in steps if s.state is StepState.FAILED]
            run.error = f"{len(failed)} of {len(steps)} steps failed" if failed else None
        if not self.commit_window(live):
            run.ended_at = utcnow()
        self.store.save(run)
        if run.state is not RunState.PENDING_COMMIT:
            self.store.release_locks(run.id or 0)
        return run

    @staticmethod
    def _outcome(live: LiveRun) -> RunState:
        steps = live.steps
        if any(s.state is StepState.ROLLED_BACK for s in steps):
            back = [s for s in steps if s.action == Action.ROLLBACK]
            return RunState.ROLLED_BACK if all(s.state is StepState.SUCCEEDED for s in back) else RunState.FAILED
        if live.aborting.is_set():
            return RunState.ABORTED
        acting = [s for s in steps if s.action != Action.ROLLBACK]
        return run_outcome((s.state for s in acting), warned=any(s.warning for s in acting))

    # --- what the steps share ---------------------------------------------------------------------------------

    def abort_requested(self, live: LiveRun) -> bool:
        if not live.aborting.is_set() and (self.stop.is_set() or self.store.refresh(live.run).abort_requested):
            live.aborting.set()
        return live.aborting.is_set()

    def transition(self, live: LiveRun, step: Step, state: StepState, progress: Progress | None = None,
                   **fields: object) -> None:
        """Every change of a step's state is written before anything else happens."""
        with self.writing:
            step.state = state
            now = utcnow()
            if state is StepState.RUNNING:
                step.started_at, step.ended_at, step.error = now, None, None
            elif state in FINAL_STEP_STATES:
                step.ended_at = now
                step.started_at = step.started_at or now
            for k, v in fields.items():
                setattr(step, k, v)
            self.store.save(step)
            self._transitions += 1
            if self.kill_at is not None and self._transitions >= self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        self.report(StepEvent(live.run, step, len(live.steps), progress))

    def save(self, step: Step) -> None:
        with self.writing:
            self.store.save(step)

    # --- operator commands on a run ---------------------------------------------------------------------------

    def resume(self, pb: Playbook, run: Run, owner_gone: bool = False) -> Run:
        """Continue a run that was interrupted, failed or aborted: what is not done yet is done now. A running
        run's process must be gone: seen so here, or known so (`owner_gone`: a daemon whose heartbeat stopped)."""
        run_id = run.id or 0
        if run.operation == Operation.DRILL:
            raise UsageError(f"run {run_id} is a drill: the next drill, or a daemon taking the lead, tears it down")
        if run.state in (RunState.SUCCEEDED, RunState.SUCCEEDED_WITH_WARNINGS, RunState.ROLLED_BACK):
            raise UsageError(f"run {run_id} {run.state}: nothing to resume")
        if run.state is RunState.PENDING_COMMIT:
            raise UsageError(f"run {run_id} waits for drorch commit {run_id} or drorch rollback {run_id}")
        if run.state is RunState.RUNNING:
            if not owner_gone and run_alive(run.host, run.pid, self.host):
                raise WorkloadBusy(f"run {run_id} is still running (pid {run.pid} on {run.host})")
            self.store.adopt_locks(run_id, os.getpid(), self.host)
        else:
            self.locks.retake(pb, run_id)
        sites = RunSites.of(pb, self.drivers)
        for s in self.store.steps(run_id):
            if reopen(sites, s):
                self.store.save(s)
        run.state, run.pid, run.host, run.ended_at, run.error, run.abort_requested = (
            RunState.RUNNING, os.getpid(), self.host, None, None, None)
        self.store.save(run)
        return self.execute(pb, run)

    def abort(self, pb: Playbook, run: Run, wait_seconds: float = 600.0) -> Run:
        """Ask a running run to stop; a run whose process died is settled here against reality."""
        run_id = run.id or 0
        if run.state is RunState.PENDING_COMMIT:
            raise UsageError(f"run {run_id} has moved its workloads: drorch rollback {run_id} takes them back")
        if run.state is not RunState.RUNNING:
            raise UsageError(f"run {run_id} already ended: {run.state}")
        if run_alive(run.host, run.pid, self.host):
            run.abort_requested = True
            self.store.save(run)
            deadline = time.monotonic() + wait_seconds
            while time.monotonic() < deadline:
                run = self.store.run(run_id)
                if run.state is not RunState.RUNNING:
                    return run
                time.sleep(CONTROL_SECONDS)
            raise WorkloadBusy(f"run {run_id} was asked to abort and is still finishing its current steps")
        live = LiveRun(pb, run, self.store.steps(run_id), RunSites.of(pb, self.drivers))
        live.aborting.set()
        for s in live.steps:
            if s.state in FINAL_STEP_STATES:
                continue
            placed = target_of(live.sites, s)
            if placed is not None and not verify(placed[0], s.workload, placed[1]):
                self.transition(live, s, StepState.SUCCEEDED, outcome=f"found running on site {s.target_site}")
            else:
                self.transition(live, s, StepState.CANCELLED, error="the run was aborted")
        return self._finish(live)

    def rollback(self, pb: Playbook, run: Run) -> Run:
        """Take back what a pending (or ended) failover moved."""
        run_id = run.id or 0
        if run.state is RunState.RUNNING:
            raise WorkloadBusy(f"run {run_id} is running: drorch abort {run_id} first")
        if run.state is RunState.ROLLED_BACK:
            raise UsageError(f"run {run_id} was already rolled back")
        if run.state is not RunState.PENDING_COMMIT:
            self.locks.retake(pb, run_id)
        run.state, run.pid, run.host, run.ended_at = RunState.RUNNING, os.getpid(), self.host, None
        self.store.save(run)
        live = LiveRun(pb, run, self.store.steps(run_id), RunSites.of(pb, self.drivers))
        self.waves.rollback(live)
        return self._finish(live)

    def settle(self, pb: Playbook, run: Run) -> Run:
        """The window ended without a decision: the playbook's default decides."""
        default = pb.commit.default if pb.commit else CommitDefault.COMMIT
        return self.rollback(pb, run) if default is CommitDefault.ROLLBACK else commit(self.store, run.id or 0)

    def clean_up_drills(self, playbook: str, gone: frozenset[str] = frozenset()) -> list[Run]:
        """Tear down drills whose process died, or whose teardown failed; returns the runs cleaned.
        `gone`: `host:pid` of daemons known to have stopped, on this machine or another."""
        cleaned = []
        for run in self.store.runs_of(Operation.DRILL, playbook):
            alive = run_alive(run.host, run.pid, self.host) and f"{run.host}:{run.pid}" not in gone
            if run.state not in FINAL_RUN_STATES and alive:
                continue
            steps = self.store.steps(run.id or 0)
            teardown = [s for s in steps if s.kind == StepKind.TEARDOWN]
            if run.state in FINAL_RUN_STATES and all(s.state is StepState.SUCCEEDED for s in teardown):
                continue
            pb = load_playbook(Path(run.playbook_path))
            live = LiveRun(pb, run, steps, RunSites.of(pb, self.drivers))
            for s in steps:
                if s.state in (StepState.PENDING, StepState.RUNNING):
                    s.state, s.ended_at, s.error = StepState.CANCELLED, utcnow(), "the drill's process died"
                    self.store.save(s)
            for s in teardown:
                self.drills.teardown(live, s)
            if run.state not in FINAL_RUN_STATES:
                run.state, run.ended_at = RunState.FAILED, utcnow()
                run.error = f"interrupted (pid {run.pid} on {run.host} died); torn down by pid {os.getpid()}"
            self.store.save(run)
            self.store.release_locks(run.id or 0)
            cleaned.append(run)
        return cleaned
