"""What an operator decides about a run that waits, and what only the store needs to know for it: an
approval, a commit, the commit windows that ended. No driver is touched."""

from __future__ import annotations

from datetime import datetime

from drorch.errors import UsageError
from drorch.model.records import Action, RunState, StepState, run_outcome, utcnow
from drorch.store.contract import StateStore
from drorch.store.rows import Run, Step


def approve(store: StateStore, run_id: int, who: str) -> Step:
    """The run's waiting approval granted: its next wave may start."""
    for s in store.steps(run_id):
        if s.state is StepState.WAITING:
            s.state, s.outcome = StepState.SUCCEEDED, f"approved by {who}"
            store.save(s)
            return s
    raise UsageError(f"run {run_id} is not waiting for an approval")


def commit(store: StateStore, run_id: int) -> Run:
    """A failover pending commit made final; its workloads' locks let go."""
    run = store.run(run_id)
    if run.state is not RunState.PENDING_COMMIT:
        raise UsageError(f"run {run_id} is {run.state}, not pending commit")
    acting = [s for s in store.steps(run_id) if s.action != Action.ROLLBACK]
    run.state = run_outcome((s.state for s in acting), warned=any(s.warning for s in acting))
    run.ended_at = utcnow()
    store.save(run)
    store.release_locks(run_id)
    return run


def expired(store: StateStore) -> list[Run]:
    """Runs pending commit whose window has ended."""
    now = utcnow()
    return [r for r in store.runs(1000) if r.state is RunState.PENDING_COMMIT
            and r.commit_deadline is not None and _as_utc(r.commit_deadline) <= now]


def _as_utc(dt: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=utcnow().tzinfo)
