"""Addresses at the other site (no I/O): subnet rules that keep a workload's host part, exact addresses per
workload and site, and their inverse for the way home.

A rule maps a primary subnet onto a secondary one (`10.31.0.0/24: {to: 10.32.0.0/24}`): 10.31.0.10 lands
as 10.32.0.10. An exact address given for one workload becomes a one-address rule of its own, so that the
way home (every rule inverted) gives back exactly the address it left with.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from drorch.model._strict import Model
from drorch.model.limits import MAX_PORT, MAX_WAIT_S

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a subnet (address/prefix, host bits zero): {exc}") from None


def within(address: str, cidr: str) -> bool:
    """Whether the address is in the subnet; a subnet that is no subnet (a daemon's answer) holds nothing."""
    try:
        net = parse_network(cidr)
    except ValueError:
        return False
    ip = parse_address(address)
    return ip.version == net.version and ip in net


def _address(text: str) -> str:
    return str(parse_address(text))


Address = Annotated[str, BeforeValidator(lambda v: _address(str(v)) if isinstance(v, str | int) else v)]


class AddressRule(Model):
    """Where one subnet's addresses land: the same host part in `to`, with the target's gateway and DNS servers
    (given to a guest that is re-addressed from inside; a container takes its network's gateway)."""

    to: str = Field(description="the target subnet, e.g. 10.32.0.0/24: no longer a prefix than the source's")
    gateway: Address | None = Field(None, description="the target subnet's gateway")
    dns: list[Address] = Field(default_factory=list, description="DNS servers on the target subnet")

    @field_validator("to")
    @classmethod
    def _subnet(cls, to: str) -> str:
        return str(parse_network(to))

    @model_validator(mode="after")
    def _inside(self) -> AddressRule:
        net = parse_network(self.to)
        for what, value in (("gateway", self.gateway), *(("dns", d) for d in self.dns)):
            if value is not None and parse_address(value).version != net.version:
                raise ValueError(f"{what} {value} is not an IPv{net.version} address like {self.to}")
        if self.gateway is not None and parse_address(self.gateway) not in net:
            raise ValueError(f"gateway {self.gateway} is outside {self.to}")
        return self


def rules_problems(rules: dict[str, AddressRule]) -> list[tuple[str, str]]:
    """Rules that cannot be applied both ways, as (source subnet, why): a source that is no subnet, a target of
    the other family or of a longer prefix, two sources that overlap (which rule wins?), two targets that
    overlap (the way home would not know). A one-address rule may lie inside a subnet's: the most specific wins."""
    found: list[tuple[str, str]] = []
    sources: list[tuple[str, IPNetwork]] = []
    dests: list[tuple[str, IPNetwork]] = []
    for key, rule in rules.items():
        try:
            src = parse_network(key)
        except ValueError as exc:
            found.append((key, str(exc)))
            continue
        dst = parse_network(rule.to)
        if src.version != dst.version:
            found.append((key, f"maps IPv{src.version} onto IPv{dst.version} ({rule.to})"))
            continue
        if dst.prefixlen > src.prefixlen:
            found.append((key, f"{rule.to} is smaller than {src}: the host part of every address would not fit"))
            continue
        if src.prefixlen == src.max_prefixlen:  # one address: exact, it beats any subnet's rule
            continue
        for other, net in sources:
            if net.overlaps(src):
                found.append((key, f"overlaps the rule for {other}: an address in both would be ambiguous"))
        for other, net in dests:
            if net.overlaps(dst):
                found.append((key, f"its target {dst} overlaps that of the rule for {other}: the way home "
                                   "would be ambiguous"))
        sources.append((key, src))
        dests.append((key, dst))
    return found


def checked_rules(rules: dict[str, AddressRule]) -> dict[str, AddressRule]:
    """The rules keyed by their subnets as written canonically; ValueError naming each rule that cannot apply."""
    problems = rules_problems(rules)
    if problems:
        raise ValueError("; ".join(f"{key}: {why}" for key, why in problems))
    return {str(parse_network(k)): r for k, r in rules.items()}


def gateway_of(rule: AddressRule) -> str:
    """The rule's gateway, or its subnet's first address."""
    return rule.gateway or str(next(parse_network(rule.to).hosts()))


def map_address(rules: dict[str, AddressRule], address: str) -> tuple[str, str] | None:
    """The address in the target subnet and the rule (its source subnet) that gave it; None when no rule
    covers the address. The most specific rule wins: a workload's exact address beats its subnet's rule."""
    ip = parse_address(address)
    best: tuple[IPNetwork, str] | None = None
    for key in rules:
        try:
            net = parse_network(key)
        except ValueError:
            continue
        if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, key)
    if best is None:
        return None
    src, key = best
    dst = parse_network(rules[key].to)
    host = int(ip) - int(src.network_address)
    if host >= dst.num_addresses:
        return None
    return str(ipaddress.ip_address(int(dst.network_address) + host)), key


def inverse_rules(rules: dict[str, AddressRule]) -> dict[str, AddressRule]:
    """The rules of the way home: each target subnet back onto its source (gateways are then the home
    network's own)."""
    return {rule.to: AddressRule(to=str(parse_network(key))) for key, rule in rules.items()}


def exact_rule(before: str, after: str) -> tuple[str, AddressRule]:
    """A one-address rule: `before` lands as `after`."""
    src, dst = parse_address(before), parse_address(after)
    return f"{src}/{src.max_prefixlen}", AddressRule(to=f"{dst}/{dst.max_prefixlen}")


def _addresses(value: object) -> object:
    return [value] if isinstance(value, str) else value


SiteAddresses = Annotated[list[Address], BeforeValidator(_addresses), Field(min_length=1, max_length=2)]


class AddressCheck(Model):
    """A TCP port the workload answers on: connected to at its address on the target once it has moved."""

    port: int = Field(ge=1, le=MAX_PORT)
    timeout_s: float = Field(60.0, gt=0, le=MAX_WAIT_S, description="how long it may take to answer")


class ReIp(Model):
    """A command run inside a VM's guest (QEMU guest agent, guest-exec) once it lands with another address, with
    DRORCH_OLD_ADDRESS, DRORCH_NEW_ADDRESS, DRORCH_PREFIX, DRORCH_GATEWAY, DRORCH_DNS and DRORCH_NETWORK set."""

    run: list[str] = Field(min_length=1, description="argv inside the guest")
    timeout_s: float = Field(120.0, gt=0, le=MAX_WAIT_S, description="for the agent to answer and the command to end")


@dataclass(frozen=True)
class AddressMove:
    """What one address of a workload becomes at the target: `after` None keeps it dynamic."""

    network: str  # on the source
    before: str | None
    after: str | None
    static: bool
    rule: str | None = None  # the source subnet of the rule that gave `after`, or "exact"

    def line(self) -> str:
        if not self.static:
            return f"{self.network}: {self.before or '?'} -> dynamic"
        how = "" if self.rule is None else " (exact)" if self.rule == "exact" else f" (rule {self.rule})"
        return f"{self.network}: {self.before} -> {self.after}{how}"
