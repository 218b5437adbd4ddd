"""DR drills: the playbook brought up on the secondary from its recovery points, in isolation, checked,
timed, and torn down, while the originals run on untouched.

A drill is a run of the engine like a failover, with steps of its own (drill_work): a clone per workload a
disaster would restart, then a teardown that removes every clone and the drill's network, whatever happened
before it. A drill whose process died is torn down by `clean_up`, which every drill and every daemon taking
the lead call.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from drorch.drill_work import clone_step, teardown_step
from drorch.drivers.base import Driver
from drorch.engine import Engine
from drorch.host import run_alive
from drorch.live import LiveRun, Reporter
from drorch.planner import Action, disaster_plan
from drorch.playbook import Playbook, WorkloadKind
from drorch.playbook_file import load_playbook
from drorch.protection import points_at
from drorch.records import DRILL, FINAL_RUN_STATES, RunState, StepKind, StepState, utcnow
from drorch.sites import RunSites, snapshot
from drorch.store import Run, Store


def drill_key(playbook: str) -> str:
    """A drill's lock: one drill of a playbook at a time; failovers take other keys and are never held up."""
    return f"drill/{playbook}"


class Drill:
    def __init__(self, store: Store, drivers: Mapping[WorkloadKind, Driver], report: Reporter | None = None,
                 stop: threading.Event | None = None, kill_at: int | None = None) -> None:
        self.store = store
        self.drivers = drivers
        # stop set: clones not started yet are cancelled, the teardown still runs
        self.engine = Engine(store, drivers, report, kill_at=kill_at, stop=stop)

    def run(self, pb: Playbook, playbook_path: str, hold_s: float | None = None,
            point_at: datetime | None = None) -> Run:
        """Clone, check and time every workload a disaster failover would start (from its points taken at or
        before `point_at`, or its newest), then tear it all down. When every workload runs on the secondary
        already, the way back is drilled: clones on the primary from the points shipped there."""
        self.clean_up(pb.name)
        snap = snapshot(pb, self.drivers, brief=True)
        source, target = pb.primary, pb.secondary
        the_plan = disaster_plan(pb, snap, source, target)
        if the_plan.items and all(i.action is Action.ALREADY for i in the_plan.items):
            # Everything runs on the secondary already: what a disaster there would need is the way back.
            source, target = target, source
            the_plan = disaster_plan(pb, snap, source, target)
        points = points_at(self.store.points(pb.name), target, point_at,
                           [(str(i.kind), i.workload) for i in the_plan.items if i.action is Action.RESTART])
        now = utcnow()
        steps = [clone_step(item, source, target, points.get((str(item.kind), item.workload)), now,
                            point_at is not None, pb.drill.addresses) for item in the_plan.items]
        steps.append(teardown_step(source, target, pb.drill.hold_s if hold_s is None else hold_s))
        for seq, step in enumerate(steps, 1):
            step.seq = seq
        run = Run(operation=DRILL, mode=DRILL, playbook=pb.name, playbook_path=playbook_path,
                  source_site=source, target_site=target, state=RunState.RUNNING, pid=os.getpid(),
                  host=self.engine.host, started_at=now)
        self.engine.record(run, steps, [drill_key(pb.name)])
        return self.engine.execute(pb, run)

    def clean_up(self, playbook: str, gone: frozenset[str] = frozenset()) -> list[Run]:
        """Tear down drills whose process died, or whose teardown failed; returns the runs cleaned.
        `gone`: `host:pid` of daemons known to have stopped, on this machine or another."""
        cleaned = []
        for run in self.store.runs_of(DRILL, playbook):
            alive = run_alive(run.host, run.pid, self.engine.host) and f"{run.host}:{run.pid}" not in gone
            if run.state not in FINAL_RUN_STATES and alive:
                continue
            steps = self.store.steps(run.id or 0)
            teardown = [s for s in steps if s.kind == StepKind.TEARDOWN]
            if run.state in FINAL_RUN_STATES and all(s.state is StepState.SUCCEEDED for s in teardown):
                continue
            pb = load_playbook(Path(run.playbook_path))
            live = LiveRun(pb, run, steps, RunSites.of(pb, self.drivers))
            for s in steps:
                if s.state in (StepState.PENDING, StepState.RUNNING):
                    s.state, s.ended_at, s.error = StepState.CANCELLED, utcnow(), "the drill's process died"
                    self.store.save(s)
            for s in teardown:
                self.engine.drills.teardown(live, s)
            if run.state not in FINAL_RUN_STATES:
                run.state, run.ended_at = RunState.FAILED, utcnow()
                run.error = f"interrupted (pid {run.pid} on {run.host} died); torn down by pid {os.getpid()}"
            self.store.save(run)
            self.store.release_locks(run.id or 0)
            cleaned.append(run)
        return cleaned
