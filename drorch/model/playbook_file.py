"""A playbook file turned into a checked Playbook: YAML read within limits, the model validated, and the checks
that span several fields (names that point nowhere, dependency cycles), each problem as `file:line:col`."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from drorch import input_limits
from drorch.errors import PlaybookError
from drorch.gc_pause import collector_paused
from drorch.model._strict import Loc
from drorch.model.auto_failover import auto_failover_problems
from drorch.model.playbook import LANDINGS, MAPPING_FIELDS, STRATEGIES, Playbook, Strategy, WorkloadKind


def _cycles(pb: Playbook) -> list[tuple[int, list[str]]]:
    """Dependency cycles among explicitly named workloads, as (entry index, cycle path). A depth-first walk with
    its own stack: a chain of 100,000 workloads is as deep as Python's recursion never could be."""
    deps = {w.name: w.depends_on for w in pb.workloads if w.name}
    index = {w.name: i for i, w in enumerate(pb.workloads) if w.name}
    found: list[tuple[int, list[str]]] = []
    done: set[str] = set()
    for start in deps:
        if start in done:
            continue
        path, at = [start], {start: 0}  # the walk's current path, and each name's place on it
        todo = [iter(deps[start])]
        while todo:
            d = next(todo[-1], None)
            if d is None:
                name = path.pop()
                del at[name]
                done.add(name)
                todo.pop()
            elif d in at:
                found.append((index[d], [*path[at[d]:], d]))
            elif d in deps and d not in done:
                at[d] = len(path)
                path.append(d)
                todo.append(iter(deps[d]))
    return found


def group_problems(pb: Playbook) -> list[tuple[Loc, str]]:
    """Groups whose members are no workload entry's name, workloads in two groups, and freezes that only a VM's
    guest agent gives."""
    problems: list[tuple[Loc, str]] = []
    named = {w.name for w in pb.workloads if w.name}
    seen: dict[str, str] = {}
    for g, group in enumerate(pb.groups):
        if any(other.name == group.name for other in pb.groups[:g]):
            problems.append((("groups", g, "name"), f"group {group.name!r} is listed twice"))
        for m, member in enumerate(group.members):
            if member not in named:
                problems.append((("groups", g, "members", m), f"{member!r} is no workload entry's name"))
            elif seen.setdefault(member, group.name) != group.name:
                problems.append((("groups", g, "members", m), f"{member!r} is in group {seen[member]!r} already"))
    for i, w in enumerate(pb.workloads):
        if w.group and w.name and seen.get(w.name, w.group) != w.group:
            problems.append((("workloads", i, "group"), f"{w.name!r} is listed in group {seen[w.name]!r}"))
        if w.quiesce and w.kind is not WorkloadKind.VM:
            problems.append((("workloads", i, "quiesce"), f"quiesce freezes a VM's filesystems through its guest "
                             f"agent: a {w.kind} is held still by its group instead"))
        for when in ("pre_freeze", "post_thaw"):
            for h, hook in enumerate(getattr(w.hooks, when)):
                if hook.inside and w.kind is not WorkloadKind.VM:
                    problems.append((("workloads", i, "hooks", when, h, "inside"), "only a VM's guest agent runs "
                                     f"commands inside: a {w.kind}'s hook runs on this machine"))
                if hook.inside and hook.run is None:
                    problems.append((("workloads", i, "hooks", when, h), "inside runs a command: give run"))
    for i, wave in enumerate(pb.waves):
        if wave.hooks.pre_freeze or wave.hooks.post_thaw:
            problems.append((("waves", i, "hooks"), "pre_freeze and post_thaw belong to a workload or a group"))
    return problems


