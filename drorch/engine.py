"""The engine: executes a failover step by step and records every transition in the store."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from drorch.drivers.base import Driver, Endpoint, Handle, MoveRequest, Phase, Progress
from drorch.errors import DrorchError, WorkloadBusy
from drorch.host import pid_alive
from drorch.playbook import Playbook, Workload, WorkloadKind
from drorch.records import RunState, StepState, run_outcome, utcnow
from drorch.store import Run, Step, Store

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class StepEvent:
    """What the engine tells its reporter: a step changed state or made progress."""

    run: Run
    step: Step
    total: int
    progress: Progress | None = None


Reporter = Callable[[StepEvent], None]


def endpoint(pb: Playbook, kind: WorkloadKind, site: str) -> Endpoint:
    uri = pb.endpoint_of(kind, site)
    assert uri is not None, "validated when the playbook was loaded"
    return Endpoint(site=site, uri=uri, migration_address=pb.sites[site].migration_address)


class Engine:
    def __init__(
        self,
        store: Store,
        drivers: Mapping[WorkloadKind, Driver],
        report: Reporter | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.poll_seconds = poll_seconds
        self.store = store
        self.drivers = drivers
        self.report = report or (lambda _e: None)
        self.host = socket.gethostname()

    def _check_not_held(self, workloads: list[Workload]) -> None:
        """Refuse when a live run of this or another playbook is moving one of these workloads."""
        wanted = {w.key for w in workloads}
        for run, step in self.store.active_steps():
            held = f"{step.kind}/{step.workload}"
            alive = run.host != self.host or pid_alive(run.pid)
            if held in wanted and alive:
                raise WorkloadBusy(
                    f"{step.kind} {step.workload} is held by run {run.id} ({run.operation} of {run.playbook}, "
                    f"pid {run.pid} on {run.host}, started {run.started_at:%Y-%m-%d %H:%M:%S})"
                )

    def failover(self, pb: Playbook, playbook_path: str, source: str, target: str, operation: str) -> Run:
        self._check_not_held(list(pb.workloads))
        run = Run(
            operation=operation,
            playbook=pb.name,
            playbook_path=playbook_path,
            source_site=source,
            target_site=target,
            state=RunState.RUNNING,
            pid=os.getpid(),
            host=self.host,
        )
        steps = [
            Step(
                run_id=0,
                seq=i + 1,
                workload=w.name,
                kind=w.kind,
                strategy=w.move_strategy,
                source_site=source,
                target_site=target,
            )
            for i, w in enumerate(pb.workloads)
        ]
        self.store.add_run(run, steps)
        for step, w in zip(steps, pb.workloads, strict=True):
            request = MoveRequest(
                workload=w.name,
                strategy=w.move_strategy,
                source=endpoint(pb, w.kind, source),
                target=endpoint(pb, w.kind, target),
            )
            self._execute(run, step, self.drivers[w.kind], request, len(steps))
        run.state = run_outcome(s.state for s in steps)
        run.ended_at = utcnow()
        failed = [s for s in steps if s.state is StepState.FAILED]
        run.error = f"{len(failed)} of {len(steps)} steps failed" if failed else None
        self.store.save(run)
        return run

    def _execute(self, run: Run, step: Step, driver: Driver, request: MoveRequest, total: int) -> None:
        step.state, step.started_at = StepState.RUNNING, utcnow()
        self.store.save(step)
        self.report(StepEvent(run, step, total))
        try:
            handle = driver.start_move(request)
            step.handle = handle.to_json()
            self.store.save(step)
            final = self._follow(run, step, driver, handle, total)
        except DrorchError as exc:
            final = Progress(Phase.FAILED, message=str(exc))
        step.state = StepState.SUCCEEDED if final.phase is Phase.COMPLETED else StepState.FAILED
        step.ended_at = utcnow()
        if step.state is StepState.SUCCEEDED:
            step.outcome = final.message
        else:
            step.error = final.message
        self.store.save(step)
        self.report(StepEvent(run, step, total, final))

    def _follow(self, run: Run, step: Step, driver: Driver, handle: Handle, total: int) -> Progress:
        while True:
            progress = driver.progress(handle)
            if progress.bytes_total is not None:
                step.bytes_done, step.bytes_total = progress.bytes_done, progress.bytes_total
            if progress.finished:
                return progress
            self.report(StepEvent(run, step, total, progress))
            driver.wait(handle, self.poll_seconds)
