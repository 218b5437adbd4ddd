"""Which recovery points a restart or a drill starts from: per workload the newest at or before a time, per
consistency group one cut that holds a point of every member; and which groups' newest points are mixed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from drorch.errors import NoSuchPoint
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import naive
from drorch.store.rows import RecoveryPoint


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
    return min(p.instant for p in points)


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