def reference_problems(pb: Playbook) -> list[tuple[Loc, str]]:
    """Checks that span several fields: names that point nowhere, cycles, strategies that do not fit."""
    problems: list[tuple[Loc, str]] = []
    for role in ("primary", "secondary"):
        site = getattr(pb, role)
        if site not in pb.sites:
            problems.append(((role,), f"site {site!r} is not defined under sites ({', '.join(pb.sites)})"))
    if pb.primary == pb.secondary:
        problems.append((("secondary",), "primary and secondary must be different sites"))
    if pb.auto_failover is not None:
        problems += auto_failover_problems(pb.auto_failover, list(pb.sites), pb.fencing.command is not None)
    for site_name, site in pb.sites.items():
        seen_hosts: set[str] = set()
        for h, host in enumerate(site.hosts):
            if host.name in seen_hosts:
                problems.append((("sites", site_name, "hosts", h, "name"), f"host {host.name!r} is listed twice"))
            seen_hosts.add(host.name)
            if host.libvirt is None and host.docker is None and host.podman is None and host.lxd is None:
                problems.append((("sites", site_name, "hosts", h),
                                 f"host {host.name!r} has none of libvirt, docker, podman or lxd"))
            if host.lxd is not None and host.lxd.startswith("https://") and host.lxd_tls is None:
                problems.append((("sites", site_name, "hosts", h, "lxd"), f"host {host.name!r}: an https:// LXD "
                                 "endpoint needs lxd_tls (client certificate and the server's, pinned)"))
            if host.docker is not None and host.podman is not None:
                problems.append((("sites", site_name, "hosts", h, "podman"), f"host {host.name!r} lists both docker "
                                 "and podman: a host's containers are run by one engine"))
    for field in MAPPING_FIELDS:
        targets: dict[object, object] = {}
        for src, dst in getattr(pb.mappings, field).items():
            if dst in targets:
                problems.append((("mappings", field, str(src)), f"{field} {targets[dst]!r} and {src!r} both map to "
                                 f"{dst!r}: the reverse mapping for failing back would be ambiguous"))
            targets[dst] = src
    if pb.defaults.tier not in pb.tiers:
        for i, w in enumerate(pb.workloads):
            if w.tier is None:
                problems.append((("workloads", i), f"{w.kind} {w.selector!r} has no tier and the default tier "
                                 f"{pb.defaults.tier!r} is not defined under tiers"))
    wave_names = [w.name for w in pb.waves]
    for i, name in enumerate(wave_names):
        if name in wave_names[:i]:
            problems.append((("waves", i, "name"), f"wave {name!r} is listed twice"))
    waves = pb.wave_names()
    named = {w.name: i for i, w in enumerate(pb.workloads) if w.name}
    patterns = [w.match for w in pb.workloads if w.match]
    labelled = any(w.labels for w in pb.workloads)
    rank = {name: n for n, name in enumerate(waves)}
    unserved = {kind: [site for site in (pb.primary, pb.secondary) if site in pb.sites
                       and not any(h.endpoint(kind) for h in pb.sites[site].hosts)] for kind in WorkloadKind}
    seen: set[tuple[str, str]] = set()
    for i, w in enumerate(pb.workloads):
        selectors = [s for s in ("name", "match", "labels") if getattr(w, s) is not None]
        if len(selectors) != 1:
            problems.append((("workloads", i), "a workload entry selects by exactly one of name, match or labels"))
        key = (w.kind.value, w.selector)
        if key in seen:
            problems.append((("workloads", i, selectors[0] if selectors else "kind"),
                             f"{w.kind} {w.selector!r} is listed twice"))
        seen.add(key)
        if w.lands_apart and (w.kind, w.land_as) not in LANDINGS:
            problems.append((("workloads", i, "land_as"), f"a {w.kind} cannot land as a {w.land_as}: "
                             + ", ".join(f"a {a} lands as a {b}" for a, b in LANDINGS) + " only"))
        elif w.lands_apart and w.move_strategy is not Strategy.REDEPLOY:
            problems.append((("workloads", i, "strategy"), f"a {w.kind} that lands as a {w.land_as} is redeployed "
                             f"from its image: strategy {w.strategy} does not apply"))
        elif w.strategy is not None and w.strategy not in STRATEGIES[w.kind]:
            allowed = ", ".join(STRATEGIES[w.kind])
            problems.append((("workloads", i, "strategy"), f"strategy {w.strategy} does not apply to a {w.kind} "
                             f"({allowed})"))
        if w.tier is not None and w.tier not in pb.tiers:
            problems.append((("workloads", i, "tier"), f"tier {w.tier!r} is not defined under tiers "
                             f"({', '.join(pb.tiers)})"))
        if w.wave is not None and w.wave not in waves:
            problems.append((("workloads", i, "wave"), f"wave {w.wave!r} is not defined under waves"))
        own_wave = rank.get(pb.wave_of(w))
        for d, dep in enumerate(w.depends_on):
            known = dep in named or labelled or any(fnmatch.fnmatchcase(dep, p) for p in patterns)
            if not known:
                problems.append((("workloads", i, "depends_on", d), f"depends on {dep!r}, which no workload entry "
                                 "selects"))
            elif dep in named and own_wave is not None:
                dep_wave = pb.wave_of(pb.workloads[named[dep]])
                if rank.get(dep_wave, -1) > own_wave:
                    problems.append((("workloads", i, "depends_on", d), f"depends on {dep!r}, which moves in the "
                                     f"later wave {dep_wave!r}"))
        for site in (at for at in (pb.primary, pb.secondary) if at in unserved[pb.kind_on(w, at)]):
            kind = pb.kind_on(w, site)
            tech = {WorkloadKind.VM: "libvirt", WorkloadKind.LXD: "lxd"}.get(kind, "docker or podman")
            problems.append((("workloads", i), f"{w.kind} {w.selector!r} needs a host with {tech} on site {site!r}"))
        for site in w.address:
            if site not in pb.sites:
                problems.append((("workloads", i, "address", site), f"address for site {site!r}, which sites does "
                                 "not define"))
        if w.reip is not None and w.kind is not WorkloadKind.VM:
            problems.append((("workloads", i, "reip"), f"reip runs inside a VM's guest: a {w.kind} takes its mapped "
                             "address from its engine"))
    for name in pb.dns.records if pb.dns else {}:
        known = name in named or labelled or any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if not known:
            problems.append((("dns", "records", name), f"a record for {name!r}, which no workload entry selects"))
    for i, cycle in _cycles(pb):
        shown = cycle if len(cycle) <= 12 else [*cycle[:6], f"... ({len(cycle) - 10:,} more)", *cycle[-4:]]
        problems.append((("workloads", i, "depends_on"), f"dependency cycle: {' -> '.join(shown)}"))
    return [*problems, *group_problems(pb)]


