"""The engine: runs an operation as a persisted state machine.

Every step is a row written before and after it acts; a step first looks where its workload really is,
so a run that died halfway is continued by `resume` without moving anything twice. Locks in the store
keep a playbook and each workload in one running operation at a time, and outlive a crash.

The engine decides when each step runs (waves, dependencies, limits, failure policies, rollback);
`step_work` is what a step does once it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from drorch.decisions import commit
from drorch.drill_work import DrillWork, drill_outcome
from drorch.drivers.base import Driver, Progress
from drorch.errors import DrorchError, PlanRefused, UsageError, WorkloadBusy
from drorch.host import run_alive
from drorch.inventory import Snapshot
from drorch.landing import lost, reopen, target_of, verify
from drorch.live import LiveRun, Reporter, StepEvent
from drorch.locks import Locks, playbook_key
from drorch.planner import ACTING, Action, Plan, disaster_plan, plan
from drorch.playbook import WORKLOAD_KINDS, Playbook, WorkloadKind
from drorch.playbook_runs import CommitDefault, FailurePolicy, Hooks
from drorch.preflight import Finding, refuse_errors
from drorch.protection import points_at
from drorch.records import DRILL, FINAL_STEP_STATES, ROLLBACK, RunState, StepKind, StepState, run_outcome, utcnow
from drorch.run_steps import FENCE_WAVE, plan_findings, rollback_steps, steps_for
from drorch.sites import RunSites, snapshot
from drorch.step_work import CONTROL_SECONDS, StepWork
from drorch.store import Lock, Run, Step, Store

POLL_SECONDS = 0.05


class FencingRequired(DrorchError):
    """A disaster failover cannot prove the source's copies are down."""


