"""An authoritative DNS server on loopback for the tests: Debian's Knot (knotd), with a TSIG key that may update
zones `lab.example.` and `drill.example.`, and a zone `locked.example.` that takes no update. Started by the test
that needs it, and stopped by its recorded pid."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.tsigkeyring
import dns.update

from integration.lab_base import stop_pid

ZONE = "lab.example."
DRILL_ZONE = "drill.example."
LOCKED = "locked.example."
KEY = "drorch"


@dataclass(frozen=True)
class DnsServer:
    address: str
    port: int
    secret_file: Path
    pidfile: Path

    @property
    def server(self) -> str:
        return f"{self.address}:{self.port}"

    def settings(self, zone: str = ZONE, **more: object) -> dict[str, object]:
        """The playbook's `dns` section for this server."""
        return {"servers": [self.server], "zone": zone, "tsig": {"name": KEY, "secret_file": str(self.secret_file)},
                "ttl": 30, **more}

    def read(self, name: str, rdtype: str = "A") -> list[str]:
        """A record as the server holds it, asked the way any resolver would."""
        return self.read_ttl(name, rdtype)[1]

    def read_ttl(self, name: str, rdtype: str = "A") -> tuple[int | None, list[str]]:
        answer = dns.query.tcp(dns.message.make_query(name, rdtype), self.address, port=self.port, timeout=5)
        ttls = {rrset.ttl for rrset in answer.answer}
        return (ttls.pop() if ttls else None), sorted(r.to_text() for rrset in answer.answer for r in rrset)


    def point(self, name: str, address: str, zone: str = ZONE, ttl: int = 30) -> None:
        """Make the A record name `address`, as an operator's own tool would (signed with the same key)."""
        keyring = dns.tsigkeyring.from_text({KEY: self.secret_file.read_text().strip()})
        update = dns.update.UpdateMessage(zone, keyring=keyring, keyalgorithm="hmac-sha256")
        update.replace(name, ttl, "A", address)
        answer = dns.query.tcp(update, self.address, port=self.port, timeout=5)
        assert answer.rcode() == 0, answer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _zone(origin: str) -> str:
    return (f"$ORIGIN {origin}\n$TTL 300\n@ SOA ns.{origin} admin.{origin} 1 3600 600 86400 30\n@ NS ns.{origin}\n"
            "ns A 127.0.0.1\n")


@contextmanager
def knot(root: Path) -> Iterator[DnsServer]:
    """knotd serving both zones from `root` until the block ends."""
    (root / "db").mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    secret = base64.b64encode(os.urandom(32)).decode()
    secret_file = root / "tsig.secret"
    secret_file.write_text(secret + "\n")
    os.chmod(secret_file, 0o600)
    port = _free_port()
    for zone in (ZONE, DRILL_ZONE, LOCKED):
        (root / f"{zone}zone").write_text(_zone(zone))
    conf = root / "knot.conf"
    conf.write_text(f"""server:
    listen: 127.0.0.1@{port}
    rundir: {root}
    pidfile: {root / "knot.pid"}
key:
  - id: {KEY}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: update
    key: {KEY}
    action: update
template:
  - id: default
    storage: {root}
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
database:
    storage: {root / "db"}
zone:
  - domain: {ZONE}
    acl: update
  - domain: {DRILL_ZONE}
    acl: update
  - domain: {LOCKED}
""")
    server = DnsServer("127.0.0.1", port, secret_file, root / "knot.pid")
    with (root / "knot.log").open("ab") as log:
        subprocess.Popen(["knotd", "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.read(f"ns.{ZONE}") == ["127.0.0.1"]:
                    break
            except (OSError, dns.exception.DNSException):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"knotd did not serve {ZONE}: {(root / 'knot.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        stop_pid(server.pidfile, "knotd")
