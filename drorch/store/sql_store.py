"""The state store shared by the CLI and the daemon: SQLite under state/ or any SQLAlchemy URL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Column, delete, event, update
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from drorch.errors import NotFound
from drorch.model.groups import Consistency
from drorch.model.playbook import WorkloadKind
from drorch.model.records import Action, Mode, Operation, RunState, StepState, naive, utcnow
from drorch.redact import redact
from drorch.store._location import default_url
from drorch.store.connect import ensure_tables, open_engine
from drorch.store.damaged_rows import READ_FAILURES, damaged, loaded


def _valued(enum: type[StrEnum], nullable: bool = False) -> Any:
    """A column of an enum kept as its value (the text drorch has always written there), read as its member; a
    value that is none of them is a damaged row."""
    return Column(SqlEnum(enum, values_callable=lambda members: [m.value for m in members], native_enum=False,
                          create_constraint=False), nullable=nullable)


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    operation: Operation = Field(sa_column=_valued(Operation))
    playbook: str
    playbook_path: str
    source_site: str
    target_site: str
    state: RunState = Field(index=True)
    pid: int
    host: str
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    error: str | None = None
    mode: Mode | None = Field(default=None, sa_column=_valued(Mode, nullable=True))
    abort_requested: bool | None = None
    commit_deadline: datetime | None = None


class Lock(SQLModel, table=True):
    """A playbook or a workload held by one run; it outlives a crash, so `drorch resume` can take it over."""

    __tablename__ = "locks"

    key: str = Field(primary_key=True)  # playbook/<name> or <kind>/<workload>
    run_id: int | None = Field(default=None, index=True)  # None while the run is still being planned
    pid: int
    host: str
    taken_at: datetime = Field(default_factory=utcnow)


class RecoveryPoint(SQLModel, table=True):
    """What a disaster restart of one workload can start from, shipped to a site at a time."""

    __tablename__ = "recovery_points"

    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(index=True)
    workload: str
    kind: str
    site: str
    taken_at: datetime = Field(default_factory=utcnow)
    size_bytes: int | None = None  # bytes shipped
    name: str | None = None  # the driver's name for it, e.g. the checkpoint's
    detail: str | None = None  # what was shipped
    point_kind: str | None = None  # "full" or "incremental", for points of disks
    # When a ship to the other site made it history: a point of the way back, kept but out of RPO and alerts.
    retired_at: datetime | None = None
    chain: int | None = None  # volumes a restart from it reads
    complete: bool = True
    error: str | None = None
    consistency: Consistency | None = Field(default=None, sa_column=_valued(Consistency, nullable=True))  # None: crash
    group: str | None = None  # its consistency group, whose members' points of one cut share `cut`
    cut: str | None = None  # <group>@<time>: the cut it was taken in, with its group's other members
    cut_at: datetime | None = None  # the instant its data describes
    frozen_at: datetime | None = None  # when its freeze began (its group's); None when nothing was frozen
    freeze_ms: float | None = None  # how long it (its group) stayed frozen
    warning: str | None = None  # taken, but not as asked: e.g. crash-consistent because the guest agent refused

    @property
    def consistent(self) -> Consistency:
        return self.consistency or Consistency.CRASH


class OpenFreeze(SQLModel, table=True):
    """A workload frozen for a cut and not yet released, kept before it is frozen: if the process that froze it
    dies, the next one that touches its playbook releases it."""

    __tablename__ = "open_freezes"

    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(index=True)
    workload: str
    kind: str
    site: str
    host: str  # the playbook's name of the host it was frozen on
    how: str  # what the driver did, which its thaw undoes
    owner: str  # host:pid of the process that froze it
    release_by: datetime  # past this, it is released whoever froze it


class ReadinessCheck(SQLModel, table=True):
    """One look at whether a failover would work now: validate's checks and every workload's RPO."""

    __tablename__ = "readiness"

    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(index=True)
    checked_at: datetime = Field(default_factory=utcnow)
    ready: bool
    problems: str = "[]"  # JSON list of one-line problems
    alert: str | None = None  # how the change to not ready was told, or why it could not be
    hosts: str | None = None  # JSON list: per host of the playbook, its site, whether it answered, and why not
    records: str | None = None  # JSON list: per DNS record of the playbook, where it points and whether rightly

    def problem_list(self) -> list[str]:
        return [str(p) for p in loaded("readiness", self.id, "problems", self.problems)]


class Lease(SQLModel, table=True):
    """Who runs the scheduler: taken when free or expired, renewed by its holder."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True)
    holder: str
    expires_at: datetime


