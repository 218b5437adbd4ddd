"""The playbook's zone on its authoritative servers: records read without recursion and replaced by RFC 2136
updates signed with TSIG (dnspython). The key's secret is read from its file and never shown."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from drorch import input_limits
from drorch.errors import InputError, NamesFailed
from drorch.model.dns_names import Dns, Wanted, absolute, server_address


class ZoneClient:
    def __init__(self, settings: Dns, zone: str) -> None:
        self.zone = dns.name.from_text(absolute(zone))
        self.servers = [server_address(s) for s in settings.servers]
        self.timeout = settings.timeout_s
        self.keyring: dict[dns.name.Name, dns.tsig.Key] | None = None
        self.keyname: dns.name.Name | None = None
        if settings.tsig is not None:
            path = Path(settings.tsig.secret_file)
            secret = input_limits.read_text(path, input_limits.MAX_SECRET_BYTES, private=True).strip()
            try:
                base64.b64decode(secret, validate=True)
            except (binascii.Error, ValueError):
                raise InputError([f"{path}: not a base64 TSIG secret"]) from None
            self.keyname = dns.name.from_text(absolute(settings.tsig.name))
            self.keyring = {self.keyname: dns.tsig.Key(self.keyname, secret, settings.tsig.algorithm)}

    def owner(self, name: str) -> str:
        return dns.name.from_text(name, self.zone).to_text()

    def _ask(self, message: dns.message.Message, what: str) -> tuple[str, dns.message.Message]:
        """The first server's answer that comes; each server's failure said when none answers."""
        failures = []
        for host, port in self.servers:
            where = f"{host}:{port}"
            try:
                return where, dns.query.tcp(message, host, port=port, timeout=self.timeout)
            except dns.tsig.PeerError as exc:  # it answered, and would not take the key
                raise NamesFailed(f"DNS server {where} refused {what}: {exc}") from None
            except dns.exception.Timeout:
                failures.append(f"{where} did not answer in {self.timeout:g} s")
            except (dns.exception.DNSException, OSError) as exc:
                failures.append(f"{where}: {exc}")
        raise NamesFailed(f"{what}: no DNS server answered ({'; '.join(failures)})")

    def read(self, name: str, rdtype: str) -> tuple[int | None, tuple[str, ...]]:
        """(TTL, values) of one record set as the authoritative server holds it; (None, ()) when there is none."""
        owner = dns.name.from_text(name, self.zone)
        query = dns.message.make_query(owner, rdtype)
        query.flags &= ~dns.flags.RD
        where, answer = self._ask(query, f"reading {owner} {rdtype}")
        code = answer.rcode()
        if code not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise NamesFailed(f"DNS server {where} answered {dns.rcode.to_text(code)} to a query of {owner} {rdtype}")
        rrset = answer.get_rrset(answer.answer, owner, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        if rrset is None:
            return None, ()
        return rrset.ttl, tuple(sorted(r.to_text() for r in rrset))

    def replace(self, want: Wanted, ttl: int) -> None:
        """Make the record set exactly `want` (none when it has no values), in one signed update."""
        update = dns.update.UpdateMessage(self.zone, keyring=self.keyring, keyname=self.keyname)
        if want.values:
            update.replace(want.name, ttl, want.rdtype, *want.values)
        else:
            update.delete(want.name, want.rdtype)
        owner = self.owner(want.name)
        where, answer = self._ask(update, f"updating {owner} {want.rdtype}")
        code = answer.rcode()
        if code != dns.rcode.NOERROR:
            raise NamesFailed(f"DNS server {where} refused the update of {owner} {want.rdtype}: "
                              f"{dns.rcode.to_text(code)}")
