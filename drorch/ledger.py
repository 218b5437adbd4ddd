"""Where the state store is, whether a store file at rest can be used, and the run history read from it with
the standard library: `drorch history` answers before SQLAlchemy could have been imported."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from drorch.errors import NotFound, StoreError
from drorch.paths import not_regular
from drorch.records import RunState, StepState
from drorch.redact import redact

# The store's tables (drorch.store declares them; a test keeps the two lists equal): any one of them makes a
# database drorch's.
TABLES = frozenset({"runs", "steps", "locks", "recovery_points", "readiness", "leases", "daemons"})
# How long a command waits for another to finish writing the store before it gives up with a clear line.
BUSY_TIMEOUT_MS = 30_000
# Columns whose stored form is an enum member's name, as SQLAlchemy writes enums.
_ENUMS: dict[tuple[str, str], type[StrEnum]] = {("runs", "state"): RunState, ("steps", "state"): StepState}

Record = dict[str, Any]


def default_url() -> str:
    url = os.environ.get("DRORCH_DB_URL")
    if url:
        return url
    return f"sqlite:///{state_dir() / 'drorch.db'}"


def state_dir() -> Path:
    """The store's folder, made readable by its owner only when drorch makes it: run history, hook context and
    endpoints are the operator's alone. A folder that exists keeps its mode: drorch changes no mode it did not
    set."""
    path = Path(os.environ.get("DRORCH_STATE_DIR", "state"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
        path.chmod(0o700)  # whatever the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"state folder {path}: cannot be made: {exc.strerror or exc}") from None
    return path


def store_file(path: Path) -> bool:
    """Whether the store's file exists; StoreError, before anything opens it, for a path that is not a regular
    file (a pipe would block for ever, a device be changed) or could not be made."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise StoreError(f"state store {path}: its folder {path.parent} does not exist") from None
        return False
    except OSError as exc:  # a name too long, a loop of links, a file where a folder should be
        raise StoreError(f"state store {path}: cannot be used: {exc.strerror or exc}") from None
    kind = not_regular(mode)
    if kind is not None:
        raise StoreError(f"state store {path}: not a regular file ({kind}): drorch neither opens nor changes it")
    return True


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite store's URL; None for any other database (or SQLite in memory)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix):] in ("", ":memory:"):
        return None
    return Path(url[len(prefix):])


def at_rest(path: Path, attempts: int = 3) -> tuple[list[str], str]:
    """A store file's tables and the verdict of SQLite's quick check, read without writing. Asked again
    after a moment when it fails: a command closing the store rewrites it briefly, while damage stays."""
    for attempt in range(1, attempts + 1):
        try:
            with contextlib.closing(_read_only(path)) as db:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                damage = str(db.execute("PRAGMA quick_check(1)").fetchone()[0])
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # a damaged schema can fail to decode
            if attempt == attempts:
                raise _unusable(path, exc) from None
        else:
            if damage == "ok" or attempt == attempts:
                return tables, damage
        time.sleep(0.2)
    raise AssertionError("unreachable: the last attempt returns or raises")


def refuse_unusable(path: Path, tables: list[str], damage: str) -> None:
    if damage != "ok":
        raise StoreError(f"state store {path} is damaged ({damage}): drorch writes nothing into it")
    refuse_foreign(str(path), tables)


def refuse_foreign(where: str, tables: list[str]) -> None:
    """A database with tables, none of them drorch's, is another program's: drorch writes nothing into it."""
    if tables and not set(tables) & TABLES:
        raise StoreError(f"state store {where} is another program's database (tables {', '.join(sorted(tables)[:5])}):"
                         " drorch writes nothing into it; set DRORCH_STATE_DIR or DRORCH_DB_URL")


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)


def _unusable(path: Path, exc: Exception) -> StoreError:
    why = "its schema is damaged" if isinstance(exc, UnicodeDecodeError) else str(exc)
    return StoreError(f"state store {path}: cannot be used: {why}")


class History:
    """Runs and steps as records shaped like the store's rows (datetimes, enum members, booleans). An SQLite
    store is read directly and never written, not even created; any other database through drorch.store."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.path = sqlite_path(self.url)
        self._checked = False  # a store file at rest is checked once, however many reads follow

    def runs(self, limit: int) -> list[Record]:
        if self.path is None:
            from drorch.store import Store

            return [r.model_dump() for r in Store(self.url).runs(limit)]
        return self._select("runs", "1 ORDER BY id DESC LIMIT ?", limit)

    def run(self, run_id: int) -> Record:
        if self.path is None:
            from drorch.store import Store

            return Store(self.url).run(run_id).model_dump()
        found = self._select("runs", "id = ?", run_id)
        if not found:
            raise NotFound(f"no run {run_id} in {redact(self.url)}")
        return found[0]

    def steps(self, run_id: int) -> list[Record]:
        if self.path is None:
            from drorch.store import Store

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
            with contextlib.closing(_read_only(path)) as db:
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
            raise _unusable(path, exc) from None
        return [{k: _value(table, k, types[k], v) for k, v in zip(names, row, strict=True)} for row in rows]


def _value(table: str, column: str, declared: str, raw: Any) -> Any:
    if raw is None:
        return None
    if (table, column) in _ENUMS:
        return _ENUMS[table, column][raw]
    if declared == "DATETIME":  # kept without a zone, handed out in UTC as sqlmodel's UTCDateTime does
        when = datetime.fromisoformat(raw)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if declared == "BOOLEAN":
        return bool(raw)
    return raw
