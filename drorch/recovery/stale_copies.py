"""Stale copies: what a site still holds of a workload that now runs on the other site, e.g. the disks and
stopped definitions a lost primary comes back with. They are named, never reused, and removed on request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from drorch.drivers.base import Driver
from drorch.errors import SiteUnreachable
from drorch.model.playbook import Playbook, Workload, WorkloadKind
from drorch.plan.inventory import Snapshot
from drorch.reach import site_endpoints


@dataclass(frozen=True)
class Stale:
    kind: WorkloadKind
    workload: str
    site: str
    host: str
    items: tuple[str, ...]  # what the host holds, one phrase each

    def line(self) -> str:
        return (f"site {self.site} host {self.host} holds a stale copy of {self.kind} {self.workload}, which runs "
                f"elsewhere: {', '.join(self.items)}")


def _running_sites(pb: Playbook, snap: Snapshot) -> dict[tuple[WorkloadKind, str], tuple[Workload, set[str]]]:
    """The sites where each workload the playbook selects runs, with the entry that selects it."""
    found: dict[tuple[WorkloadKind, str], tuple[Workload, set[str]]] = {}
    for inv in snap.hosts:
        for w in inv.workloads:
            spec = pb.spec_of(w.kind, w.name, w.labels, inv.site) if w.running else None
            if spec is not None:
                found.setdefault((spec.kind, w.name), (spec, set()))[1].add(inv.site)
    return found


def stale_copies(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], snap: Snapshot) -> list[Stale]:
    """Per workload that runs on exactly one of the playbook's two sites, what the other site's hosts hold of it.
    A workload that runs nowhere has no stale copy: what a site holds of it may be all there is."""
    out = []
    pair = {pb.primary, pb.secondary}
    # Only hosts whose inventory lists the workload stopped are asked: a stale copy is a stopped definition or
    # container, and a site's shipped copy is one too; so a status of a large estate asks no more than that.
    stopped = {(w.kind, w.name, inv.site, inv.host) for inv in snap.hosts for w in inv.workloads if not w.running}
    for (_, name), (spec, sites) in sorted(_running_sites(pb, snap).items(), key=lambda kv: kv[0]):
        if len(sites) != 1 or not sites <= pair:
            continue
        other = (pair - sites).pop()
        kind = pb.kind_on(spec, other)  # what it would be there
        if kind not in drivers:
            continue
        for ep in site_endpoints(pb, other, kind):
            if (kind, name, other, ep.host) not in stopped:
                continue
            try:
                items = drivers[kind].leftovers(name, ep)
            except SiteUnreachable:
                continue
            if items:
                out.append(Stale(kind, name, other, ep.host, tuple(items)))
    return out


def prune(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], snap: Snapshot) -> list[Stale]:
    """Remove every stale copy `stale_copies` finds; what was removed."""
    removed = []
    for found in stale_copies(pb, drivers, snap):
        ep = next(e for e in site_endpoints(pb, found.site, found.kind) if e.host == found.host)
        gone = drivers[found.kind].remove_leftovers(found.workload, ep)
        if gone:
            removed.append(Stale(found.kind, found.workload, found.site, found.host, tuple(gone)))
    return removed
