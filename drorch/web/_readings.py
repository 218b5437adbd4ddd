"""What the daemon serves, read from the state store alone (never from the sites): each workload's newest point,
each playbook's readiness and last drill, runs and their durations, moves under way, daemons and their lease.

A scrape and a page load read it; a handful of aggregate queries answer for any number of workloads, so that
the answer stays quick at ten thousand of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Float, FromClause, case, cast, func, inspect, select
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel, col

from drorch.model.groups import Consistency
from drorch.model.playbook import WORKLOAD_KINDS
from drorch.model.records import (
    FINAL_RUN_STATES,
    SCHEDULER_LEASE,
    Action,
    Operation,
    RunState,
    StepState,
    naive,
    utcnow,
)
from drorch.store.damaged_rows import READ_FAILURES, damaged, loaded
from drorch.store.rows import DaemonRow, Lease, ReadinessCheck, RecoveryPoint, Run, SkippedShip, Step
from drorch.store.sql_store import Store
from drorch.store.takeover_rows import SentinelTurn, TakeoverControl

# Upper bounds of the duration histograms (seconds): a live move takes seconds, a cold one minutes, a run hours.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


@dataclass(frozen=True)
class Newest:
    """A workload's newest complete recovery point on a site, and how many complete ones the site keeps."""

    playbook: str
    kind: str
    workload: str
    site: str
    taken_at: datetime
    at: datetime  # the instant it describes
    size_bytes: int | None
    point_kind: str | None
    kept: int
    consistency: str  # crash, filesystem or application
    cut: str | None  # its group's cut


@dataclass(frozen=True)
class ReadinessReading:
    playbook: str
    ready: bool
    checked_at: datetime
    problems: list[str]
    hosts: list[dict[str, Any]]  # per host at that check: site, host, answered, error
    records: list[dict[str, Any]]  # per DNS record at that check: name, type, values, workload, right...


@dataclass(frozen=True)
class DrillReading:
    playbook: str
    run: int
    passed: bool
    state: str
    started_at: datetime
    rto_s: float | None


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per bucket upper bound, the sum and the count, per label value."""

    buckets: dict[str, list[int]]
    sums: dict[str, float]
    counts: dict[str, int]


@dataclass(frozen=True)
class Readings:
    at: datetime
    points: list[Newest]
    readiness: list[ReadinessReading]
    drills: list[DrillReading]
    runs: list[tuple[str, str, str, int]]  # playbook, operation, state, how many
    run_durations: Histogram
    step_durations: Histogram
    moving: dict[str, int]  # playbook -> moves under way
    daemons: list[DaemonRow]
    lease: Lease | None
    running: list[Run] = field(default_factory=list)  # runs under way, newest first
    # (playbook, kind, workload) -> the site the newest run that acted on it left it on, and that run
    placed: dict[tuple[str, str, str], tuple[str, int]] = field(default_factory=dict)
    last_run: dict[str, datetime] = field(default_factory=dict)  # playbook -> when its newest run started
    last_automatic: dict[str, datetime] = field(default_factory=dict)  # ... its newest automatic failover
    skipped: list[SkippedShip] = field(default_factory=list)  # ships not begun as the last one still ran
    turns: list[SentinelTurn] = field(default_factory=list)  # each daemon's last turn at automatic failover
    paused: set[str] = field(default_factory=set)  # playbooks whose automatic failover is paused


def read(store: Store, playbooks: Sequence[str] | None = None) -> Readings:
    """Everything served, in one read transaction; `playbooks` limits it to those (None: every playbook). A row
    that holds what drorch never writes is named (DamagedRow), as the store's own reads name it."""
    try:
        return _read(store, playbooks)
    except READ_FAILURES as exc:
        raise damaged(store.engine, SQLModel.metadata.sorted_tables, exc) from None


