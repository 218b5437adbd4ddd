"""The unit tests' fixtures: the shop playbook over a fake cloud, a store of the test's own, an engine, the CLI
over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.engine.runner import Engine
from drorch.model.playbook import Playbook
from drorch.model.playbook_file import parse_playbook
from drorch.store.sql_store import Store
from tests.support.addresses import app_cloud  # noqa: F401  (a fixture, for the tests of addresses)
from tests.support.shop import PLAYBOOK, fake_drivers, uri


@pytest.fixture
def playbook() -> Playbook:
    return parse_playbook(PLAYBOOK, "shop.yaml")


@pytest.fixture
def playbook_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(PLAYBOOK)
    return path


@pytest.fixture
def cloud(playbook: Playbook) -> FakeCloud:
    """Every workload of the playbook running on site a, counters well past 1."""
    c = FakeCloud(polls_per_move=2)
    for w in playbook.workloads:
        for site in ("a", "b"):
            c.sites.setdefault(uri(playbook, w.kind, site), FakeSite())
        c.sites[uri(playbook, w.kind, "a")].workloads[w.name] = FakeWorkload(w.kind, counter=42)
    return c


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("DRORCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DRORCH_DB_URL", raising=False)
    return Store()


@pytest.fixture
def engine(store: Store, cloud: FakeCloud) -> Engine:
    return Engine(store, fake_drivers(cloud), poll_seconds=0)


@pytest.fixture
def fake_cli(cloud: FakeCloud, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's drivers are fakes over `cloud`, whose moves advance at each poll, not in time: its engine polls
    them at once. Its store is the test's."""
    from drorch import drivers
    from drorch.engine import runner

    monkeypatch.setattr(drivers, "make_drivers", lambda _kinds: fake_drivers(cloud))
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.001)
