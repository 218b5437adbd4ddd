"""Run and step records: what the state store keeps about every operation (no I/O here)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum

from drorch.errors import ExitCode


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # an approval step waits for drorch approve
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # left behind on purpose, as the plan said
    CANCELLED = "cancelled"  # never ran: the run was aborted or stopped by its wave's failure policy
    ROLLED_BACK = "rolled_back"  # moved, then moved back by a rollback


class StepKind(StrEnum):
    """What a step does besides moving a VM or a container (whose kind is the workload's kind)."""

    HOOK = "hook"  # a wave's before or after hooks
    APPROVAL = "approval"
    FENCE = "fence"  # disaster: the source's copies are destroyed, or the source is declared down
    TEARDOWN = "teardown"  # a drill's clones and network removed
    NAMES = "names"  # a wave's workloads connected to at their new addresses, and their DNS records changed


class Operation(StrEnum):
    """What a run does, as the store keeps it."""

    FAILOVER = "failover"  # the workloads to the other site (a disaster restart is a failover in disaster mode)
    FAILBACK = "failback"  # the workloads home again
    DRILL = "drill"  # clones on the other site from the recovery points, checked in isolation, torn down


class Mode(StrEnum):
    """How a run goes about its operation."""

    PLANNED = "planned"  # both sites answer: moves
    DISASTER = "disaster"  # the source is fenced: restarts from what the target holds
    DRILL = "drill"  # nothing in production is touched


class Action(StrEnum):
    """What a step does to its workload: the planner's verdict for it, a drill's clone, or a move back."""

    MOVE = "move"
    DEGRADE = "degrade"  # moves with its smaller DR resources
    SKIP = "skip"  # left behind: its tier allows it and the target is short of room
    ALREADY = "already"  # runs on the target already
    BLOCKED = "blocked"  # a site it needs did not answer; the move fails, the others go on
    UNPLACED = "unplaced"  # required and does not fit: the plan is refused
    RESTART = "restart"  # disaster: started on the target from the copy the target already holds
    DRILL = "drill"  # a drill's clone of what a disaster would restart
    ROLLBACK = "rollback"  # moves back what its run moved


DRILL_CLONE = re.compile(r".+-drill-[0-9]+")  # what drills name their clones, which inventories leave out
DRILL_NETWORK = re.compile(r"drorch-drill-[0-9]+|drd[0-9a-f]{12}")  # a drill's network; an LXD bridge's short name
DRILL_LABEL = "drorch.drill"  # set on what a drill makes, where the technology has labels


def clone_name(workload: str, run_id: int) -> str:
    return f"{workload}-drill-{run_id}"


def network_name(run_id: int) -> str:
    return f"drorch-drill-{run_id}"


SCHEDULER_LEASE = "scheduler"  # the lease the leading daemon holds


class JobKind(StrEnum):
    """What the daemon runs on a schedule."""

    PROTECT = "protect"  # ship a recovery point of every workload
    SETTLE = "settle"  # decide failovers whose commit window ended
    DRILL = "drill"  # bring clones up on the secondary in isolation, check them, tear them down
    READINESS = "readiness"  # re-check what validate checks and every RPO; alert on a change to not ready


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_WARNINGS = "succeeded with warnings"  # every step done, some not as asked (see their warning)
    FAILED = "failed"
    PARTIAL = "partial"  # some steps succeeded, some failed
    ABORTED = "aborted"
    PENDING_COMMIT = "pending_commit"  # moved; waits for drorch commit or rollback until its window ends
    ROLLED_BACK = "rolled_back"


FINAL_STEP_STATES = frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED,
                               StepState.ROLLED_BACK})
FINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.SUCCEEDED_WITH_WARNINGS, RunState.FAILED,
                              RunState.PARTIAL, RunState.ABORTED, RunState.ROLLED_BACK})

EXIT_CODES = {
    RunState.SUCCEEDED: ExitCode.OK,
    RunState.SUCCEEDED_WITH_WARNINGS: ExitCode.WARNINGS,
    RunState.PENDING_COMMIT: ExitCode.OK,
    RunState.FAILED: ExitCode.FAILED,
    RunState.PARTIAL: ExitCode.PARTIAL,
    RunState.ABORTED: ExitCode.FAILED,
    RunState.ROLLED_BACK: ExitCode.FAILED,
    RunState.RUNNING: ExitCode.FAILED,
}


def run_outcome(steps: Iterable[StepState], warned: bool = False) -> RunState:
    """A run succeeded when every step did (or was skipped as planned), failed when none did, else is partial.
    A run whose steps all succeeded but some with a warning (`warned`) succeeded with warnings, never plainly."""
    states = [s for s in steps if s is not StepState.SKIPPED]
    ok = sum(s is StepState.SUCCEEDED for s in states)
    if ok == len(states):
        return RunState.SUCCEEDED_WITH_WARNINGS if warned else RunState.SUCCEEDED
    return RunState.FAILED if ok == 0 else RunState.PARTIAL


def utcnow() -> datetime:
    return datetime.now(UTC)


def naive(dt: datetime) -> datetime:
    """Stores hand times back without their zone (SQLite keeps none): compare them all that way."""
    return dt.replace(tzinfo=None)
