"""A stand-in LXD on a unix socket, for what no real LXD would answer: a server description that is not an object,
an endless answer without a Content-Type. It answers GET /1.0, as pylxd's client asks first, and nothing else."""

from __future__ import annotations

import json
import socketserver
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.support.standin_docker import serving


@dataclass
class LxdBehaviour:
    metadata: Any = None  # what GET /1.0 says the server is
    endless: bool = False  # GET /1.0 streams without end, with no Content-Type
    streamed_bytes: int = 0


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(behaviour: LxdBehaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

        def do_GET(self) -> None:
            self.send_response(200)
            if behaviour.endless:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b'{"metadata": "' + b"x" * (1 << 20)
                deadline = time.monotonic() + 60
                try:
                    while time.monotonic() < deadline:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        behaviour.streamed_bytes += len(chunk)
                        chunk = b"x" * (1 << 20)
                except OSError:
                    pass
                return
            data = json.dumps({"type": "sync", "status": "Success", "status_code": 200,
                               "metadata": behaviour.metadata}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def standin_lxd(behaviour: LxdBehaviour, folder: Path) -> Iterator[str]:
    """The stand-in's endpoint (unix://PATH) while the block runs."""
    path = folder / "lxd.socket"
    with serving(_Server(str(path), _handler(behaviour))):
        yield f"unix://{path}"
