"""The planner: a playbook plus a snapshot of both sites gives a concrete, checked plan. Pure code, no I/O.

Placement is greedy and deterministic: workloads whose tier is `required` claim room first, then
the rest, each group by tier priority, then largest first, then name; each goes to the host where
it fits most tightly (ties broken by host name), away from hosts that hold a member of its
anti-affinity group. What does not fit is degraded, skipped or reported, as its tier says.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from drorch.inventory import HostInventory, Snapshot, WorkloadInfo
from drorch.playbook import (
    RESIZABLE,
    Loc,
    Mappings,
    Overcommit,
    Playbook,
    Shortage,
    Strategy,
    Workload,
    WorkloadKind,
)


class Action(StrEnum):
    MOVE = "move"
    DEGRADE = "degrade"  # moves with its smaller DR resources
    SKIP = "skip"  # left behind: its tier allows it and the target is short of room
    ALREADY = "already"  # runs on the target already
    BLOCKED = "blocked"  # a site it needs did not answer; the move fails, the others go on
    UNPLACED = "unplaced"  # required and does not fit: the plan is refused
    RESTART = "restart"  # disaster: started on the target from the copy the target already holds


MOVING = frozenset({Action.MOVE, Action.DEGRADE})
ACTING = MOVING | {Action.RESTART}


@dataclass(frozen=True, order=True)
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


@dataclass(frozen=True)
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

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.workload}"


@dataclass(frozen=True)
class Plan:
    playbook: str
    source: str
    target: str
    items: tuple[PlanItem, ...]
    problems: tuple[tuple[Loc, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "source": self.source,
            "target": self.target,
            "items": [
                {**asdict(i), "mappings": i.mappings.model_dump(mode="json"), "depends_on": list(i.depends_on)}
                for i in self.items
            ],
            "problems": [{"at": list(loc), "message": msg} for loc, msg in self.problems],
        }


@dataclass
class _Candidate:
    entry: int
    spec: Workload
    info: WorkloadInfo | None  # where it runs now; None when blocked
    on_target: bool = False
    blocked: str = ""


@dataclass
class _TargetHost:
    name: str
    kinds: set[WorkloadKind]
    free: Size
    groups: set[str] = field(default_factory=set)


def _size(info: WorkloadInfo | None, spec: Workload) -> Size:
    declared = spec.resources
    vcpus = (info.vcpus if info else None) or (declared.vcpus if declared else None) or 0
    memory = (info.memory_mib if info else None) or (declared.memory_mib if declared else None) or 0
    return Size(vcpus, memory)


def _capacity(pb: Playbook, site: str, inv: HostInventory | None, host_name: str) -> Size:
    host = next(h for h in pb.hosts(site) if h.name == host_name)
    over: Overcommit = pb.sites[site].overcommit
    if host.capacity is not None:
        vcpus, memory = host.capacity.vcpus, host.capacity.memory_mib
    else:
        found = inv.discovered() if inv else (None, None)
        vcpus, memory = found[0] or 0, found[1] or 0
    return Size(int(vcpus * over.cpu), int(memory * over.memory))


def _resolve(pb: Playbook, snap: Snapshot, source: str, target: str,
             problems: list[tuple[Loc, str]]) -> list[_Candidate]:
    found: dict[tuple[WorkloadKind, str], _Candidate] = {}
    for i, spec in enumerate(pb.workloads):
        matched = False
        for site in (source, target):
            for inv in snap.site(site):
                for info in inv.workloads:
                    if info.kind is not spec.kind or not info.running or not spec.selects(info.name, info.labels):
                        continue
                    matched = True
                    key = (spec.kind, info.name)
                    other = found.get(key)
                    # An entry that names the workload beats a pattern; between patterns the first one wins.
                    if other is None or (other.entry != i and spec.name is not None and other.spec.name is None):
                        found[key] = _Candidate(i, spec, info, on_target=site == target)
                    elif other.entry == i and other.info is not None and other.info.site != site:
                        problems.append((("workloads", i), f"{spec.kind} {info.name!r} runs on both site "
                                         f"{other.info.site} and site {site}"))
        if not matched and spec.name is not None:
            down = [inv.errors[spec.kind] for site in (source, target)
                    for inv in snap.site(site) if spec.kind in inv.errors]
            if down:
                found[(spec.kind, spec.name)] = _Candidate(i, spec, None, blocked=down[0])
            else:
                problems.append((("workloads", i, "name"), f"{spec.kind} {spec.name!r} runs neither on site "
                                 f"{source} nor on site {target}"))
    return list(found.values())


def _targets(pb: Playbook, snap: Snapshot, target: str) -> list[_TargetHost]:
    invs = {inv.host: inv for inv in snap.site(target)}
    hosts = []
    for host in sorted(pb.hosts(target), key=lambda h: h.name):
        inv = invs.get(host.name)
        kinds = {k for k in WorkloadKind if host.endpoint(k) and (inv is None or k not in inv.errors)}
        used = Size()
        for w in inv.workloads if inv else []:
            if w.running:
                used = used + Size(w.vcpus or 0, w.memory_mib or 0)
        hosts.append(_TargetHost(host.name, kinds, _capacity(pb, target, inv, host.name) - used))
    return hosts


class _Index:
    """Target hosts per kind, kept sorted by free room so that best fit is a bisect, not a scan."""

    def __init__(self, hosts: list[_TargetHost]) -> None:
        self.hosts = hosts
        self._sorted: dict[WorkloadKind, list[tuple[int, int, str]]] = {
            k: sorted(self._key(h) for h in hosts if k in h.kinds) for k in WorkloadKind
        }
        self._by_name = {h.name: h for h in hosts}

    @staticmethod
    def _key(h: _TargetHost) -> tuple[int, int, str]:
        return (h.free.memory_mib, h.free.vcpus, h.name)

    def best_fit(self, kind: WorkloadKind, size: Size, group: str | None) -> _TargetHost | None:
        """The host left with the least memory, then fewest vCPUs, then first by name."""
        keys = self._sorted[kind]
        start = bisect.bisect_left(keys, (size.memory_mib, -(2**62), ""))
        for _memory, vcpus, name in itertools.islice(keys, start, None):
            if vcpus >= size.vcpus and (group is None or group not in self._by_name[name].groups):
                return self._by_name[name]
        return None

    def most_free(self, kind: WorkloadKind) -> str:
        keys = self._sorted[kind]
        return str(self._by_name[keys[-1][2]].free) if keys else "no host takes it"

    def take(self, host: _TargetHost, size: Size, group: str | None) -> None:
        for kind in host.kinds:
            keys = self._sorted[kind]
            del keys[bisect.bisect_left(keys, self._key(host))]
        host.free = host.free - size
        if group:
            host.groups.add(group)
        for kind in host.kinds:
            bisect.insort(self._sorted[kind], self._key(host))


def plan(pb: Playbook, snap: Snapshot, source: str, target: str) -> Plan:
    problems: list[tuple[Loc, str]] = []
    candidates = _resolve(pb, snap, source, target, problems)
    hosts = _targets(pb, snap, target)
    index = _Index(hosts)
    placed: dict[tuple[WorkloadKind, str], tuple[Action, str | None, Size | None, str]] = {}

    for c in candidates:  # what is already on the target keeps its room and its group
        if c.on_target and c.info is not None:
            host = next((h for h in hosts if h.name == c.info.host), None)
            if host is not None and c.spec.anti_affinity:
                host.groups.add(c.spec.anti_affinity)
            placed[(c.spec.kind, c.info.name)] = (Action.ALREADY, c.info.host, _size(c.info, c.spec),
                                                  f"already running on site {target}")
        elif c.blocked:
            placed[(c.spec.kind, c.spec.name or "")] = (Action.BLOCKED, None, None, c.blocked)

    def order(c: _Candidate) -> tuple[int, int, int, int, str]:
        size = _size(c.info, c.spec)
        tier = pb.tier_of(c.spec)
        return (tier.on_shortage is not Shortage.REQUIRED, tier.priority, -size.memory_mib, -size.vcpus,
                c.info.name if c.info else "")

    down = {k: e for inv in snap.site(target) for k, e in inv.errors.items()}
    for c in sorted((c for c in candidates if c.info is not None and not c.on_target), key=order):
        assert c.info is not None
        spec, tier, size = c.spec, pb.tier_of(c.spec), _size(c.info, c.spec)
        key = (spec.kind, c.info.name)
        host = index.best_fit(spec.kind, size, spec.anti_affinity)
        outcome: tuple[Action, str | None, Size | None, str]
        if host is None and spec.kind in down and not any(spec.kind in h.kinds for h in hosts):
            placed[key] = (Action.BLOCKED, None, None, down[spec.kind])
            continue
        if host is not None:
            outcome = (Action.MOVE, host.name, size, "")
        else:
            short = f"site {target} is short of room: needs {size}, most free {index.most_free(spec.kind)}"
            smaller = Size(
                (spec.dr_resources.vcpus if spec.dr_resources else None) or size.vcpus,
                (spec.dr_resources.memory_mib if spec.dr_resources else None) or size.memory_mib,
            )
            resizable = spec.move_strategy in RESIZABLE
            if tier.on_shortage is Shortage.DEGRADE and resizable and smaller != size:
                host = index.best_fit(spec.kind, smaller, spec.anti_affinity)
            else:
                host = None
            if host is not None:
                outcome = (Action.DEGRADE, host.name, smaller, f"{short}; runs with {smaller} instead of {size}")
            elif tier.on_shortage is Shortage.SKIP:
                outcome = (Action.SKIP, None, None, f"left behind: {short}")
            else:
                why = short
                if tier.on_shortage is Shortage.DEGRADE and not resizable:
                    why += f"; a {spec.move_strategy} move cannot change its size"
                elif tier.on_shortage is Shortage.DEGRADE:
                    why += f"; even its DR size ({smaller}) does not fit"
                outcome = (Action.UNPLACED, None, None, why)
                problems.append((("workloads", c.entry), f"{spec.kind} {c.info.name!r} does not fit: {why}"))
        if host is not None and outcome[2] is not None:
            index.take(host, outcome[2], spec.anti_affinity)
        placed[key] = outcome

    items = _order(pb, source, target, candidates, placed, problems)
    return Plan(pb.name, source, target, tuple(items), tuple(problems))


def disaster_plan(pb: Playbook, snap: Snapshot, source: str, target: str) -> Plan:
    """The source is lost: start on the target what it already holds (a shipped definition, a stopped
    copy, a checkpoint); the source's inventory is not needed and usually not there."""
    problems: list[tuple[Loc, str]] = []
    candidates: dict[tuple[WorkloadKind, str], _Candidate] = {}
    placed: dict[tuple[WorkloadKind, str], tuple[Action, str | None, Size | None, str]] = {}
    for i, spec in enumerate(pb.workloads):
        for inv in snap.site(target):
            for info in inv.workloads:
                key = (spec.kind, info.name)
                if info.kind is not spec.kind or not spec.selects(info.name, info.labels):
                    continue
                if key in candidates and (spec.name is None or candidates[key].spec.name is not None):
                    continue  # an entry that names the workload beats a pattern
                candidates[key] = _Candidate(i, spec, info, on_target=True)
                placed[key] = ((Action.ALREADY, info.host, _size(info, spec), f"already running on site {target}")
                               if info.running else
                               (Action.RESTART, info.host, _size(info, spec), f"start the copy site {target} holds"))
        if spec.name is not None and (spec.kind, spec.name) not in candidates:
            down = [inv.errors[spec.kind] for inv in snap.site(target) if spec.kind in inv.errors]
            why = down[0] if down else f"site {target} holds no copy of it to start from: protect it first"
            candidates[(spec.kind, spec.name)] = _Candidate(i, spec, None, blocked=why)
            placed[(spec.kind, spec.name)] = (Action.BLOCKED, None, None, why)
    items = _order(pb, source, target, list(candidates.values()), placed, problems)
    return Plan(pb.name, source, target, tuple(items), tuple(problems))


