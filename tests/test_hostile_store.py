"""Hostile state stores: URLs that name no usable database, paths that are not regular files, other programs'
databases, a server that never answers, a store locked by another writer. Each is refused with one line
about the store and exit 2, in bounded time, and nothing that drorch did not create is changed."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import drorch

COMMANDS = [["schedule", "list"], ["history"], ["daemon", "status"], ["report", "1"]]


def refused(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> str:
    """The one line drorch says about the store at `url`, checked to be one line and exit 2."""
    os.environ["DRORCH_DB_URL"] = url
    code, out, err = drorch(capsys, *args)
    assert code == 2 and out == "", (code, out, err)
    (line,) = err.splitlines()
    assert line.startswith("drorch: error: state store") and len(line) <= 1000, line
    assert "Traceback" not in err and "internal error" not in err
    return line


@pytest.fixture(autouse=True)
def _own_store_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DRORCH_DB_URL", raising=False)
    yield
    os.environ.pop("DRORCH_DB_URL", None)


@pytest.mark.parametrize("url, said", [
    ("foo://", "no database of kind 'foo' is known"),
    ("not a url", "is not a database URL"),
    ("file:///tmp/x.db", "no database of kind 'file' is known"),
    ("mysql://drorch@127.0.0.1/drorch", "needs the Python module MySQLdb, which is not installed"),
    ("postgresql://drorch@127.0.0.1:1/drorch", "cannot be used: connection failed"),
])
def test_store_urls_that_name_nothing_usable(url: str, said: str, capsys: pytest.CaptureFixture[str]) -> None:
    for args in COMMANDS[:1] + COMMANDS[2:]:  # history reads SQLite itself, and asks the store for the rest
        assert said in refused(capsys, url, *args)


def test_the_readmes_postgresql_form_has_its_driver() -> None:
    """`postgresql://` is what the README writes: SQLAlchemy's default driver for it must be installed."""
    from sqlalchemy import create_engine

    assert create_engine("postgresql://drorch@db-host/drorch").dialect.driver == "psycopg"


def test_a_database_server_that_accepts_and_never_answers_is_given_up(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from drorch.store import connect

    monkeypatch.setattr(connect, "CONNECT_TIMEOUT_S", 2)  # 10 s in use: the bound, not its length, is tested
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        began = time.monotonic()
        line = refused(capsys, f"postgresql://drorch@127.0.0.1:{port}/drorch", "schedule", "list")
    assert "connection timeout expired" in line and time.monotonic() - began < 30


def _device(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (CI runs as root)")
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    return dev


@pytest.mark.parametrize("kind", ["a named pipe", "a device", "a directory"])
def test_a_store_path_that_is_not_a_regular_file_is_refused_untouched(kind: str, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store"
    if kind == "a named pipe":
        os.mkfifo(path, 0o644)  # nobody writes to it: opening it for a read would block for ever
    elif kind == "a device":
        path = _device(tmp_path)
    else:
        path.mkdir()
    before = path.stat()
    for args in COMMANDS:
        line = refused(capsys, f"sqlite:///{path}", *args)
        assert line == f"drorch: error: state store {path}: not a regular file ({kind}): drorch neither opens nor " \
                       "changes it"
    after = path.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no journal beside it


@pytest.mark.parametrize("case", ["missing folder", "long name", "file as folder"])
def test_a_store_path_that_cannot_be_made(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if case == "missing folder":
        path, said = tmp_path / "no" / "such" / "drorch.db", f"its folder {tmp_path / 'no' / 'such'} does not exist"
    elif case == "long name":
        path, said = tmp_path / ("x" * 5000), "File name too long"
    else:
        (tmp_path / "file").write_text("")
        path, said = tmp_path / "file" / "drorch.db", "Not a directory"
    for args in (["schedule", "list"], ["daemon", "status"]):
        assert said in refused(capsys, f"sqlite:///{path}", *args)


def test_another_programs_database_in_use_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               playbook_file: Path) -> None:
    """A write-ahead log beside it once let drorch skip the check and add its tables."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE foo (x INTEGER)")
        conn.execute("PRAGMA journal_mode=WAL")
    (tmp_path / "app.db-wal").write_bytes(b"")
    db.chmod(0o644)
    before = db.read_bytes()
    for args in [*COMMANDS, ["schedule", "add", str(playbook_file), "--job", "protect", "--every", "60"]]:
        line = refused(capsys, f"sqlite:///{db}", *args)
        assert "is another program's database (tables foo): drorch writes nothing into it" in line
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["foo"]
    assert db.read_bytes() == before and db.stat().st_mode & 0o777 == 0o644


def test_a_store_drorch_did_not_make_keeps_its_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   playbook_file: Path) -> None:
    """An operator's read-only (0444) store, or one in a shared folder: drorch changes no mode it did not set."""
    os.environ["DRORCH_DB_URL"] = f"sqlite:///{tmp_path / 'made.db'}"
    assert drorch(capsys, "schedule", "list")[0] == 0
    made = tmp_path / "made.db"
    assert made.stat().st_mode & 0o777 == 0o600  # what drorch makes is private
    made.chmod(0o444)
    tmp_path.chmod(0o755)
    code, _, err = drorch(capsys, "schedule", "add", str(playbook_file), "--job", "protect", "--every", "60")
    if os.geteuid() == 0:  # root writes through a 0444 mode; anyone else is refused with one line
        assert code == 0, err
    else:
        assert code == 2 and "readonly database" in err
    assert made.stat().st_mode & 0o777 == 0o444 and tmp_path.stat().st_mode & 0o777 == 0o755


def test_a_state_folder_that_exists_keeps_its_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("DRORCH_STATE_DIR", str(shared))
    assert drorch(capsys, "schedule", "list")[0] == 0
    assert shared.stat().st_mode & 0o777 == 0o755 and (shared / "drorch.db").stat().st_mode & 0o777 == 0o600


def test_a_store_locked_by_another_writer_is_one_line_in_bounded_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        playbook_file: Path) -> None:
    """Another process holds the store's write lock past the wait drorch allows: the command says so."""
    from drorch.store import connect

    db = tmp_path / "busy.db"
    os.environ["DRORCH_DB_URL"] = f"sqlite:///{db}"
    assert drorch(capsys, "schedule", "list")[0] == 0  # a real store, with its job table
    monkeypatch.setattr(connect, "BUSY_TIMEOUT_MS", 300)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(20, holder.rollback)  # bounded even if drorch waited for ever
    release.start()
    try:
        began = time.monotonic()
        line = refused(capsys, f"sqlite:///{db}", "schedule", "add", str(playbook_file), "--job", "protect",
                       "--every", "60")
        assert "database is locked" in line and time.monotonic() - began < 10
    finally:
        release.cancel()
        holder.rollback()
        holder.close()


def test_a_new_store_another_command_is_writing_is_waited_for(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Two commands make one new store at once: the one that finds the other writing waits for it (SQLite answers
    the change to WAL mode with "locked" at once, without its busy timeout) and both go on."""
    db = tmp_path / "new.db"
    db.touch(mode=0o600)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, holder.rollback)
    release.start()
    try:
        os.environ["DRORCH_DB_URL"] = f"sqlite:///{db}"
        began = time.monotonic()
        code, out, err = drorch(capsys, "schedule", "list")
        assert code == 0 and err == "", (code, out, err)
        assert time.monotonic() - began >= 0.4  # it waited for the other writer, and did not go round it
        assert holder.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        release.cancel()
        holder.close()
