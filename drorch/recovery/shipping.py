"""Protection: recovery points shipped to the secondary, their retention, and each workload's RPO."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drorch.drivers.base import Driver, Retention
from drorch.engine.steps_from_plan import move_request
from drorch.errors import DrorchError, NoSuchPoint
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import Action, naive, utcnow
from drorch.model.retention import kept
from drorch.model.run_settings import Protect
from drorch.plan.planner import MOVING, plan
from drorch.reach import site_endpoints, snapshot
from drorch.recovery.cuts import GroupCut, Member, take
from drorch.recovery.freezes import release_orphans
from drorch.store.contract import StateStore
from drorch.store.sql_store import RecoveryPoint


def protect(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore,
            source: str | None = None, target: str | None = None) -> list[RecoveryPoint]:
    """Ship one recovery point of every workload that would move, record it, and apply the retention. The
    members of a consistency group (and a quiesced VM) are cut at one instant, frozen, before any data travels."""
    source, target = source or pb.primary, target or pb.secondary
    settings = pb.protect or Protect()  # the documented defaults, with or without a protect section
    release_orphans(pb, drivers, store)
    the_plan = plan(pb, snapshot(pb, drivers, brief=True), source, target)
    known = [p for p in store.points(pb.name) if p.site == target]
    broken = missing_points(pb, drivers, known)  # not kept: the ship may remove what is left of them
    held = kept_points([p for p in known if (p.id or 0) not in broken], target)
    units: dict[str, list[Member]] = {}
    for item in the_plan.items:
        if item.action not in MOVING and item.action is not Action.BLOCKED:
            continue
        spec = pb.workloads[item.entry]
        group = pb.group_of(spec, item.workload)
        retention = Retention(settings.keep, settings.full_every, tuple(
            (p.name, naive(p.cut_at or p.taken_at)) for p in held.get((str(item.kind), item.workload), []) if p.name),
            tuple(settings.retention))
        blocked = item.action is Action.BLOCKED
        member = Member(item.kind, item.workload, None if blocked else move_request(pb, the_plan, item), retention,
                        drivers[item.at_source], spec, error=item.reason if blocked else "")
        units.setdefault(f"group {group}" if group else f"{item.key}", []).append(member)
    points = []
    for unit, members in units.items():
        taken = take(pb, store, source, members, unit.removeprefix("group ") if unit.startswith("group ") else None)
        points += _sent(pb, taken, target, known, broken)
    store.add_points(points)
    shipped_for = {(p.kind, p.workload) for p in points if p.complete}
    store.drop_points([p.id or 0 for p in known if (p.kind, p.workload) in shipped_for
                       and (p.id or 0) in broken])
    store.protected_towards(pb.name, target, shipped_for)
    _retain(store, pb.name, points, {(str(m.kind), m.name): m.retention for ms in units.values() for m in ms})
    return points


def _sent(pb: Playbook, taken: GroupCut, target: str, known: list[RecoveryPoint], broken: Mapping[int, str]
          ) -> list[RecoveryPoint]:
    """Each member's cut sent, all at once while they run, as its recovery point; the group's points say when one
    failed."""
    with ThreadPoolExecutor(max_workers=len(taken.members) + 1, thread_name_prefix="drorch-send") as pool:
        hooks = pool.submit(taken.after_thaw)
        points = list(pool.map(lambda m: _point(pb, taken, m, target, known, broken), taken.members))
        thawed = hooks.result()
    failed = [f"{p.workload} ({p.error})" for p in points if not p.complete]
    for p, m in zip(points, taken.members, strict=True):
        said = [*m.notes, *taken.notes, *thawed]
        if taken.group is not None and failed and p.complete:
            said.append(f"group {taken.group}'s cut is incomplete: {'; '.join(failed)}")
        p.warning = "; ".join(said) or None
    return points


def _point(pb: Playbook, taken: GroupCut, m: Member, target: str, known: list[RecoveryPoint],
           broken: Mapping[int, str]) -> RecoveryPoint:
    """One member's cut sent: its recovery point, or the failed record of it."""
    point = RecoveryPoint(playbook=pb.name, workload=m.name, kind=str(m.kind), site=target, group=taken.group,
                          cut=taken.name, frozen_at=taken.frozen_at, freeze_ms=taken.freeze_ms)
    key = (point.kind, point.workload)
    try:
        if m.error or m.taken is None:
            raise DrorchError(m.error or "its cut was not taken")
        shipped = m.taken.send()
        dropped = sum((p.kind, p.workload) == key for p in known if (p.id or 0) in broken)
        point.size_bytes, point.name, point.point_kind, point.chain = (shipped.size_bytes, shipped.name,
                                                                       shipped.kind, shipped.chain)
        point.detail = shipped.message + (f"; {dropped} points no longer whole dropped" if dropped else "")
        point.cut_at, point.consistency = m.taken.at, taken.consistency(m)
    except DrorchError as exc:
        point.complete, point.error = False, str(exc)
    point.taken_at = utcnow()
    return point


def kept_points(points: list[RecoveryPoint], site: str) -> dict[tuple[str, str], list[RecoveryPoint]]:
    """The complete points on a site, per (kind, workload), newest first."""
    out: dict[tuple[str, str], list[RecoveryPoint]] = {}
    for p in sorted(points, key=lambda p: naive(p.taken_at), reverse=True):
        if p.complete and p.site == site:
            out.setdefault((p.kind, p.workload), []).append(p)
    return out


