"""Protection: recovery points shipped to the secondary, each workload (or consistency group) as one unit. Units
ship in parallel within the playbook's bounds; each records its own points and keeps its retention, and one that
is still shipping when the next is due is not begun twice, but counted as skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drorch.drivers.base import Driver, MoveRequest, Retention
from drorch.engine.move_slots import MoveSlots
from drorch.engine.steps_from_plan import move_request
from drorch.errors import DrorchError, WorkloadBusy
from drorch.model.playbook import Playbook, Workload, WorkloadKind
from drorch.model.records import Action, naive, utcnow
from drorch.model.retention import kept
from drorch.model.run_settings import Protect
from drorch.plan.planner import MOVING, plan
from drorch.process import pid_alive
from drorch.reach import snapshot
from drorch.recovery.cuts import GroupCut, Member, take
from drorch.recovery.freezes import release_orphans
from drorch.recovery.point_choice import kept_points
from drorch.recovery.rpo import missing_points
from drorch.store.contract import StateStore
from drorch.store.rows import Lock, RecoveryPoint


@dataclass(frozen=True)
class Part:
    """One workload of a unit, as the plan has it."""

    kind: WorkloadKind
    name: str
    request: MoveRequest | None  # None: a site it needs did not answer (`error`)
    driver: WorkloadKind  # what it runs as on the source
    spec: Workload
    error: str = ""


@dataclass(frozen=True)
class Unit:
    """What one ship cuts at one instant: a workload, or every member of a consistency group."""

    key: str
    group: str | None
    parts: tuple[Part, ...]

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(str(p.kind), p.name) for p in self.parts]

    @property
    def ends(self) -> list[tuple[str, str]]:
        """The (site, host) each part moves between: whose max_moves its ship counts against."""
        return [(e.site, e.host) for p in self.parts if p.request for e in (p.request.source, p.request.target)]


@dataclass(frozen=True)
class Outline:
    """What a ship of a playbook ships, from where to where: the plan over both sites' inventories."""

    source: str
    target: str
    units: tuple[Unit, ...]


@dataclass
class Shipment:
    points: list[RecoveryPoint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # units not begun, each with why


def outline(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], source: str | None = None,
            target: str | None = None) -> Outline:
    """The units to ship: each workload that would move, the members of a group together."""
    source, target = source or pb.primary, target or pb.secondary
    the_plan = plan(pb, snapshot(pb, drivers, brief=True), source, target)
    units: dict[str, list[Part]] = {}
    groups: dict[str, str | None] = {}
    for item in the_plan.items:
        if item.action not in MOVING and item.action is not Action.BLOCKED:
            continue
        spec = pb.workloads[item.entry]
        group = pb.group_of(spec, item.workload)
        blocked = item.action is Action.BLOCKED
        key = f"group/{group}" if group else item.key
        groups[key] = group
        units.setdefault(key, []).append(Part(item.kind, item.workload, None if blocked else move_request(
            pb, the_plan, item), item.at_source, spec, item.reason if blocked else ""))
    return Outline(source, target, tuple(Unit(k, groups[k], tuple(parts)) for k, parts in units.items()))


def protect(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore,
            source: str | None = None, target: str | None = None) -> Shipment:
    """Ship one recovery point of every workload that would move, record it, and apply the retention. The
    members of a consistency group (and a quiesced VM) are cut at one instant, frozen, before any data travels."""
    release_orphans(pb, drivers, store)
    plan_ = outline(pb, drivers, source, target)
    return ship(pb, drivers, store, plan_, plan_.units)


def ship(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore, plan_: Outline,
         units: Sequence[Unit]) -> Shipment:
    """The units shipped at once, `protect.parallel` at a time and within the sites' and hosts' max_moves."""
    slots = MoveSlots()
    done = Shipment()
    with ThreadPoolExecutor(max_workers=(pb.protect or Protect()).parallel, thread_name_prefix="drorch-ship") as pool:
        for points in pool.map(lambda u: ship_unit(pb, drivers, store, plan_, u, slots), units):
            if isinstance(points, str):
                done.skipped.append(points)
            else:
                done.points += points
    return done


