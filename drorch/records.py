"""Run and step records: what the state store keeps about every operation (no I/O here)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum

from drorch.errors import ExitCode


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # left behind on purpose, as the plan said


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"  # some steps succeeded, some failed


FINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.PARTIAL})

EXIT_CODES = {
    RunState.SUCCEEDED: ExitCode.OK,
    RunState.FAILED: ExitCode.FAILED,
    RunState.PARTIAL: ExitCode.PARTIAL,
    RunState.RUNNING: ExitCode.FAILED,
}


def run_outcome(steps: Iterable[StepState]) -> RunState:
    """A run succeeded when every step did (or was skipped as planned), failed when none did, else is partial."""
    states = [s for s in steps if s is not StepState.SKIPPED]
    ok = sum(s is StepState.SUCCEEDED for s in states)
    if ok == len(states):
        return RunState.SUCCEEDED
    return RunState.FAILED if ok == 0 else RunState.PARTIAL


def utcnow() -> datetime:
    return datetime.now(UTC)
