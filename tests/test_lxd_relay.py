"""An LXD migration relayed through drorch, over stand-ins for the two servers and their websockets: each of the
target's channels is joined to the source's of that name, messages cross both ways as they came, the filesystem's
bytes are counted, and a pull is asked for when no host wants a relay."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import websocket

from drorch.drivers.base import Endpoint
from drorch.drivers.lxd._lxd_api import LxdError
from drorch.drivers.lxd._lxd_relay import send

CLOSE = (websocket.ABNF.OPCODE_CLOSE, b"")


class End:
    """A server's websocket as drorch holds it: what the server sends waits in `inbox`, what drorch sends it is
    `got`."""

    sock = None  # nothing to wait on: the inbox answers at once

    def __init__(self) -> None:
        self.inbox: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self.got: list[tuple[int, bytes]] = []

    def recv_data(self) -> tuple[int, bytes]:
        return self.inbox.get(timeout=5)

    def send(self, data: bytes, opcode: int) -> None:
        self.got.append((opcode, data))

    def send_close(self) -> None:
        self.got.append(CLOSE)

    def shutdown(self) -> None:
        self.inbox.put(CLOSE)


@dataclass
class Server:
    """A stand-in LXD: its migration operation's channels, each an End drorch's relay connects to."""

    name: str
    relay: bool
    channels: dict[str, list[tuple[int, bytes]]]  # channel -> what this server sends on it
    ends: dict[str, End] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    made: dict[str, Any] = field(default_factory=dict)

    @property
    def ep(self) -> Endpoint:
        return Endpoint(self.name, f"https://{self.name}:8443", engine="lxd", relay=self.relay)

    @property
    def where(self) -> str:
        return f"site {self.name}"

    def migration(self, name: str, live: bool) -> tuple[str, dict[str, str]]:
        self.calls.append(f"migration {name} live={live}")
        return f"/1.0/operations/{self.name}-op", {c: f"{self.name}-{c}" for c in self.channels}

    def begin(self, *path: str, body: dict[str, Any]) -> tuple[str, dict[str, str]]:
        self.made = body
        return f"/1.0/operations/{self.name}-op", {c: f"{self.name}-{c}" for c in self.channels}

    def websocket(self, operation: str, secret: str) -> End:
        channel = secret.removeprefix(f"{self.name}-")
        end = self.ends[channel] = End()
        for message in self.channels[channel]:
            end.inbox.put(message)
        end.inbox.put(CLOSE)
        return end

    def wait(self, operation: str) -> None:
        self.calls.append(f"waited {operation}")

    def source_of(self, name: str, live: bool) -> dict[str, Any]:
        return {"type": "migration", "mode": "pull", "operation": "op"}

    def create(self, body: dict[str, Any]) -> None:
        self.made = body


def pair(relay: bool, target_channels: tuple[str, ...] = ("control", "fs")) -> tuple[Server, Server]:
    src = Server("a", False, {"control": [(websocket.ABNF.OPCODE_BINARY, b"header")],
                              "fs": [(websocket.ABNF.OPCODE_BINARY, b"x" * 1000), (websocket.ABNF.OPCODE_TEXT, b"t")]})
    dst = Server("b", relay, {c: [(websocket.ABNF.OPCODE_BINARY, b"ack")] for c in target_channels})
    return src, dst


def test_a_relay_carries_every_message_both_ways_and_counts_the_filesystem() -> None:
    src, dst = pair(relay=True)
    sent: list[int] = []
    lock = threading.Lock()

    def count(n: int) -> None:
        with lock:
            sent.append(n)

    send(src, dst, "web", {"name": "web"}, live=False, refresh=True, count=count)  # type: ignore[arg-type]
    assert dst.made["source"] == {"type": "migration", "mode": "push", "live": False, "instance_only": True,
                                  "refresh": True}
    assert dst.ends["fs"].got == [(websocket.ABNF.OPCODE_BINARY, b"x" * 1000), (websocket.ABNF.OPCODE_TEXT, b"t"),
                                  CLOSE]  # the source's close went on to the target
    assert dst.ends["control"].got == [(websocket.ABNF.OPCODE_BINARY, b"header"), CLOSE]
    assert src.ends["control"].got == [(websocket.ABNF.OPCODE_BINARY, b"ack"), CLOSE]  # the target's answer went back
    assert sum(sent) == 1001  # the filesystem's bytes, not the control channel's
    assert src.calls == ["migration web live=False", "waited /1.0/operations/a-op"]


def test_a_target_that_wants_a_channel_the_source_lacks_is_refused() -> None:
    src, dst = pair(relay=True, target_channels=("control", "fs", "criu"))
    with pytest.raises(LxdError, match="site b expects migration channels criu that site a does not offer"):
        send(src, dst, "web", {"name": "web"}, live=True, refresh=False)  # type: ignore[arg-type]


def test_without_a_relay_the_target_pulls() -> None:
    src, dst = pair(relay=False)
    send(src, dst, "web", {"name": "web"}, live=False, refresh=True)  # type: ignore[arg-type]
    assert dst.made == {"name": "web", "source": {"type": "migration", "mode": "pull", "operation": "op",
                                                  "refresh": True}}
    assert dst.ends == {} and src.calls == []
