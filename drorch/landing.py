"""Where a run's step put its workload, asked of the site again: the one lookup behind a move's last check, an
abort settling a run whose process died, and a resume re-checking what had succeeded."""

from __future__ import annotations

from dataclasses import dataclass

from drorch.drivers.base import Driver, Endpoint
from drorch.errors import DrorchError
from drorch.planner import ACTING
from drorch.playbook import WorkloadKind
from drorch.records import StepState
from drorch.sites import RunSites
from drorch.store import Step


def target_of(sites: RunSites, step: Step) -> tuple[Driver, Endpoint] | None:
    """The driver and the host a step puts its workload on, or None for a step that puts none anywhere."""
    if step.action not in ACTING or step.kind not in (WorkloadKind.VM, WorkloadKind.CONTAINER) or not step.to_host:
        return None
    kind = WorkloadKind(step.kind)
    return sites.drivers[kind], sites.host(step.target_site, step.to_host, kind)


def verify(driver: Driver, name: str, target: Endpoint) -> str:
    """Why the workload does not run on the target after a move said it is done, or ''."""
    try:
        info = driver.locate(name, target)
    except DrorchError as exc:
        return f"cannot check that {name} runs on site {target.site}: {exc}"
    if info is not None and info.running:
        return ""
    return f"{name} is not running on site {target.site} after the move"


@dataclass(frozen=True)
class Recheck:
    """What a resume makes of a step that had succeeded and whose workload no longer runs where it put it."""

    state: StepState  # SUCCEEDED: started again there; PENDING: to be moved again; FAILED: nothing to start
    said: str  # the warning (SUCCEEDED) or the error (FAILED); '' for PENDING


def recheck(sites: RunSites, step: Step) -> Recheck | None:
    """None when the workload runs where the step put it, or when that site does not answer (nothing is known
    to be lost). A workload stopped there (its daemon restarted, say) while nothing of it runs on its source is
    started again as the site holds it, and what was lost is said; one running on its source again, or gone
    from the target, is moved again."""
    try:
        placed = target_of(sites, step)
        if placed is None:
            return None
        driver, target = placed
        there = driver.locate(step.workload, target)
    except DrorchError:
        return None
    if there is not None and there.running:
        return None
    if there is None or _runs_at_home(sites, step):
        return Recheck(StepState.PENDING, "")
    was = there.status or "stopped"
    try:
        started = driver.start(step.workload, target)
    except DrorchError as exc:
        return Recheck(StepState.FAILED, f"{step.workload} got to site {step.target_site}, but was found {was} "
                                         f"there when the run was resumed, and did not start again: {exc}")
    return Recheck(StepState.SUCCEEDED, f"found {was} on site {step.target_site} when the run was resumed; "
                                        f"{started}: what it held in memory since the move is lost")


def _runs_at_home(sites: RunSites, step: Step) -> bool:
    """Whether the workload runs on the host the step moved it from (started there again since, say)."""
    if not step.from_host:
        return False
    kind = WorkloadKind(step.kind)
    try:
        home = sites.drivers[kind].locate(step.workload, sites.host(step.source_site, step.from_host, kind))
    except DrorchError:
        return False
    return home is not None and home.running
