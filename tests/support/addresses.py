"""A small estate of containers with addresses on site a's app-net (127.0.31.0/24), mapped onto site b's
app-net-dr (127.0.32.0/24): its playbook and the fake sites that hold it."""

from __future__ import annotations

import pytest

from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.model.playbook import WorkloadKind
from drorch.plan.inventory import HostFacts, Nic, Subnet

ESTATE = """\
name: shop
primary: a
secondary: b
sites:
  a: {hosts: [{name: a1, docker: "fake://a1/docker"}]}
  b: {hosts: [{name: b1, docker: "fake://b1/docker"}]}
mappings:
  networks: {app-net: app-net-dr}
  addresses:
    127.0.31.0/24: {to: 127.0.32.0/24, gateway: 127.0.32.1, dns: [127.0.32.53]}
workloads:
  - {name: web, kind: container, strategy: redeploy, check: {port: PORT, timeout_s: 5}}
  - {name: db, kind: container, strategy: checkpoint, address: {a: 127.0.31.7, b: 127.0.32.50}}
  - {name: cache, kind: container, strategy: redeploy}
"""
NETS = {"a": Subnet("app-net", "127.0.31.0/24", "127.0.31.1"), "b": Subnet("app-net-dr", "127.0.32.0/24", "127.0.32.1")}


def estate(port: int = 9) -> str:
    return ESTATE.replace("PORT", str(port))


def nic(address: str, static: bool = True, network: str = "app-net") -> tuple[Nic, ...]:
    return (Nic(network, (address,), static),)


@pytest.fixture
def app_cloud(cloud: FakeCloud) -> FakeCloud:
    """web (static .10), db (static .7, exact on b) and cache (dynamic) on app-net of site a (fake://a1/docker);
    fake://b1/docker empty. A fixture of every test, through conftest."""
    cloud.sites.clear()
    for site in ("a", "b"):
        cloud.sites[f"fake://{site}1/docker"] = FakeSite(facts=HostFacts(
            vcpus=8, memory_mib=8192, networks=(NETS[site].network,), checkpoints=True, subnets=(NETS[site],)))
    here = cloud.sites["fake://a1/docker"].workloads
    here["web"] = FakeWorkload(WorkloadKind.CONTAINER, networks=("app-net",), nics=nic("127.0.31.10"))
    here["db"] = FakeWorkload(WorkloadKind.CONTAINER, networks=("app-net",), nics=nic("127.0.31.7"))
    here["cache"] = FakeWorkload(WorkloadKind.CONTAINER, networks=("app-net",), nics=nic("127.0.31.99", False))
    return cloud
