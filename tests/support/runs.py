"""Runs that a process left behind: a crash at the nth step transition, a run whose process is gone, a
workload held by another run."""

from __future__ import annotations

import os

from drorch.engine.live_run import StepEvent
from drorch.model.records import RunState, StepState
from drorch.store.rows import Run, Step
from drorch.store.sql_store import Store

DEAD_PID = 2**22 + 12345  # above pid_max: no such process


class Crash(Exception):
    """Stands for the process dying: the run is left as it was at that moment."""


def crash_at(n: int) -> object:
    seen = [0]

    def report(ev: StepEvent) -> None:
        if ev.progress is None or ev.progress.finished:
            seen[0] += 1
            if seen[0] == n:
                raise Crash
    return report


def interrupted(store: Store, run_id: int) -> None:
    run = store.run(run_id)
    run.pid = DEAD_PID
    store.save(run)


def held_by(store: Store, pid: int, workload: str = "cache") -> Run:
    """A run of another playbook that holds `workload`, as if process `pid` ran it."""
    run = Run(operation="failover", playbook="other", playbook_path="other.yaml", source_site="a",
              target_site="b", state=RunState.RUNNING, pid=pid, host=os.uname().nodename)
    step = Step(run_id=0, seq=1, workload=workload, kind="container", strategy="checkpoint",
                source_site="a", target_site="b", state=StepState.RUNNING, action="move")
    store.add_run(run, [step])
    assert store.take_locks([f"container/{workload}"], run.id, pid, run.host) is None
    return run
