"""Where a plan puts workloads: each target host's free room per kind, and the best fit for a size. Pure code."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field

from drorch.model.playbook import Host, Overcommit, Playbook, WorkloadKind
from drorch.plan.inventory import HostInventory, Snapshot


@dataclass(frozen=True, order=True, slots=True)
class Size:
    vcpus: int = 0
    memory_mib: int = 0

    def fits(self, free: Size) -> bool:
        return self.vcpus <= free.vcpus and self.memory_mib <= free.memory_mib

    def __add__(self, other: Size) -> Size:
        return Size(self.vcpus + other.vcpus, self.memory_mib + other.memory_mib)

    def __sub__(self, other: Size) -> Size:
        return Size(self.vcpus - other.vcpus, self.memory_mib - other.memory_mib)

    def __str__(self) -> str:
        return f"{self.vcpus} vCPU, {self.memory_mib} MiB"


@dataclass(slots=True)
class TargetHost:
    name: str
    kinds: set[WorkloadKind]
    free: Size
    groups: set[str] = field(default_factory=set)


@functools.lru_cache(maxsize=4096)
def sized(vcpus: int, memory_mib: int) -> Size:
    """Sizes repeat across an estate: one object per size, not per workload."""
    return Size(vcpus, memory_mib)


def capacity(pb: Playbook, site: str, inv: HostInventory | None, host: Host) -> Size:
    over: Overcommit = pb.sites[site].overcommit
    if host.capacity is not None:
        vcpus, memory = host.capacity.vcpus, host.capacity.memory_mib
    else:
        found = inv.discovered() if inv else (None, None)
        vcpus, memory = found[0] or 0, found[1] or 0
    return Size(int(vcpus * over.cpu), int(memory * over.memory))


def targets(pb: Playbook, snap: Snapshot, target: str) -> list[TargetHost]:
    invs = {inv.host: inv for inv in snap.site(target)}
    hosts = []
    for host in sorted(pb.hosts(target), key=lambda h: h.name):
        inv = invs.get(host.name)
        kinds = {k for k in WorkloadKind if host.endpoint(k) and (inv is None or k not in inv.errors)}
        used = Size()
        for w in inv.workloads if inv else []:
            if w.running:
                used = used + Size(w.vcpus or 0, w.memory_mib or 0)
        hosts.append(TargetHost(host.name, kinds, capacity(pb, target, inv, host) - used))
    return hosts


class HostIndex:
    """Target hosts per kind, kept sorted by free room so that best fit is a bisect, not a scan."""

    def __init__(self, hosts: list[TargetHost]) -> None:
        self.hosts = hosts
        self._sorted: dict[WorkloadKind, list[tuple[int, int, str]]] = {
            k: sorted(self._key(h) for h in hosts if k in h.kinds) for k in WorkloadKind
        }
        self._by_name = {h.name: h for h in hosts}

    @staticmethod
    def _key(h: TargetHost) -> tuple[int, int, str]:
        return (h.free.memory_mib, h.free.vcpus, h.name)

    def best_fit(self, kind: WorkloadKind, size: Size, group: str | None) -> TargetHost | None:
        """The host left with the least memory, then fewest vCPUs, then first by name."""
        keys = self._sorted[kind]
        start = bisect.bisect_left(keys, (size.memory_mib, -(2**62), ""))
        for at in range(start, len(keys)):
            _memory, vcpus, name = keys[at]
            if vcpus >= size.vcpus and (group is None or group not in self._by_name[name].groups):
                return self._by_name[name]
        return None

    def most_free(self, kind: WorkloadKind) -> str:
        keys = self._sorted[kind]
        return str(self._by_name[keys[-1][2]].free) if keys else "no host takes it"

    def host(self, name: str) -> TargetHost | None:
        return self._by_name.get(name)

    def take(self, host: TargetHost, size: Size, group: str | None) -> None:
        for kind in host.kinds:
            keys = self._sorted[kind]
            del keys[bisect.bisect_left(keys, self._key(host))]
        host.free = host.free - size
        if group:
            host.groups.add(group)
        for kind in host.kinds:
            bisect.insort(self._sorted[kind], self._key(host))