def _read(store: Store, playbooks: Sequence[str] | None) -> Readings:
    with store.engine.connect() as conn:
        return Readings(
            at=utcnow(),
            points=_points(conn, playbooks),
            readiness=_readiness(conn, playbooks),
            drills=_drills(conn, playbooks),
            runs=_run_counts(conn, playbooks),
            run_durations=_run_histogram(conn, playbooks),
            step_durations=_step_histogram(conn, playbooks),
            moving=_moving(conn, playbooks),
            daemons=[DaemonRow(**dict(r._mapping)) for r in conn.execute(select(_table(DaemonRow)))],
            lease=_lease(conn),
            running=[Run(**dict(r._mapping)) for r in conn.execute(
                _only(select(_table(Run)).where(col(Run.state) == RunState.RUNNING), Run.playbook, playbooks)
                .order_by(col(Run.id).desc()))],
            placed=_placed(conn, playbooks),
            last_run=_last_runs(conn, playbooks),
            last_automatic=_last_runs(conn, playbooks, automatic=True),
            skipped=[SkippedShip(**dict(r._mapping)) for r in conn.execute(
                _only(select(_table(SkippedShip)), col(SkippedShip.playbook), playbooks))],
            turns=[SentinelTurn(**dict(r._mapping)) for r in conn.execute(
                _only(select(_table(SentinelTurn)), col(SentinelTurn.playbook), playbooks))],
            paused={r[0] for r in conn.execute(_only(select(col(TakeoverControl.playbook)).where(
                col(TakeoverControl.paused)), col(TakeoverControl.playbook), playbooks))},
        )


def _table(model: type[SQLModel]) -> FromClause:
    """A model's table, through SQLAlchemy's inspection (sqlmodel leaves `__table__` untyped)."""
    table: FromClause = inspect(model).local_table
    return table


def _only(query: Any, column: Any, playbooks: Sequence[str] | None) -> Any:
    return query if playbooks is None else query.where(column.in_(list(playbooks)))


def _points(conn: Connection, playbooks: Sequence[str] | None) -> list[Newest]:
    """One pass over the complete points, each workload's numbered newest first by the database."""
    p = _table(RecoveryPoint).c
    key = (p.playbook, p.kind, p.workload, p.site)
    ranked = _only(select(*key, p.taken_at, p.cut_at, p.size_bytes, p.point_kind, p.consistency, p.cut,
                          func.row_number().over(partition_by=key, order_by=p.taken_at.desc()).label("rank"),
                          func.count().over(partition_by=key).label("kept"))
                   .where(p.complete, p.retired_at.is_(None)), p.playbook, playbooks).subquery()
    rows = conn.execute(select(ranked).where(ranked.c.rank == 1)
                        .order_by(ranked.c.playbook, ranked.c.kind, ranked.c.workload, ranked.c.site))
    return [Newest(r.playbook, r.kind, r.workload, r.site, r.taken_at, naive(r.cut_at or r.taken_at), r.size_bytes,
                   r.point_kind, r.kept, str(r.consistency or Consistency.CRASH), r.cut) for r in rows]


def _readiness(conn: Connection, playbooks: Sequence[str] | None) -> list[ReadinessReading]:
    r = _table(ReadinessCheck).c
    last = _only(select(func.max(r.id)).group_by(r.playbook), r.playbook, playbooks)
    return [ReadinessReading(row.playbook, bool(row.ready), row.checked_at,
                      [str(p) for p in loaded("readiness", row.id, "problems", row.problems)],
                      [h for h in loaded("readiness", row.id, "hosts", row.hosts) if isinstance(h, dict)],
                      [d for d in loaded("readiness", row.id, "records", row.records) if isinstance(d, dict)])
            for row in conn.execute(select(r.id, r.playbook, r.ready, r.checked_at, r.problems, r.hosts, r.records)
                                    .where(r.id.in_(last)).order_by(r.playbook))]


def _drills(conn: Connection, playbooks: Sequence[str] | None) -> list[DrillReading]:
    """Each playbook's newest drill that ended, with its RTO: from its start to the last clone that ran."""
    runs, steps = _table(Run).c, _table(Step).c
    ended = [str(s) for s in FINAL_RUN_STATES]
    last = _only(select(func.max(runs.id)).where(runs.operation == Operation.DRILL, runs.state.in_(ended))
                 .group_by(runs.playbook), runs.playbook, playbooks)
    found = []
    for run in conn.execute(select(runs.id, runs.playbook, runs.state, runs.started_at).where(runs.id.in_(last))
                            .order_by(runs.playbook)):
        reached = conn.execute(select(func.max(steps.ended_at)).where(
            steps.run_id == run.id, steps.action == Action.DRILL, steps.state == StepState.SUCCEEDED)).scalar()
        rto = (naive(reached) - naive(run.started_at)).total_seconds() if reached is not None else None
        found.append(DrillReading(run.playbook, run.id, run.state == RunState.SUCCEEDED, str(run.state), run.started_at,
                           rto))
    return found


def _run_counts(conn: Connection, playbooks: Sequence[str] | None) -> list[tuple[str, str, str, int]]:
    runs = _table(Run).c
    query = _only(select(runs.playbook, runs.operation, runs.state, func.count())
                  .group_by(runs.playbook, runs.operation, runs.state), runs.playbook, playbooks)
    return [(r[0], r[1], str(RunState(r[2])), r[3]) for r in conn.execute(query)]


