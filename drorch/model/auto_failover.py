"""Automatic failover that a quorum decides: the etcd cluster that holds the key "site S is active for playbook
P", and the timings that every condition of a takeover is measured against. No I/O here."""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from drorch.model._strict import Loc, Model, Name
from drorch.model.limits import MAX_PERIOD_S, MAX_WAIT_S


class OnLostQuorum(StrEnum):
    STOP = "stop"  # the active site stops its own workloads before its key can expire: a fence from inside
    NONE = "none"  # it only says so


class EtcdMember(Model):
    """One member of the cluster, and where it runs: a site of the playbook, or a third place (the witness)."""

    url: str = Field(description="the member's client URL, https://host:port")
    site: Name = Field(description="where it runs: a site of the playbook, or any other name for a third place")

    @model_validator(mode="before")
    @classmethod
    def _placed(cls, data: object) -> object:
        if isinstance(data, str):
            raise ValueError(f"say where member {data} runs: {{url: {data}, site: a site's name or the third "
                             "place's}")
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{url!r} is not a member's client URL (https://host:port)")
        return url


class Etcd(Model):
    """The cluster that decides which site is active: its members, and the client certificate drorch talks to
    them with."""

    endpoints: list[EtcdMember] = Field(min_length=1, description="every member: {url, site}")
    ca: str | None = Field(None, description="file of the CA that signed the members' certificates")
    cert: str | None = Field(None, description="file of drorch's client certificate")
    key: str | None = Field(None, description="file of its private key (mode 600)")
    timeout_s: float = Field(2.0, gt=0, le=MAX_WAIT_S, description="seconds a member has to answer")

    @model_validator(mode="after")
    def _pair(self) -> Etcd:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class AutoFailover(Model):
    """When the secondary takes over on its own: every condition must hold, each recorded; otherwise it alerts."""

    etcd: Etcd
    after_s: float = Field(60.0, gt=0, le=MAX_PERIOD_S, description="the secondary's probes of every primary "
                           "host have failed this long")
    acquire_after_s: float = Field(30.0, ge=0, le=MAX_PERIOD_S, description="the key has stayed expired this long")
    lease_s: float = Field(20.0, ge=2, le=MAX_PERIOD_S, description="the active site renews its key within this")
    max_rpo_s: float = Field(900.0, gt=0, le=MAX_PERIOD_S, description="the newest points must be younger")
    window_s: float = Field(86400.0, gt=0, le=MAX_PERIOD_S, description="at most one automatic failover of the "
                            "playbook in this long")
    on_lost_quorum: OnLostQuorum = Field(OnLostQuorum.STOP, description="what the active site does when it "
                                         "cannot renew its key before the lease ends")


def auto_failover_problems(settings: AutoFailover, sites: list[str], fenced: bool) -> list[tuple[Loc, str]]:
    """What makes the settings unsafe: a cluster that loses its majority with one site, or that one site decides
    alone; a lease that can outlast the primary's silence; nothing that stops the primary before the secondary
    starts. `sites` are the playbook's, `fenced` whether it has a fencing command."""
    at: Loc = ("auto_failover",)
    problems: list[tuple[Loc, str]] = []
    members = settings.etcd.endpoints
    places = Counter(m.site for m in members)
    spare = len(members) - (len(members) // 2 + 1)  # the members a majority can lose
    if len(members) < 3:
        problems.append(((*at, "etcd", "endpoints"), f"{len(members)} members cannot outvote the loss of a site: "
                         "give three or more, one at each site and a witness at a third place"))
    elif crowded := [f"{place} ({n})" for place, n in places.items() if n > spare]:
        problems.append(((*at, "etcd", "endpoints"), f"a majority is lost with one place's members: "
                         f"{', '.join(crowded)} of {len(members)}; at most {spare} at any one place"))
    if not set(places) - set(sites):
        problems.append(((*at, "etcd", "endpoints"), "no member at a third place: the two sites cannot tell a "
                         "lost site from a cut between them without a witness"))
    if settings.after_s < settings.lease_s:
        problems.append(((*at, "after_s"), f"after_s ({settings.after_s:g} s) is shorter than lease_s "
                         f"({settings.lease_s:g} s): the primary may still hold its key when its silence is judged"))
    if not fenced and settings.on_lost_quorum is OnLostQuorum.NONE:
        problems.append(((*at, "on_lost_quorum"), "nothing stops the primary before the secondary starts its "
                         "workloads: give fencing.command, or on_lost_quorum: stop"))
    return problems
