"""Locks in the store that keep a playbook and each workload in one running operation at a time; they
outlive a crash, so that `drorch resume` can take them over, and one whose holder is gone is dropped."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from drorch.errors import WorkloadBusy
from drorch.model.playbook import Playbook
from drorch.model.records import RunState
from drorch.plan.planner import ACTING
from drorch.process import pid_alive, run_alive
from drorch.store.contract import StateStore
from drorch.store.rows import Lock


def playbook_key(pb: Playbook) -> str:
    return f"playbook/{pb.name}"


def drill_key(playbook: str) -> str:
    """A drill's lock: one drill of a playbook at a time; failovers take other keys and are never held up."""
    return f"drill/{playbook}"


class Locks:
    def __init__(self, store: StateStore, host: str) -> None:
        self.store = store
        self.host = host

    def held_by(self, lock: Lock) -> str:
        if lock.run_id is None:
            return f"{lock.key} is being planned by pid {lock.pid} on {lock.host}"
        run = self.store.run(lock.run_id)
        what = f"run {run.id} ({run.operation} of {run.playbook}, pid {run.pid} on {run.host}, started " \
               f"{run.started_at:%Y-%m-%d %H:%M:%S})"
        if run.state is RunState.PENDING_COMMIT:
            return f"{lock.key} is held by {what}, which waits: drorch commit {run.id} or drorch rollback {run.id}"
        if run.state is RunState.RUNNING and not run_alive(run.host, run.pid, self.host):
            return f"{lock.key} is held by interrupted {what}: drorch resume {run.id} or drorch abort {run.id}"
        return f"{lock.key} is held by {what}"

    def take(self, keys: list[str], run_id: int | None) -> None:
        """Take the keys or raise WorkloadBusy naming the holder; a lock whose planner died is dropped."""
        for _ in range(3):
            held = self.store.take_locks(keys, run_id, os.getpid(), self.host)
            if held is None:
                return
            stale_plan = held.run_id is None and held.host == self.host and not pid_alive(held.pid)
            ended = held.run_id is not None and self.store.run(held.run_id).state not in (
                RunState.RUNNING, RunState.PENDING_COMMIT)
            if not (stale_plan or ended):
                raise WorkloadBusy(self.held_by(held))
            self.store.drop_lock(held)
        raise WorkloadBusy(f"could not take {', '.join(keys)}: locks keep changing hands")

    def retake(self, pb: Playbook, run_id: int) -> None:
        """A run that had ended and acts again takes its playbook and workloads back."""
        keys = {f"{s.kind}/{s.workload}" for s in self.store.steps(run_id) if s.action in ACTING}
        self.take([playbook_key(pb), *sorted(keys)], run_id)

    @contextlib.contextmanager
    def claim(self, pb: Playbook) -> Iterator[None]:
        """Hold the playbook while its run is planned; `start` hands the lock to the run."""
        key = playbook_key(pb)
        self.take([key], None)
        try:
            yield
        except BaseException:
            self.store.drop_lock(Lock(key=key, run_id=None, pid=os.getpid(), host=self.host))
            raise