def _seconds(conn: Connection, start: Any, end: Any) -> ColumnElement[float]:
    """end - start in seconds, computed by the database."""
    if conn.dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return cast(func.extract("epoch", end - start), Float)


def _histogram(conn: Connection, label: Any, start: Any, end: Any, playbooks: Sequence[str] | None,
               playbook: Any, *where: Any) -> Histogram:
    took = _seconds(conn, start, end)
    counts = [func.sum(case((took <= b, 1), else_=0)) for b in DURATION_BUCKETS]
    query = (select(label, *counts, func.sum(took), func.count())
             .where(start.is_not(None), end.is_not(None), *where).group_by(label))
    buckets, sums, total = {}, {}, {}
    for row in conn.execute(_only(query, playbook, playbooks)):
        name = str(row[0])
        buckets[name] = [int(n or 0) for n in row[1:1 + len(DURATION_BUCKETS)]]
        sums[name], total[name] = float(row[-2] or 0.0), int(row[-1])
    return Histogram(buckets, sums, total)


def _run_histogram(conn: Connection, playbooks: Sequence[str] | None) -> Histogram:
    runs = _table(Run).c
    return _histogram(conn, runs.operation, runs.started_at, runs.ended_at, playbooks, runs.playbook)


def _step_histogram(conn: Connection, playbooks: Sequence[str] | None) -> Histogram:
    """Moves, restarts and a drill's clones, by the kind of workload; rollbacks are left out."""
    steps, runs = _table(Step).c, _table(Run).c
    where = [steps.kind.in_(WORKLOAD_KINDS), steps.action != Action.ROLLBACK]
    if playbooks is not None:  # a step names no playbook: its run does
        where.append(steps.run_id.in_(select(runs.id).where(runs.playbook.in_(list(playbooks)))))
    return _histogram(conn, steps.kind, steps.started_at, steps.ended_at, None, steps.kind, *where)


def _moving(conn: Connection, playbooks: Sequence[str] | None) -> dict[str, int]:
    steps, runs = _table(Step).c, _table(Run).c
    query = (select(runs.playbook, func.count())
             .select_from(_table(Step).join(_table(Run), runs.id == steps.run_id))
             .where(runs.state == RunState.RUNNING, steps.state == StepState.RUNNING,
                    steps.kind.in_(WORKLOAD_KINDS)).group_by(runs.playbook))
    return {r[0]: r[1] for r in conn.execute(_only(query, runs.playbook, playbooks))}


# The actions whose success leaves a workload on the step's target.
PLACING = (Action.MOVE, Action.DEGRADE, Action.ALREADY, Action.ROLLBACK)


def _placed(conn: Connection, playbooks: Sequence[str] | None) -> dict[tuple[str, str, str], tuple[str, int]]:
    """Where each workload was left by the newest step that moved it and succeeded (drills move nothing), and by
    which run."""
    steps, runs = _table(Step).c, _table(Run).c
    key = (runs.playbook, steps.kind, steps.workload)
    ranked = _only(select(*key, steps.target_site, steps.run_id,
                          func.row_number().over(partition_by=key, order_by=steps.id.desc()).label("rank"))
                   .select_from(_table(Step).join(_table(Run), runs.id == steps.run_id))
                   .where(runs.operation != Operation.DRILL, steps.state == StepState.SUCCEEDED,
                          steps.action.in_(PLACING), steps.kind.in_(WORKLOAD_KINDS)),
                   runs.playbook, playbooks).subquery()
    return {(r.playbook, r.kind, r.workload): (r.target_site, r.run_id)
            for r in conn.execute(select(ranked).where(ranked.c.rank == 1))}


def _last_runs(conn: Connection, playbooks: Sequence[str] | None, automatic: bool = False) -> dict[str, datetime]:
    """When each playbook's newest run (or newest automatic failover) started."""
    runs = _table(Run).c
    query = select(runs.playbook, func.max(runs.started_at)).group_by(runs.playbook)
    query = _only(query.where(runs.automatic.is_not(None)) if automatic else query, runs.playbook, playbooks)
    return {r[0]: r[1] for r in conn.execute(query)}


def _lease(conn: Connection) -> Lease | None:
    row = conn.execute(select(_table(Lease)).where(_table(Lease).c.name == SCHEDULER_LEASE)).first()
    return None if row is None else Lease(**dict(row._mapping))
