"""Reaching the sites: each host's endpoint per technology, and both sites' inventory asked at once.

Every host is asked by a bounded pool of threads. Each daemon of a host (its libvirt, its Docker) has
`answer_timeout_s` (per site) from its first question to answer them all; one that does not is reported as
not answering and none of its questions is waited on again. A thread stuck in a daemon that hangs is left
behind (it is a daemon thread) and the pool gets a fresh one, so one dead host never holds up the others."""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drorch.drivers.base import Driver, Endpoint, MoveRequest
from drorch.errors import DrorchError, SiteUnreachable, UsageError
from drorch.model.playbook import Host, Playbook, WorkloadKind
from drorch.model.records import utcnow
from drorch.plan.inventory import HostInventory, Snapshot, past_bounds
from drorch.store.damaged_rows import loaded
from drorch.store.rows import Step

SNAPSHOT_THREADS = 256  # questions in flight at once; each mostly waits for a daemon's answer


def endpoint_of(pb: Playbook, site: str, host: Host, kind: WorkloadKind) -> Endpoint | None:
    uri = host.endpoint(kind)
    if uri is None:
        return None
    tls = (host.tls.ca, host.tls.cert, host.tls.key) if host.tls and kind is WorkloadKind.CONTAINER else None
    if kind is WorkloadKind.LXD and host.lxd_tls is not None:
        tls = (host.lxd_tls.server_cert, host.lxd_tls.cert, host.lxd_tls.key)
    engine = host.engine(kind) if kind is not WorkloadKind.VM else ""
    cfg = pb.sites[site]
    return Endpoint(site, uri, host.migration_address, host.name, tls, engine,
                    relay=host.lxd_relay and kind is WorkloadKind.LXD, answer_timeout_s=cfg.answer_timeout_s,
                    operation_timeout_s=cfg.operation_timeout_s)


def host_endpoint(pb: Playbook, site: str, host_name: str, kind: WorkloadKind) -> Endpoint:
    host = next((h for h in pb.hosts(site) if h.name == host_name), None)
    ep = endpoint_of(pb, site, host, kind) if host is not None else None
    assert ep is not None, "the planner only picks hosts of the playbook with this kind's endpoint"
    return ep


def site_endpoints(pb: Playbook, site: str, kind: WorkloadKind) -> list[Endpoint]:
    return [ep for h in pb.hosts(site) if (ep := endpoint_of(pb, site, h, kind)) is not None]


@dataclass(frozen=True)
class RunSites:
    """The hosts one run reaches, resolved once from its playbook when the run is driven, and the driver of
    each kind: every step asks here, and no step searches the playbook for a host."""

    drivers: Mapping[WorkloadKind, Driver]
    endpoints: Mapping[tuple[str, WorkloadKind], Mapping[str, Endpoint]]  # (site, kind) -> host name -> endpoint

    @classmethod
    def of(cls, pb: Playbook, drivers: Mapping[WorkloadKind, Driver]) -> RunSites:
        return cls(drivers, {(site, kind): {ep.host: ep for ep in site_endpoints(pb, site, kind)}
                             for site in pb.sites for kind in WorkloadKind})

    def host(self, site: str, host: str, kind: WorkloadKind) -> Endpoint:
        ep = self.endpoints.get((site, kind), {}).get(host)
        if ep is None:
            raise UsageError(f"site {site} host {host} is no longer in the playbook (with a {kind} endpoint)")
        return ep

    def hosts(self, site: str, kind: WorkloadKind) -> list[Endpoint]:
        return list(self.endpoints.get((site, kind), {}).values())

    def request(self, step: Step) -> MoveRequest:
        """A step's recorded request with its endpoints as the playbook gives them now: the store keeps URIs
        without their passwords and tokens. A host since dropped from the playbook keeps what was recorded."""
        req = MoveRequest.from_dict(loaded("steps", step.id, "request", step.request))
        here = self.endpoints

        def current(ep: Endpoint, kind: WorkloadKind) -> Endpoint:
            return here.get((ep.site, kind), {}).get(ep.host) or ep

        return dataclasses.replace(req, source=current(req.source, step.at_source),
                                   target=current(req.target, step.at_target))


@dataclass
class _Question:
    daemon: tuple[str, str, str]  # (site, host name, endpoint): one daemon of one host
    call: Callable[[Endpoint], Any]
    ep: Endpoint
    done: threading.Event = field(default_factory=threading.Event)
    answer: Any = None


