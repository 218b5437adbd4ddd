"""A run as this process drives it: what the engine and the steps' work share while a run is live."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from drorch.drivers.base import Progress
from drorch.engine.move_slots import MoveSlots
from drorch.model.playbook import Playbook
from drorch.model.records import StepState
from drorch.plan.planner import ACTING
from drorch.reach import RunSites
from drorch.store.rows import Run, Step


@dataclass(frozen=True)
class StepEvent:
    """What the engine tells its reporter: a step changed state or made progress."""

    run: Run
    step: Step
    total: int
    progress: Progress | None = None


Reporter = Callable[[StepEvent], None]


@dataclass
class LiveRun:
    """One run being driven by this process."""

    pb: Playbook
    run: Run
    steps: list[Step]
    sites: RunSites
    aborting: threading.Event = field(default_factory=threading.Event)
    broken: threading.Event = field(default_factory=threading.Event)  # an error escaped a step: start nothing more
    slots: MoveSlots = field(default_factory=MoveSlots)  # the sites' and hosts' max_moves
    done: dict[str, threading.Event] = field(default_factory=dict)

    def by_name(self, workload: str) -> Step | None:
        return next((s for s in self.steps if s.workload == workload and s.action in ACTING), None)


def hook_env(live: LiveRun, step: Step, target_host: str) -> dict[str, str]:
    """What every hook of a step is told about its run, failovers and drills alike."""
    run = live.run
    return {"DRORCH_RUN_ID": str(run.id), "DRORCH_MODE": run.mode or "planned", "DRORCH_DIRECTION": run.operation,
            "DRORCH_PLAYBOOK": run.playbook, "DRORCH_WAVE": step.wave or "", "DRORCH_WORKLOAD": step.workload,
            "DRORCH_KIND": step.kind, "DRORCH_SOURCE_SITE": step.source_site,
            "DRORCH_TARGET_SITE": step.target_site, "DRORCH_TARGET_HOST": target_host}


class Transitions(Protocol):
    """How a step's work records where it is, and learns that its run is being aborted; writes go through
    one lock, as steps of a wave act in threads."""

    def transition(self, live: LiveRun, step: Step, state: StepState, progress: Progress | None = None,
                   **fields: object) -> None: ...

    def save(self, step: Step) -> None: ...

    def abort_requested(self, live: LiveRun) -> bool: ...