class DaemonRow(SQLModel, table=True):
    """Each daemon's heartbeat, for `drorch daemon status`."""

    __tablename__ = "daemons"

    identity: str = Field(primary_key=True)  # host:pid
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    leader: bool = False
    stopped: bool = False
    lease_s: float | None = None  # its lease: a heartbeat older than that is a daemon gone

    def role(self, now: datetime) -> str:
        """leader, standby, stopped, or gone: a heartbeat older than the daemon's lease (killed, say)."""
        if self.stopped:
            return "stopped"
        if self.lease_s is not None and (naive(now) - naive(self.heartbeat_at)).total_seconds() > self.lease_s:
            return "gone"
        return "leader" if self.leader else "standby"


class Step(SQLModel, table=True):
    __tablename__ = "steps"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    seq: int
    workload: str
    kind: str
    strategy: str
    source_site: str
    target_site: str
    wave: str | None = None
    action: Action | None = Field(default=None, sa_column=_valued(Action, nullable=True))
    from_host: str | None = None
    to_host: str | None = None
    state: StepState = StepState.PENDING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    error: str | None = None
    handle: str | None = None  # the driver's JSON handle: lets a later run pick the action up
    bytes_done: int | None = None
    bytes_total: int | None = None
    request: str | None = None  # the MoveRequest as JSON: a resumed run moves exactly what was planned
    detail: str | None = None  # hooks, approvals and fencing: what the step is about, as JSON
    warning: str | None = None  # succeeded, but not as asked (a checkpoint move that became a redeploy), and why
    source_kind: str | None = None  # what the workload runs as on each site, where that is not its kind
    target_kind: str | None = None

    def details(self) -> dict[str, Any]:
        """What the step is about (its `detail` JSON); DamagedRow when the store holds something else there."""
        detail: dict[str, Any] = loaded("steps", self.id, "detail", self.detail)
        return detail

    @property
    def at_source(self) -> WorkloadKind:
        return WorkloadKind(self.source_kind or self.kind)

    @property
    def at_target(self) -> WorkloadKind:
        return WorkloadKind(self.target_kind or self.kind)


@event.listens_for(Session, "before_flush")
def _without_secrets(session: Session, _context: Any, _instances: Any) -> None:
    """Whatever a record says (a driver's error, a hook's output), passwords and tokens in URLs are masked
    before it reaches the store."""
    for record in (*session.new, *session.dirty):
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and not name.startswith("_") and (clean := redact(value)) != value:
                setattr(record, name, clean)


