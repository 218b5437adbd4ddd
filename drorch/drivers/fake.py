"""A stateful in-memory driver behind the same interface, for fast tests of everything above drivers.

A `FakeCloud` holds every site's workloads; several `FakeDriver`s (one per kind, or a second one
standing for a later process) share it, so a handle stored by one can be followed by another.
Each workload carries a counter, like the lab's guests: a live migration or a checkpoint keeps
it, a redeploy starts it again from 1.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime

from drorch.drivers.base import (
    Cut,
    DrillNet,
    Driver,
    Endpoint,
    Frozen,
    Handle,
    HostFacts,
    MoveRequest,
    Phase,
    Progress,
    Retention,
    Shipped,
    WorkloadInfo,
    chosen,
)
from drorch.errors import MoveFailed, SiteUnreachable
from drorch.model.playbook import Mappings, Strategy, WorkloadKind
from drorch.model.records import DRILL_CLONE, utcnow
from drorch.plan.inventory import Nic


@dataclass
class FakeWorkload:
    kind: WorkloadKind
    running: bool = True
    counter: int = 1
    memory_mib: int = 128
    vcpus: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    networks: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    image: str | None = None
    ran: bool = True  # False for a shipped copy, which never ran where it lies
    nics: tuple[Nic, ...] = ()
    agent: bool = True  # a guest agent answers in it (a VM's)
    frozen: Frozen | None = None

    def mapped(self, m: Mappings) -> tuple[tuple[str, ...], tuple[Nic, ...]]:
        """Its networks and NICs as they land: static addresses mapped, dynamic ones given anew (none here)."""
        nics = tuple(Nic(m.network(n.network), tuple(m.address(a) for a in n.addresses) if n.static else (),
                         n.static, n.mac) for n in self.nics)
        return tuple(m.network(n) for n in self.networks), nics


@dataclass
class FakeSite:
    """One host's endpoint."""

    reachable: bool = True
    latency_s: float = 0.0  # each call waits this long first, as a round trip to a daemon would
    checkpoints: bool = True  # CRIU works on this site's Docker
    workloads: dict[str, FakeWorkload] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)  # made by drills
    drill_subnets: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # theirs, by name
    points: dict[str, dict[str, int]] = field(default_factory=dict)  # workload -> its points' counters, oldest first
    shipped: int = 0  # points ever shipped here, which numbers them
    facts: HostFacts = field(default_factory=lambda: HostFacts(vcpus=64, memory_mib=65536))


@dataclass
class _Move:
    request: MoveRequest
    polls_left: int
    fail: str | None


@dataclass
class FakeCloud:
    sites: dict[str, FakeSite] = field(default_factory=dict)  # by endpoint URI
    fail: dict[str, str] = field(default_factory=dict)  # workload name -> why its next move fails
    unfit: dict[str, str] = field(default_factory=dict)  # workload name -> what its pre-flight finds
    polls_per_move: int = 2
    moves: dict[str, _Move] = field(default_factory=dict)  # by handle id
    calls: Counter[str] = field(default_factory=Counter)  # by endpoint URI
    inside: list[tuple[str, list[str], dict[str, str]]] = field(default_factory=list)  # commands run in guests
    exits: dict[str, tuple[int, str]] = field(default_factory=dict)  # workload -> what its commands end with
    events: list[str] = field(default_factory=list)  # "freeze W", "cut W", "thaw W", "send W", "thin W", in order
    cut_delay_s: float = 0.0  # each cut takes this long

    def site(self, ep: Endpoint) -> FakeSite:
        site = self.sites.setdefault(ep.uri, FakeSite())
        self.calls[ep.uri] += 1
        if site.latency_s:
            time.sleep(site.latency_s)
        if not site.reachable:
            raise SiteUnreachable(f"site {ep.site}: {ep.shown} does not answer")
        return site


