"""Where a drill's clones are addressed (no I/O): each static address a workload would have where the drill runs,
mapped by the playbook's drill rules onto a drill subnet, and the subnets each host's drill network must carry.

The clones run beside the originals' addresses on the secondary's real networks, so they cannot take those: a
drill network of the same subnet would collide with the real one on the host. The drill subnet keeps the host
part, so a clone answers at an address an operator can tell from its real one at a glance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from drorch.drivers.base import DrillNet
from drorch.model.address_rules import AddressMove, AddressRule, gateway_of, map_address, parse_address, parse_network
from drorch.store.rows import Step


def drill_moves(moves: Iterable[AddressMove], rules: dict[str, AddressRule]) -> list[dict[str, object]]:
    """Each static address the workload would have at the target (`before`), and its drill address (`after`;
    None when no drill rule covers it: the clone then takes any)."""
    found = []
    for m in moves:
        if not m.static or not m.after:
            continue
        mapped = map_address(rules, m.after)
        found.append(asdict(AddressMove(m.network, m.after, mapped[0] if mapped else None, mapped is not None,
                                        mapped[1] if mapped else None)))
    return found


def clone_moves(step: Step) -> list[AddressMove]:
    return [AddressMove(**m) for m in step.details().get("drill_addresses", [])]


def clone_addresses(step: Step) -> tuple[str, ...]:
    """The clone's drill addresses: the first of each family."""
    chosen: dict[int, str] = {}
    for m in clone_moves(step):
        if m.after:
            chosen.setdefault(parse_address(m.after).version, m.after)
    return tuple(chosen.values())


def drill_net(name: str, step: Step, steps: Iterable[Step], rules: dict[str, AddressRule]) -> DrillNet:
    """The drill network the step's clone joins on its host, with the drill subnets of every clone that joins
    it there; ValueError when they need two subnets of one family (one network carries one of each)."""
    subnets: dict[int, tuple[str, str]] = {}
    for s in steps:
        if s.action != step.action or s.at_target != step.at_target or (s.target_site, s.to_host) != \
                (step.target_site, step.to_host):
            continue
        for m in clone_moves(s):
            rule = rules.get(m.rule or "")
            if rule is None:
                continue
            version = parse_network(rule.to).version
            held = subnets.setdefault(version, (rule.to, gateway_of(rule)))
            if held[0] != rule.to:
                raise ValueError(f"the drill network on host {step.to_host or step.target_site} would need two "
                                 f"IPv{version} subnets ({held[0]}, {rule.to}): one drill network carries one of each")
    return DrillNet(name, tuple(subnets[v] for v in sorted(subnets)))
