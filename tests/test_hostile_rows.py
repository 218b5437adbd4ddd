"""Damaged rows in a real store (written by another program, by hand, or by a failing disk): every command that
reads one says which row in one line about the store and exits 2; the daemon's listener answers 503 naming the
row and goes on serving the rest."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from drorch.store.rows import ReadinessCheck
from drorch.store.sql_store import Store
from drorch.web.listener import Listen, Web
from drorch.web.metrics import StoreCollector, exposition
from drorch.web.pages import Pages
from tests.support.cli import drorch
from tests.support.web import get

pytestmark = pytest.mark.usefixtures("fake_cli")

DAMAGE = {
    "run state": ("UPDATE runs SET state = 'BOGUS'", "runs", "state"),
    "step state": ("UPDATE steps SET state = 'WEIRD'", "steps", "state"),
    "run start": ("UPDATE runs SET started_at = 'xyz'", "runs", "started_at"),
    "readiness problems": ("UPDATE readiness SET problems = 'not json{'", "readiness", "problems"),
    "step detail": ("UPDATE steps SET detail = 'not json{'", "steps", "detail"),
}
# Each command, and the damages it meets: those of the rows it reads. The others it never reads.
READS = {
    "history": {"run state", "run start"},
    "history 1": {"run state", "run start", "step state"},
    "report 1": {"run state", "run start", "step state", "step detail"},
    "status PB": {"run state", "run start"},
    "readiness PB": {"readiness problems"},
    "daemon status": {"run state", "run start"},
    "resume 1": {"run state", "run start"},
    "abort 1": {"run state", "run start"},
    "commit 1": {"run state", "run start"},
    "rollback 1": {"run state", "run start", "step state"},
    "approve 1": {"step state"},
    "settle": {"run state", "run start"},
    "metrics PB": {"run state", "readiness problems"},
}
DAMAGED = re.compile(r"drorch: error: state store(?: \S+)?: row 1 of table (\w+) is damaged: its (\w+) .*; repair or "
                     r"delete that row")


@pytest.fixture
def damaged_store(playbook_file: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> Path:
    """A store that a failover (fence-free, one step a workload) and a readiness check wrote."""
    assert drorch(capsys, "failover", str(playbook_file))[0] == 0
    store.save(ReadinessCheck(playbook="shop", ready=True, problems="[]", hosts="[]"))
    return Path(store.engine.url.database or "")


def damage(db: Path, what: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(DAMAGE[what][0])


@pytest.mark.parametrize("what", sorted(DAMAGE))
@pytest.mark.parametrize("command", sorted(READS))
def test_a_damaged_row_is_one_line_naming_it(what: str, command: str, damaged_store: Path, playbook_file: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    damage(damaged_store, what)
    code, _, err = drorch(capsys, *[str(playbook_file) if a == "PB" else a for a in command.split()])
    assert "internal error" not in err and "Traceback" not in err, err
    if what not in READS[command]:
        return
    (line,) = err.splitlines()
    found = DAMAGED.fullmatch(line)
    assert code == 2 and found and found.groups() == DAMAGE[what][1:], line


@pytest.fixture
def listener(store: Store) -> Iterator[Web]:
    web = Web(Listen("127.0.0.1", 0), store, lambda: exposition(StoreCollector(store, dict)),
              Pages(store, dict, max_age_s=0, stale_s=0), max_age_s=0, stale_s=0)
    web.start()
    yield web
    web.close()


@pytest.mark.parametrize("what", ["run state", "run start", "step state", "readiness problems"])
def test_the_listener_answers_503_naming_the_row_and_serves_on(what: str, damaged_store: Path, listener: Web,
                                                               store: Store) -> None:
    base = f"http://127.0.0.1:{listener.port}"
    damage(damaged_store, what)
    table, column = DAMAGE[what][1:]
    said = {path: get(base + path) for path in ("/", "/status.json", "/metrics", "/runs/1")}
    refused = {path for path, (code, _) in said.items() if code == 503}
    assert refused, said
    for path in refused:
        assert f"row 1 of table {table} is damaged: its {column}" in said[path][1], said[path]
    assert all(code in (200, 503) for code, _ in said.values()), said
    assert get(f"{base}/healthz") == (200, "ok\n")
    with sqlite3.connect(damaged_store) as conn:  # repaired: served again
        conn.execute("DELETE FROM readiness")
        conn.execute("DELETE FROM steps")
        conn.execute("DELETE FROM runs")
    assert get(f"{base}/status.json")[0] == 200 and get(f"{base}/metrics")[0] == 200
