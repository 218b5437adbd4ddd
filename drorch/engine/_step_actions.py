"""What one step does once the engine lets it start: a move or a restart through its driver, checked
on the target afterwards, or a step that moves nothing (fencing, an approval, a wave's hooks).

The engine decides when and in what order; every state change goes back through it to the store.
"""

from __future__ import annotations

import dataclasses
import time

from drorch.drivers.base import Driver, MoveRequest, Phase, Progress
from drorch.engine._guest_reip import readdress_inside
from drorch.engine._landing_check import verify
from drorch.engine.fencing import fence_site
from drorch.engine.hooks import HookResult, run_hooks
from drorch.engine.live_run import LiveRun, Reporter, StepEvent, Transitions, hook_env
from drorch.engine.names_step import settle_names
from drorch.errors import DrorchError
from drorch.model.playbook import WORKLOAD_KINDS, WorkloadKind
from drorch.model.records import Action, StepKind, StepState
from drorch.model.run_settings import Hook, Hooks
from drorch.store.contract import StateStore
from drorch.store.rows import Step

CONTROL_SECONDS = 0.5  # how often a run looks in the store for an abort or an approval
PROGRESS_SECONDS = 2.0  # how often a move's bytes so far are written to its step


def _hooks(hooks: list[Hook], env: dict[str, str]) -> tuple[bool, str]:
    """Run hooks in order: whether the step may go on, and what they said."""
    results: list[HookResult] = run_hooks(hooks, env)
    return not any(r.fatal for r in results), "; ".join(r.line() for r in results)


