"""The planner: a playbook plus a snapshot of both sites gives a concrete, checked plan. Pure code, no I/O.

Placement is greedy and deterministic: workloads whose tier is `required` claim room first, then
the rest, each group by tier priority, then largest first, then name; each goes to the host where
it fits most tightly (ties broken by host name), away from hosts that hold a member of its
anti-affinity group. What does not fit is degraded, skipped or reported, as its tier says.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from drorch.gc_pause import collector_paused
from drorch.model._strict import Loc
from drorch.model.address_rules import AddressMove
from drorch.model.playbook import (
    RESIZABLE,
    Mappings,
    Playbook,
    Shortage,
    Strategy,
    Workload,
    WorkloadKind,
)
from drorch.model.records import Action
from drorch.plan._address_moves import address_plan
from drorch.plan.inventory import Snapshot, WorkloadInfo
from drorch.plan.placement import HostIndex, Size, sized, targets

MOVING = frozenset({Action.MOVE, Action.DEGRADE})
ACTING = MOVING | {Action.RESTART}
LEFT = frozenset({Action.SKIP, Action.BLOCKED, Action.UNPLACED})  # what will not move


@dataclass(frozen=True, slots=True)
class PlanItem:
    seq: int
    wave: str
    workload: str
    kind: WorkloadKind
    tier: str
    strategy: Strategy
    action: Action
    from_host: str | None
    to_host: str | None
    before: Size
    after: Size | None
    reason: str = ""
    entry: int = 0  # index of the playbook entry that selected it
    depends_on: tuple[str, ...] = ()
    mappings: Mappings = field(default_factory=Mappings)
    source_kind: WorkloadKind | None = None  # what it runs as on each site, where that is not its kind
    target_kind: WorkloadKind | None = None
    addresses: tuple[AddressMove, ...] = ()  # what each address becomes at the target

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.workload}"

    @property
    def at_source(self) -> WorkloadKind:
        return self.source_kind or self.kind

    @property
    def at_target(self) -> WorkloadKind:
        return self.target_kind or self.kind


@dataclass(frozen=True)
class Plan:
    playbook: str
    source: str
    target: str
    items: tuple[PlanItem, ...]
    problems: tuple[tuple[Loc, str], ...] = ()
    notes: tuple[tuple[Loc, str], ...] = ()  # not wrong, but not what a reader of the playbook may expect

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "source": self.source,
            "target": self.target,
            "items": [
                {**asdict(i), "mappings": i.mappings.model_dump(mode="json"), "depends_on": list(i.depends_on),
                 "addresses": [asdict(a) for a in i.addresses]}
                for i in self.items
            ],
            "problems": [{"at": list(loc), "message": msg} for loc, msg in self.problems],
            "notes": [{"at": list(loc), "message": msg} for loc, msg in self.notes],
        }


@dataclass(slots=True)
class _Candidate:
    entry: int
    spec: Workload
    info: WorkloadInfo | None  # where it runs now; None when blocked
    on_target: bool = False
    blocked: str = ""
    size: Size = field(init=False)
    name: str = field(init=False)
    # What the plan does with it, once decided (kept here rather than in tuples: a plan of 100,000
    # workloads makes fewer objects for the garbage collector to walk).
    action: Action | None = None
    to_host: str | None = None
    after: Size | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        self.size = _size(self.info, self.spec)
        self.name = self.info.name if self.info else self.spec.name or ""

    def decide(self, action: Action, to_host: str | None = None, after: Size | None = None, reason: str = "") -> None:
        self.action, self.to_host, self.after, self.reason = action, to_host, after, reason


def _size(info: WorkloadInfo | None, spec: Workload) -> Size:
    declared = spec.resources
    vcpus = (info.vcpus if info else None) or (declared.vcpus if declared else None) or 0
    memory = (info.memory_mib if info else None) or (declared.memory_mib if declared else None) or 0
    return sized(vcpus, memory)


def _entries(pb: Playbook, site: str) -> tuple[dict[tuple[WorkloadKind, str], list[int]],
                                                dict[WorkloadKind, list[tuple[int, Workload]]]]:
    """The entries that name a workload, and the patterns, by what their workloads run as on the site."""
    named: dict[tuple[WorkloadKind, str], list[int]] = {}
    patterns: dict[WorkloadKind, list[tuple[int, Workload]]] = {k: [] for k in WorkloadKind}
    for i, spec in enumerate(pb.workloads):
        if spec.name is not None:
            named.setdefault((pb.kind_on(spec, site), spec.name), []).append(i)
        else:
            patterns[pb.kind_on(spec, site)].append((i, spec))
    return named, patterns


def _resolve(pb: Playbook, snap: Snapshot, source: str, target: str,
             problems: list[tuple[Loc, str]]) -> list[_Candidate]:
    """Which entry selects each running workload, in one pass over both sites: an entry that names the
    workload beats a pattern; between patterns the first one wins."""
    found: dict[WorkloadKind, dict[str, _Candidate]] = {k: {} for k in WorkloadKind}  # by the entry's kind
    seen: set[int] = set()  # entries naming a workload that runs somewhere
    for site in (source, target):
        named, patterns = _entries(pb, site)
        for inv in snap.site(site):
            for info in inv.workloads:
                if not info.running:
                    continue
                namers = named.get((info.kind, info.name))
                if namers:
                    seen.update(namers)
                    entry: int | None = namers[0]
                else:
                    entry = next((i for i, spec in patterns[info.kind] if spec.selects(info.name, info.labels)), None)
                if entry is None:
                    continue
                spec = pb.workloads[entry]
                other = found[spec.kind].get(info.name)
                if other is None:
                    found[spec.kind][info.name] = _Candidate(entry, spec, info, on_target=site == target)
                elif other.info is not None and other.info.site != site:
                    problems.append((("workloads", entry), f"{spec.kind} {info.name!r} runs on both site "
                                     f"{other.info.site} and site {site}"))
    for i, spec in enumerate(pb.workloads):
        if spec.name is None or i in seen or spec.name in found[spec.kind]:
            continue
        down = [inv.errors[kind] for site in (source, target) for inv in snap.site(site)
                if (kind := pb.kind_on(spec, site)) in inv.errors]
        if down:
            found[spec.kind][spec.name] = _Candidate(i, spec, None, blocked=down[0])
            continue
        problems.append((("workloads", i, "name"), f"{spec.kind} {spec.name!r} runs neither on site {source} nor "
                         f"on site {target}"))
    return [c for by_name in found.values() for c in by_name.values()]


def plan(pb: Playbook, snap: Snapshot, source: str, target: str) -> Plan:
    with collector_paused:
        return _plan(pb, snap, source, target)


def _plan(pb: Playbook, snap: Snapshot, source: str, target: str) -> Plan:
    problems: list[tuple[Loc, str]] = []
    candidates = _resolve(pb, snap, source, target, problems)
    hosts = targets(pb, snap, target)
    index = HostIndex(hosts)
    for c in candidates:  # what is already on the target keeps its room and its group
        if c.on_target and c.info is not None:
            host = index.host(c.info.host)
            if host is not None and c.spec.anti_affinity:
                host.groups.add(c.spec.anti_affinity)
            c.decide(Action.ALREADY, c.info.host, c.size, f"already running on site {target}")
        elif c.blocked:
            c.decide(Action.BLOCKED, reason=c.blocked)

    # Required tiers first, then by tier priority, largest first (memory, then vCPUs), then by name: a stable
    # sort by name, then one by an integer that packs the rest (no tuple per workload).
    priorities = {p: at for at, p in enumerate(sorted({t.priority for t in pb.tiers.values()}))}

    def order(c: _Candidate) -> int:
        tier = pb.tier_of(c.spec)
        first = (tier.on_shortage is not Shortage.REQUIRED) * len(priorities) + priorities[tier.priority]
        return (((first << 48) - c.size.memory_mib) << 24) - c.size.vcpus  # below 2**48 MiB and 2**24 vCPUs

    down = {k: e for inv in snap.site(target) for k, e in inv.errors.items()}
    served = {k for h in hosts for k in h.kinds}
    candidates.sort(key=lambda c: c.name)  # once: every later order is a stable sort on an integer
    for c in sorted((c for c in candidates if c.info is not None and not c.on_target), key=order):
        spec, tier, size = c.spec, pb.tier_of(c.spec), c.size
        kind = pb.kind_on(spec, target)
        host = index.best_fit(kind, size, spec.anti_affinity)
        if host is None and kind in down and kind not in served:
            c.decide(Action.BLOCKED, reason=down[kind])
            continue
        if host is not None:
            c.decide(Action.MOVE, host.name, size)
        else:
            short = f"site {target} is short of room: needs {size}, most free {index.most_free(kind)}"
            if spec.anti_affinity and index.best_fit(kind, size, None) is not None:
                short = (f"every host of site {target} with room for {size} already holds a member of "
                         f"anti-affinity group {spec.anti_affinity!r}")
            smaller = Size(
                (spec.dr_resources.vcpus if spec.dr_resources else None) or size.vcpus,
                (spec.dr_resources.memory_mib if spec.dr_resources else None) or size.memory_mib,
            )
            resizable = spec.move_strategy in RESIZABLE
            if tier.on_shortage is Shortage.DEGRADE and resizable and smaller != size:
                host = index.best_fit(kind, smaller, spec.anti_affinity)
            else:
                host = None
            if host is not None:
                c.decide(Action.DEGRADE, host.name, smaller, f"{short}; runs with {smaller} instead of {size}")
            elif tier.on_shortage is Shortage.SKIP:
                c.decide(Action.SKIP, reason=f"left behind: {short}")
            else:
                why = short
                if tier.on_shortage is Shortage.DEGRADE and not resizable:
                    why += f"; a {spec.move_strategy} move cannot change its size"
                elif tier.on_shortage is Shortage.DEGRADE:
                    why += f"; even its DR size ({smaller}) does not fit"
                c.decide(Action.UNPLACED, reason=why)
                problems.append((("workloads", c.entry), f"{spec.kind} {c.name!r} does not fit: {why}"))
        if host is not None and c.after is not None:
            index.take(host, c.after, spec.anti_affinity)

    items = _order(pb, source, target, candidates, problems)
    return Plan(pb.name, source, target, tuple(items), tuple(problems), _implicit_wave(pb, items))


def _implicit_wave(pb: Playbook, items: list[PlanItem]) -> tuple[tuple[Loc, str], ...]:
    """Workloads that name no wave, in a playbook that declares waves, run in the default wave it does not
    declare: last, and one at a time."""
    declared = [w.name for w in pb.waves]
    if not declared or pb.defaults.wave in declared:
        return ()
    loose = [i.workload for i in items if i.wave == pb.defaults.wave]
    if not loose:
        return ()
    shown = ", ".join(loose[:3]) + (f" and {len(loose) - 3} more" if len(loose) > 3 else "")
    said = f"1 workload names no wave ({shown}): it runs" if len(loose) == 1 else \
        f"{len(loose)} workloads name no wave ({shown}): they run"
    return ((("waves",), f"{said} in wave {pb.defaults.wave!r}, which waves does not declare: after "
             f"wave {declared[-1]!r}, one at a time; give each a wave, or declare wave {pb.defaults.wave!r} with "
             "its parallel"),)


def disaster_plan(pb: Playbook, snap: Snapshot, source: str, target: str) -> Plan:
    """The source is lost: start on the target what it already holds (a shipped definition, a stopped
    copy, a checkpoint); the source's inventory is not needed and usually not there."""
    problems: list[tuple[Loc, str]] = []
    candidates: dict[tuple[WorkloadKind, str], _Candidate] = {}
    for i, spec in enumerate(pb.workloads):
        for inv in snap.site(target):
            for info in inv.workloads:
                key = (spec.kind, info.name)
                if info.kind is not pb.kind_on(spec, target) or not spec.selects(info.name, info.labels):
                    continue
                if key in candidates and (spec.name is None or candidates[key].spec.name is not None):
                    continue  # an entry that names the workload beats a pattern
                c = candidates[key] = _Candidate(i, spec, info, on_target=True)
                if info.running:
                    c.decide(Action.ALREADY, info.host, c.size, f"already running on site {target}")
                else:
                    c.decide(Action.RESTART, info.host, c.size, f"start the copy site {target} holds")
        if spec.name is not None and (spec.kind, spec.name) not in candidates:
            kind = pb.kind_on(spec, target)
            down = [inv.errors[kind] for inv in snap.site(target) if kind in inv.errors]
            why = down[0] if down else f"site {target} holds no copy of it to start from: protect it first"
            c = candidates[(spec.kind, spec.name)] = _Candidate(i, spec, None, blocked=why)
            c.decide(Action.BLOCKED, reason=why)
    items = _order(pb, source, target, list(candidates.values()), problems)
    return Plan(pb.name, source, target, tuple(items), tuple(problems), _implicit_wave(pb, items))


