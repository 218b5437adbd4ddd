"""The driver contract suite against the real libvirt, container (Docker and Podman) and LXD drivers on the lab."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from drorch.drivers.base import Driver, Endpoint, MoveRequest
from drorch.drivers.containers.container_driver import ContainerDriver
from drorch.drivers.libvirt.vm_driver import LibvirtDriver
from drorch.drivers.lxd.lxd_driver import LxdDriver
from drorch.model.playbook import Mappings, Strategy
from integration import lab_base, lab_lxd, lab_pki, lab_podman, labctl
from integration.support.lab_views import refresh
from tests.support.driver_contract import DriverContract

A, B = labctl.SITES["a"], labctl.SITES["b"]
CASES = {
    "vm-live": (LibvirtDriver, lab_base.VM_NAME, Strategy.LIVE),
    "container-checkpoint": (ContainerDriver, labctl.CHECKPOINT_CONTAINER, Strategy.CHECKPOINT),
    "container-redeploy": (ContainerDriver, labctl.REDEPLOY_CONTAINER, Strategy.REDEPLOY),
    "podman-checkpoint": (ContainerDriver, lab_podman.CHECKPOINT_CONTAINER, Strategy.CHECKPOINT),
    "podman-redeploy": (ContainerDriver, lab_podman.REDEPLOY_CONTAINER, Strategy.REDEPLOY),
    "lxd-copy": (LxdDriver, lab_lxd.CONTAINER, Strategy.COPY),
    "lxd-redeploy": (LxdDriver, lab_lxd.CONTAINER, Strategy.REDEPLOY),
}


def lxd(site: lab_base.Site, host: str) -> Endpoint:
    """A site's LXD as drorch reaches it: HTTPS, the lab's client certificate, the server's pinned."""
    tls = (str(lab_lxd.server_cert(site)), str(lab_base.PKI / lab_pki.CLIENT), str(lab_base.PKI / lab_pki.CLIENT_KEY))
    return Endpoint(site.name, lab_lxd.https_url(site), host=host, tls=tls, engine="lxd")


def endpoints(case: str) -> tuple[Endpoint, Endpoint]:
    if CASES[case][0] is LibvirtDriver:
        return (Endpoint("a", A.libvirt_uri, A.address), Endpoint("b", B.libvirt_uri, B.address))
    if CASES[case][0] is LxdDriver:
        return lxd(A, "a3"), lxd(B, "b3")
    if case.startswith("podman"):
        return (Endpoint("a", lab_podman.url(A), host="a2", engine="podman"),
                Endpoint("b", lab_podman.url(B), host="b2", engine="podman"))
    return Endpoint("a", A.docker_url), Endpoint("b", B.docker_url)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, lab: None) -> str:
    refresh(containers_only=CASES[request.param][0] is not LibvirtDriver)
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def driver(case: str) -> Iterator[Driver]:
    d = CASES[case][0]()
    yield d
    d.close()


@pytest.fixture
def request_(case: str) -> MoveRequest:
    src, dst = endpoints(case)
    # Site b names its network differently: the VM's interface must be mapped onto it.
    mappings = Mappings(networks={A.network: B.network}, storage={A.pool: B.pool})
    return MoveRequest(CASES[case][1], CASES[case][2], src, dst, mappings=mappings)


@pytest.fixture
def reopen(case: str) -> Callable[[], Driver]:
    return CASES[case][0]


@pytest.fixture
def unreachable(case: str) -> Endpoint:
    if CASES[case][0] is LibvirtDriver:
        return Endpoint("z", "qemu+tcp://127.0.0.1:1/system", "127.0.0.1")
    if case.startswith("podman"):
        return Endpoint("z", f"unix://{labctl.LAB}/no-such-podman.sock", engine="podman")
    if CASES[case][0] is LxdDriver:
        return Endpoint("z", "https://127.0.0.1:1", tls=lxd(A, "a3").tls, engine="lxd")
    return Endpoint("z", f"unix://{labctl.LAB}/no-such-daemon.sock")


@pytest.fixture
def stops_at_once(case: str) -> bool:
    """A container move honours a cancel at its next step; libvirt aborts a migration job only once it runs, and an
    LXD move's first step may be behind it when the cancel comes."""
    return CASES[case][0] is ContainerDriver


class TestRealDrivers(DriverContract):
    pass
