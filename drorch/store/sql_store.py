"""The state store shared by the CLI and the daemon: SQLite under state/ or any SQLAlchemy URL."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import delete, event, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from drorch.errors import NotFound
from drorch.model.records import Operation, utcnow
from drorch.redact import redact
from drorch.store._location import default_url
from drorch.store.connect import ensure_tables, open_engine
from drorch.store.damaged_rows import READ_FAILURES, damaged
from drorch.store.rows import DaemonRow, Lease, Lock, OpenFreeze, ReadinessCheck, RecoveryPoint, Run, SkippedShip, Step
from drorch.store.takeover_rows import SentinelTurn, TakeoverControl


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

    def replace(self, *rows: SQLModel) -> None:
        """Each row written over the one with its key, if there is one: a row that says only the latest."""
        with self.session() as s:
            for row in rows:
                s.merge(row)
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

    def ship_skipped(self, playbook: str, keys: Iterable[tuple[str, str]], why: str) -> None:
        """Count one more ship of each (kind, workload) not begun, and why."""
        for kind, workload in keys:
            for _ in range(3):  # a row made by another process between the two statements: counted again
                with self.session() as s:
                    done = cast(CursorResult[Any], s.execute(update(SkippedShip).where(
                        col(SkippedShip.playbook) == playbook, col(SkippedShip.kind) == kind,
                        col(SkippedShip.workload) == workload).values(
                        count=col(SkippedShip.count) + 1, last_at=utcnow(), why=why)))
                    if done.rowcount == 0:
                        s.add(SkippedShip(playbook=playbook, kind=kind, workload=workload, count=1, why=why))
                    try:
                        s.commit()
                        break
                    except IntegrityError:
                        s.rollback()

    def skipped_ships(self, playbook: str | None = None) -> list[SkippedShip]:
        with self.session() as s:
            q = select(SkippedShip)
            if playbook is not None:
                q = q.where(col(SkippedShip.playbook) == playbook)
            return list(s.exec(q.order_by(col(SkippedShip.playbook), col(SkippedShip.kind), col(SkippedShip.workload))))

    def readiness(self, playbook: str, limit: int = 1000) -> list[ReadinessCheck]:
        """Newest first."""
        with self.session() as s:
            return list(s.exec(select(ReadinessCheck).where(col(ReadinessCheck.playbook) == playbook)
                               .order_by(col(ReadinessCheck.id).desc()).limit(limit)))

    def lease(self, name: str, holder: str, ttl: timedelta, gone: Collection[str] = ()) -> bool:
        """Take or renew the lease; True when `holder` has it until now + ttl. One held by a holder in `gone` (a
        daemon known dead) is free to take."""
        now = utcnow()
        free = (col(Lease.holder) == holder) | (col(Lease.expires_at) < now)
        if gone:
            free = free | col(Lease.holder).in_(sorted(gone))
        with self.session() as s:
            res = cast(CursorResult[Any], s.execute(  # an UPDATE's result: the cursor's, with its rowcount
                update(Lease).where(col(Lease.name) == name, free).values(holder=holder, expires_at=now + ttl)))
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

    def gone_daemons(self) -> frozenset[str]:
        """Daemons that stopped, or whose heartbeat is older than their lease (killed): what they ran is dead."""
        now = utcnow()
        return frozenset(d.identity for d in self.daemons() if d.role(now) in ("stopped", "gone"))

    def sentinel_turns(self, playbook: str) -> list[SentinelTurn]:
        """Each daemon's last turn at the playbook's automatic failover."""
        with self.session() as s:
            return list(s.exec(select(SentinelTurn).where(col(SentinelTurn.playbook) == playbook)
                               .order_by(col(SentinelTurn.site), col(SentinelTurn.daemon))))

    def takeover_control(self, playbook: str) -> TakeoverControl:
        with self.session() as s:
            return s.get(TakeoverControl, playbook) or TakeoverControl(playbook=playbook)

    def refresh(self, run: Run) -> Run:
        """The run as the store has it now: another process may have asked it to abort."""
        return self.run(run.id or 0)
