"""Where a run's step put its workload, asked of the site again: the one lookup behind a move's last check, an
abort settling a run whose process died, and a resume re-checking what had succeeded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from drorch.drivers.base import Driver, Endpoint
from drorch.errors import DrorchError
from drorch.model.playbook import WORKLOAD_KINDS
from drorch.model.records import Action, StepState
from drorch.plan.inventory import WorkloadInfo
from drorch.plan.planner import ACTING
from drorch.reach import RunSites
from drorch.store.rows import Step

LOOKUPS = 16  # targets asked at once when a run ends


def target_of(sites: RunSites, step: Step) -> tuple[Driver, Endpoint] | None:
    """The driver and the host a step puts its workload on, or None for a step that puts none anywhere."""
    if step.action not in ACTING or step.kind not in WORKLOAD_KINDS or not step.to_host:
        return None
    kind = step.at_target
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


def _off_target(sites: RunSites, step: Step) -> tuple[Driver, Endpoint, WorkloadInfo | None] | None:
    """The step's driver and target, and what the target holds of its workload (None: nothing), when the workload
    no longer runs there; None when it runs, when the step put nothing anywhere or when the target does not answer
    (nothing is known to be lost)."""
    try:
        placed = target_of(sites, step)
        if placed is None:
            return None
        there = placed[0].locate(step.workload, placed[1])
    except DrorchError:
        return None
    return None if there is not None and there.running else (*placed, there)


def lost(sites: RunSites, steps: list[Step]) -> list[tuple[Step, str]]:
    """The steps that got their workload onto a target where it no longer runs (its daemon restarted since, say),
    each with what the site says; every target is asked again, side by side."""
    def why(step: Step) -> str:
        off = _off_target(sites, step)
        if off is None:
            return ""
        there = off[2]
        found = "is gone from there" if there is None else f"was found {there.status or 'stopped'} there"
        return (f"{step.workload} got to site {step.target_site}, but {found} when the run ended: drorch resume "
                f"{step.run_id} starts it again")

    landed = [s for s in steps if s.state is StepState.SUCCEEDED and s.action in ACTING]
    with ThreadPoolExecutor(max_workers=LOOKUPS, thread_name_prefix="drorch-landed") as pool:
        return [(s, said) for s, said in zip(landed, pool.map(why, landed), strict=True) if said]


def reopen(sites: RunSites, step: Step) -> bool:
    """A step set for a resume, from what its sites say now; whether it changed. What did not finish is done
    again, and so is what had succeeded but no longer runs where it went; except a workload found stopped on its
    target with nothing of it left at home (its daemon restarted since, say), which is started there again as the
    site holds it, saying what was lost."""
    unfinished = step.state in (StepState.RUNNING, StepState.FAILED, StepState.CANCELLED, StepState.WAITING)
    if not unfinished and step.state is not StepState.SUCCEEDED:
        return False
    off = _off_target(sites, step)
    if off is None:  # it runs there, or nothing is known to be lost
        step.state = StepState.PENDING if unfinished else step.state
        return unfinished
    driver, target, there = off
    # The move done again finds the workload where it is; a restart that did not finish starts from its point again
    # (what its target holds is the point itself, never started as it is).
    if there is None or (unfinished and step.action == Action.RESTART) or _held_at_home(sites, step):
        step.state = StepState.PENDING
        return True
    was = there.status or "stopped"
    try:
        started = driver.start(step.workload, target)
    except DrorchError as exc:
        step.state, step.error = StepState.FAILED, (
            f"{step.workload} got to site {step.target_site}, but was found {was} there when the run was resumed, "
            f"and did not start again: {exc}")
        return True
    step.state, step.error = StepState.SUCCEEDED, None
    step.warning = "; ".join(filter(None, [step.warning, f"found {was} on site {step.target_site} when the run was "
                                           f"resumed; {started}: what it held in memory since the move is lost"]))
    return True


def _held_at_home(sites: RunSites, step: Step) -> bool:
    """Whether the host the step moves the workload from still has it: running (started there again since) or
    stopped by a move that did not finish, which the move done again brings back first."""
    if not step.from_host:
        return False
    kind = step.at_source
    try:
        home = sites.drivers[kind].locate(step.workload, sites.host(step.source_site, step.from_host, kind))
    except DrorchError:
        return False
    return home is not None