@dataclass(frozen=True)
class Positions:
    """Where each node of a playbook file starts, to report problems as `file:line:col`."""

    source: str
    marks: dict[Loc, yaml.Mark]

    def where(self, loc: Loc, at_key: bool = False) -> str:
        """The value at loc (or its key), else the nearest enclosing node that the file has."""
        if at_key and (mark := self.marks.get((*loc, "__key__"))) is not None:
            return self._fmt(mark)
        for n in range(len(loc), -1, -1):
            mark = self.marks.get(loc[:n])
            if mark is not None:
                if n < len(loc):  # the path ends below what the file has: point at the nearest key
                    mark = self.marks.get((*loc[:n], str(loc[n]), "__key__"), mark)
                return self._fmt(mark)
        return f"{self.source}:1:1"

    def _fmt(self, mark: yaml.Mark) -> str:
        return f"{self.source}:{mark.line + 1}:{mark.column + 1}"


def _positions(node: yaml.Node, loc: Loc = ()) -> dict[Loc, yaml.Mark]:
    marks: dict[Loc, yaml.Mark] = {loc: node.start_mark}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*loc, str(key.value))
            marks.update(_positions(value, child))
            marks[(*child, "__key__")] = key.start_mark
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks.update(_positions(item, (*loc, i)))
    return marks


def parse_with_positions(text: str, source: str = "<playbook>") -> tuple[Playbook, Positions]:
    with collector_paused:  # many objects, no cycles: see drorch.gc_pause
        return _parse(text, source)


def _parse(text: str, source: str) -> tuple[Playbook, Positions]:
    node, data = input_limits.compose(text, source)
    if not isinstance(data, dict) or node is None:
        raise PlaybookError([f"{source}:1:1: a playbook is a YAML mapping (sites, workloads, ...)"])
    pos = Positions(source, _positions(node))
    try:
        pb = Playbook.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "playbook"
            problems.append(f"{pos.where(loc, at_key=err['type'] == 'extra_forbidden')}: {field}: {err['msg']}")
        raise PlaybookError(problems) from None
    refs = reference_problems(pb)
    if refs:
        raise PlaybookError([f"{pos.where(loc)}: {msg}" for loc, msg in refs])
    return pb, pos


def parse_playbook(text: str, source: str = "<playbook>") -> Playbook:
    return parse_with_positions(text, source)[0]


def read_playbook(path: Path) -> tuple[Playbook, Positions]:
    return parse_with_positions(input_limits.read_text(path), str(path))


def load_playbook(path: Path) -> Playbook:
    return read_playbook(path)[0]
