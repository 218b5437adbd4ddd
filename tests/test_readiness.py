"""Readiness over fake drivers and the real SQLite store: recorded checks, since when, and alerts that fire on
a change to not ready, once."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from drorch.drivers.fake import FakeCloud
from drorch.model.playbook import WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.run_report import naive
from drorch.recovery import readiness
from drorch.recovery.shipping import protect
from drorch.store.sql_store import Store
from tests.support.cli import drorch
from tests.support.shop import PLAYBOOK, fake_drivers, uri


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    got: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server calls
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/drorch", got
    finally:
        server.shutdown()
        server.server_close()


def test_a_change_to_not_ready_is_told_once_and_ready_again_is_recorded(
        cloud: FakeCloud, store: Store, tmp_path: Path, webhook: tuple[str, list[dict[str, object]]]) -> None:
    told = tmp_path / "told"
    script = f"import os; open({str(told)!r}, 'a').write(os.environ['DRORCH_PROBLEMS'] + '|')"
    pb = parse_playbook(PLAYBOOK + f"protect: {{interval_s: 600}}\nreadiness: {{command: [{sys.executable}, -c, "
                        f"\"{script}\"], webhook: '{webhook[0]}'}}\n", "shop.yaml")
    drivers = fake_drivers(cloud)
    protect(pb, drivers, store)
    first = readiness.check(pb, drivers, store)
    assert first.ready and first.alert is None

    cloud.sites[uri(pb, WorkloadKind.CONTAINER, "b")].reachable = False  # the DR site's Docker stops answering
    down = readiness.check(pb, drivers, store)
    again = readiness.check(pb, drivers, store)
    assert not down.ready and "does not answer" in down.problems
    assert down.alert == "command exit 0; webhook HTTP 204" and again.alert is None  # told once
    assert told.read_text().count("|") == 1 and "does not answer" in told.read_text()
    assert len(webhook[1]) == 1 and webhook[1][0]["ready"] is False and webhook[1][0]["playbook"] == "shop"
    state = readiness.current(store, "shop")
    assert state is not None and not state.ready and naive(state.since) == naive(down.checked_at)

    cloud.sites[uri(pb, WorkloadKind.CONTAINER, "b")].reachable = True
    back = readiness.check(pb, drivers, store)
    state = readiness.current(store, "shop")
    assert back.ready and state is not None and state.ready and state.problems == []


def test_a_stale_rpo_makes_it_not_ready(cloud: FakeCloud, store: Store) -> None:
    pb = parse_playbook(PLAYBOOK + "protect: {interval_s: 600}\n", "shop.yaml")
    row = readiness.check(pb, fake_drivers(cloud), store)
    problems = json.loads(row.problems)
    assert not row.ready and "vm db: no recovery point, target 1200 s" in problems and len(problems) == 3
    assert row.alert == "no command or webhook set"


def test_the_readiness_command(cloud: FakeCloud, store: Store, playbook_file: Path, fake_cli: None,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = drorch(capsys, "readiness", str(playbook_file))
    assert code == 1 and "was never checked, so it is not known to be ready" in err  # not known ready is not ready
    code, out, _err = drorch(capsys, "readiness", str(playbook_file), "--check")
    assert code == 0 and out.startswith("shop: ready since ")
    cloud.sites[uri(parse_playbook(playbook_file.read_text()), WorkloadKind.VM, "b")].reachable = False
    code, out, _err = drorch(capsys, "readiness", str(playbook_file), "--check", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ready"] is False and any("does not answer" in p for p in doc["problems"])
