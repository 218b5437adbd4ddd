"""Pre-flight checks over a plan and a snapshot: what would make a move fail halfway (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass

from drorch.errors import PlanRefused
from drorch.model._strict import Loc
from drorch.model.address_rules import AddressMove, IPNetwork, parse_address, parse_network, within
from drorch.model.playbook import Mappings, Playbook, Strategy, WorkloadKind
from drorch.model.records import DRILL_NETWORK
from drorch.plan.inventory import HostInventory, Snapshot
from drorch.plan.planner import MOVING, Plan


@dataclass(frozen=True)
class Finding:
    loc: Loc
    message: str
    error: bool = True


def _mapping_loc(pb: Playbook, entry: int, field: str, name: object) -> Loc:
    """Point at the mapping that produced a name: the workload's override, the playbook's, or the workload."""
    spec = pb.workloads[entry]
    if spec.mappings is not None and name in getattr(spec.mappings, field):
        return ("workloads", entry, "mappings", field, str(name))
    if name in getattr(pb.mappings, field):
        return ("mappings", field, str(name))
    return ("workloads", entry)


def refuse_errors(findings: list[Finding]) -> None:
    """Raise PlanRefused with every error found; warnings pass."""
    errors = [f.message for f in findings if f.error]
    if errors:
        raise PlanRefused(errors)


def _host_entries(pb: Playbook) -> dict[str, dict[str, int]]:
    """Where each host is in its site's list: site -> host name -> index, for a finding's location."""
    return {s: {h.name: i for i, h in enumerate(pb.hosts(s))} for s in pb.sites}


def silent_hosts(pb: Playbook, snap: Snapshot) -> list[Finding]:
    """The playbook's hosts that did not answer, each at its entry."""
    sites = _host_entries(pb)
    kinds = pb.kinds
    return [Finding(("sites", inv.site, "hosts", sites[inv.site][inv.host]), error)
            for inv in snap.hosts for kind, error in sorted(inv.errors.items())
            if kind in kinds and inv.host in sites.get(inv.site, {})]


def check(pb: Playbook, snap: Snapshot, plan: Plan) -> list[Finding]:
    """What would make the plan's moves fail on the sites as the snapshot shows them."""
    found: list[Finding] = []
    sites = _host_entries(pb)
    invs = {(h.site, h.host): h for h in snap.hosts}
    for item in plan.items:
        if item.action not in MOVING or item.to_host is None or item.from_host is None:
            continue
        if item.at_source is not item.kind:  # coming home from what it landed as: its driver checks the way back
            continue
        source, target = invs.get((plan.source, item.from_host)), invs.get((plan.target, item.to_host))
        if source is None or target is None:
            continue
        info = next((w for w in source.workloads if w.name == item.workload and w.kind is item.at_source), None)
        facts = target.facts.get(item.at_target)
        if info is None or facts is None:
            continue
        what = f"{item.kind} {item.workload}"
        named = (("networks", "network", info.networks, item.mappings.network, facts.networks),
                 # what lands as another kind is made anew from an image: its storage does not travel
                 ("storage", "storage pool", info.pools if item.at_source is item.at_target else (),
                  item.mappings.pool, facts.pools))
        for field, noun, names, mapped_name, there in named:
            for name in names:
                mapped = mapped_name(name)
                if mapped not in there:
                    found.append(Finding(_mapping_loc(pb, item.entry, field, name),
                                         f"{what}: {noun} {mapped!r} does not exist on site {plan.target} host "
                                         f"{item.to_host} ({', '.join(there) or 'none'})"))
        if item.kind is WorkloadKind.CONTAINER:
            found.extend(_container(pb, item.entry, what, info.image, info.ports, item.mappings, source, target,
                                    plan.target))
            if item.strategy is Strategy.CHECKPOINT:
                found.extend(_checkpoint(what, source, target, sites))
        if item.kind is WorkloadKind.LXD and item.strategy is Strategy.STATEFUL:
            # LXD looks for CRIU only when asked to move: its API cannot be asked beforehand.
            found.append(Finding(("workloads", item.entry, "strategy"),
                                 f"{what}: a stateful move needs CRIU on the LXD servers of site {plan.source} host "
                                 f"{item.from_host} and site {plan.target} host {item.to_host}, which LXD's API "
                                 "does not show; without it the move is a copy, stopped and started again (exit 5)",
                                 error=False))
    return found


def _checkpoint(what: str, source: HostInventory, target: HostInventory, sites: dict[str, dict[str, int]]
                ) -> list[Finding]:
    """Why a checkpoint move between these two hosts becomes a redeploy, pointed at the host to blame."""
    src, dst = source.facts.get(WorkloadKind.CONTAINER), target.facts.get(WorkloadKind.CONTAINER)
    if src is None or dst is None:
        return []
    blame: list[tuple[HostInventory, str]] = []
    if src.engine and dst.engine and src.engine != dst.engine:
        blame.append((target, f"a {_engine(src.engine)} checkpoint from host {source.host} cannot be restored by "
                              f"{_engine(dst.engine)} on site {target.site} host {target.host}"))
    else:
        for inv, facts in ((source, src), (target, dst)):
            if facts.checkpoints is False:  # None: not asked
                problem = facts.checkpoint_problem or "has no checkpoint support"
                blame.append((inv, f"{_engine(facts.engine or 'docker')} on site {inv.site} host {inv.host} "
                                   f"{problem}"))
    return [Finding(("sites", inv.site, "hosts", sites[inv.site][inv.host]),
                    f"{what}: {why}: the move falls back to a redeploy", error=False)
            for inv, why in blame if inv.host in sites.get(inv.site, {})]


