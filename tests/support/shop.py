"""The shop: the playbook most unit tests run (a VM and two containers, sites a and b of one host each) over
the fake drivers, and what the tests ask of it."""

from __future__ import annotations

import yaml

from drorch.drivers.fake import FakeCloud, FakeDriver
from drorch.engine.runner import Engine
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import Operation
from drorch.store.rows import Run

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


KINDS = (WorkloadKind.VM, WorkloadKind.CONTAINER)  # those PLAYBOOK's workloads are of


def fake_drivers(cloud: FakeCloud) -> dict[WorkloadKind, FakeDriver]:
    return {k: FakeDriver(cloud, k) for k in WorkloadKind}


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


def move(engine: Engine, pb: Playbook, source: str, target: str, operation: Operation = Operation.FAILOVER) -> Run:
    """What `drorch failover` does: snapshot both sites, plan, execute."""
    return engine.operate(pb, "shop.yaml", operation, source, target)


AUTO_CLUSTER = [{"url": "https://etcd-a:2379", "site": "a"}, {"url": "https://etcd-b:2379", "site": "b"},
                {"url": "https://etcd-w:2379", "site": "witness"}]


def auto_failover_playbook(fencing: list[str] | None, **settings: object) -> str:
    """The shop with automatic failover over a cluster at a, b and a witness, fenced by `fencing`."""
    raw = yaml.safe_load(PLAYBOOK)
    raw["auto_failover"] = {"etcd": {"endpoints": AUTO_CLUSTER, "ca": "/etc/drorch/etcd-ca.pem",
                                     "cert": "/etc/drorch/etcd.pem", "key": "/etc/drorch/etcd.key"},
                            "after_s": 20, "acquire_after_s": 10, "lease_s": 6, **settings}
    if fencing:
        raw["fencing"] = {"command": fencing}
    return str(yaml.safe_dump(raw))