def _order(
    pb: Playbook,
    source: str,
    target: str,
    candidates: list[_Candidate],
    placed: dict[tuple[WorkloadKind, str], tuple[Action, str | None, Size | None, str]],
    problems: list[tuple[Loc, str]],
) -> list[PlanItem]:
    """Waves in playbook order; inside a wave, dependencies first, then tier priority, then playbook order."""
    waves = pb.wave_names()
    by_name = {(c.info.name if c.info else c.spec.name or ""): c for c in candidates}
    actions = {name: placed[(c.spec.kind, name)][0] for name, c in by_name.items()}
    items: list[PlanItem] = []
    for wave in waves:
        members = {n: c for n, c in by_name.items() if pb.wave_of(c.spec) == wave}
        deps = {n: [d for d in c.spec.depends_on if d in members] for n, c in members.items()}
        for n, c in members.items():
            for d in c.spec.depends_on:
                if d in by_name and d not in members and waves.index(pb.wave_of(by_name[d].spec)) > waves.index(wave):
                    problems.append((("workloads", c.entry, "depends_on"),
                                     f"{n!r} depends on {d!r}, which moves in the later wave "
                                     f"{pb.wave_of(by_name[d].spec)!r}"))
        waiting = {n: len(ds) for n, ds in deps.items()}
        dependents: dict[str, list[str]] = {}
        for m, ds in deps.items():
            for d in ds:
                dependents.setdefault(d, []).append(m)
        rank = {n: (pb.tier_of(c.spec).priority, c.entry, n) for n, c in members.items()}
        ready = [rank[n] for n in members if waiting[n] == 0]
        heapq.heapify(ready)
        done: list[str] = []
        while ready:
            n = heapq.heappop(ready)[2]
            done.append(n)
            for m in dependents.get(n, []):
                waiting[m] -= 1
                if waiting[m] == 0:
                    heapq.heappush(ready, rank[m])
        for n in sorted(set(members) - set(done)):
            problems.append((("workloads", members[n].entry, "depends_on"), f"dependency cycle through {n!r}"))
            done.append(n)
        for n in done:
            c = members[n]
            action, to_host, after, reason = placed[(c.spec.kind, n)]
            gone = [d for d in c.spec.depends_on if actions.get(d) in (Action.SKIP, Action.BLOCKED, Action.UNPLACED)]
            if gone and action in MOVING:
                reason = "; ".join(filter(None, [reason, f"depends on {', '.join(gone)}, which will not move"]))
            items.append(PlanItem(
                seq=len(items) + 1,
                wave=wave,
                workload=n,
                kind=c.spec.kind,
                tier=c.spec.tier or pb.defaults.tier,
                strategy=c.spec.move_strategy,
                action=action,
                from_host=c.info.host if c.info and not c.on_target else None,
                to_host=to_host,
                before=_size(c.info, c.spec),
                after=after,
                reason=reason,
                entry=c.entry,
                depends_on=tuple(c.spec.depends_on),
                mappings=pb.mappings_for(c.spec, source),
            ))
    return items
