"""Fixtures for tests against the real two-site lab (integration/lab up). Every test here is a lab test: without
--lab (which integration/run-tests passes) it is skipped, saying why; with it, a lab that is down fails it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration import labctl
from integration.dns_server import DnsServer, knot
from integration.postgres import Cluster
from integration.support.lab_views import DRORCH, REPO, drorch_env, refresh

LAB_SKIP = ("needs the two-site lab: run integration/run-tests, or integration/lab up and then, as root, "
            "integration/lab isolate -- .venv/bin/pytest --lab integration")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lab", action="store_true", help="run the lab tests (integration/): the lab must be up")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.lab)
            if not config.getoption("--lab"):
                item.add_marker(pytest.mark.skip(reason=LAB_SKIP))


@pytest.fixture(scope="session")
def lab() -> None:
    """The lab must be up: a missing lab is a failure, never a skip."""
    down = [f"{d} of site {s.name}" for s in labctl.SITES.values() for d in labctl.DAEMONS
            if labctl.read_pid(s.pidfile(d)) is None]
    if down:
        pytest.fail(f"the lab is not up ({', '.join(down)} not running): run integration/lab up")


@pytest.fixture
def fresh_lab(lab: None) -> None:
    refresh()


@pytest.fixture
def fresh_containers(lab: None) -> None:
    """For a test that touches no VM: the containers are made new, the VMs left wherever they run."""
    refresh(containers_only=True)


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """The lab's authoritative DNS server (Knot, on loopback), for the tests whose playbooks name records."""
    with knot(tmp_path_factory.mktemp("knot")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(lab: None) -> Iterator[Cluster]:
    """A PostgreSQL cluster of the lab's own on loopback, for stores that several daemons share."""
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def run_drorch(state_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DRORCH), *args], capture_output=True, text=True, env=drorch_env(state_dir),
                              timeout=timeout, cwd=REPO)
    return run
