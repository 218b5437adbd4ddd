"""The state store shared by the CLI and the daemon: SQLite under state/ or any SQLAlchemy URL."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateColumn
from sqlmodel import Field, Session, SQLModel, create_engine, select

from drorch.errors import DrorchError, NotFound
from drorch.records import RunState, StepState, utcnow


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    operation: str
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
    action: str | None = None  # what the plan said: move, degrade, skip, already, blocked
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


def default_url() -> str:
    url = os.environ.get("DRORCH_DB_URL")
    if url:
        return url
    state_dir = Path(os.environ.get("DRORCH_STATE_DIR", "state"))
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state_dir / 'drorch.db'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # the CLI and the daemon read while a run writes
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine: Engine = create_engine(self.url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        SQLModel.metadata.create_all(self.engine)
        self._add_new_columns()

    def _add_new_columns(self) -> None:
        """Bring a store written by an earlier drorch up to date: columns added since are nullable."""
        found = inspect(self.engine)
        with self.engine.begin() as conn:
            for table in SQLModel.metadata.sorted_tables:
                have = {c["name"] for c in found.get_columns(table.name)}
                for column in table.columns:
                    if column.name in have:
                        continue
                    if not column.nullable:
                        raise DrorchError(f"the state store {self.url} lacks {table.name}.{column.name}, which "
                                          "cannot be added in place")
                    ddl = CreateColumn(column).compile(dialect=self.engine.dialect)
                    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def add_run(self, run: Run, steps: Sequence[Step]) -> Run:
        with self.session() as s:
            s.add(run)
            s.commit()
            for step in steps:
                step.run_id = run.id  # type: ignore[assignment]
                s.add(step)
            s.commit()
            return run

    def save(self, *rows: Run | Step) -> None:
        with self.session() as s:
            for row in rows:
                s.add(row)
            s.commit()

    def run(self, run_id: int) -> Run:
        with self.session() as s:
            run = s.get(Run, run_id)
        if run is None:
            raise NotFound(f"no run {run_id} in {self.url}")
        return run

    def steps(self, run_id: int) -> list[Step]:
        with self.session() as s:
            return list(s.exec(select(Step).where(Step.run_id == run_id).order_by(Step.seq)))  # type: ignore[arg-type]

    def runs(self, limit: int = 20) -> list[Run]:
        with self.session() as s:
            return list(s.exec(select(Run).order_by(Run.id.desc()).limit(limit)))  # type: ignore[union-attr]

    def active_steps(self) -> list[tuple[Run, Step]]:
        """Steps of runs that are still marked running, whoever runs them."""
        with self.session() as s:
            rows = s.exec(
                select(Run, Step).where(Run.id == Step.run_id, Run.state == RunState.RUNNING)
            )
            return [(r, st) for r, st in rows]
