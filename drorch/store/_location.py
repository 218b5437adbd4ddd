"""Where the state store is, and whether a store file at rest can be used: read with the standard library
only, before SQLAlchemy is imported (or, for `drorch history`, without it)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from drorch.errors import StoreError
from drorch.file_kinds import not_regular

# The store's tables (drorch.store.sql_store declares them; a test keeps the two lists equal): any one of them makes a
# database drorch's.
TABLES = frozenset({"runs", "steps", "locks", "recovery_points", "readiness", "leases", "daemons", "open_freezes",
                    "skipped_ships", "sentinel_turns",
                    "takeover_controls"})
# How long a command waits for another to finish writing the store before it gives up with a clear line.
BUSY_TIMEOUT_MS = 30_000


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
            with contextlib.closing(read_only(path)) as db:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                damage = str(db.execute("PRAGMA quick_check(1)").fetchone()[0])
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # a damaged schema can fail to decode
            if attempt == attempts:
                raise unusable(path, exc) from None
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


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)


def unusable(path: Path, exc: Exception) -> StoreError:
    why = "its schema is damaged" if isinstance(exc, UnicodeDecodeError) else str(exc)
    return StoreError(f"state store {path}: cannot be used: {why}")
