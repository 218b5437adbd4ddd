"""One LXD server as the LXD driver sees it: its REST API through pylxd's client, errors turned into drorch's.

pylxd's own `Instance.migrate` asks the source for a migration and the target to pull it, but always deletes the
source afterwards and cannot refresh an existing copy; the migration calls are therefore sent here through
the client's API nodes (POST /1.0/instances/NAME {"migration": true} on the source, POST /1.0/instances with a
`migration` source in pull or push mode on the target), and an operation's websockets are opened here for a
relayed migration (`_lxd_relay`). Data goes server to server, or through drorch's relay: drorch reads no file
of a site.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pylxd
import requests
import websocket
from pylxd.exceptions import ClientConnectionFailed, LXDAPIException, NotFound

from drorch.drivers.base import Endpoint
from drorch.drivers.http_limits import failure, guard_answers, tls_problem
from drorch.errors import MoveFailed, SiteUnreachable

TIMEOUT_S = 120.0  # one request; operations are waited on by their own /wait calls
GARBLED = (KeyError, TypeError, ValueError, AttributeError, RecursionError)  # an answer not shaped as LXD's


class LxdError(MoveFailed):
    """LXD refused or failed a request; the message is LXD's."""


class LxdMissing(LxdError):
    """LXD has no such instance, snapshot or other object."""


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


