"""Rows of the state store that drorch cannot read (written by another program, by hand, or by a damaged disk),
found and named: the operator is told which row of which table holds what, instead of a traceback.

A read that fails on a value is turned into DamagedRow here; only then are the tables scanned, as stored and
without SQLAlchemy's conversions, for the first row whose value is not one drorch writes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, Table, TypeDecorator, select
from sqlalchemy.engine import Engine

from drorch.errors import DamagedRow
from drorch.redact import redact

# Text columns that hold JSON, and the shape drorch writes there.
JSON_COLUMNS: dict[tuple[str, str], type] = {("steps", "detail"): dict, ("steps", "request"): dict,
                                             ("readiness", "problems"): list, ("readiness", "hosts"): list,
                                             ("readiness", "records"): list}
READ_FAILURES = (LookupError, ValueError)  # an enum member, a time or a number that the stored text is not


def loaded(table: str, row_id: int | None, column: str, text: str | None) -> Any:
    """A JSON column's value; DamagedRow when it is not the JSON drorch writes there."""
    kind = JSON_COLUMNS[(table, column)]
    if not text:
        return kind()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, kind):
        raise DamagedRow(f"state store: row {row_id} of table {table} is damaged: its {column} is not the JSON "
                         "drorch writes there; repair or delete that row")
    return value


def _wrong(column: Any, raw: Any) -> str | None:
    """Why a stored value is not one drorch writes in this column, or None."""
    if raw is None:
        return None
    kind = column.type.impl_instance if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(kind, Enum):
        return None if raw in kind.enums else "is not a value drorch writes there"
    if kind.python_type is datetime and isinstance(raw, str):
        try:
            datetime.fromisoformat(raw)
        except ValueError:
            return "is not a time"
    if kind.python_type is int and not isinstance(raw, int):
        return "is not a whole number"
    if (column.table.name, column.name) in JSON_COLUMNS:
        try:
            loaded(column.table.name, 0, column.name, raw)
        except DamagedRow:
            return "is not the JSON drorch writes there"
    return None


def first_damaged(engine: Engine, tables: list[Table]) -> str | None:
    """The first row of `tables` holding a value drorch does not write, said in words; None when none does."""
    with engine.connect() as conn:
        for table in tables:
            key = next(iter(table.primary_key.columns))
            names = [c.name for c in table.columns]
            # As stored: the driver's own values, none of SQLAlchemy's conversions (which are what failed).
            for row in conn.exec_driver_sql(str(select(table).compile(engine))):
                raw = dict(zip(names, row, strict=True))
                for column in table.columns:
                    why = _wrong(column, raw[column.name])
                    if why is not None:
                        shown = str(raw[column.name])[:60]
                        return (f"row {raw[key.name]} of table {table.name} is damaged: its {column.name} "
                                f"{shown!r} {why}")
    return None


def damaged(engine: Engine, tables: list[Table], exc: Exception) -> DamagedRow:
    """The error for a read that failed on a stored value, naming the row when one is found."""
    where = redact(engine.url.render_as_string())
    found = first_damaged(engine, tables)
    said = found or f"a row holds a value drorch cannot read ({type(exc).__name__}: {str(exc)[:120]})"
    return DamagedRow(f"state store {where}: {said}; repair or delete that row")