class _Asking:
    """One round of questions to many hosts; see the module's docstring."""

    def __init__(self, questions: Sequence[_Question], timeouts: Mapping[str, float], threads: int) -> None:
        self._todo: queue.SimpleQueue[_Question] = queue.SimpleQueue()
        for q in questions:
            self._todo.put(q)
        self._timeouts = timeouts
        self._lock = threading.Lock()
        self._started: dict[tuple[str, str, str], float] = {}  # when each daemon got its first question
        self._given_up: dict[tuple[str, str, str], BaseException] = {}  # daemons not asked again, and why
        for _ in range(max(1, min(threads, len(questions)))):
            self._worker()

    def _worker(self) -> None:
        threading.Thread(target=self._work, name="drorch-snapshot", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                q = self._todo.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                gone = self._given_up.get(q.daemon)
                self._started.setdefault(q.daemon, time.monotonic())
            try:
                q.answer = gone if gone is not None else q.call(q.ep)
            except DrorchError as exc:
                q.answer = exc
                with self._lock:
                    self._given_up.setdefault(q.daemon, exc)
            except BaseException as exc:  # a bug: raised in the asking thread
                q.answer = exc
            q.done.set()

    def answer(self, q: _Question) -> Any:
        """The question's answer, or why its daemon was given up on; waits at most until the daemon's deadline."""
        timeout = self._timeouts[q.daemon[0]]
        while True:
            with self._lock:
                started = self._started.get(q.daemon)
                gone = self._given_up.get(q.daemon)
            if gone is not None and not q.done.is_set():
                return gone
            left = 0.05 if started is None else started + timeout - time.monotonic()
            if q.done.wait(max(0.0, left)):
                return q.answer
            if started is not None:
                return self._give_up(q, timeout)

    def _give_up(self, q: _Question, timeout: float) -> BaseException:
        why = SiteUnreachable(f"site {q.ep.site} host {q.ep.host}: {q.ep.shown} did not answer within {timeout:g} s")
        with self._lock:
            gone = self._given_up.setdefault(q.daemon, why)
        self._worker()  # the stuck thread stays with the host; the others go on with a fresh one
        return gone


def ask(pb: Playbook, questions: Sequence[tuple[Endpoint, Callable[[Endpoint], Any]]],
        threads: int = SNAPSHOT_THREADS) -> list[Any]:
    """Each question asked of its host's daemon, all at once: its answer, or the DrorchError why its daemon did
    not give it within the site's answer_timeout_s (a daemon gone silent is not asked again). What acts on a
    site that may be cut off (a fence, a thaw) asks here, so no call waits on a partition for TCP to give up."""
    if not questions:
        return []  # no thread started for nothing: a plan with no orphaned freeze asks none
    asked = [_Question((ep.site, ep.host, ep.uri), call, ep) for ep, call in questions]
    asking = _Asking(asked, {s: pb.sites[s].answer_timeout_s for s in pb.sites}, threads)
    answers = [asking.answer(q) for q in asked]
    if bug := next((a for a in answers if isinstance(a, BaseException) and not isinstance(a, DrorchError)), None):
        raise bug
    return answers


def snapshot(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], threads: int = SNAPSHOT_THREADS,
             brief: bool = False, sites: Sequence[str] = ()) -> Snapshot:
    """Both sites (or those named) as they are now, every host and technology asked at once; a host that does
    not answer is recorded with why, not raised. `brief` is for a run's plan: a host of declared size is not
    asked what only checks need (see Driver.host_facts)."""
    placed = [(HostInventory(site, host.name), host) for site in sites or (pb.primary, pb.secondary)
              for host in pb.hosts(site)]
    asks = [(inv, host, kind, driver, ep) for inv, host in placed
            for kind, driver in drivers.items() if (ep := endpoint_of(pb, inv.site, host, kind)) is not None]
    # A host's facts and its workloads are two questions, asked side by side like every other host's.
    answers = ask(pb, [(ep, call) for _, host, _, driver, ep in asks
                       for call in (functools.partial(driver.host_facts, brief=brief and host.capacity is not None),
                                    driver.inventory)], threads)
    for i, (inv, _, kind, _, _) in enumerate(asks):
        facts, workloads = answers[2 * i], answers[2 * i + 1]
        failed = next((a for a in (facts, workloads) if isinstance(a, DrorchError)), None)
        wrong = past_bounds(facts, workloads) if failed is None else None
        if failed is not None:
            inv.errors[kind] = str(failed)
        elif wrong is not None:
            inv.errors[kind] = f"site {inv.site} host {inv.host}: {wrong}"
        else:
            inv.facts[kind] = facts
            inv.workloads.extend(workloads)
    return Snapshot([inv for inv, _ in placed], taken_at=utcnow().isoformat())


def probe(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], site: str) -> dict[str, str | None]:
    """Each host of the site with a daemon the playbook uses there, and why one of them did not answer a brief
    question (None: all did), within the site's answer_timeout_s: the automatic takeover's probe."""
    kinds = sorted(pb.kinds_on(site) & drivers.keys())
    eps = [(ep, drivers[kind]) for host in pb.hosts(site) for kind in kinds
           if (ep := endpoint_of(pb, site, host, kind)) is not None]
    silent: dict[str, str | None] = {ep.host: None for ep, _ in eps}
    answers = ask(pb, [(ep, functools.partial(driver.host_facts, brief=True)) for ep, driver in eps])
    for (ep, _), answer in zip(eps, answers, strict=True):
        if isinstance(answer, DrorchError):
            silent[ep.host] = silent[ep.host] or str(answer)
    return silent
