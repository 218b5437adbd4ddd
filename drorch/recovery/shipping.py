"""Protection: recovery points shipped to the secondary, their retention, and each workload's RPO."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drorch.drivers.base import Driver, Retention
from drorch.engine.steps_from_plan import move_request
from drorch.errors import DrorchError, NoSuchPoint
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import Action, naive, utcnow
from drorch.model.run_settings import Protect
from drorch.plan.planner import MOVING, plan
from drorch.reach import site_endpoints, snapshot
from drorch.store.contract import StateStore
from drorch.store.sql_store import RecoveryPoint


def protect(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore,
            source: str | None = None, target: str | None = None) -> list[RecoveryPoint]:
    """Ship one recovery point of every workload that would move, record it, and apply the retention."""
    source, target = source or pb.primary, target or pb.secondary
    settings = pb.protect or Protect()  # the documented defaults, with or without a protect section
    keep, full_every = settings.keep, settings.full_every
    the_plan = plan(pb, snapshot(pb, drivers, brief=True), source, target)
    known = [p for p in store.points(pb.name) if p.site == target]
    broken = missing_points(pb, drivers, known)  # not kept: the ship may remove what is left of them
    held = kept_points([p for p in known if (p.id or 0) not in broken], target)
    points = []
    for item in the_plan.items:
        if item.action not in MOVING and item.action is not Action.BLOCKED:
            continue
        point = RecoveryPoint(playbook=pb.name, workload=item.workload, kind=str(item.kind), site=target)
        point_key = (str(item.kind), item.workload)
        retention = Retention(keep, full_every, tuple(p.name for p in held.get(point_key, []) if p.name))
        try:
            if item.action is Action.BLOCKED:
                raise DrorchError(item.reason)
            shipped = drivers[item.kind].ship(move_request(pb, the_plan, item), retention)
            dropped = sum((p.kind, p.workload) == point_key for p in known if (p.id or 0) in broken)
            point.size_bytes, point.name, point.point_kind, point.chain = (shipped.size_bytes, shipped.name,
                                                                           shipped.kind, shipped.chain)
            point.detail = shipped.message + (f"; {dropped} points no longer whole dropped" if dropped else "")
        except DrorchError as exc:
            point.complete, point.error = False, str(exc)
        point.taken_at = utcnow()
        points.append(point)
    store.add_points(points)
    shipped_for = {(p.kind, p.workload) for p in points if p.complete}
    store.drop_points([p.id or 0 for p in known if (p.kind, p.workload) in shipped_for
                       and (p.id or 0) in broken])
    store.protected_towards(pb.name, target, shipped_for)
    _retain(store, pb.name, keep)
    return points


def kept_points(points: list[RecoveryPoint], site: str) -> dict[tuple[str, str], list[RecoveryPoint]]:
    """The complete points on a site, per (kind, workload), newest first."""
    out: dict[tuple[str, str], list[RecoveryPoint]] = {}
    for p in sorted(points, key=lambda p: naive(p.taken_at), reverse=True):
        if p.complete and p.site == site:
            out.setdefault((p.kind, p.workload), []).append(p)
    return out


def points_at(points: list[RecoveryPoint], site: str, when: datetime | None,
              wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RecoveryPoint]:
    """Per (kind, workload) of `wanted`, the point a restart or a drill starts from: the newest complete one on
    the site taken at or before `when` (the newest of all when None). NoSuchPoint when `when` is before every
    point of a workload that has some, naming the ones kept."""
    held = kept_points(points, site)
    chosen: dict[tuple[str, str], RecoveryPoint] = {}
    for key in wanted:
        mine = held.get(key, [])
        if not mine:
            continue
        at = next((p for p in mine if when is None or naive(p.taken_at) <= naive(when)), None)
        if at is None and when is not None:
            kept = ", ".join(f"{naive(p.taken_at):%Y-%m-%dT%H:%M:%S} ({p.point_kind or 'point'})" for p in mine)
            raise NoSuchPoint(f"{key[0]} {key[1]} has no recovery point on site {site} taken at or before "
                              f"{naive(when):%Y-%m-%dT%H:%M:%S} UTC; it keeps: {kept}")
        if at is not None:
            chosen[key] = at
    return chosen


def _retain(store: StateStore, playbook: str, keep: int) -> None:
    """Keep the `keep` newest complete points of each workload and the failures since the newest one."""
    seen: dict[tuple[str, str, str], int] = {}
    drop = []
    for p in store.points(playbook):
        key = (p.kind, p.workload, p.site)
        if p.complete:
            seen[key] = seen.get(key, 0) + 1
        if seen.get(key, 0) > keep or (not p.complete and seen.get(key, 0) >= 1):
            drop.append(p.id or 0)
    store.drop_points(drop)


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
        last = max(complete, key=lambda p: naive(p.taken_at), default=None)
        newest = naive(last.taken_at) if last is not None else None
        failed = [p for p in mine if not p.complete and (newest is None or naive(p.taken_at) > newest)]
        out.append(Rpo(workload, kind, site, newest, (now - newest).total_seconds() if newest else None,
                       pb.protect.target_s if pb.protect and not history else None, len(complete),
                       failed[0].error if failed else None,
                       tuple(missing[p.id or 0] for p in mine if (p.id or 0) in missing), last, history))
    return out
