"""What each workload's addresses become at the target (no I/O): the planner's part of re-addressing."""

from __future__ import annotations

from drorch.model.address_rules import AddressMove, exact_rule, map_address, parse_address
from drorch.model.playbook import Mappings, Workload
from drorch.plan.inventory import WorkloadInfo


def address_plan(spec: Workload, info: WorkloadInfo | None, target: str,
                 m: Mappings) -> tuple[tuple[AddressMove, ...], Mappings]:
    """Each address's move, and the mappings with the workload's exact addresses for `target` as rules of their
    own (so that the driver, and the inverse on the way home, apply them like any rule)."""
    if info is None or not info.nics:
        return (), m
    exact = spec.address.get(target, [])
    rules = {}
    moves = []
    for nic in info.nics:
        for before in nic.addresses:
            if not nic.static:
                moves.append(AddressMove(nic.network, before, None, False))
                continue
            version = parse_address(before).version
            fixed = next((a for a in exact if parse_address(a).version == version), None)
            if fixed is not None:
                key, rule = exact_rule(before, fixed)
                rules[key] = rule
                moves.append(AddressMove(nic.network, before, fixed, True, "exact"))
                continue
            mapped = map_address(m.addresses, before)
            moves.append(AddressMove(nic.network, before, mapped[0] if mapped else before, True,
                                     mapped[1] if mapped else None))
    if rules:
        m = m.model_copy(update={"addresses": {**m.addresses, **rules}})
    return tuple(moves), m