def ship_unit(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore, plan_: Outline,
              unit: Unit, slots: MoveSlots) -> list[RecoveryPoint] | str:
    """One unit's points shipped and recorded, its retention kept; why it was not begun when its last ship (of
    this process or another) still runs."""
    try:
        with shipping(store, pb, unit), slots.held(pb.move_limits(unit.ends)):
            return _ship_unit(pb, drivers, store, plan_, unit)
    except WorkloadBusy as exc:
        store.ship_skipped(pb.name, unit.keys, str(exc))
        return f"{unit.key} not shipped: {exc}"


@contextlib.contextmanager
def shipping(store: StateStore, pb: Playbook, unit: Unit) -> Iterator[None]:
    """Hold the unit's ship lock; WorkloadBusy, naming the holder, while another ship of it runs. A lock whose
    process is gone (dead here, or a daemon whose heartbeat stopped) is taken over."""
    key, host, pid = f"ship/{pb.name}/{unit.key}", socket.gethostname(), os.getpid()
    for _ in range(3):
        held = store.take_locks([key], None, pid, host)
        if held is None:
            break
        if not _gone(store, held, host):
            raise WorkloadBusy(f"its ship begun at {naive(held.taken_at):%H:%M:%S} UTC by pid {held.pid} on "
                               f"{held.host} still runs")
        store.drop_lock(held)
    else:
        raise WorkloadBusy("its ship lock keeps changing hands")
    try:
        yield
    finally:
        store.drop_lock(Lock(key=key, run_id=None, pid=pid, host=host))


def _gone(store: StateStore, held: Lock, here: str) -> bool:
    if held.host == here:
        return not pid_alive(held.pid)
    daemon = next((d for d in store.daemons() if d.identity == f"{held.host}:{held.pid}"), None)
    return daemon is not None and daemon.role(utcnow()) in ("stopped", "gone")


def _ship_unit(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore, plan_: Outline,
               unit: Unit) -> list[RecoveryPoint]:
    settings = pb.protect or Protect()  # the documented defaults, with or without a protect section
    keys = set(unit.keys)
    known = [p for p in store.points(pb.name) if p.site == plan_.target and (p.kind, p.workload) in keys]
    broken = missing_points(pb, drivers, known)  # not kept: the ship may remove what is left of them
    held = kept_points([p for p in known if (p.id or 0) not in broken], plan_.target)

    def retention(p: Part) -> Retention:
        mine = tuple((q.name, q.instant) for q in held.get((str(p.kind), p.name), []) if q.name)
        return Retention(settings.keep, settings.full_every, mine, tuple(settings.retention), settings.merge_mib_s)

    members = [Member(p.kind, p.name, p.request, retention(p), drivers[p.driver], p.spec, error=p.error)
               for p in unit.parts]
    taken = take(pb, store, plan_.source, members, unit.group)
    points = _sent(pb, taken, plan_.target, known, broken)
    store.add_points(points)  # the RPO counts from here: thinning follows
    shipped_for = {(p.kind, p.workload) for p in points if p.complete}
    store.drop_points([p.id or 0 for p in known if (p.kind, p.workload) in shipped_for and (p.id or 0) in broken])
    store.protected_towards(pb.name, plan_.target, shipped_for)
    store.save(*_thinned(taken, points))
    _retain(store, pb.name, points, {(str(m.kind), m.name): m.retention for m in members})
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


def _thinned(taken: GroupCut, points: list[RecoveryPoint]) -> list[RecoveryPoint]:
    """Each sent member's points thinned on the target, all at once; the points whose detail now says how."""
    sent = [(m.taken, p) for m, p in zip(taken.members, points, strict=True) if p.complete and m.taken is not None]
    with ThreadPoolExecutor(max_workers=len(sent) or 1, thread_name_prefix="drorch-thin") as pool:
        notes = list(pool.map(lambda c: c.thin(), [c for c, _ in sent]))
    said = [(p, note) for (_, p), note in zip(sent, notes, strict=True) if note]
    for p, note in said:
        p.detail = f"{p.detail}; {note}" if p.detail else note
    return [p for p, _ in said]


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
        chosen = kept([(p.id, p.instant) for p in mine], new.instant,
                      how.keep, how.tiers)
        drop += [p.id or 0 for p in mine if p.id not in chosen and p.id != new.id]
    seen: set[tuple[str, str, str]] = set()
    for p in rows:
        key = (p.kind, p.workload, p.site)
        if not p.complete and key in seen:
            drop.append(p.id or 0)
        seen.update([key] if p.complete else [])
    store.drop_points(drop)


