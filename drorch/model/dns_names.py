"""Names that follow the workloads (no I/O): the playbook's DNS settings, and the records a site wants once a
workload runs there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from drorch.model._strict import Model
from drorch.model.address_rules import parse_address
from drorch.model.limits import MAX_PORT, MAX_WAIT_S

RecordType = Literal["A", "AAAA", "CNAME"]
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
DNS_PORT = 53
MAX_TTL = 2_147_483_647  # RFC 2181
Label = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?$")]
DomainName = Annotated[str, Field(min_length=1, max_length=253,
                                  pattern=r"^([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?\.)*"
                                          r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?\.?$")]


class Tsig(Model):
    """The key updates are signed with (RFC 8945): its name, algorithm, and a file holding only its base64
    secret, readable by its owner alone."""

    name: DomainName
    algorithm: Literal[TSIG_ALGORITHMS] = "hmac-sha256"  # type: ignore[valid-type]  # a Literal of a tuple: pydantic reads it, mypy cannot
    secret_file: str = Field(description="file with the key's base64 secret (mode 600)")


def server_address(text: str) -> tuple[str, int]:
    """`127.0.0.1`, `127.0.0.1:5353`, `::1` or `[::1]:5353` as (address, port)."""
    host, port = text, DNS_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{text!r}: give [address]:port")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not digits.isdigit():
            raise ValueError(f"{text!r}: the port is not a number")
        port = int(digits)
    if not 1 <= port <= MAX_PORT:
        raise ValueError(f"{text!r}: port {port} is outside 1 to {MAX_PORT}")
    return str(parse_address(host)), port


class Dns(Model):
    """Records that follow the workloads: on the zone's authoritative server, by RFC 2136 updates."""

    servers: list[str] = Field(min_length=1, description="authoritative servers as address[:port]; the first "
                               "that answers takes the update")
    zone: DomainName
    tsig: Tsig | None = None
    ttl: int = Field(60, ge=0, le=MAX_TTL, description="TTL of the records drorch writes")
    lower_ttl_s: int | None = Field(None, ge=0, le=MAX_TTL,
                                    description="before a planned failover moves anything, the records' TTL is "
                                    "lowered to this")
    timeout_s: float = Field(5.0, gt=0, le=MAX_WAIT_S, description="seconds a server has to answer")
    records: dict[Label, list[RecordType]] = Field(
        min_length=1, description="per workload: the record types that follow it (A, AAAA: its address; CNAME: "
        "WORKLOAD.SITE in the zone)")
    drill_zone: DomainName | None = Field(
        None, description="a zone of its own, on the same servers, where a drill names each clone at its drill "
        "address (A and AAAA under the workload's name) until its teardown; a drill never touches `zone`")

    @field_validator("servers")
    @classmethod
    def _servers(cls, servers: list[str]) -> list[str]:
        for s in servers:
            server_address(s)
        return servers

    @model_validator(mode="after")
    def _apart(self) -> Dns:
        if self.drill_zone is not None and absolute(self.drill_zone).lower() == absolute(self.zone).lower():
            raise ValueError("drill_zone must not be the zone itself: a drill never touches production records")
        return self

    def drill_records(self, workload: str, addresses: list[str]) -> list[Wanted]:
        """A clone's records in the drill zone: its workload's A and AAAA at the drill addresses (a CNAME
        would name a site)."""
        return [w for w in wanted(self, workload, "", addresses) if w.rdtype != "CNAME"]


def absolute(name: str) -> str:
    return name if name.endswith(".") else f"{name}."


@dataclass(frozen=True)
class Wanted:
    """One record as it should be: owner name (relative to the zone), type, values."""

    name: str
    rdtype: str
    values: tuple[str, ...]


def wanted(dns: Dns, workload: str, site: str, addresses: list[str]) -> list[Wanted]:
    """The workload's records once it runs on `site` with `addresses`: A and AAAA name the addresses of their
    family; a CNAME names WORKLOAD.SITE in the zone."""
    found: list[Wanted] = []
    for rdtype in dns.records.get(workload, []):
        if rdtype == "CNAME":
            found.append(Wanted(workload, rdtype, (f"{workload}.{site}.{absolute(dns.zone)}",)))
            continue
        version = 4 if rdtype == "A" else 6
        mine = sorted(a for a in addresses if parse_address(a).version == version)
        found.append(Wanted(workload, rdtype, tuple(mine)))
    return found
