"""A snapshot of both sites: hosts, their capacity and names, and the workloads on them (no I/O here).

Captured live by `drorch inventory`, saved as JSON, and given back to the planner with
`drorch plan --inventory`, so "would my DR site take this?" is answered offline and reproducibly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Annotated

from pydantic import Field, TypeAdapter

from drorch.model.limits import MAX_COUNT, MAX_MIB, MAX_PORT
from drorch.model.playbook import WorkloadKind

# Sizes as a saved snapshot may hold them: never negative, never past any machine (drivers fill them from the
# sites; a snapshot read back from a file is checked against these).
CPUs = Annotated[int, Field(ge=0, le=MAX_COUNT)]
MiB = Annotated[int, Field(ge=0, le=MAX_MIB)]
PortNumber = Annotated[int, Field(ge=0, le=MAX_PORT)]


@dataclass(frozen=True)
class Nic:
    """One of a workload's network interfaces: its network, its addresses, and whether they are the
    workload's own (static: an IPAM config, a NIC's ipv4.address, a DHCP reservation) or given by the network."""

    network: str
    addresses: tuple[str, ...] = ()
    static: bool = False
    mac: str | None = None
    dhcp: bool = False  # given by the network's DHCP server (a VM's lease or reservation), not set in the guest


@dataclass(frozen=True)
class Subnet:
    """A subnet a network of a host has, and its gateway."""

    network: str
    cidr: str
    gateway: str | None = None


@dataclass(frozen=True)
class WorkloadInfo:
    name: str
    kind: WorkloadKind
    site: str
    running: bool
    memory_mib: MiB | None = None
    vcpus: CPUs | None = None
    image: str | None = None
    host: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    networks: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    ports: tuple[PortNumber, ...] = ()
    status: str = ""  # what the site says of one that does not run: "exited (code 137) at …", "shut off (crashed)"
    nics: tuple[Nic, ...] = ()

    def addresses(self) -> list[str]:
        return [a for nic in self.nics for a in nic.addresses]


@dataclass(frozen=True)
class HostFacts:
    """What one technology on a host reports: its size and the names a mapping can point at."""

    vcpus: CPUs | None = None
    memory_mib: MiB | None = None
    networks: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    checkpoints: bool | None = None  # container checkpoints possible (Docker with --experimental, rootful Podman)
    engine: str | None = None  # the container engine: docker or podman
    checkpoint_problem: str | None = None  # why checkpoints are not possible, as "Podman runs rootless: ..."
    subnets: tuple[Subnet, ...] = ()


def past_bounds(facts: HostFacts, workloads: list[WorkloadInfo]) -> str | None:
    """What a host reported past the bounds a saved snapshot is checked against (a negative size, more CPUs than
    any machine), said in words; None when it is all in range. A site's answer is input like a saved file."""
    sizes = [("its", "vCPUs", facts.vcpus, MAX_COUNT), ("its", "MiB", facts.memory_mib, MAX_MIB)]
    for w in workloads:
        sizes += [(w.name, "vCPUs", w.vcpus, MAX_COUNT), (w.name, "MiB", w.memory_mib, MAX_MIB)]
        sizes += [(w.name, "port", p, MAX_PORT) for p in w.ports]
    for whose, what, value, most in sizes:
        if value is not None and not 0 <= value <= most:
            shown = f"{value:.3g}" if abs(value) >= 10**9 else str(value)
            return f"reports {shown} {what} for {whose}, outside 0 to {most:,}: not used"
    return None


@dataclass
class HostInventory:
    site: str
    host: str
    facts: dict[WorkloadKind, HostFacts] = field(default_factory=dict)
    errors: dict[WorkloadKind, str] = field(default_factory=dict)  # kind -> why it did not answer
    workloads: list[WorkloadInfo] = field(default_factory=list)

    def discovered(self) -> tuple[int | None, int | None]:
        """(vCPUs, MiB) of the host, as the hypervisor or else the container engine reports them."""
        for kind in WorkloadKind:
            f = self.facts.get(kind)
            if f is not None and f.memory_mib:
                return f.vcpus, f.memory_mib
        return None, None


@dataclass
class Snapshot:
    hosts: list[HostInventory]
    taken_at: str = ""

    def site(self, name: str) -> list[HostInventory]:
        return [h for h in self.hosts if h.site == name]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: object) -> Snapshot:
        """Checked field by field (types, enums, negative sizes): a saved snapshot is input from outside."""
        return _SNAPSHOT.validate_python(raw)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        return _SNAPSHOT.validate_json(text)


_SNAPSHOT = TypeAdapter(Snapshot)
