from __future__ import annotations

from pathlib import Path

import pytest

from drorch.drivers.fake import FakeCloud, FakeDriver, FakeSite, FakeWorkload
from drorch.engine import Engine
from drorch.playbook import Playbook, WorkloadKind
from drorch.playbook_file import parse_playbook
from drorch.store import Run, Store
from tests.support.addresses import app_cloud  # noqa: F401  (a fixture, for the tests of addresses)

PLAYBOOK = """\
name: shop
primary: a
secondary: b
sites:
  a: {hosts: [{name: a1, libvirt: "fake://a1/libvirt", docker: "fake://a1/docker"}]}
  b: {hosts: [{name: b1, libvirt: "fake://b1/libvirt", docker: "fake://b1/docker"}]}
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
            c.sites.setdefault(uri(playbook, w.kind, site), FakeSite())
        c.sites[uri(playbook, w.kind, "a")].workloads[w.name] = FakeWorkload(w.kind, counter=42)
    return c


KINDS = (WorkloadKind.VM, WorkloadKind.CONTAINER)  # those PLAYBOOK's workloads are of


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
        if (w := cloud.sites[uri(pb, kind, site)].workloads.get(name)) is not None and w.running
    ]


def uri(pb: Playbook, kind: WorkloadKind, site: str, host: int = 0) -> str:
    """The endpoint of a kind on one of a site's hosts."""
    found = pb.hosts(site)[host].endpoint(kind)
    assert found is not None
    return found


def move(engine: Engine, pb: Playbook, source: str, target: str, operation: str = "failover") -> Run:
    """What `drorch failover` does: snapshot both sites, plan, execute."""
    return engine.operate(pb, "shop.yaml", operation, source, target)


@pytest.fixture
def fake_cli(cloud: FakeCloud, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's drivers are fakes over `cloud`; its store is the test's."""
    from drorch import drivers

    monkeypatch.setattr(drivers, "make_drivers", lambda _kinds: fake_drivers(cloud))
