"""An instance sent from one LXD server to another: pulled by the target, or relayed through drorch.

By default the target pulls from the source's HTTPS address. Where the two servers cannot reach each other
(`lxd_relay: true` on either host), the source is asked for a migration as for a pull, the target to take one
pushed to it, and drorch joins each of the target's websockets (control, filesystem, CRIU state) to the source's
of the same name and carries every message across, as LXD's own client does in its relay mode. The bytes that
cross are counted for the move's progress. drorch reads no file of either site either way.
"""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Callable
from typing import Any

import websocket

from drorch.drivers.lxd._lxd_api import LxdError, LxdSite

PUMP_JOIN_S = 10.0  # how long a pump may take to notice its sockets closed once both operations ended
WAIT_S = 1.0  # a reader looks again this often whether its socket was shut


def send(src: LxdSite, dst: LxdSite, name: str, body: dict[str, Any], live: bool, refresh: bool,
         count: Callable[[int], None] | None = None) -> None:
    """`name` on `src` made (or, with `refresh`, brought up to date) on `dst` as `body` describes it. Its
    snapshots stay where they were taken, and those on `dst` as they are: each names its own site's networks and
    pools, which the other site may lack."""
    if not (src.ep.relay or dst.ep.relay):
        source = src.source_of(name, live=live)
        dst.create({**body, "source": {**source, "refresh": refresh} if refresh else source})
        return
    relay(src, dst, name, body, live, refresh, count)


def relay(src: LxdSite, dst: LxdSite, name: str, body: dict[str, Any], live: bool, refresh: bool,
          count: Callable[[int], None] | None) -> None:
    out, out_secrets = src.migration(name, live=live)
    push = {"type": "migration", "mode": "push", "live": live, "instance_only": True, "refresh": refresh}
    into, into_secrets = dst.begin("instances", body={**body, "source": push})
    missing = sorted(set(into_secrets) - set(out_secrets))
    if missing or "control" not in into_secrets:
        raise LxdError(f"{dst.where} expects migration channels {', '.join(missing) or 'control'} that "
                       f"{src.where} does not offer")
    sockets: list[websocket.WebSocket] = []
    pumps: list[threading.Thread] = []
    try:
        for channel, secret in into_secrets.items():
            a, b = _Side(src.websocket(out, out_secrets[channel])), _Side(dst.websocket(into, secret))
            sockets += [a.ws, b.ws]
            pumps += [_pump(a, b, count if channel == "fs" else None), _pump(b, a, None)]
        dst.wait(into)
        src.wait(out)
    finally:
        for ws in sockets:
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.shutdown()  # type: ignore[no-untyped-call]  # websocket-client leaves it unannotated
        for pump in pumps:
            pump.join(PUMP_JOIN_S)


class _Side:
    """One websocket, used by two pumps: one reads it, the other writes it. A TLS connection must not be read and
    written at once from two threads, so each read or write holds its lock; a reader waits for data to be there
    before it takes the lock, so a writer is never held up by a quiet line."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.lock = threading.Lock()

    def receive(self) -> tuple[int, bytes]:
        sock = self.ws.sock
        while sock is not None and not getattr(sock, "pending", lambda: 0)():
            if select.select([sock], [], [], WAIT_S)[0]:
                break
        with self.lock:
            opcode, data = self.ws.recv_data()
        return opcode, data

    def send(self, data: bytes, opcode: int) -> None:
        with self.lock:
            self.ws.send(data, opcode)

    def send_close(self) -> None:
        with self.lock:
            self.ws.send_close()


def _pump(a: _Side, b: _Side, count: Callable[[int], None] | None) -> threading.Thread:
    """Every message `a` sends, sent on to `b` as it came (binary, or text: an empty one ends one object of a
    stream that carries several); `a` closing is sent on to `b` too, whose own answer the other pump carries
    back. The sockets themselves are shut once both operations have ended."""
    def carry() -> None:
        try:
            while True:
                opcode, data = a.receive()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                b.send(data, opcode)
                if count is not None:
                    count(len(data))
        except (websocket.WebSocketException, OSError, ValueError):
            pass  # a side went away (or was shut: select is then given no socket): its operation says why
        finally:
            with contextlib.suppress(websocket.WebSocketException, OSError):
                b.send_close()

    thread = threading.Thread(target=carry, name="drorch-lxd-relay", daemon=True)
    thread.start()
    return thread
