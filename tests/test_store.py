from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlmodel import SQLModel

from drorch.errors import StoreError
from drorch.store.sql_store import Store


def test_a_store_from_an_earlier_version_gains_the_new_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the steps table as the first release wrote it
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, operation VARCHAR NOT NULL, playbook VARCHAR NOT NULL,"
                     " playbook_path VARCHAR NOT NULL, source_site VARCHAR NOT NULL, target_site VARCHAR NOT NULL,"
                     " state VARCHAR NOT NULL, pid INTEGER NOT NULL, host VARCHAR NOT NULL,"
                     " started_at DATETIME NOT NULL, ended_at DATETIME, error VARCHAR)")
        conn.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
                     " workload VARCHAR NOT NULL, kind VARCHAR NOT NULL, strategy VARCHAR NOT NULL,"
                     " source_site VARCHAR NOT NULL, target_site VARCHAR NOT NULL, state VARCHAR NOT NULL,"
                     " started_at DATETIME, ended_at DATETIME, outcome VARCHAR, error VARCHAR, handle VARCHAR,"
                     " bytes_done INTEGER, bytes_total INTEGER)")
        conn.execute("INSERT INTO runs VALUES (1, 'failover', 'lab', 'lab.yaml', 'a', 'b', 'SUCCEEDED', 1, 'h',"
                     " '2026-01-01 00:00:00', NULL, NULL)")
        conn.execute("INSERT INTO steps (id, run_id, seq, workload, kind, strategy, source_site, target_site, state)"
                     " VALUES (1, 1, 1, 'vm1', 'vm', 'live', 'a', 'b', 'SUCCEEDED')")
    store = Store(f"sqlite:///{db}")
    columns = {c["name"] for c in inspect(store.engine).get_columns("steps")}
    assert {"wave", "action", "from_host", "to_host"} <= columns
    (step,) = store.steps(1)
    assert step.workload == "vm1" and step.wave is None


def test_commands_making_one_store_at_once_all_find_it_whole(tmp_path: Path) -> None:
    """A store's tables are made in one transaction that its makers wait on each other for: eight commands
    starting together on a new store all succeed, and none sees it half made."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = "import sys; from drorch.store.sql_store import Store; print(len(Store(sys.argv[1]).runs()))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    makers = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env) for _ in range(8)]
    answers = [m.communicate(timeout=60) for m in makers]
    assert [m.returncode for m in makers] == [0] * 8, answers
    assert {out for out, _ in answers} == {"0\n"}
    assert set(inspect(Store(url).engine).get_table_names()) == set(SQLModel.metadata.tables)


def test_a_store_of_another_shape_is_refused_untouched(tmp_path: Path) -> None:
    """A table of drorch's name without drorch's columns: nothing is created beside it, nothing added to it."""
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs (x INTEGER)")
        conn.execute("PRAGMA journal_mode=WAL")
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"is not drorch's: its table runs lacks id, operation"):
        Store(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["runs"]
    assert db.read_bytes() == before
