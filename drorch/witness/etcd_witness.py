"""The witness as an etcd cluster, through etcd3gw (its v3 HTTP gateway client): each member asked in turn until
one answers. Reads are linearizable and writes go through the leader, so a member cut off from the majority
answers with an error, never with what it last knew; when none answers, the quorum is lost."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception
from etcd3gw.lease import Lease

from drorch.drivers.http_limits import failure
from drorch.errors import QuorumLost
from drorch.model.auto_failover import Etcd
from drorch.witness.witness_base import Holding, Witness

T = TypeVar("T")
PREFIX = "/drorch"


def active_key(playbook: str) -> str:
    return f"{PREFIX}/active/{playbook}"


def stopped_key(playbook: str, site: str) -> str:
    return f"{PREFIX}/stopped/{playbook}/{site}"


class EtcdWitness(Witness):
    def __init__(self, settings: Etcd) -> None:
        self._members: list[tuple[str, Etcd3Client]] = []
        for m in settings.endpoints:
            url = urlsplit(m.url)
            client = etcd3gw.client(host=url.hostname or "", port=url.port or 2379, protocol=url.scheme,
                                    ca_cert=settings.ca, cert_cert=settings.cert, cert_key=settings.key,
                                    timeout=settings.timeout_s, api_path="/v3/")
            client.session.trust_env = False  # its CA is the one given: not REQUESTS_CA_BUNDLE's, nor any proxy
            self._members.append((m.url, client))

    def _asked(self, call: Callable[[Etcd3Client], T]) -> T:
        """The first answer of a member, asked in turn; QuorumLost, with each member's reason, when none does."""
        said = []
        for url, client in self._members:
            try:
                return call(client)
            except (Etcd3Exception, OSError, ValueError) as exc:
                said.append(f"{url}: {_why(exc)}")
        raise QuorumLost(f"no majority of the etcd cluster answered ({'; '.join(said)})")

    def holder(self, playbook: str) -> Holding | None:
        found = self._asked(lambda c: c.get(active_key(playbook), metadata=True))
        return _holding(playbook, found[0][0], found[0][1].get("lease", "0")) if found else None

    def claim(self, playbook: str, site: str, daemon: str, lease_s: float) -> Holding:
        def take(client: Etcd3Client) -> Holding:
            lease = client.lease(ttl=max(1, round(lease_s)))
            value = json.dumps({"site": site, "daemon": daemon, "since": datetime.now(UTC).isoformat()})
            key = _b64(active_key(playbook).encode())
            done = client.transaction({
                "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
                "success": [{"request_put": {"key": key, "value": _b64(value.encode()), "lease": lease.id}}],
                "failure": [{"request_range": {"key": key}}],
            })
            if done.get("succeeded"):
                return _holding(playbook, value.encode(), str(lease.id))
            lease.revoke()
            (kv,) = done["responses"][0]["response_range"]["kvs"]
            return _holding(playbook, base64.b64decode(kv["value"]), kv.get("lease", "0"))

        return self._asked(take)

    def renew(self, hold: Holding) -> bool:
        return self._asked(lambda c: Lease(hold.lease, client=c).refresh()) > 0

    def release(self, hold: Holding) -> None:
        self._asked(lambda c: Lease(hold.lease, client=c).revoke())

    def say_stopped(self, playbook: str, site: str, at: datetime) -> None:
        self._asked(lambda c: c.put(stopped_key(playbook, site), json.dumps({"at": at.isoformat()})))

    def stopped_at(self, playbook: str, site: str) -> datetime | None:
        found = self._asked(lambda c: c.get(stopped_key(playbook, site)))
        return datetime.fromisoformat(json.loads(found[0])["at"]) if found else None

    def close(self) -> None:
        for _, client in self._members:
            client.session.close()


def _why(exc: Exception) -> str:
    """A member's failure in an operator's words: a connection's as every service's is said, or what the member
    answered (etcd3gw keeps only the text of the requests error it raises from: its cause says more)."""
    if isinstance(exc, OSError) or isinstance(exc.__context__, requests.RequestException | OSError):
        return failure(exc)
    said = " ".join(str(getattr(exc, "detail_text", None) or exc).split())
    return said[:200] or type(exc).__name__


def _holding(playbook: str, value: bytes, lease: str) -> Holding:
    said = json.loads(value)
    return Holding(playbook, said["site"], int(lease), said["daemon"], datetime.fromisoformat(said["since"]))


def _b64(data: bytes) -> str:
    """Keys and values as the gateway takes them in a transaction's JSON."""
    return base64.b64encode(data).decode()
