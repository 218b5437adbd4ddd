"""What protection holds: each workload's RPO against its target, and the points whose site no longer holds
them whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drorch.drivers.base import Driver
from drorch.errors import DrorchError
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import naive, utcnow
from drorch.reach import site_endpoints
from drorch.store.rows import RecoveryPoint


def missing_points(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], points: list[RecoveryPoint]
                   ) -> dict[int, str]:
    """The complete points the store lists that their site's copy no longer holds whole (a volume deleted by
    hand), by id, each with why. A site that does not answer, or holds no copy, says nothing either way."""
    groups: dict[tuple[str, str, str], list[RecoveryPoint]] = {}
    for p in points:
        if p.complete and p.id is not None:
            groups.setdefault((p.kind, p.workload, p.site), []).append(p)
    missing: dict[int, str] = {}
    for (kind, workload, site), mine in groups.items():
        spec = pb.spec_of(WorkloadKind(kind), workload)
        here = pb.kind_on(spec, site) if spec is not None else WorkloadKind(kind)  # what holds its points there
        driver = drivers.get(here)
        if driver is None:
            continue
        held: set[str] | None = None
        for ep in site_endpoints(pb, site, here):
            try:
                found = driver.held_points(workload, ep)
            except DrorchError:
                continue
            if found is not None:
                held = (held or set()) | set(found)
        if held is None:  # no answer, or no copy there at all (a failback took it): nothing to judge
            continue
        for p in mine:
            if p.name and p.name not in held:
                missing[p.id or 0] = f"site {site} no longer holds {p.name} whole"
    return missing

@dataclass(frozen=True)
class Rpo:
    workload: str
    kind: str
    site: str
    newest: datetime | None
    age_s: float | None
    target_s: float | None
    points: int
    last_error: str | None
    missing: tuple[str, ...] = ()  # kept points the site no longer holds whole, each with why
    newest_point: RecoveryPoint | None = None

    @property
    def shipped(self) -> str:
        """What the newest point is: full or incremental, the bytes it sent, its chain."""
        p = self.newest_point
        if p is None:
            return ""
        size = f", {p.size_bytes / 2**20:.1f} MiB sent" if p.size_bytes is not None else ""
        chain = f", chain of {p.chain}" if p.chain else ""
        return f"{p.point_kind or 'point'}{size}{chain}"

    history: bool = False  # points of the way back, kept: no RPO is measured by them

    @property
    def stale(self) -> bool:
        if self.history:
            return False
        return self.age_s is None or (self.target_s is not None and self.age_s > self.target_s)

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "kind": self.kind, "site": self.site, "points": self.points,
                "newest": self.newest.isoformat() if self.newest else None, "age_s": self.age_s,
                "target_s": self.target_s, "stale": self.stale, "last_error": self.last_error,
                "missing": list(self.missing), "newest_kind": self.newest_point.point_kind if self.newest_point
                else None, "newest_bytes": self.newest_point.size_bytes if self.newest_point else None,
                "newest_chain": self.newest_point.chain if self.newest_point else None, "history": self.history}


def rpo_status(pb: Playbook, points: list[RecoveryPoint], now: datetime | None = None,
               missing: Mapping[int, str] | None = None, history: bool = False) -> list[Rpo]:
    """Each protected workload's RPO: the age of its newest complete recovery point that its site still holds
    whole (`missing` names those it does not), against the target. With `history`, the same of the points kept
    as history of the way back instead, which no RPO counts."""
    missing = missing or {}
    now = naive(now or utcnow())
    rows: dict[tuple[str, str, str], list[RecoveryPoint]] = {}
    for p in points:
        if (p.retired_at is not None) is history:  # the way back's, once protected the other way: history
            rows.setdefault((p.kind, p.workload, p.site), []).append(p)
    out = []
    for (kind, workload, site), mine in sorted(rows.items()):
        complete = [p for p in mine if p.complete and (p.id or 0) not in missing]
        last = max(complete, key=lambda p: p.instant, default=None)
        newest = last.instant if last is not None else None
        failed = [p for p in mine if not p.complete and (newest is None or naive(p.taken_at) > newest)]
        out.append(Rpo(workload, kind, site, newest, (now - newest).total_seconds() if newest else None,
                       pb.protect.target_s if pb.protect and not history else None, len(complete),
                       failed[0].error if failed else None,
                       tuple(missing[p.id or 0] for p in mine if (p.id or 0) in missing), last, history))
    return out
