"""The engine: executes a failover step by step and records every transition in the store."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from drorch import preflight
from drorch.drivers.base import Driver, Endpoint, Handle, MoveRequest, Phase, Progress
from drorch.errors import DrorchError, WorkloadBusy
from drorch.host import pid_alive
from drorch.inventory import HostInventory, Snapshot
from drorch.planner import MOVING, Action, Plan, PlanItem, plan
from drorch.playbook import Host, Playbook, Resources, WorkloadKind
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


def _endpoint(site: str, host: Host, kind: WorkloadKind) -> Endpoint | None:
    uri = host.endpoint(kind)
    return None if uri is None else Endpoint(site, uri, host.migration_address, host.name)


def host_endpoint(pb: Playbook, site: str, host_name: str, kind: WorkloadKind) -> Endpoint:
    ep = _endpoint(site, next(h for h in pb.hosts(site) if h.name == host_name), kind)
    assert ep is not None, "the planner only picks hosts with this kind's endpoint"
    return ep


def snapshot(pb: Playbook, drivers: Mapping[WorkloadKind, Driver]) -> Snapshot:
    """Both sites as they are now; a host that does not answer is recorded with why, not raised."""
    hosts = []
    for site in (pb.primary, pb.secondary):
        for host in pb.hosts(site):
            inv = HostInventory(site, host.name)
            for kind, driver in drivers.items():
                ep = _endpoint(site, host, kind)
                if ep is None:
                    continue
                try:
                    inv.facts[kind] = driver.host_facts(ep)
                    inv.workloads.extend(driver.inventory(ep))
                except DrorchError as exc:
                    inv.errors[kind] = str(exc)
            hosts.append(inv)
    return Snapshot(hosts, taken_at=utcnow().isoformat())


def check_playbook(
    pb: Playbook, snap: Snapshot, drivers: Mapping[WorkloadKind, Driver]
) -> tuple[Plan, list[preflight.Finding]]:
    """Everything `drorch validate` checks: the plan's problems, pre-flight over the snapshot, and the
    drivers' live checks (none when working from a saved snapshot without drivers)."""
    the_plan = plan(pb, snap, pb.primary, pb.secondary)
    findings = [preflight.Finding(loc, msg) for loc, msg in the_plan.problems]
    findings += preflight.check(pb, snap, the_plan)
    for item in the_plan.items:
        if item.action in MOVING and item.kind in drivers:
            findings += [preflight.Finding(("workloads", item.entry), m)
                         for m in drivers[item.kind].preflight(move_request(pb, the_plan, item))]
    return the_plan, findings


def move_request(pb: Playbook, plan: Plan, item: PlanItem) -> MoveRequest:
    """What the driver is asked to do for one moving item of the plan."""
    assert item.from_host is not None and item.to_host is not None, "only moving items have both hosts"
    resized = item.after is not None and item.after != item.before
    return MoveRequest(
        workload=item.workload,
        strategy=item.strategy,
        source=host_endpoint(pb, plan.source, item.from_host, item.kind),
        target=host_endpoint(pb, plan.target, item.to_host, item.kind),
        mappings=item.mappings,
        resources=Resources(vcpus=item.after.vcpus or None, memory_mib=item.after.memory_mib or None)
        if resized and item.after is not None else None,
    )


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

    def _check_not_held(self, keys: set[str]) -> None:
        """Refuse when a live run of this or another playbook is moving one of these workloads."""
        for run, step in self.store.active_steps():
            held = f"{step.kind}/{step.workload}"
            alive = run.host != self.host or pid_alive(run.pid)
            if held in keys and alive:
                raise WorkloadBusy(
                    f"{step.kind} {step.workload} is held by run {run.id} ({run.operation} of {run.playbook}, "
                    f"pid {run.pid} on {run.host}, started {run.started_at:%Y-%m-%d %H:%M:%S})"
                )

    def execute(self, pb: Playbook, plan: Plan, playbook_path: str, operation: str) -> Run:
        """Carry a checked plan out, step by step, recording each transition."""
        self._check_not_held({i.key for i in plan.items})
        run = Run(
            operation=operation,
            playbook=pb.name,
            playbook_path=playbook_path,
            source_site=plan.source,
            target_site=plan.target,
            state=RunState.RUNNING,
            pid=os.getpid(),
            host=self.host,
        )
        steps = [
            Step(
                run_id=0,
                seq=item.seq,
                workload=item.workload,
                kind=item.kind,
                strategy=item.strategy,
                source_site=plan.source,
                target_site=plan.target,
                wave=item.wave,
                action=item.action,
                from_host=item.from_host,
                to_host=item.to_host,
            )
            for item in plan.items
        ]
        self.store.add_run(run, steps)
        for step, item in zip(steps, plan.items, strict=True):
            if item.action in MOVING:
                self._execute(run, step, self.drivers[item.kind], move_request(pb, plan, item), len(steps))
            else:
                self._record(run, step, item, len(steps))
        run.state = run_outcome(s.state for s in steps)
        run.ended_at = utcnow()
        failed = [s for s in steps if s.state is StepState.FAILED]
        run.error = f"{len(failed)} of {len(steps)} steps failed" if failed else None
        self.store.save(run)
        return run

    def _record(self, run: Run, step: Step, item: PlanItem, total: int) -> None:
        """A step the plan settled without a move: already there, left behind, or blocked."""
        step.started_at = step.ended_at = utcnow()
        if item.action is Action.ALREADY:
            step.state, step.outcome = StepState.SUCCEEDED, f"already running on site {run.target_site}"
        elif item.action is Action.SKIP:
            step.state, step.outcome = StepState.SKIPPED, item.reason
        else:
            step.state, step.error = StepState.FAILED, item.reason
        self.store.save(step)
        self.report(StepEvent(run, step, total, None))

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