class LxdSite:
    """One LXD server, reached by its unix socket or by HTTPS with a client certificate and its own pinned."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    @property
    def where(self) -> str:
        return f"site {self.ep.site}: LXD at {self.ep.shown}"

    @functools.cached_property
    def client(self) -> pylxd.Client:
        ep = self.ep
        url = urlparse(ep.uri)
        if url.scheme == "unix":
            session = pylxd.client.get_session_for_url("http+unix://")
            endpoint = url.path
            if not os.path.exists(endpoint):
                raise SiteUnreachable(f"{self.where} does not answer: no socket {endpoint}")
        elif url.scheme == "https":
            if ep.tls is None:
                raise SiteUnreachable(f"{self.where}: an https endpoint needs lxd_tls in the playbook")
            server_cert, cert, key = ep.tls
            unusable = tls_problem(ep.tls)
            if unusable:
                raise SiteUnreachable(f"{self.where}: TLS file {unusable}")
            # A path as `verify`: pylxd's adapter pins that certificate's fingerprint, as LXD's own client does.
            session = pylxd.client.get_session_for_url(ep.uri, verify=server_cert, cert=(cert, key))
            endpoint = ep.uri
        else:
            raise SiteUnreachable(f"{self.where}: not an LXD endpoint (unix:// or https://)")
        session.trust_env = False  # the playbook's endpoint as given: no proxy or CA bundle of the environment
        guard_answers(session)
        try:
            client = pylxd.Client(endpoint=endpoint, session=session, timeout=TIMEOUT_S)
        except (ClientConnectionFailed, requests.ConnectionError) as exc:
            said = str(exc)  # pylxd turns a connection's failure into this, and a GET /1.0 not answered 200 too
            if "Fingerprints did not match" in said:
                raise SiteUnreachable(f"{self.where} answers with a certificate other than the one pinned "
                                      f"(lxd_tls.server_cert {ep.tls[0] if ep.tls else ''})") from None
            if said:
                raise SiteUnreachable(f"{self.where} {failure(exc)}") from None
            raise SiteUnreachable(f"{self.where} does not answer as LXD (GET /1.0 failed)") from None
        except (LXDAPIException, requests.RequestException, *GARBLED) as exc:
            # e.g. a Docker socket, or any HTTP server: GET /1.0 is not LXD's answer
            raise SiteUnreachable(f"{self.where} does not answer as LXD ({' '.join(_reason(exc).split())[:200]})"
                                  ) from None
        if not isinstance(client.host_info, dict) or not isinstance(client.host_info.get("environment", {}), dict):
            raise SiteUnreachable(f"{self.where} does not answer as LXD (GET /1.0 is not a server's description)")
        if client.host_info.get("auth") != "trusted":
            raise SiteUnreachable(f"{self.where}: the server does not trust drorch's client certificate "
                                  "(add it with `lxc config trust add`)")
        return client

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Questions whose failure is one line about this server: it did not answer, or refused."""
        try:
            yield
        except (ClientConnectionFailed, requests.RequestException) as exc:
            raise SiteUnreachable(f"{self.where} {failure(exc)}") from None
        except NotFound as exc:
            raise LxdMissing(f"{self.where}: {_reason(exc)}") from None
        except LXDAPIException as exc:
            raise LxdError(f"{self.where}: {_reason(exc)}") from None
        except GARBLED as exc:
            raise SiteUnreachable(f"{self.where}: answers what LXD's API never does ({type(exc).__name__}: "
                                  f"{str(exc)[:100]})") from None

    def get(self, *path: str, **params: Any) -> Any:
        node = self.client.api
        for part in path:
            node = node[part]
        with self.answering():
            return node.get(params=params or None).json()["metadata"]

    def act(self, method: str, *path: str, body: dict[str, Any] | None = None, wait: bool = True) -> Any:
        """A request that changes something, waited on to its end when LXD answers with an operation (unless
        `wait` is False: a token, such as an image's secret, whose operation lasts until it is used)."""
        node = self.client.api
        for part in path:
            node = node[part]
        with self.answering():
            answer = getattr(node, method)(json=body) if body is not None else getattr(node, method)()
            if answer.json().get("type") == "async" and wait:
                op = self.client.operations.wait_for_operation(answer.json()["operation"])
                return getattr(op, "metadata", None)
            return answer.json().get("metadata")

    # --- instances ------------------------------------------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        """Every instance as its description gives it, with its status (recursion 1: not its state, which LXD
        works out for each instance at some cost)."""
        return list(self.get("instances", recursion=1))

    def instance(self, name: str) -> dict[str, Any] | None:
        """The instance's description (config and devices, expanded too, and its status), or None."""
        try:
            return dict(self.get("instances", name))
        except LxdMissing:
            return None

    def status(self, name: str) -> str | None:
        """Running, Stopped, Frozen… or None when there is no such instance."""
        found = self.instance(name)
        return None if found is None else str(found["status"])

    def thawed(self, name: str, timeout: float = 30.0) -> None:
        """Wait while LXD keeps the instance frozen: it freezes a running instance for the last pass of a copy and
        thaws it only after the copy's operation has ended."""
        deadline = time.monotonic() + timeout
        while self.status(name) == "Frozen" and time.monotonic() < deadline:
            time.sleep(0.05)

    def set_state(self, name: str, action: str, force: bool = False) -> None:
        self.act("put", "instances", name, "state", body={"action": action, "force": force, "timeout": 30})

    def delete(self, name: str) -> bool:
        """Remove the instance (stopped first); False when there was none."""
        status = self.status(name)
        if status is None:
            return False
        if status != "Stopped":
            self.set_state(name, "stop", force=True)
        self.act("delete", "instances", name)
        return True

    def update(self, name: str, change: dict[str, Any]) -> None:
        self.act("patch", "instances", name, body=change)

    # --- migration -------------------------------------------------------------------------------------------

    def _https(self) -> str:
        """The HTTPS address another server reaches this one at: the playbook's, or the server's own."""
        if urlparse(self.ep.uri).scheme == "https":
            return self.ep.uri.rstrip("/")
        addresses = self.client.host_info["environment"].get("addresses") or []
        if not addresses:
            raise LxdError(f"{self.where} listens on no HTTPS address (core.https_address), so no other server can "
                           "pull from it")
        return f"https://{addresses[0]}"

    def source_of(self, name: str, live: bool) -> dict[str, Any]:
        """Ask this server to send `name`: the `source` a target pulls it with (operation URL, secrets, this
        server's certificate)."""
        base = self._https()
        operation, secrets = self.migration(name, live)
        return {"type": "migration", "mode": "pull", "operation": f"{base}{operation}",
                "certificate": self.client.host_info["environment"]["certificate"],
                "secrets": secrets, "live": live, "instance_only": True}

    def migration(self, name: str, live: bool) -> tuple[str, dict[str, str]]:
        """Ask this server to send `name`, without its snapshots (see `_lxd_relay.send`): its operation's path and
        the secrets of its websockets."""
        return self.begin("instances", name, body={"migration": True, "live": live, "instance_only": True})

    def begin(self, *path: str, body: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """Start an operation that waits for websockets to be joined: its path and their secrets."""
        node = self.client.api
        for part in path:
            node = node[part]
        with self.answering():
            answer = node.post(json=body).json()
        return str(answer["operation"]), dict(answer["metadata"]["metadata"])

    def wait(self, operation: str) -> None:
        """Until the operation ends; LxdError when it failed."""
        with self.answering():
            self.client.operations.wait_for_operation(operation)

    def websocket(self, operation: str, secret: str) -> websocket.WebSocket:
        """One of an operation's websockets, over the endpoint's unix socket or over TLS with drorch's client
        certificate, the server's pinned as for every other request (checked before the secret is sent)."""
        url = urlparse(self.ep.uri)
        resource = f"{operation}/websocket?secret={secret}"
        try:
            if url.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(TIMEOUT_S)
                sock.connect(url.path)
                return websocket.create_connection(f"ws://lxd{resource}", socket=sock, enable_multithread=True)
            server_cert, cert, key = self.ep.tls or ("", "", "")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # pinned below, as pylxd does
            context.load_cert_chain(cert, key)
            raw = socket.create_connection((url.hostname or "", url.port or 8443), timeout=TIMEOUT_S)
            tls = context.wrap_socket(raw, server_hostname=url.hostname)
            pinned = ssl.PEM_cert_to_DER_cert(Path(server_cert).read_text())
            if tls.getpeercert(binary_form=True) != pinned:
                tls.close()
                raise SiteUnreachable(f"{self.where} answers with a certificate other than the one pinned "
                                      f"(lxd_tls.server_cert {server_cert})")
            return websocket.create_connection(f"wss://{url.netloc}{resource}", socket=tls, enable_multithread=True)
        except (OSError, websocket.WebSocketException) as exc:
            raise SiteUnreachable(f"{self.where}: migration channel: {_reason(exc)}") from None

    def image_server(self) -> dict[str, str]:
        """Where another server pulls an image of this one from, with the certificate it checks."""
        return {"server": self._https(), "certificate": self.client.host_info["environment"]["certificate"]}

    def create(self, body: dict[str, Any]) -> None:
        """Create an instance from its `source`: an image, a migration (with `refresh`, bring an existing one up to
        date), or a copy of one of this server's instances or snapshots."""
        self.act("post", "instances", body=body)

    # --- snapshots -------------------------------------------------------------------------------------------

    def snapshots(self, name: str) -> list[str]:
        """The instance's snapshot names, oldest first."""
        try:
            found = self.get("instances", name, "snapshots", recursion=1)
        except LxdMissing:
            return []
        return [s["name"].split("/")[-1] for s in sorted(found, key=lambda s: s.get("created_at") or "")]

    def snapshot(self, name: str, snap: str) -> None:
        self.act("post", "instances", name, "snapshots", body={"name": snap, "stateful": False})

    def delete_snapshot(self, name: str, snap: str) -> None:
        self.act("delete", "instances", name, "snapshots", snap)

    # --- the host --------------------------------------------------------------------------------------------

    def names(self, collection: str) -> list[str]:
        return [str(u).rstrip("/").split("/")[-1] for u in self.get(collection)]

    def networks(self) -> list[dict[str, Any]]:
        return [dict(n) for n in self.get("networks", recursion=1)]

    def resources(self) -> dict[str, Any]:
        return dict(self.get("resources"))

    def image_aliases(self) -> list[str]:
        return [str(a["name"]) for a in self.get("images", "aliases", recursion=1)]

    def image_fingerprints(self) -> list[str]:
        return self.names("images")

    def managed_networks(self) -> list[str]:
        """The networks LXD made, not every interface of the host it lists too."""
        return [str(n["name"]) for n in self.get("networks", recursion=1) if n.get("managed")]

    def delete_network(self, name: str) -> bool:
        if name not in self.managed_networks():
            return False
        self.act("delete", "networks", name)
        return True

    def ensure_network(self, name: str, subnets: tuple[tuple[str, str], ...] = ()) -> None:
        """A bridge with no route out: a drill's clones reach each other and, at the gateway address of each of
        `subnets` (none: no address, no DHCP), the host."""
        if name not in self.managed_networks():
            config = {"ipv4.address": "none", "ipv6.address": "none"}
            for cidr, gateway in subnets:
                family = "ipv6" if ":" in cidr else "ipv4"
                config |= {f"{family}.address": f"{gateway}/{cidr.split('/')[1]}", f"{family}.nat": "false",
                           f"{family}.routing": "false"}
            self.act("post", "networks", body={"name": name, "type": "bridge", "config": config})

    def close(self) -> None:
        if "client" in self.__dict__:
            with contextlib.suppress(Exception):
                self.client.api.session.close()
