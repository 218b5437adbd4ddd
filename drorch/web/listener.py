"""The daemon's listener: /metrics, /healthz, /readyz and the pages (drorch.web.pages), all read from the state store.

It binds loopback unless told otherwise; any other address needs TLS (a certificate and its key) and a bearer
token read from a file that only its owner may read, or the daemon refuses to start. Served by the standard
library's WSGI server in threads of its own, so a flood of requests does not hold up the scheduler's jobs."""

from __future__ import annotations

import base64
import functools
import hmac
import html
import ipaddress
import logging
import re
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer
from sqlalchemy import select, text
from sqlmodel import col

from drorch import input_limits
from drorch.errors import DrorchError, InputError, UsageError
from drorch.model.records import SCHEDULER_LEASE, naive, utcnow
from drorch.store.rows import Lease
from drorch.store.sql_store import Store
from drorch.web._cached_reading import Fresh

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
log = logging.getLogger("drorch.web")
SHUTDOWN_POLL_S = 0.1  # how soon the listener notices it is asked to stop
T = TypeVar("T")
OPEN = ("/healthz", "/readyz")  # probes answer without the token: they say nothing of the estate


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    cert: Path | None = None
    key: Path | None = None
    token_file: Path | None = None

    @classmethod
    def parse(cls, value: str, cert: Path | None = None, key: Path | None = None,
              token_file: Path | None = None) -> Listen:
        """HOST:PORT, [IPv6]:PORT or PORT alone (loopback)."""
        found = re.fullmatch(r"(?:(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):)?(?P<port>[0-9]{1,5})", value)
        if found is None or not 0 < int(found["port"]) < 65536:
            raise UsageError(f"--listen {value!r}: give HOST:PORT, [IPv6]:PORT or PORT")
        return cls(found["v6"] or found["host"] or "127.0.0.1", int(found["port"]), cert, key, token_file)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def token(self) -> str | None:
        """The bearer token, checked as the listener demands: none on loopback, required anywhere else."""
        if not self.loopback and (self.cert is None or self.key is None or self.token_file is None):
            raise UsageError(f"--listen {self.host}:{self.port} is not loopback: it needs --tls-cert, --tls-key and "
                             "--token-file (a bearer token in a file only its owner may read)")
        for kind, path in (("TLS certificate", self.cert), ("TLS key", self.key)):
            if path is not None:
                _checked(kind, functools.partial(input_limits.check_file, path, input_limits.MAX_SECRET_BYTES))
        if self.token_file is None:
            return None
        token_file = self.token_file
        value = _checked("token file",
                         lambda: input_limits.read_text(token_file, input_limits.MAX_SECRET_BYTES, private=True))
        value = value.strip()
        if len(value) < 16:
            raise UsageError(f"token file {self.token_file}: the token must be at least 16 characters")
        return value


def _checked(kind: str, read: Callable[[], T]) -> T:
    """A file the listener needs, read (or checked) as input: one usage error naming it, never a hang."""
    try:
        return read()
    except InputError as exc:
        raise UsageError(f"{kind} {exc.problems[0]}") from None


class _Server(ThreadingWSGIServer):
    request_queue_size = 128  # many pages opened at once wait their turn rather than be refused
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that fails (a bad handshake, plain HTTP to TLS, a dropped connection) is one log line."""
        log.info("a request from %s failed: %s", client_address[0], sys.exc_info()[1])


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the daemon's log has one line per event, not per GET
        pass


class Web:
    """The listener: bound (or refused) at once, served from a thread until closed."""

    def __init__(self, listen: Listen, store: Store, metrics: Callable[[], bytes],
                 pages: Callable[[str], tuple[int, str, str] | None] | None = None, max_age_s: float = 1.0,
                 stale_s: float = 60.0) -> None:
        """`metrics` writes the exposition; a scrape is served the newest one (drorch.web._cached_reading): made at most
        `max_age_s` ago, or while a new one is made, at most `stale_s` ago."""
        self.listen = listen
        self.store = store
        self.pages = pages
        self._token = listen.token()
        self._metrics = Fresh(metrics, max_age_s, stale_s)
        try:
            self.server = make_server(listen.host, listen.port, self.app, _Server, _Quiet)
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}") from None
        if listen.cert is not None and listen.key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(listen.cert, listen.key)
            except (OSError, ssl.SSLError) as exc:
                self.server.server_close()
                raise UsageError(f"TLS certificate {listen.cert} or key {listen.key}: {exc}") from None
            # The handshake happens in the request's own thread, on its first read: a client that connects and says
            # nothing holds up no one else.
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self.server.serve_forever, args=(SHUTDOWN_POLL_S,), name="drorch-web",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def app(self, environ: Environ, start: StartResponse) -> Iterable[bytes]:
        """Every answer; a HEAD gets a GET's status and headers without its body."""
        answer = self._answer(environ, start)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else answer

    def _answer(self, environ: Environ, start: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):  # read-only: nothing here takes a request body
            return _answer(start, 405, "only GET and HEAD are served\n", [("Allow", "GET, HEAD")])
        if self._token is not None and path not in OPEN and not _carries(environ.get("HTTP_AUTHORIZATION", ""),
                                                                          self._token):
            asks = [("WWW-Authenticate", 'Basic realm="drorch", charset="UTF-8"'), ("WWW-Authenticate", "Bearer")]
            return _answer(start, 401, "a bearer token is needed (from a browser: the token as the password)\n", asks)
        try:
            if path == "/healthz":
                return _answer(start, 200, "ok\n")
            if path == "/readyz":
                why = self.unready()
                return _answer(start, 503 if why else 200, f"{why or 'ready'}\n")
            if path == "/metrics":
                return _answer(start, 200, self._metrics.get(), content_type=CONTENT_TYPE_LATEST)
            page = self.pages(path) if self.pages is not None else None
            if page is not None:
                return _answer(start, page[0], page[2], content_type=page[1])
            return _answer(start, 404, f"nothing at {html.escape(path)}\n")
        except DrorchError as exc:  # the store does not answer: say so, and keep serving
            return _answer(start, 503, f"{exc}\n")

    def unready(self) -> str:
        """Why this daemon's store is not fit to serve from, or '': the store answers and a leader's lease is
        current."""
        with self.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            lease = conn.execute(select(col(Lease.expires_at)).where(col(Lease.name) == SCHEDULER_LEASE)).first()
        if lease is None:
            return "no daemon has led yet"
        late = naive(utcnow()) - naive(lease.expires_at)
        if late > timedelta(0):
            return f"the leader's lease ran out {late.total_seconds():.0f} s ago: no daemon leads"
        return ""


def _carries(authorization: str, token: str) -> bool:
    """A bearer token (Prometheus's `authorization`), or Basic with the token as the password under any user name:
    the one way a browser can be asked for a secret without a script of ours holding it."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode().partition(":")[2]
        except ValueError:
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def _answer(start: StartResponse, status: int, body: str | bytes, headers: list[tuple[str, str]] | None = None,
            content_type: str = "text/plain; charset=utf-8") -> list[bytes]:
    reasons = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    data = body.encode() if isinstance(body, str) else body
    start(f"{status} {reasons.get(status, '')}", [("Content-Type", content_type), ("Content-Length", str(len(data))),
                                                   ("X-Content-Type-Options", "nosniff"), *(headers or [])])
    return [data]