class StepWork:
    def __init__(self, store: StateStore, states: Transitions, report: Reporter, poll_seconds: float) -> None:
        self.store = store
        self.states = states
        self.report = report
        self.poll_seconds = poll_seconds

    def control(self, live: LiveRun, step: Step) -> None:
        """Steps that move nothing: fencing, approvals and a wave's hooks."""
        to = self.states.transition
        if step.kind == StepKind.FENCE:
            to(live, step, StepState.RUNNING)
            try:
                to(live, step, StepState.SUCCEEDED, outcome=self._fence(live))
            except DrorchError as exc:
                to(live, step, StepState.FAILED, error=str(exc))
        elif step.kind == StepKind.NAMES:
            to(live, step, StepState.RUNNING)
            try:
                to(live, step, StepState.SUCCEEDED, outcome=settle_names(live, step))
            except DrorchError as exc:
                to(live, step, StepState.FAILED, error=str(exc))
        elif step.kind == StepKind.APPROVAL:
            to(live, step, StepState.WAITING, outcome=f"waiting: drorch approve {live.run.id} lets wave {step.wave} "
                                                      "start")
            while True:
                fresh = next(s for s in self.store.steps(live.run.id or 0) if s.id == step.id)
                if fresh.state is not StepState.WAITING:
                    to(live, step, fresh.state, outcome=fresh.outcome)
                    return
                if self.states.abort_requested(live):
                    to(live, step, StepState.CANCELLED, error="the run was aborted")
                    return
                time.sleep(CONTROL_SECONDS)
        else:
            phase = step.details().get("phase", "before")
            hooks = getattr(live.pb.wave(step.wave or "").hooks, phase)
            to(live, step, StepState.RUNNING)
            ok, said = _hooks(hooks, {**hook_env(live, step, ""), "DRORCH_HOOK_PHASE": phase})
            if ok:
                to(live, step, StepState.SUCCEEDED, outcome=said)
            else:
                to(live, step, StepState.FAILED, error=said)

    def settled(self, live: LiveRun, step: Step) -> None:
        """A step the plan settled without a move: already there, left behind, or blocked."""
        if step.action == Action.ALREADY:
            self.states.transition(live, step, StepState.SUCCEEDED,
                                   outcome=f"already running on site {step.target_site}")
        elif step.action == Action.SKIP:
            self.states.transition(live, step, StepState.SKIPPED)
        else:
            self.states.transition(live, step, StepState.FAILED, error=step.error or step.outcome, outcome=None)

    def act(self, live: LiveRun, step: Step, hooks: Hooks) -> None:
        """Move or restart the workload between its own before and after hooks, and check it got there."""
        to = self.states.transition
        kind = WorkloadKind(step.kind)
        driver = live.sites.drivers[kind]  # moves it; what answers on the target starts and finds it there
        here = live.sites.drivers[step.at_target]
        target = live.sites.host(step.target_site, step.to_host or "", step.at_target)
        env = hook_env(live, step, target.host)
        to(live, step, StepState.RUNNING)
        ok, before = _hooks(hooks.before, {**env, "DRORCH_HOOK_PHASE": "before"})
        if not ok:
            to(live, step, StepState.FAILED, error=f"before hooks: {before}")
            return
        try:
            if step.action == Action.RESTART:
                final = here.restart(step.workload, target, step.details().get("point"))
                cut = step.details().get("cut")
                final = dataclasses.replace(final, message=f"{final.message} from cut {cut}") if cut else final
            else:
                final = self._move(live, step, driver, live.sites.request(step))
        except DrorchError as exc:
            final = Progress(Phase.FAILED, message=str(exc))
        if final.phase is Phase.COMPLETED:
            there = verify(here, step.workload, target)
            if there:
                final = Progress(Phase.FAILED, message=there)
        if final.phase is Phase.COMPLETED:
            try:
                inside = readdress_inside(live, step, here, target)
            except DrorchError as exc:
                inside, final = "", Progress(Phase.FAILED, message=str(exc))
            if inside:
                final = dataclasses.replace(final, message=f"{final.message}; {inside}")
        if final.phase is not Phase.COMPLETED:
            state = StepState.CANCELLED if live.aborting.is_set() else StepState.FAILED
            to(live, step, state, final, error=final.message)
            return
        ok, after = _hooks(hooks.after, {**env, "DRORCH_HOOK_PHASE": "after"})
        said = "; ".join(filter(None, [final.message, before, after]))
        if ok:
            to(live, step, StepState.SUCCEEDED, final, outcome=said, warning=final.warning or None)
        else:
            to(live, step, StepState.FAILED, final, error=f"{final.message}, but after hooks: {after}")

    def _move(self, live: LiveRun, step: Step, driver: Driver, request: MoveRequest) -> Progress:
        handle = driver.start_move(request)
        step.handle = handle.to_json()
        self.states.save(step)
        last_check = last_saved = time.monotonic()
        cancelled = False
        while True:
            progress = driver.progress(handle)
            if progress.bytes_total is not None:
                step.bytes_done, step.bytes_total = progress.bytes_done, progress.bytes_total
            if progress.finished:
                return progress
            if progress.bytes_total is not None and time.monotonic() - last_saved >= PROGRESS_SECONDS:
                last_saved = time.monotonic()
                self.states.save(step)  # for those who watch from elsewhere: the status page, `drorch history`
            self.report(StepEvent(live.run, step, len(live.steps), progress))
            if not cancelled and time.monotonic() - last_check >= CONTROL_SECONDS:
                last_check = time.monotonic()
                if self.states.abort_requested(live):
                    driver.cancel(handle)
                    cancelled = True
            driver.wait(handle, self.poll_seconds)

    def _fence(self, live: LiveRun) -> str:
        """Make sure no copy on the source runs before any starts on the target."""
        run, detail = live.run, live.steps[0].details()
        vouched = detail.get("vouched") or (
            "declared down by the operator (--confirm-primary-down)" if detail.get("confirmed") else None)
        names: dict[WorkloadKind, list[str]] = {}
        for s in live.steps:
            if s.kind in WORKLOAD_KINDS:
                names.setdefault(s.at_source, []).append(s.workload)
        return fence_site(live.pb, live.sites, run.source_site, names, str(run.id), vouched)
