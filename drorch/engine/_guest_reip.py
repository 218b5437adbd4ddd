"""Re-addressing from inside: a VM whose guest sets its own address runs the playbook's `reip` command through its
guest agent once it has landed, told the old and new address, the prefix, the gateway and the DNS servers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from drorch.drivers.base import Driver, Endpoint
from drorch.engine.live_run import LiveRun
from drorch.errors import MoveFailed
from drorch.model.address_rules import AddressMove, ReIp, parse_network, within
from drorch.model.playbook import Mappings, WorkloadKind
from drorch.plan.inventory import Subnet
from drorch.store.rows import Step

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # guest-exec passes no environment else


def moves_of(step: Step) -> list[AddressMove]:
    return [AddressMove(**m) for m in step.details().get("addresses", [])]


def reversed_moves(step: Step) -> list[dict[str, object]]:
    """The step's address moves the other way: what a rollback of it gives back."""
    return [asdict(AddressMove(m.network, m.after, m.before, m.static, "exact" if m.rule else None))
            for m in moves_of(step) if m.static]


def _subnet(subnets: tuple[Subnet, ...], network: str, address: str) -> Subnet | None:
    return next((s for s in subnets if s.network == network and within(address, s.cidr)), None)


def environment(move: AddressMove, m: Mappings, subnets: tuple[Subnet, ...]) -> dict[str, str]:
    """What the guest's command is told: the target subnet's prefix and gateway as the site reports them, unless
    the address rule names its gateway and DNS servers."""
    after = move.after or ""
    network = m.network(move.network)
    subnet = _subnet(subnets, network, after)
    rule = m.addresses.get(move.rule or "")
    gateway = (rule.gateway if rule else None) or (subnet.gateway if subnet else None) or ""
    prefix = parse_network(subnet.cidr).prefixlen if subnet else parse_network(rule.to).prefixlen if rule else ""
    return {"PATH": GUEST_PATH, "DRORCH_OLD_ADDRESS": move.before or "", "DRORCH_NEW_ADDRESS": after,
            "DRORCH_PREFIX": str(prefix), "DRORCH_GATEWAY": gateway, "DRORCH_DNS": " ".join(rule.dns if rule else []),
            "DRORCH_NETWORK": network}


def reip_runs(driver: Driver, name: str, site: Endpoint, reip: ReIp, moves: list[AddressMove],
              mappings: Mappings) -> Iterator[tuple[AddressMove, int, str]]:
    """The `reip` command run inside `name` for each move, one after the other as the caller takes them:
    (move, exit code, what it printed)."""
    subnets = driver.host_facts(site).subnets
    for move in moves:
        code, out = driver.run_inside(name, site, reip.run, environment(move, mappings, subnets), reip.timeout_s)
        yield move, code, out


def readdress_inside(live: LiveRun, step: Step, driver: Driver, target: Endpoint) -> str:
    """Run the workload's `reip` for each fixed address the move changed; what each run said. MoveFailed when
    one fails: the workload runs on the target, at an address it does not have."""
    spec = live.pb.spec_of(WorkloadKind(step.kind), step.workload)
    changed = [m for m in moves_of(step) if m.static and m.after and m.after != m.before]
    if spec is None or spec.reip is None or not changed:
        return ""
    # a restart from a point has no request: its mappings are the playbook's, in the run's direction
    mappings = live.sites.request(step).mappings if step.request else live.pb.mappings_for(spec, step.source_site)
    said = []
    for move, code, out in reip_runs(driver, step.workload, target, spec.reip, changed, mappings):
        shown = f": {out[-200:]}" if out else ""
        if code != 0:
            raise MoveFailed(f"{step.workload} runs on site {step.target_site}, but its reip command "
                             f"{spec.reip.run[0]} exited {code} re-addressing {move.before} -> {move.after}{shown}")
        said.append(f"re-addressed {move.before} -> {move.after} inside the guest (exit 0{shown})")
    return "; ".join(said)
