"""The run history read from the state store with the standard library: `drorch history` answers before
SQLAlchemy could have been imported."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from drorch.errors import DamagedRow, NotFound
from drorch.model.records import Action, Mode, Operation, RunState, StepState
from drorch.redact import redact
from drorch.store._location import (
    BUSY_TIMEOUT_MS,
    at_rest,
    default_url,
    read_only,
    refuse_foreign,
    refuse_unusable,
    sqlite_path,
    store_file,
    unusable,
)

# Columns whose stored form is an enum member's name, as SQLAlchemy writes enums.
_ENUMS: dict[tuple[str, str], type[StrEnum]] = {("runs", "state"): RunState, ("steps", "state"): StepState}
# Columns whose stored form is an enum member's value, as drorch.store.sql_store writes them.
_VALUED: dict[tuple[str, str], type[StrEnum]] = {("runs", "operation"): Operation, ("runs", "mode"): Mode,
                                                 ("steps", "action"): Action}

Record = dict[str, Any]


class History:
    """Runs and steps as records shaped like the store's rows (datetimes, enum members, booleans). An SQLite
    store is read directly and never written, not even created; any other database through drorch.store.sql_store."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.path = sqlite_path(self.url)
        self._checked = False  # a store file at rest is checked once, however many reads follow

    def runs(self, limit: int) -> list[Record]:
        if self.path is None:
            from drorch.store.sql_store import Store

            return [r.model_dump() for r in Store(self.url).runs(limit)]
        return self._select("runs", "1 ORDER BY id DESC LIMIT ?", limit)

    def run(self, run_id: int) -> Record:
        if self.path is None:
            from drorch.store.sql_store import Store

            return Store(self.url).run(run_id).model_dump()
        found = self._select("runs", "id = ?", run_id)
        if not found:
            raise NotFound(f"no run {run_id} in {redact(self.url)}")
        return found[0]

    def steps(self, run_id: int) -> list[Record]:
        if self.path is None:
            from drorch.store.sql_store import Store

            return [s.model_dump() for s in Store(self.url).steps(run_id)]
        return self._select("steps", "run_id = ? ORDER BY seq", run_id)

    def _select(self, table: str, where: str, arg: int) -> list[Record]:
        path = self.path
        assert path is not None
        if not store_file(path):
            return []
        if not self._checked and not path.with_name(f"{path.name}-wal").exists():  # one in use is checked below
            refuse_unusable(path, *at_rest(path))
        self._checked = True
        try:
            with contextlib.closing(read_only(path)) as db:
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                types = {row[1]: str(row[2]).upper() for row in db.execute(f"PRAGMA table_info({table})")}
                if not types:  # a store is made in one transaction: no table of drorch's, no store yet
                    refuse_foreign(str(path), [r[0] for r in db.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'")])
                    return []
                found = db.execute(f"SELECT * FROM {table} WHERE {where}", (arg,))
                names = [d[0] for d in found.description]
                rows = found.fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise unusable(path, exc) from None
        return [self._record(table, types, dict(zip(names, row, strict=True))) for row in rows]

    def _record(self, table: str, types: dict[str, str], raw: Record) -> Record:
        """A row as the store's model has it; DamagedRow naming the row and the value that is not drorch's."""
        record = {}
        for column, value in raw.items():
            try:
                record[column] = _value(table, column, types[column], value)
            except (KeyError, ValueError, TypeError):
                raise DamagedRow(f"state store {redact(self.url)}: row {raw.get('id')} of table {table} is damaged: "
                                 f"its {column} {str(value)[:60]!r} is not what drorch writes there; repair or "
                                 "delete that row") from None
        return record


def _value(table: str, column: str, declared: str, raw: Any) -> Any:
    if raw is None:
        return None
    if (table, column) in _ENUMS:
        return _ENUMS[table, column][raw]
    if (table, column) in _VALUED:
        return _VALUED[table, column](raw)
    if declared == "DATETIME":  # kept without a zone, handed out in UTC as sqlmodel's UTCDateTime does
        when = datetime.fromisoformat(raw)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if declared == "BOOLEAN":
        return bool(raw)
    if declared == "INTEGER" and not isinstance(raw, int):
        raise TypeError(raw)
    return raw
