"""Fencing a site before its workloads start elsewhere, a disaster run's first step: each host that answers stops
the playbook's copies through its own daemon; a silent host is fenced by the playbook's command, or vouched for
(by the operator, or in an automatic takeover by the site's own word that it stopped)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drorch.drivers.base import Driver, Endpoint
from drorch.engine.hooks import run_hooks
from drorch.errors import DrorchError, MoveFailed, SiteUnreachable
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.run_settings import Hook
from drorch.reach import RunSites, ask


class FencingRequired(DrorchError):
    """A disaster failover cannot prove the source's copies are down."""


@dataclass(frozen=True)
class Vouch:
    """Who vouches for the source's silent hosts in a disaster, the fencing command tried first: the operator
    (--confirm-primary-down), or in an automatic takeover (`why`) the primary's own word that it stopped, or the
    operator's approval of a held takeover. An automatic run records its gates (`automatic`, as JSON)."""

    confirmed: bool = False
    why: str | None = None
    automatic: str | None = None

    @property
    def vouches(self) -> bool:
        return self.confirmed or self.why is not None

    def detail(self) -> dict[str, object]:
        return {"confirmed": self.confirmed, **({"vouched": self.why} if self.why else {})}


def fence_site(pb: Playbook, sites: RunSites, site: str, names: Mapping[WorkloadKind, Sequence[str]], run: str,
               vouched: str | None = None) -> str:
    """What was done to make sure no copy of `names` runs on `site`; raises MoveFailed when a silent host was
    neither fenced by `fencing.command` nor `vouched` for (the operator's word, or the site's own that it stopped:
    tried after the command)."""
    daemons = [(kind, ep) for kind in sorted(pb.kinds_on(site)) for ep in sites.hosts(site, kind)]
    # Every daemon at once, each bounded by the site's answer_timeout_s: a cut-off site's hosts are found
    # silent in seconds, not after each call's wait for the network to give up.
    questions = [(ep, functools.partial(_stop, sites.drivers[kind], kind, sorted(names.get(kind, ()))))
                 for kind, ep in daemons]
    answers = list(zip(daemons, ask(pb, questions), strict=True))
    if failed := next((a for _, a in answers if isinstance(a, DrorchError) and not isinstance(a, SiteUnreachable)),
                      None):
        raise failed  # it answered, and would not stop a copy: no vouch covers that
    answered = [(kind, ep, a) for (kind, ep), a in answers if not isinstance(a, DrorchError)]
    stopped = [line for _, _, a in answered for line in a]
    asked = [f"{ep.host} ({kind})" for kind, ep, _ in answered]
    silent = [ep.host for (_, ep), a in answers if isinstance(a, DrorchError)]
    hosts = ", ".join(sorted(asked)) or "none"
    said = f"destroyed {', '.join(stopped)}" if stopped else f"no copy ran on the answering hosts ({hosts})"
    if not silent:
        return f"site {site} fenced: {said}"
    hosts = ", ".join(sorted(set(silent)))
    if pb.fencing.command:
        res = run_hooks([Hook(run=pb.fencing.command, timeout=pb.fencing.timeout)],
                        {"DRORCH_SITE": site, "DRORCH_HOSTS": hosts, "DRORCH_RUN_ID": run})
        if res[0].ok:
            return f"{said}; hosts {hosts} fenced by {pb.fencing.command[0]}"
        if not vouched:
            raise MoveFailed(f"fencing command for site {site} failed: {res[0].message}")
    if vouched:
        return f"{said}; hosts {hosts} {vouched}"
    raise MoveFailed(f"hosts {hosts} of site {site} do not answer and were not fenced")


def _stop(driver: Driver, kind: WorkloadKind, mine: Sequence[str], ep: Endpoint) -> list[str]:
    """What one daemon stopped of the run's copies; with none of them to stop, it is only asked to answer."""
    if not mine:
        driver.host_facts(ep, brief=True)
    return [f"{kind} {name} on {ep.host}" for name in mine if driver.fence(name, ep)]


NO_VOUCH = Vouch()  # a planned run's, or a disaster's that only its fence step may let go on
