from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Table, create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from drorch.store import Store


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


def test_tables_another_command_creates_first_are_found_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    rival = create_engine(url)
    raced: list[str] = []

    def another_command_got_there_first(table: Table, conn: Connection, **_kw: object) -> None:
        if conn.engine is not rival:  # between drorch's look and its CREATE TABLE: "table ... already exists"
            raced.append(table.name)
            table.create(rival)

    tables = SQLModel.metadata.sorted_tables
    for table in tables:
        event.listen(table, "before_create", another_command_got_there_first)
    try:
        store = Store(url)
    finally:
        for table in tables:
            event.remove(table, "before_create", another_command_got_there_first)
    assert sorted(raced) == sorted(t.name for t in tables)  # drorch lost every race
    assert store.steps(1) == []