class Engine:
    def __init__(
        self,
        store: Store,
        drivers: Mapping[WorkloadKind, Driver],
        report: Reporter | None = None,
        poll_seconds: float = POLL_SECONDS,
        kill_at: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.drivers = drivers
        self.report = report or (lambda _e: None)
        self.host = socket.gethostname()
        self.kill_at = kill_at  # fault injection: SIGKILL this process at its kill_at-th step transition
        self._transitions = 0
        self._write = threading.Lock()
        self.stop = stop or threading.Event()  # set (a daemon stopping, a signal): steps not begun are cancelled
        self.locks = Locks(store, self.host)
        self.work = StepWork(store, self, self.report, poll_seconds)
        self.drills = DrillWork(self)

    # --- starting ----------------------------------------------------------------------------------------------

    def plan_for(self, pb: Playbook, source: str, target: str, disaster: bool) -> tuple[Plan, Snapshot]:
        snap = snapshot(pb, self.drivers, brief=True)
        return (disaster_plan if disaster else plan)(pb, snap, source, target), snap

    def check_fencing(self, pb: Playbook, source: str, snap: Snapshot, confirmed: bool) -> None:
        """Refuse a disaster failover that could leave a workload running on both sites: every host of the source
        that could run one of the playbook's workloads must answer (and is then fenced through its daemon), be
        fenced by the playbook's command, or be vouched for. Whatever the plan, the secondary or the store hold,
        a silent host is never taken for a fenced one."""
        kinds = pb.kinds_on(source)
        down = sorted({f"host {inv.host} ({'; '.join(e for k, e in inv.errors.items() if k in kinds)})"
                       for inv in snap.site(source) if kinds & inv.errors.keys()})
        if down and not confirmed and pb.fencing.command is None:
            raise FencingRequired(
                f"site {source} cannot be fenced: {', '.join(down)} does not answer, so its copies may still "
                "run; confirm the site is down with --confirm-primary-down, or set fencing.command in the playbook")

    def start(self, pb: Playbook, the_plan: Plan, playbook_path: str, operation: str,
              disaster: bool = False, confirmed: bool = False, point_at: datetime | None = None) -> Run:
        """Record the run and its steps and take its workloads' locks (inside `claim`). A disaster restart
        starts from the points taken at or before `point_at`, recorded on its step; the newest when None."""
        if the_plan.problems:
            raise PlanRefused([msg for _loc, msg in the_plan.problems])
        restarts = [(i.kind, i.workload) for i in the_plan.items if i.action is Action.RESTART]
        chosen = points_at(self.store.points(pb.name), the_plan.target, point_at,
                           [(str(k), w) for k, w in restarts]) if point_at is not None else {}
        run = Run(operation=operation, playbook=pb.name, playbook_path=playbook_path, source_site=the_plan.source,
                  target_site=the_plan.target, state=RunState.RUNNING, pid=os.getpid(), host=self.host,
                  mode="disaster" if disaster else "planned")
        steps = steps_for(pb, the_plan, disaster)
        if disaster:
            steps[0].detail = json.dumps({"confirmed": confirmed})
        for step in steps:
            point = chosen.get((step.kind, step.workload)) if step.action == Action.RESTART else None
            if point is not None:
                step.detail = json.dumps({**step.details(), "point": point.name,
                                          "taken_at": point.taken_at.isoformat()})
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

    def operate(self, pb: Playbook, playbook_path: str, operation: str, source: str, target: str,
                disaster: bool = False, confirmed: bool = False,
                check: Callable[[list[Finding]], None] | None = None, point_at: datetime | None = None) -> Run:
        """Plan and run a failover or failback. What `validate` checks of the plan (the drivers' live pre-flight of
        every move included) is found first; `check` refuses on it before anything is recorded, and without
        `check` the plan's errors refuse it."""
        with self.locks.claim(pb):
            the_plan, snap = self.plan_for(pb, source, target, disaster)
            if disaster:  # first: the reason a disaster cannot start at all is the one to say
                self.check_fencing(pb, source, snap, confirmed)
            findings = plan_findings(pb, snap, the_plan, self.drivers)
            (check or refuse_errors)(findings)
            run = self.start(pb, the_plan, playbook_path, operation, disaster, confirmed, point_at)
        return self.execute(pb, run)

    # --- driving a run ---------------------------------------------------------------------------------------

    def execute(self, pb: Playbook, run: Run) -> Run:
        """Drive the run's steps that are not final yet, wave after wave, then settle the run's state. A
        teardown runs last, whatever happened before it."""
        live = LiveRun(pb, run, self.store.steps(run.id or 0), RunSites.of(pb, self.drivers))
        last = [s for s in live.steps if s.kind == StepKind.TEARDOWN and s.state not in FINAL_STEP_STATES]
        try:
            self._waves(live, [s for s in live.steps if s.kind != StepKind.TEARDOWN])
            if last and any(s.action == DRILL and s.state is StepState.SUCCEEDED for s in live.steps):
                self.stop.wait(last[0].details().get("hold_s", 0))  # the clones stay up a while
        finally:
            for s in last:
                self.drills.teardown(live, s)
        return self._finish(live)

    def _waves(self, live: LiveRun, steps: list[Step]) -> None:
        pb, stop = live.pb, False
        for wave in dict.fromkeys(s.wave or "" for s in steps):
            members = [s for s in steps if (s.wave or "") == wave]
            if stop or self.abort_requested(live):
                self._cancel(live, members, "the run was aborted" if live.aborting.is_set() else
                             "an earlier wave failed and its policy stops the run")
                continue
            self._wave(live, members)
            if any(s.state is StepState.FAILED for s in members):
                policy = FailurePolicy.ABORT if wave == FENCE_WAVE else pb.wave(wave).on_failure
                if policy is FailurePolicy.ROLLBACK:
                    self._rollback(live)
                stop = policy is not FailurePolicy.CONTINUE

    def _finish(self, live: LiveRun) -> Run:
        run, steps = live.run, live.steps
        acting = [s for s in steps if s.action != ROLLBACK]
        for step, why in lost(live.sites, steps) if run.operation != DRILL else []:
            self.transition(live, step, StepState.FAILED, error=why)  # a run ends on facts, not on what it once saw
        if run.operation == DRILL:
            run.state, run.error = drill_outcome(steps)
        elif any(s.state is StepState.ROLLED_BACK for s in steps):
            back = [s for s in steps if s.action == ROLLBACK]
            run.state = RunState.ROLLED_BACK if all(s.state is StepState.SUCCEEDED for s in back) else RunState.FAILED
        elif live.aborting.is_set():
            run.state = RunState.ABORTED
        else:
            run.state = run_outcome((s.state for s in acting), warned=any(s.warning for s in acting))
        if run.operation != DRILL:
            failed = [s for s in steps if s.state is StepState.FAILED]
            run.error = f"{len(failed)} of {len(steps)} steps failed" if failed else None
        window = live.pb.commit
        if run.operation == "failover" and window and run.state in (
                RunState.SUCCEEDED, RunState.SUCCEEDED_WITH_WARNINGS, RunState.PARTIAL):
            run.state = RunState.PENDING_COMMIT
            run.commit_deadline = utcnow() + timedelta(seconds=window.window_s)
        else:
            run.ended_at = utcnow()
        self.store.save(run)
        if run.state is not RunState.PENDING_COMMIT:
            self.store.release_locks(run.id or 0)
        return run

    def abort_requested(self, live: LiveRun) -> bool:
        if not live.aborting.is_set() and (self.stop.is_set() or self.store.refresh(live.run).abort_requested):
            live.aborting.set()
        return live.aborting.is_set()

    def _cancel(self, live: LiveRun, steps: list[Step], why: str) -> None:
        for s in steps:
            if s.state not in FINAL_STEP_STATES:
                self.transition(live, s, StepState.CANCELLED, error=why)

    def transition(self, live: LiveRun, step: Step, state: StepState, progress: Progress | None = None,
                    **fields: object) -> None:
        """Every change of a step's state is written before anything else happens."""
        with self._write:
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
        with self._write:
            self.store.save(step)

    def _wave(self, live: LiveRun, members: list[Step]) -> None:
        moves = [s for s in members if s.kind in WORKLOAD_KINDS]
        before = [s for s in members if s not in moves and s.seq < min((m.seq for m in moves), default=1 << 30)]
        after = [s for s in members if s not in moves and s not in before]
        for s in before:
            if s.state not in FINAL_STEP_STATES:
                self.work.control(live, s)
            if s.state is not StepState.SUCCEEDED:
                self._cancel(live, moves + after, f"{s.workload} did not pass")
                return
        pending = [s for s in moves if s.state not in FINAL_STEP_STATES]
        for s in moves:
            live.done.setdefault(s.workload, threading.Event())
            if s.state in FINAL_STEP_STATES:
                live.done[s.workload].set()
        wave = members[0].wave or ""
        parallel = 1 if wave in (FENCE_WAVE, ROLLBACK) else live.pb.parallel(wave)
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="drorch-step")
        try:
            for fut in [pool.submit(self._workload_step, live, s) for s in pending]:
                fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an error stops the wave: what has not begun stays pending
        for s in after:
            if s.state not in FINAL_STEP_STATES:
                self.work.control(live, s)

    def _slots(self, live: LiveRun, step: Step) -> list[threading.Semaphore]:
        """Per-host and per-site limits on moves at once, in one order so that no two steps deadlock."""
        keys: dict[str, int] = {}
        for site, host in ((step.source_site, step.from_host), (step.target_site, step.to_host)):
            cfg = live.pb.sites.get(site)
            if cfg is None:
                continue
            if cfg.max_moves:
                keys[f"site/{site}"] = cfg.max_moves
            limit = next((h.max_moves for h in cfg.hosts if h.name == host), None)
            if limit:
                keys[f"host/{site}/{host}"] = limit
        with self._write:
            return [live.slots.setdefault(k, threading.Semaphore(n)) for k, n in sorted(keys.items())]

    def _workload_step(self, live: LiveRun, step: Step) -> None:
        if live.broken.is_set():
            return
        try:
            spec = live.pb.spec_of(WorkloadKind(step.kind), step.workload)
            deps = [d for d in (spec.depends_on if spec else []) if d in live.done]
            for d in deps:
                live.done[d].wait()
            broken = [d for d in deps if (ds := live.by_name(d)) is not None and ds.state is not StepState.SUCCEEDED]
            if self.abort_requested(live):
                self._cancel(live, [step], "the run was aborted")
            elif step.action in (Action.SKIP, Action.ALREADY, Action.BLOCKED):
                self.work.settled(live, step)
            elif step.action == DRILL:
                self.drills.clone(live, step)
            elif broken:
                self.transition(live, step, StepState.CANCELLED, error=f"depends on {', '.join(broken)}, "
                                 "which did not get there")
            else:
                slots = self._slots(live, step)
                with contextlib.ExitStack() as held:
                    for slot in slots:
                        held.enter_context(slot)
                    self.work.act(live, step, spec.hooks if spec else Hooks())
        except BaseException:
            live.broken.set()
            raise
        finally:
            live.done.setdefault(step.workload, threading.Event()).set()

    # --- rollback ----------------------------------------------------------------------------------------------

    def _rollback(self, live: LiveRun) -> None:
        """Move back, newest first, what this run moved; the originals are marked rolled back."""
        moved = [s for s in live.steps if s.action in ACTING and s.state is StepState.SUCCEEDED]
        backs = rollback_steps(live, moved)
        if not backs:
            return
        self.store.save(*backs)
        live.steps.extend(backs)
        live.done.clear()
        self._wave(live, backs)
        for back, orig in zip([b for b in backs if b.kind in WORKLOAD_KINDS], reversed(moved), strict=True):
            if back.state is StepState.SUCCEEDED:
                self.transition(live, orig, StepState.ROLLED_BACK, outcome=f"moved back by step {back.seq}")

    # --- operator commands on a run ---------------------------------------------------------------------------

    def resume(self, pb: Playbook, run_id: int) -> Run:
        """Continue a run that was interrupted, failed or aborted: what is not done yet is done now."""
        run = self.store.run(run_id)
        if run.operation == DRILL:
            raise UsageError(f"run {run_id} is a drill: the next drill, or a daemon taking the lead, tears it down")
        if run.state in (RunState.SUCCEEDED, RunState.SUCCEEDED_WITH_WARNINGS, RunState.ROLLED_BACK):
            raise UsageError(f"run {run_id} {run.state}: nothing to resume")
        if run.state is RunState.PENDING_COMMIT:
            raise UsageError(f"run {run_id} waits for drorch commit {run_id} or drorch rollback {run_id}")
        if run.state is RunState.RUNNING:
            if run_alive(run.host, run.pid, self.host):
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

    def abort(self, pb: Playbook, run_id: int, wait_seconds: float = 600.0) -> Run:
        """Ask a running run to stop; a run whose process died is settled here against reality."""
        run = self.store.run(run_id)
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

    def rollback(self, pb: Playbook, run_id: int) -> Run:
        """Take back what a pending (or ended) failover moved."""
        run = self.store.run(run_id)
        if run.state is RunState.RUNNING:
            raise WorkloadBusy(f"run {run_id} is running: drorch abort {run_id} first")
        if run.state is RunState.ROLLED_BACK:
            raise UsageError(f"run {run_id} was already rolled back")
        if run.state is not RunState.PENDING_COMMIT:
            self.locks.retake(pb, run_id)
        run.state, run.pid, run.host, run.ended_at = RunState.RUNNING, os.getpid(), self.host, None
        self.store.save(run)
        live = LiveRun(pb, run, self.store.steps(run_id), RunSites.of(pb, self.drivers))
        self._rollback(live)
        return self._finish(live)

    def settle(self, pb: Playbook, run: Run) -> Run:
        """The window ended without a decision: the playbook's default decides."""
        default = pb.commit.default if pb.commit else CommitDefault.COMMIT
        return self.rollback(pb, run.id or 0) if default is CommitDefault.ROLLBACK else commit(self.store, run.id or 0)

