"""What a drill's clones are checked for at their drill addresses: a guest that sets its own address re-addressed
from inside, a TCP connection from this machine on the workload's `check` port, and its records in the drill zone
(removed again at teardown). The production zone is never written by a drill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from drorch.drivers.base import DrillNet, Driver, Endpoint
from drorch.engine._dns_zone import ZoneClient
from drorch.engine._guest_reip import reip_runs
from drorch.engine.live_run import LiveRun
from drorch.engine.names_step import answers, cutover
from drorch.errors import NamesFailed
from drorch.model.playbook import Mappings, WorkloadKind
from drorch.model.records import Action
from drorch.plan.drill_addresses import clone_moves
from drorch.store.rows import Step


def clone_reached(live: LiveRun, step: Step, driver: Driver, site: Endpoint, clone: str,
                  net: DrillNet) -> list[dict[str, Any]]:
    """A clone at drill addresses: re-addressed from inside when its guest sets its own address (its `reip`),
    then connected to at them on its `check` port, from this machine through the host's gateway address."""
    spec = live.pb.spec_of(WorkloadKind(step.kind), step.workload)
    moves = [replace(m, network=net.name) for m in clone_moves(step) if m.after]
    if spec is None or not moves:
        return []
    checks = []
    if spec.reip is not None and step.at_target is WorkloadKind.VM:
        drill_rules = Mappings(addresses=live.pb.drill.addresses)
        for m, code, out in reip_runs(driver, clone, site, spec.reip, moves, drill_rules):
            checks.append({"check": f"reip {m.before} -> {m.after}", "ok": code == 0, "fatal": code != 0,
                           "said": f"exit {code}" + (f": {out[-200:]}" if out else "")})
    addresses, check = [m.after for m in moves if m.after], spec.check
    if check is not None and all(c["ok"] for c in checks):
        checks.append(_named("address", lambda: answers(addresses, check)))
    dns = live.pb.dns
    if dns is not None and dns.drill_zone and step.workload in dns.records and all(c["ok"] for c in checks):
        records = dns.drill_records(step.workload, addresses)
        checks.append(_named(f"names in {dns.drill_zone}",
                             lambda: "; ".join(cutover(ZoneClient(dns, dns.drill_zone or ""), dns, records))))
    return checks


def _named(check: str, act: Callable[[], str]) -> dict[str, Any]:
    """A check that says what it found, or fails the clone with the reason."""
    try:
        return {"check": check, "ok": True, "fatal": False, "said": act()}
    except NamesFailed as exc:
        return {"check": check, "ok": False, "fatal": True, "said": str(exc)}


def drill_names_gone(live: LiveRun) -> tuple[list[str], list[str]]:
    """The clones' records removed from the drill zone: (what went, what could not)."""
    dns = live.pb.dns
    if dns is None or not dns.drill_zone:
        return [], []
    client = ZoneClient(dns, dns.drill_zone)
    removed, left = [], []
    for s in live.steps:
        if s.action != Action.DRILL or s.workload not in dns.records:
            continue
        for want in dns.drill_records(s.workload, []):
            try:
                if client.read(want.name, want.rdtype)[1]:
                    client.replace(want, dns.ttl)
                    removed.append(f"{client.owner(want.name)} {want.rdtype}")
            except NamesFailed as exc:
                left.append(f"{client.owner(want.name)} {want.rdtype} ({exc})")
    return removed, left