class FakeDriver(Driver):
    def __init__(self, cloud: FakeCloud, kind: WorkloadKind) -> None:
        self.cloud = cloud
        self.kind = kind

    def _kind_at(self, site: Endpoint) -> WorkloadKind:
        """What this driver's workloads are on the site: an LXD instance lands as a container on an engine's."""
        return WorkloadKind.CONTAINER if self.kind is WorkloadKind.LXD and site.containers else self.kind

    def _workloads(self, site: Endpoint) -> dict[str, FakeWorkload]:
        kind = self._kind_at(site)
        return {n: w for n, w in self.cloud.site(site).workloads.items() if w.kind is kind}

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        found = sorted(self._workloads(site).items())
        return [self._info(n, w, site) for n, w in found if not DRILL_CLONE.fullmatch(n)]

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        w = self._workloads(site).get(name)
        return None if w is None else self._info(name, w, site)

    def _info(self, name: str, w: FakeWorkload, site: Endpoint) -> WorkloadInfo:
        return WorkloadInfo(name, w.kind, site.site, w.running, w.memory_mib, w.vcpus, image=w.image,
                            host=site.host, labels=dict(w.labels), networks=w.networks, pools=w.pools,
                            status="" if w.running else "stopped", nics=w.nics)

    def host_facts(self, site: Endpoint, brief: bool = False) -> HostFacts:
        return self.cloud.site(site).facts

    def _begin_move(self, handle: Handle) -> None:
        request = handle.request
        src = self.cloud.site(request.source)
        here = src.workloads.get(request.workload)
        if here is None or not here.running:
            raise MoveFailed(f"{self.kind} {request.workload} is running neither on site "
                             f"{request.source.site} nor on site {request.target.site}")
        self.cloud.moves[handle.id] = _Move(request, self.cloud.polls_per_move,
                                            self.cloud.fail.pop(request.workload, None))

    def _follow_move(self, handle: Handle) -> Progress | None:
        req = handle.request
        move = self.cloud.moves.get(handle.id)
        if move is None:
            return None
        if move.polls_left > 0:
            move.polls_left -= 1
            total = 128 << 20
            return Progress(Phase.RUNNING, step="moving", bytes_done=total // (move.polls_left + 1),
                            bytes_total=total)
        del self.cloud.moves[handle.id]
        if move.fail is not None:
            return Progress(Phase.FAILED, message=move.fail)
        message, warning = self._land(req)
        return Progress(Phase.COMPLETED, message=message, warning=warning)

    def cancel(self, handle: Handle) -> None:
        move = self.cloud.moves.get(handle.id)
        if move is not None:
            move.polls_left = 0
            req = handle.request
            move.fail = f"migration of {req.workload} cancelled; it stays on site {req.source.site}"

    def fence(self, name: str, site: Endpoint) -> bool:
        w = self._workloads(site).get(name)
        if w is None or not w.running:
            return False
        w.running = False
        return True

    def start(self, name: str, site: Endpoint) -> str:
        w = self._workloads(site).get(name)
        if w is None or not w.ran:
            raise MoveFailed(f"site {site.site} holds no {self.kind} {name} that ran there to start")
        if w.running:
            return f"already running on site {site.site}"
        w.running = True
        return f"started on site {site.site} as it was"

    def preflight(self, request: MoveRequest) -> list[str]:
        said = self.cloud.unfit.get(request.workload)
        return [said] if said else []

    def _point(self, name: str, site: Endpoint, point: str | None) -> tuple[str | None, int | None]:
        """The point asked for (or the newest) of the site's copy, and the count it holds."""
        held = self.cloud.site(site).points.get(name, {})
        which = chosen(list(held), point, f"{self.kind} {name}")
        return which, held[which] if which is not None else None

    def restart(self, name: str, site: Endpoint, point: str | None = None) -> Progress:
        w = self._workloads(site).get(name)
        if w is None:
            raise MoveFailed(f"site {site.site} holds no copy of {self.kind} {name} to start from")
        if w.running:
            return Progress(Phase.COMPLETED, message=f"already running on site {site.site}")
        which, count = self._point(name, site, point)
        w.running, w.ran, w.counter = True, True, count or w.counter
        return Progress(Phase.COMPLETED, message=f"started on site {site.site} from {which or 'its copy'} "
                                                 f"(count {w.counter})")

    def freeze(self, name: str, site: Endpoint, quiesce: bool) -> Frozen:
        w = self._workloads(site).get(name)
        if w is None or not w.running:
            raise MoveFailed(f"{self.kind} {name} does not run on site {site.site}")
        if quiesce and not w.agent:
            raise MoveFailed(f"the guest agent of {name} does not answer")
        w.frozen = Frozen.FILESYSTEMS if quiesce else Frozen.PAUSED
        self.cloud.events.append(f"freeze {name}")
        return w.frozen

    def thaw(self, name: str, site: Endpoint, how: Frozen) -> bool:
        w = self._workloads(site).get(name)
        if w is None or w.frozen is None:
            return False
        w.frozen = None
        self.cloud.events.append(f"thaw {name}")
        return True

    def cut(self, request: MoveRequest, retention: Retention, held: bool) -> Cut:
        src = self.cloud.site(request.source)
        here = src.workloads.get(request.workload)
        if here is None or here.kind is not self._kind_at(request.source):
            raise MoveFailed(f"{self.kind} {request.workload} is not on site {request.source.site}")
        time.sleep(self.cloud.cut_delay_s)
        why = self.cloud.fail.pop(f"cut {request.workload}", None)
        if why is not None:
            raise MoveFailed(why)
        self.cloud.events.append(f"cut {request.workload}")
        return FakeCut(self, request, retention, replace(here), utcnow())

    def _send(self, request: MoveRequest, here: FakeWorkload) -> Shipped:
        """The copy of the workload as it was at its cut."""
        dst = self.cloud.site(request.target)
        self.cloud.events.append(f"send {request.workload}")
        there = dst.workloads.get(request.workload)
        if there is not None and there.running:
            raise MoveFailed(f"{self.kind} {request.workload} runs on site {request.target.site}: not shipped over it")
        networks, nics = here.mapped(request.mappings)
        dst.workloads[request.workload] = replace(
            here, kind=self._kind_at(request.target), running=False, networks=networks, nics=nics,
            labels=dict(here.labels), ran=False, frozen=None)
        held = dst.points.setdefault(request.workload, {})
        dst.shipped += 1
        name = f"point-{dst.shipped:06d}-count-{here.counter}"
        held[name] = here.counter
        return Shipped(f"copy on site {request.target.site} at count {here.counter}", here.memory_mib << 20,
                       name, "full", 1)

    def clone(self, name: str, clone: str, site: Endpoint, net: DrillNet, point: str | None = None,
              addresses: tuple[str, ...] = ()) -> str:
        here = self.cloud.site(site)
        copy = self._workloads(site).get(name)
        if copy is None:
            raise MoveFailed(f"site {site.site} holds no copy of {self.kind} {name} to clone")
        _which, count = self._point(name, site, point)
        if clone in here.workloads:
            return f"{clone} already up on site {site.site}"
        why = self.cloud.fail.pop(clone, None)
        if why is not None:
            raise MoveFailed(why)
        if copy.networks:
            here.networks.add(net.name)
            here.drill_subnets[net.name] = net.subnets
        nics = (Nic(net.name, addresses, bool(addresses)),) if copy.networks else ()
        here.workloads[clone] = replace(copy, running=True, networks=(net.name,) if copy.networks else (),
                                        labels=dict(copy.labels), counter=count or copy.counter, nics=nics)
        return f"{clone} up on site {site.site} (count {copy.counter})"

    def run_inside(self, name: str, site: Endpoint, argv: list[str], env: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        if name not in self._workloads(site):
            raise MoveFailed(f"{self.kind} {name} is not on site {site.site}")
        self.cloud.inside.append((name, argv, env))
        return self.cloud.exits.get(name, (0, ""))

    def held_points(self, name: str, site: Endpoint) -> list[str] | None:
        return list(self.cloud.site(site).points.get(name, {})) if name in self._workloads(site) else None

    def leftovers(self, name: str, site: Endpoint) -> list[str]:
        w = self._workloads(site).get(name)
        return [f"stopped {self.kind} {name}"] if w is not None and not w.running and w.ran else []

    def remove_leftovers(self, name: str, site: Endpoint) -> list[str]:
        found = self.leftovers(name, site)
        if found:
            del self.cloud.site(site).workloads[name]
        return found

    def discard(self, clone: str, site: Endpoint) -> list[str]:
        return [clone] if self.cloud.site(site).workloads.pop(clone, None) is not None else []

    def drop_network(self, network: str, site: Endpoint) -> bool:
        here = self.cloud.site(site)
        if network not in here.networks:
            return False
        here.networks.discard(network)
        return True

    def _land(self, req: MoveRequest) -> tuple[str, str]:
        """The workload on the target: how it runs there, and a warning when not as asked."""
        src, dst = self.cloud.site(req.source), self.cloud.site(req.target)
        w = src.workloads.pop(req.workload)
        warning = ""
        if req.strategy is Strategy.CHECKPOINT and not (src.checkpoints and dst.checkpoints):
            warning = "redeployed from its image: checkpoints do not work here"
            w.counter = 1
        elif req.strategy is Strategy.STATEFUL and not (src.checkpoints and dst.checkpoints):
            warning = "its live state could not move: stopped and copied instead"  # its file system went along
        elif req.strategy is Strategy.REDEPLOY:
            w.counter = 1
        w.kind = self._kind_at(req.target)
        w.networks, w.nics = w.mapped(req.mappings)
        if req.resources is not None:
            w.memory_mib = req.resources.memory_mib or w.memory_mib
            w.vcpus = req.resources.vcpus or w.vcpus
        dst.workloads[req.workload] = w
        return f"running on site {req.target.site}", warning


class FakeCut(Cut):
    def __init__(self, driver: FakeDriver, request: MoveRequest, retention: Retention, state: FakeWorkload,
                 at: datetime) -> None:
        self._driver, self._request, self._retention, self._state, self.at = driver, request, retention, state, at
        self._point = ""  # the point sent

    def send(self) -> Shipped:
        shipped = self._driver._send(self._request, self._state)
        self._point = shipped.name or ""
        return shipped

    def thin(self) -> str:
        """As a VM's: the points retention drops go once the new one is recorded."""
        self._driver.cloud.events.append(f"thin {self._request.workload}")
        held = self._driver.cloud.site(self._request.target).points[self._request.workload]
        kept = self._retention.kept(self._point, self.at)
        dropped = [p for p in held if p not in kept]
        for old in dropped:
            del held[old]
        return f"{len(dropped)} older points dropped" if dropped else ""