def points_at(points: list[RecoveryPoint], site: str, when: datetime | None, wanted: Iterable[tuple[str, str]],
              groups: Mapping[tuple[str, str], str] | None = None) -> dict[tuple[str, str], RecoveryPoint]:
    """Per (kind, workload) of `wanted`, the point a restart or a drill starts from: the newest complete one on
    the site taken at or before `when` (the newest of all when None). The members of a group (`groups`: key ->
    group) start from one cut: the newest whose instant is at or before `when` and that holds a complete point
    of every member wanted. NoSuchPoint when `when` is before every point of a workload that has some, or no cut
    of a group is whole, naming the ones kept."""
    held = kept_points(points, site)
    chosen: dict[tuple[str, str], RecoveryPoint] = {}
    members: dict[str, list[tuple[str, str]]] = {}
    for key in wanted:
        mine = held.get(key, [])
        group = (groups or {}).get(key)
        if group is not None and any(p.cut for p in mine):
            members.setdefault(group, []).append(key)
            continue
        if not mine:
            continue
        at = next((p for p in mine if when is None or naive(p.taken_at) <= naive(when)), None)
        if at is None and when is not None:
            kept = ", ".join(f"{naive(p.taken_at):%Y-%m-%dT%H:%M:%S} ({p.point_kind or 'point'})" for p in mine)
            raise NoSuchPoint(f"{key[0]} {key[1]} has no recovery point on site {site} taken at or before "
                              f"{naive(when):%Y-%m-%dT%H:%M:%S} UTC; it keeps: {kept}")
        if at is not None:
            chosen[key] = at
    for group, keys in members.items():
        chosen.update(one_cut(group, keys, held, site, when))
    return chosen


def _instant(points: Iterable[RecoveryPoint]) -> datetime:
    return min(naive(p.cut_at or p.taken_at) for p in points)


def one_cut(group: str, keys: list[tuple[str, str]], held: Mapping[tuple[str, str], list[RecoveryPoint]],
            site: str, when: datetime | None) -> dict[tuple[str, str], RecoveryPoint]:
    """The members' points of the group's newest whole cut at or before `when`; NoSuchPoint naming the cuts
    kept when there is none."""
    cuts: dict[str, dict[tuple[str, str], RecoveryPoint]] = {}
    for key in keys:
        for p in held.get(key, []):
            if p.cut:
                cuts.setdefault(p.cut, {})[key] = p
    ordered = sorted(cuts.values(), key=lambda c: _instant(c.values()), reverse=True)
    for cut in ordered:
        if len(cut) == len(keys) and (when is None or _instant(cut.values()) <= naive(when)):
            return cut
    kept = "; ".join(f"{_instant(c.values()):%Y-%m-%dT%H:%M:%S} ("
                     f"{'whole' if len(c) == len(keys) else 'without ' + ', '.join(k[1] for k in keys if k not in c)})"
                     for c in ordered) or "none"
    after = f" taken at or before {naive(when):%Y-%m-%dT%H:%M:%S} UTC" if when is not None else ""
    raise NoSuchPoint(f"group {group} has no cut on site {site}{after} that holds a point of each of its members "
                      f"({', '.join(k[1] for k in keys)}); its cuts: {kept}")


def mixed_cuts(pb: Playbook, points: list[RecoveryPoint], site: str, wanted: Iterable[tuple[str, str]]
               ) -> list[str]:
    """Each group whose members' newest points on the site are not of one cut, and the cut a restart would use."""
    held = kept_points(points, site)
    members: dict[str, list[tuple[str, str]]] = {}
    for key, group in group_keys(pb, wanted).items():
        members.setdefault(group, []).append(key)
    out = []
    for group, keys in sorted(members.items()):
        newest = {key: held[key][0].cut if held.get(key) else None for key in keys}
        if len(set(newest.values())) <= 1 and None not in newest.values():
            continue
        try:
            used = one_cut(group, keys, held, site, None)
            fallback = f"a restart starts from its cut of {_instant(used.values()):%Y-%m-%dT%H:%M:%S} UTC"
        except NoSuchPoint:
            fallback = "no cut holds a point of every member: a restart is refused"
        shown = ", ".join(f"{k[1]}: {c or 'no cut'}" for k, c in newest.items())
        out.append(f"group {group}: its members' newest points are not of one cut ({shown}); {fallback}")
    return out


def group_keys(pb: Playbook, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The consistency group of each (kind, workload) that has one."""
    out = {}
    for kind, name in keys:
        group = pb.group_of(pb.spec_of(WorkloadKind(kind), name), name)
        if group is not None:
            out[(kind, name)] = group
    return out


def _retain(store: StateStore, playbook: str, shipped: list[RecoveryPoint],
            retention: Mapping[tuple[str, str], Retention]) -> None:
    """The records of the points each new point's ship kept on its site (chosen as its driver chose, from the same
    points and instants), and of the failures since the newest complete point of each workload."""
    rows = store.points(playbook)  # newest first
    drop = []
    for new in shipped:
        if not new.complete:
            continue
        how = retention[(new.kind, new.workload)]
        mine = [p for p in rows if p.complete and (p.kind, p.workload, p.site) == (new.kind, new.workload, new.site)]
        chosen = kept([(p.id, naive(p.cut_at or p.taken_at)) for p in mine], naive(new.cut_at or new.taken_at),
                      how.keep, how.tiers)
        drop += [p.id or 0 for p in mine if p.id not in chosen and p.id != new.id]
    seen: set[tuple[str, str, str]] = set()
    for p in rows:
        key = (p.kind, p.workload, p.site)
        if not p.complete and key in seen:
            drop.append(p.id or 0)
        seen.update([key] if p.complete else [])
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