class Store:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine: Engine = open_engine(self.url)
        ensure_tables(self.engine, SQLModel.metadata.sorted_tables)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session; a row that holds what drorch never writes (its value cannot be read) is named, not raised."""
        try:
            with Session(self.engine, expire_on_commit=False) as s:
                yield s
        except READ_FAILURES as exc:
            raise damaged(self.engine, SQLModel.metadata.sorted_tables, exc) from None

    def add_run(self, run: Run, steps: Sequence[Step]) -> Run:
        with self.session() as s:
            s.add(run)
            s.commit()
            assert run.id is not None  # given by the database at the commit
            for step in steps:
                step.run_id = run.id
                s.add(step)
            s.commit()
            return run

    def save(self, *rows: SQLModel) -> None:
        with self.session() as s:
            for row in rows:
                s.add(row)
            s.commit()

    def run(self, run_id: int) -> Run:
        with self.session() as s:
            run = s.get(Run, run_id)
        if run is None:
            raise NotFound(f"no run {run_id} in {redact(self.url)}")
        return run

    def steps(self, run_id: int) -> list[Step]:
        with self.session() as s:
            return list(s.exec(select(Step).where(col(Step.run_id) == run_id).order_by(col(Step.seq))))

    def runs(self, limit: int = 20) -> list[Run]:
        with self.session() as s:
            return list(s.exec(select(Run).order_by(col(Run.id).desc()).limit(limit)))

    def runs_of(self, operation: Operation, playbook: str | None = None) -> list[Run]:
        """Oldest first."""
        with self.session() as s:
            q = select(Run).where(col(Run.operation) == operation)
            if playbook is not None:
                q = q.where(col(Run.playbook) == playbook)
            return list(s.exec(q.order_by(col(Run.id))))

    def take_locks(self, keys: Sequence[str], run_id: int | None, pid: int, host: str) -> Lock | None:
        """Take every key at once, or none: returns the lock that someone else holds."""
        with self.session() as s:
            try:
                for key in keys:
                    s.add(Lock(key=key, run_id=run_id, pid=pid, host=host))
                s.commit()
                return None
            except IntegrityError:
                s.rollback()
        with self.session() as s:
            return next((lk for lk in (s.get(Lock, k) for k in keys) if lk is not None), None)

    def drop_lock(self, lock: Lock) -> None:
        """Remove a stale lock, only if it is still the one that was judged stale."""
        with self.session() as s:
            same_run = col(Lock.run_id).is_(None) if lock.run_id is None else col(Lock.run_id) == lock.run_id
            s.execute(delete(Lock).where(col(Lock.key) == lock.key, col(Lock.pid) == lock.pid,
                                         col(Lock.host) == lock.host, same_run))
            s.commit()

    def hand_locks(self, keys: Sequence[str], run_id: int) -> None:
        """Locks taken while a run was planned pass to its run row."""
        with self.session() as s:
            s.execute(update(Lock).where(col(Lock.key).in_(keys), col(Lock.run_id).is_(None))
                      .values(run_id=run_id))
            s.commit()

    def run_locks(self, run_id: int) -> list[Lock]:
        with self.session() as s:
            return list(s.exec(select(Lock).where(col(Lock.run_id) == run_id)))

    def adopt_locks(self, run_id: int, pid: int, host: str) -> None:
        """`drorch resume`: the locks of an interrupted run pass to the process that continues it."""
        with self.session() as s:
            s.execute(update(Lock).where(col(Lock.run_id) == run_id).values(pid=pid, host=host))
            s.commit()

    def release_locks(self, run_id: int) -> None:
        with self.session() as s:
            s.execute(delete(Lock).where(col(Lock.run_id) == run_id))
            s.commit()

    def add_points(self, points: Sequence[RecoveryPoint]) -> None:
        self.save(*points)

    def points(self, playbook: str) -> list[RecoveryPoint]:
        """Newest first."""
        with self.session() as s:
            return list(s.exec(select(RecoveryPoint).where(col(RecoveryPoint.playbook) == playbook)
                               .order_by(col(RecoveryPoint.taken_at).desc(), col(RecoveryPoint.id).desc())))

    def protected_towards(self, playbook: str, site: str, keys: Iterable[tuple[str, str]]) -> None:
        """Each (kind, workload) is now protected towards `site`: its points on the other sites are the way back's,
        which it no longer needs (kept, as history, out of its RPO), and its earlier points on `site` count again."""
        wanted, now = set(keys), utcnow()
        with self.session() as s:
            for p in s.exec(select(RecoveryPoint).where(col(RecoveryPoint.playbook) == playbook)):
                retired = None if p.site == site else p.retired_at or now
                if (p.kind, p.workload) in wanted and p.retired_at != retired:
                    p.retired_at = retired
                    s.add(p)
            s.commit()

    def drop_points(self, ids: Sequence[int]) -> None:
        with self.session() as s:
            s.execute(delete(RecoveryPoint).where(col(RecoveryPoint.id).in_(ids)))
            s.commit()

    def freezes(self, playbook: str) -> list[OpenFreeze]:
        with self.session() as s:
            return list(s.exec(select(OpenFreeze).where(col(OpenFreeze.playbook) == playbook)
                               .order_by(col(OpenFreeze.id))))

    def freezes_closed(self, ids: Sequence[int]) -> None:
        with self.session() as s:
            s.execute(delete(OpenFreeze).where(col(OpenFreeze.id).in_(ids)))
            s.commit()

    def readiness(self, playbook: str, limit: int = 1000) -> list[ReadinessCheck]:
        """Newest first."""
        with self.session() as s:
            return list(s.exec(select(ReadinessCheck).where(col(ReadinessCheck.playbook) == playbook)
                               .order_by(col(ReadinessCheck.id).desc()).limit(limit)))

    def lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew the lease; True when `holder` has it until now + ttl."""
        now = utcnow()
        with self.session() as s:
            res = cast(CursorResult[Any], s.execute(  # an UPDATE's result: the cursor's, with its rowcount
                update(Lease).where(col(Lease.name) == name,
                                    (col(Lease.holder) == holder) | (col(Lease.expires_at) < now))
                .values(holder=holder, expires_at=now + ttl)))
            s.commit()
            if res.rowcount:
                return True
            try:
                s.add(Lease(name=name, holder=holder, expires_at=now + ttl))
                s.commit()
                return True
            except IntegrityError:
                return False

    def release_lease(self, name: str, holder: str) -> None:
        with self.session() as s:
            s.execute(delete(Lease).where(col(Lease.name) == name, col(Lease.holder) == holder))
            s.commit()

    def heartbeat(self, identity: str, leader: bool, stopped: bool = False, lease_s: float | None = None) -> None:
        with self.session() as s:
            row = s.get(DaemonRow, identity) or DaemonRow(identity=identity)
            row.heartbeat_at, row.leader, row.stopped = utcnow(), leader, stopped
            row.lease_s = lease_s if lease_s is not None else row.lease_s
            s.add(row)
            s.commit()

    def daemons(self) -> list[DaemonRow]:
        with self.session() as s:
            return list(s.exec(select(DaemonRow).order_by(col(DaemonRow.heartbeat_at).desc())))

    def refresh(self, run: Run) -> Run:
        """The run as the store has it now: another process may have asked it to abort."""
        return self.run(run.id or 0)