def _engine(name: str) -> str:
    return "Podman" if name == "podman" else "Docker"


def _container(pb: Playbook, entry: int, what: str, image: str | None, ports: tuple[int, ...],
               mappings: Mappings, source: HostInventory, target: HostInventory, target_site: str) -> list[Finding]:
    found = []
    src, dst = source.facts.get(WorkloadKind.CONTAINER), target.facts.get(WorkloadKind.CONTAINER)
    if image and src is not None and dst is not None:
        mapped = mappings.image(image)
        # The original image is at home by definition; a mapped name must exist at one end.
        if mapped != image and mapped not in dst.images and mapped not in src.images:
            found.append(Finding(_mapping_loc(pb, entry, "images", image),
                                 f"{what}: image {mapped!r} is neither on site {target_site} nor at home to send"))
    used = {p for w in target.workloads if w.running for p in w.ports}
    for port in ports:
        if mappings.port(port) in used:
            found.append(Finding(_mapping_loc(pb, entry, "ports", port),
                                 f"{what}: port {mappings.port(port)} is already published on site {target_site} "
                                 f"host {target.host}"))
    return found


def _rule_loc(pb: Playbook, entry: int, move: AddressMove) -> Loc:
    """Point at what gave the address: the workload's exact address, its own rule, the playbook's rule."""
    if move.rule == "exact":
        return ("workloads", entry, "address")
    spec = pb.workloads[entry]
    if move.rule is not None and spec.mappings is not None and move.rule in spec.mappings.addresses:
        return ("workloads", entry, "mappings", "addresses", move.rule)
    if move.rule is not None:
        return ("mappings", "addresses", move.rule)
    return ("workloads", entry)


def addresses(pb: Playbook, snap: Snapshot, plan: Plan) -> list[Finding]:
    """What leaves a workload without its address at the target: a target subnet its mapped network does not
    have (or a static address kept on a network whose subnets differ, no rule given), two workloads given one
    address, an address another workload holds there, and a way home that would not give back the address a
    workload left with."""
    found: list[Finding] = []
    hosts = {inv.host: inv for inv in snap.site(plan.target)}
    given: dict[tuple[str, str], str] = {}
    held = [(a, w.name) for inv in snap.site(plan.target) for w in inv.workloads for a in w.addresses()]
    for item in plan.items:
        if item.action not in MOVING or item.to_host is None:
            continue
        spec, inv, what = pb.workloads[item.entry], hosts.get(item.to_host), f"{item.kind} {item.workload}"
        back = pb.mappings_for(spec, plan.target)
        for move in (mv for mv in item.addresses if mv.static and mv.after is not None and mv.before is not None):
            after, before, network = move.after or "", move.before or "", item.mappings.network(move.network)
            loc = _rule_loc(pb, item.entry, move)
            facts = inv.facts.get(item.at_target) if inv else None  # a host's Docker and libvirt may share names
            subnets = [s.cidr for s in (facts.subnets if facts else ()) if s.network == network]
            if subnets and not any(within(after, s) for s in subnets):
                start, end = (f"its static address {after} on {move.network}", ", and no address rule maps it") \
                    if move.rule is None else (f"{after} (from {before})", "")
                found.append(Finding(loc, f"{what}: {start} is not in any subnet of network {network} on site "
                                          f"{plan.target} host {item.to_host} ({', '.join(subnets)}){end}"))
            other = given.setdefault((network, after), item.workload)
            if other != item.workload:
                found.append(Finding(loc, f"{what}: {after} on {network} is also given to {other}"))
            holders = sorted({w for a, w in held if a == after and w != item.workload})
            if holders:
                found.append(Finding(loc, f"{what}: {after} is already in use on site {plan.target} by "
                                          f"{', '.join(holders)}"))
            if plan.source != pb.primary:
                continue
            fixed = [a for a in spec.address.get(plan.source, []) if parse_address(a).version ==
                     parse_address(before).version]
            home = fixed[0] if fixed else back.address(after)
            if home != before:
                found.append(Finding(loc, f"{what}: would come home as {home}, not {before}, when it fails back: "
                                          f"give its address for site {plan.source} too"))
    return found


def drill_subnets(pb: Playbook, snap: Snapshot) -> list[Finding]:
    """A drill subnet that a network of either site already has: a drill's network of that subnet would collide
    with it on the host, or answer for it. The networks drills make themselves are not counted."""
    found: list[Finding] = []
    for key, rule in pb.drill.addresses.items():
        drill = parse_network(rule.to)
        clashes = sorted({(inv.site, inv.host, s.network, s.cidr) for inv in snap.hosts for facts in inv.facts.values()
                          for s in facts.subnets if not DRILL_NETWORK.fullmatch(s.network)
                          and _overlaps(drill, s.cidr)})
        found += [Finding(("drill", "addresses", key), f"drill subnet {rule.to} overlaps {cidr} of network {net} on "
                                                        f"site {site} host {host}")
                  for site, host, net, cidr in clashes]
    return found


def _overlaps(net: IPNetwork, cidr: str) -> bool:
    try:
        other = parse_network(cidr)
    except ValueError:
        return False  # a daemon's answer that is no subnet holds nothing
    return other.version == net.version and other.overlaps(net)
