"""Opening the state store: the URL turned into an engine with timeouts, the file or database checked before
anything writes to it, and drorch's tables made in one transaction.

A store is drorch's, or empty, or refused untouched: a database with another program's tables, or with a
table of drorch's name that lacks drorch's columns, gets no table, no column and no mode change.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event, inspect, text
from sqlalchemy.engine import Connection, Engine, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError
from sqlalchemy.schema import CreateColumn
from sqlmodel import create_engine

from drorch.errors import StoreError
from drorch.redact import redact
from drorch.store._location import BUSY_TIMEOUT_MS, at_rest, refuse_foreign, refuse_unusable, store_file

CONNECT_TIMEOUT_S = 10  # a database server that accepts and never answers is given up after this
# Makers of a new store wait for each other on this PostgreSQL advisory lock (SQLite: BEGIN IMMEDIATE).
_SCHEMA_LOCK = 0x6472_6F72_6368  # "drorch"

_CHECKED: set[Path] = set()  # store files this process has checked at rest


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # WAL + NORMAL survives a crash of the process intact; a power cut may lose the last transition, which a
    # resumed run re-checks against reality anyway.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_engine(url: str) -> Engine:
    """An engine for the store's URL; StoreError for a URL that names no database drorch can use, a missing
    database driver, or an SQLite path that is not a regular file or one that can be made."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"state store URL {redact(url)!r} is not a database URL (e.g. sqlite:///state/drorch.db "
                         "or postgresql://user@host/db)") from None
    shown = redact(url)
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # Times are written in UTC whatever the server's zone; a lock held elsewhere is not waited on for ever.
        args = {"options": f"-c timezone=UTC -c lock_timeout={BUSY_TIMEOUT_MS}", "connect_timeout": CONNECT_TIMEOUT_S}
    elif parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or "mode=memory" in database or parsed.query.get("mode") == "memory":
            raise StoreError(f"state store URL {shown}: an in-memory database keeps nothing once the command ends, "
                             "so no run, schedule or point would be recorded: name a file (sqlite:///state/drorch.db)")
        args = {"timeout": BUSY_TIMEOUT_MS / 1000}
    try:
        engine = create_engine(url, connect_args=args)
    except NoSuchModuleError:
        raise StoreError(f"state store URL {shown}: no database of kind {parsed.drivername!r} is known "
                         "(sqlite:/// or postgresql://)") from None
    except ImportError as exc:
        raise StoreError(f"state store URL {shown}: needs the Python module {exc.name or exc}, which is not "
                         "installed") from None
    except (ArgumentError, TypeError, ValueError) as exc:
        raise StoreError(f"state store URL {shown}: {exc}") from None
    event.listen(engine, "handle_error", _store_error)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        _sqlite_file(engine)
    return engine


def _store_error(context: ExceptionContext) -> None:
    """Any failure of the database itself (read-only, full, gone, locked too long) is one line about the store;
    a duplicate key stays an IntegrityError, which the store's locks and leases rely on."""
    if isinstance(context.sqlalchemy_exception, IntegrityError):
        return
    engine = context.engine
    where = redact(engine.url.render_as_string()) if engine is not None else "state store"
    why = str(context.original_exception).strip().splitlines() or [type(context.original_exception).__name__]
    raise StoreError(f"state store {where}: cannot be used: {why[0]}") from None


def _sqlite_file(engine: Engine) -> None:
    """Created readable by its owner only, before SQLite makes it (its journal files take the same mode); an
    existing file keeps its mode, and is first only read, and refused when it is damaged or not a drorch store."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    exists = store_file(path)
    # A store at rest is checked before anything writes to it, once per process: a second connection opened
    # beside this process's own would disturb their locks. One in use elsewhere has its write-ahead log beside
    # it, and is checked inside the transaction that would make its tables.
    first = path not in _CHECKED
    _CHECKED.add(path)
    if first and exists and not path.with_name(f"{path.name}-wal").exists():
        refuse_unusable(path, *at_rest(path))
    if not exists:
        # Never an open and close of an existing store: closing any descriptor of the file drops every SQLite
        # lock this process holds on it.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"state store {path}: cannot be made: {exc.strerror or exc}") from None


def ensure_tables(engine: Engine, tables: Sequence[Table]) -> None:
    """Make what is missing of `tables` (tables, and nullable columns added since a store was made), all in one
    transaction that makers of the same store wait on each other for; a store that needs nothing is only read."""
    with engine.connect() as conn:
        missing = _missing(conn, tables, engine)
        if engine.dialect.name == "sqlite":  # once the store is known to be drorch's: a setting of the file
            _write_ahead(conn, engine)  # the CLI and the daemon read while a run writes
        if not missing:
            return
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        for table, columns in _missing(conn, tables, engine):
            if columns is None:
                table.create(conn, checkfirst=True)
                continue
            for column in columns:
                ddl = CreateColumn(column).compile(dialect=engine.dialect)
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))


def _write_ahead(conn: Connection, engine: Engine) -> None:
    """Put the store in WAL mode, asked again while another process holds the file: SQLite answers a change of
    journal mode that would wait on a writer with "locked" at once, without its busy timeout (two commands making
    one new store at once meet it)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            raw.execute("PRAGMA journal_mode=WAL").close()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                where = redact(engine.url.render_as_string())
                raise StoreError(f"state store {where}: cannot be used: {exc}") from None
        time.sleep(0.05)


def _missing(conn: Connection, tables: Sequence[Table], engine: Engine) -> list[tuple[Table, list[Any] | None]]:
    """Each table to make (None) or the columns to add to it; StoreError for a database that is not drorch's."""
    found = inspect(conn)
    have = set(found.get_table_names())
    where = redact(engine.url.render_as_string())
    refuse_foreign(where, sorted(have))
    missing: list[tuple[Table, list[Any] | None]] = []
    for table in tables:
        if table.name not in have:
            missing.append((table, None))
            continue
        columns = {c["name"] for c in found.get_columns(table.name)}
        new = [c for c in table.columns if c.name not in columns]
        required = [c.name for c in new if not c.nullable]
        if required:
            raise StoreError(f"state store {where} is not drorch's: its table {table.name} lacks "
                             f"{', '.join(required)}; drorch writes nothing into it")
        if new:
            missing.append((table, new))
    return missing

