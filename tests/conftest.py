from __future__ import annotations

from pathlib import Path

import pytest

from drorch.drivers.base import Endpoint
from drorch.drivers.fake import FakeCloud, FakeDriver, FakeSite, FakeWorkload
from drorch.engine import Engine, endpoint
from drorch.playbook import Playbook, WorkloadKind, parse_playbook
from drorch.store import Store

PLAYBOOK = """\
name: shop
primary: a
secondary: b
sites:
  a: {libvirt: "fake://a/libvirt", docker: "fake://a/docker"}
  b: {libvirt: "fake://b/libvirt", docker: "fake://b/docker"}
workloads:
  - {name: db, kind: vm, strategy: live}
  - {name: cache, kind: container, strategy: checkpoint}
  - {name: web, kind: container, strategy: redeploy}
"""


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
            c.sites.setdefault(endpoint(playbook, w.kind, site).uri, FakeSite())
        c.sites[endpoint(playbook, w.kind, "a").uri].workloads[w.name] = FakeWorkload(w.kind, counter=42)
    return c


def fake_drivers(cloud: FakeCloud) -> dict[WorkloadKind, FakeDriver]:
    return {k: FakeDriver(cloud, k) for k in WorkloadKind}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("DRORCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DRORCH_DB_URL", raising=False)
    return Store()


@pytest.fixture
def engine(store: Store, cloud: FakeCloud) -> Engine:
    return Engine(store, fake_drivers(cloud), poll_seconds=0)


def site_of(cloud: FakeCloud, pb: Playbook, kind: WorkloadKind, name: str) -> list[str]:
    """The sites where the workload runs, as the fake cloud has it."""
    return [
        site
        for site in ("a", "b")
        if (w := cloud.sites[endpoint(pb, kind, site).uri].workloads.get(name)) is not None and w.running
    ]


def fake_endpoint(site: str, uri: str) -> Endpoint:
    return Endpoint(site=site, uri=uri)
