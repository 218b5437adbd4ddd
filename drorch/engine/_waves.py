"""The waves phase: a run's steps driven wave after wave, each wave's moves in parallel within their limits, and
a failed wave's policy applied (continue, stop, or roll back what the run moved)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from drorch.engine._drill_steps import DrillWork
from drorch.engine._step_actions import StepWork
from drorch.engine.live_run import LiveRun, Transitions
from drorch.engine.steps_from_plan import FENCE_WAVE, ROLLBACK_WAVE, rollback_steps
from drorch.model.playbook import WORKLOAD_KINDS, WorkloadKind
from drorch.model.records import FINAL_STEP_STATES, Action, StepState
from drorch.model.run_settings import FailurePolicy, Hooks
from drorch.plan.planner import ACTING
from drorch.store.contract import StateStore
from drorch.store.rows import Step


class Machine(Transitions, Protocol):
    """What the waves need of the engine that drives them."""

    store: StateStore


class Waves:
    def __init__(self, engine: Machine, work: StepWork, drills: DrillWork) -> None:
        self.engine = engine
        self.work = work
        self.drills = drills

    def run(self, live: LiveRun, steps: list[Step]) -> None:
        """Each wave in turn; one that failed stops, continues or rolls back the run, as its policy says."""
        pb, stop = live.pb, False
        for wave in dict.fromkeys(s.wave or "" for s in steps):
            members = [s for s in steps if (s.wave or "") == wave]
            if stop or self.engine.abort_requested(live):
                self.cancel(live, members, "the run was aborted" if live.aborting.is_set() else
                            "an earlier wave failed and its policy stops the run")
                continue
            self.wave(live, members)
            if any(s.state is StepState.FAILED for s in members):
                policy = FailurePolicy.ABORT if wave == FENCE_WAVE else pb.wave(wave).on_failure
                if policy is FailurePolicy.ROLLBACK:
                    self.rollback(live)
                stop = policy is not FailurePolicy.CONTINUE

    def cancel(self, live: LiveRun, steps: list[Step], why: str) -> None:
        for s in steps:
            if s.state not in FINAL_STEP_STATES:
                self.engine.transition(live, s, StepState.CANCELLED, error=why)

    def wave(self, live: LiveRun, members: list[Step]) -> None:
        """The wave's hooks and approvals before its moves, its moves in parallel, then what comes after them."""
        moves = [s for s in members if s.kind in WORKLOAD_KINDS]
        before = [s for s in members if s not in moves and s.seq < min((m.seq for m in moves), default=1 << 30)]
        after = [s for s in members if s not in moves and s not in before]
        for s in before:
            if s.state not in FINAL_STEP_STATES:
                self.work.control(live, s)
            if s.state is not StepState.SUCCEEDED:
                self.cancel(live, moves + after, f"{s.workload} did not pass")
                return
        pending = [s for s in moves if s.state not in FINAL_STEP_STATES]
        for s in moves:
            live.done.setdefault(s.workload, threading.Event())
            if s.state in FINAL_STEP_STATES:
                live.done[s.workload].set()
        wave = members[0].wave or ""
        parallel = 1 if wave in (FENCE_WAVE, ROLLBACK_WAVE) else live.pb.parallel(wave)
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="drorch-step")
        try:
            for fut in [pool.submit(self._workload_step, live, s) for s in pending]:
                fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an error stops the wave: what has not begun stays pending
        for s in after:
            if s.state not in FINAL_STEP_STATES:
                self.work.control(live, s)

    def _workload_step(self, live: LiveRun, step: Step) -> None:
        if live.broken.is_set():
            return
        try:
            spec = live.pb.spec_of(WorkloadKind(step.kind), step.workload)
            deps = [d for d in (spec.depends_on if spec else []) if d in live.done]
            for d in deps:
                live.done[d].wait()
            broken = [d for d in deps if (ds := live.by_name(d)) is not None and ds.state is not StepState.SUCCEEDED]
            if self.engine.abort_requested(live):
                self.cancel(live, [step], "the run was aborted")
            elif step.action in (Action.SKIP, Action.ALREADY, Action.BLOCKED):
                self.work.settled(live, step)
            elif step.action is Action.DRILL:
                self.drills.clone(live, step)
            elif broken:
                self.engine.transition(live, step, StepState.CANCELLED, error=f"depends on {', '.join(broken)}, "
                                       "which did not get there")
            else:
                ends = ((step.source_site, step.from_host), (step.target_site, step.to_host))
                with live.slots.held(live.pb.move_limits(ends)):
                    self.work.act(live, step, spec.hooks if spec else Hooks())
        except BaseException:
            live.broken.set()
            raise
        finally:
            live.done.setdefault(step.workload, threading.Event()).set()

    def rollback(self, live: LiveRun) -> None:
        """Move back, newest first, what this run moved; the originals are marked rolled back."""
        moved = [s for s in live.steps if s.action in ACTING and s.state is StepState.SUCCEEDED]
        backs = rollback_steps(live, moved)
        if not backs:
            return
        self.engine.store.save(*backs)
        live.steps.extend(backs)
        live.done.clear()
        self.wave(live, backs)
        for back, orig in zip([b for b in backs if b.kind in WORKLOAD_KINDS], reversed(moved), strict=True):
            if back.state is StepState.SUCCEEDED:
                self.engine.transition(live, orig, StepState.ROLLED_BACK, outcome=f"moved back by step {back.seq}")