def _order(
    pb: Playbook,
    source: str,
    target: str,
    candidates: list[_Candidate],
    problems: list[tuple[Loc, str]],
) -> list[PlanItem]:
    """Waves in playbook order; inside a wave, dependencies first, then tier priority, then playbook order,
    then name. Workloads are handled by their place in their wave's list, in name order: an estate's plan
    makes no tuple and no dictionary entry per workload (at 100,000 workloads those cost more than the rest)."""
    waves = pb.wave_names()
    position = {w: at for at, w in enumerate(waves)}
    needed = {d for c in candidates for d in c.spec.depends_on}  # names some workload depends on
    by_name = {c.name: c for c in candidates if c.name in needed}
    in_wave: dict[str, list[_Candidate]] = {w: [] for w in waves}
    for c in sorted(candidates, key=lambda c: c.name):  # at once when sorted already
        in_wave.setdefault(pb.wave_of(c.spec), []).append(c)
    mappings: dict[int, Mappings] = {}  # per playbook entry: the same for every workload it selects
    span = len(pb.workloads)
    items: list[PlanItem] = []
    for wave in waves:
        members = in_wave[wave]
        at = {c.name: i for i, c in enumerate(members) if c.name in needed}
        waiting: dict[int, int] = {}
        dependents: dict[int, list[int]] = {}
        for i, c in enumerate(members):
            for d in c.spec.depends_on:
                if d in at:
                    waiting[i] = waiting.get(i, 0) + 1
                    dependents.setdefault(at[d], []).append(i)
                elif d in by_name and position[pb.wave_of(by_name[d].spec)] > position[wave]:
                    problems.append((("workloads", c.entry, "depends_on"),
                                     f"{c.name!r} depends on {d!r}, which moves in the later wave "
                                     f"{pb.wave_of(by_name[d].spec)!r}"))

        def rank(i: int, members: list[_Candidate] = members) -> int:  # stable: name order breaks ties
            return pb.tier_of(members[i].spec).priority * span + members[i].entry

        done = sorted((i for i in range(len(members)) if i not in waiting), key=rank)
        if waiting:
            done = _after_dependencies(done, rank, waiting, dependents)
        if len(done) < len(members):
            for i in sorted(set(range(len(members))) - set(done)):
                problems.append((("workloads", members[i].entry, "depends_on"),
                                 f"dependency cycle through {members[i].name!r}"))
                done.append(i)
        for i in done:
            c = members[i]
            action, reason = c.action, c.reason
            assert action is not None, f"{c.name} was never decided"
            gone = [d for d in c.spec.depends_on if d in by_name and by_name[d].action in LEFT]
            if gone and action in MOVING:
                reason = "; ".join(filter(None, [reason, f"depends on {', '.join(gone)}, which will not move"]))
            if c.entry not in mappings:
                mappings[c.entry] = pb.mappings_for(c.spec, source)
            moves, mapped = address_plan(c.spec, c.info, target, mappings[c.entry])
            items.append(PlanItem(
                seq=len(items) + 1,
                wave=wave,
                workload=c.name,
                kind=c.spec.kind,
                tier=c.spec.tier or pb.defaults.tier,
                strategy=c.spec.move_strategy,
                action=action,
                from_host=c.info.host if c.info and not c.on_target else None,
                to_host=c.to_host,
                before=c.size,
                after=c.after,
                reason=reason,
                entry=c.entry,
                depends_on=tuple(c.spec.depends_on),
                mappings=mapped,
                addresses=moves,
                source_kind=_apart(pb, c.spec, source),
                target_kind=_apart(pb, c.spec, target),
            ))
    return items


def _apart(pb: Playbook, spec: Workload, site: str) -> WorkloadKind | None:
    kind = pb.kind_on(spec, site)
    return kind if kind is not spec.kind else None


def _after_dependencies(ready: list[int], rank: Callable[[int], int], waiting: dict[int, int],
                        dependents: dict[int, list[int]]) -> list[int]:
    """Kahn's order: each goes once what it depends on has gone, the best ranked of those ready first."""
    heap = [(rank(i), i) for i in ready]  # sorted, so a heap already
    done: list[int] = []
    while heap:
        i = heapq.heappop(heap)[1]
        done.append(i)
        for m in dependents.get(i, ()):
            waiting[m] -= 1
            if waiting[m] == 0:
                heapq.heappush(heap, (rank(m), m))
    return done
