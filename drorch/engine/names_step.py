"""A wave's names step: each workload the wave got where it was going is connected to at its addresses there
(its `check` port) and its DNS records are made to name them and read back. Reality first: a record that is
right already is left alone, so the step can run again after any interruption."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from drorch.engine._dns_zone import ZoneClient
from drorch.engine.live_run import LiveRun
from drorch.errors import NamesFailed, SiteUnreachable
from drorch.model.address_rules import AddressCheck, within
from drorch.model.dns_names import Dns, Wanted, wanted
from drorch.model.playbook import WORKLOAD_KINDS, Playbook, Workload, WorkloadKind
from drorch.model.records import StepState
from drorch.plan.inventory import Snapshot
from drorch.store.rows import Step

CONNECT_PAUSE_S = 0.2
Connect = Callable[[tuple[str, int], float], socket.socket]


def follows(pb: Playbook, spec: Workload | None, name: str) -> bool:
    """Whether the workload has a port to connect to or records that follow it."""
    return spec is not None and (spec.check is not None or bool(pb.dns and name in pb.dns.records))


def answers(addresses: list[str], check: AddressCheck, connect: Connect = socket.create_connection) -> str:
    """Connect to the port at every address, retrying until the check's timeout; NamesFailed with the last
    refusal when one never answers."""
    if not addresses:
        raise NamesFailed(f"it has no address to connect to port {check.port} on")
    deadline = time.monotonic() + check.timeout_s
    for address in addresses:
        while True:
            try:
                connect((address, check.port), max(0.1, min(2.0, deadline - time.monotonic()))).close()
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise NamesFailed(f"nothing answers on {_at(address, check.port)} after {check.timeout_s:g} s: "
                                      f"{exc.strerror or exc}") from None
                time.sleep(CONNECT_PAUSE_S)
    return "answers on " + ", ".join(_at(a, check.port) for a in addresses)


def _at(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _shown(values: tuple[str, ...], none: str = "(none)") -> str:
    return " ".join(values) or none


def cutover(client: ZoneClient, settings: Dns, wants: list[Wanted]) -> list[str]:
    """Each record made as wanted, then read back from the server: a record it does not show fails the step."""
    said = []
    for want in wants:
        owner = client.owner(want.name)
        ttl, now = client.read(want.name, want.rdtype)
        if now == want.values and (ttl == settings.ttl or not now):
            said.append(f"{owner} {want.rdtype} {_shown(now)} already")
            continue
        client.replace(want, settings.ttl)
        _, back = client.read(want.name, want.rdtype)
        if back != want.values:
            raise NamesFailed(f"{owner} {want.rdtype}: the server took the update and shows "
                              f"{_shown(back, 'nothing')}, not {_shown(want.values, 'nothing')}")
        said.append(f"{owner} {want.rdtype} {_shown(want.values)} (was {_shown(now, 'none')})")
    return said


LOWER = "lower"  # the phase of the names step that lowers TTLs before a planned failover moves anything


def lower_ttls(live: LiveRun, wait: Callable[[float], object] = time.sleep) -> str:
    """Each record of the run's workloads kept as it is with the lower TTL, then the old TTL waited out, so that
    no cache holds the old address longer than the lower TTL once the workloads move."""
    pb = live.pb
    assert pb.dns is not None and pb.dns.lower_ttl_s is not None, "only a playbook that lowers TTLs has this step"
    client, lower = ZoneClient(pb.dns, pb.dns.zone), pb.dns.lower_ttl_s
    said, longest = [], 0
    for name in dict.fromkeys(s.workload for s in live.steps if s.kind in WORKLOAD_KINDS):
        for rdtype in pb.dns.records.get(name, []):
            ttl, values = client.read(name, rdtype)
            if ttl is None or ttl <= lower:
                continue
            client.replace(Wanted(name, rdtype, values), lower)
            longest = max(longest, ttl)
            said.append(f"{client.owner(name)} {rdtype} TTL {ttl} -> {lower}")
    if not said:
        return f"every record's TTL is {lower} s or less already"
    wait(longest)
    return f"{'; '.join(said)}; waited {longest} s for caches to forget the old TTL"


def settle_names(live: LiveRun, step: Step, connect: Connect = socket.create_connection) -> str:
    """The names step of `step`'s wave; what it found and changed, or NamesFailed naming each workload."""
    pb = live.pb
    if step.details().get("phase") == LOWER:
        return lower_ttls(live)
    client = ZoneClient(pb.dns, pb.dns.zone) if pb.dns else None
    said, failed = [], []
    for s in live.steps:
        if s.wave != step.wave or s.kind not in WORKLOAD_KINDS or s.state is not StepState.SUCCEEDED:
            continue
        name = s.workload
        spec = pb.spec_of(WorkloadKind(s.kind), name)
        if spec is None or not follows(pb, spec, name):
            continue
        here = s.at_target
        try:
            info = live.sites.drivers[here].locate(name, live.sites.host(s.target_site, s.to_host or "", here))
            if info is None:
                raise NamesFailed(f"it is not found on site {s.target_site}")
            addresses = info.addresses()
            done = [answers(addresses, spec.check, connect)] if spec.check else []
            if client is not None and pb.dns is not None:
                done += cutover(client, pb.dns, wanted(pb.dns, name, s.target_site, addresses))
            said.append(f"{name}: {'; '.join(done)}")
        except (NamesFailed, SiteUnreachable) as exc:
            failed.append(f"{name}: {exc}")
    if failed:
        raise NamesFailed("; ".join(failed + said))
    return "; ".join(said) or "nothing to check"


def _named_site(pb: Playbook, snap: Snapshot, name: str, rdtype: str, values: tuple[str, ...]) -> str | None:
    """The site a record points at: the one whose networks' subnets hold its addresses, or its CNAME's site."""
    if not values or pb.dns is None:
        return None
    for site in pb.sites:
        if rdtype == "CNAME":
            if Wanted(name, "CNAME", values) in wanted(pb.dns, name, site, []):
                return site
            continue
        subnets = [sub.cidr for inv in snap.site(site) for f in inv.facts.values() for sub in f.subnets]
        if all(any(within(v, cidr) for cidr in subnets) for v in values):
            return site
    return None


def records_status(pb: Playbook, snap: Snapshot) -> list[dict[str, object]]:
    """Each record the playbook's DNS section names, as its server holds it: the site it points at, the site the
    workload runs on, and whether it is what a run there would have made it."""
    if pb.dns is None:
        return []
    client = ZoneClient(pb.dns, pb.dns.zone)
    running = {w.name: (inv.site, w.addresses()) for inv in snap.hosts for w in inv.workloads if w.running}
    rows: list[dict[str, object]] = []
    for name, types in pb.dns.records.items():
        site, addresses = running.get(name, (None, []))
        wants = {w.rdtype: w.values for w in wanted(pb.dns, name, site, addresses)} if site else {}
        for rdtype in types:
            _, values = client.read(name, rdtype)
            rows.append({"name": client.owner(name), "type": rdtype, "values": list(values), "workload": name,
                         "points_at": _named_site(pb, snap, name, rdtype, values), "runs_on": site,
                         "right": site is not None and values == wants.get(rdtype)})
    return rows
