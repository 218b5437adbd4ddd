"""A stand-in Docker Engine API on loopback, for what no real daemon would answer: container and network names
with control characters, an endless or endlessly nested JSON document whatever its Content-Type, answers of the
wrong shape, redirects, a create that never answers. It answers the calls the container driver's inventory and
a redeploy's first steps make, and nothing else."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass
class Behaviour:
    containers: list[str] = field(default_factory=list)  # names, running, each 1 vCPU and 64 MiB
    nano_cpus: int = 10**9  # what each container's HostConfig.NanoCpus says
    networks: list[str] = field(default_factory=list)
    endless: bool = False  # /containers/json streams a JSON list that never ends
    content_type: str | None = "application/json"  # what the endless answer says it is (None: no header)
    deep: bool = False  # /containers/json answers a list nested two million deep
    garbled: bool = False  # /containers/json answers a list of numbers
    redirect: str | None = None  # every GET is answered with a redirect there
    hang_create: bool = False  # POST /containers/create is taken and never answered
    streamed_bytes: int = 0  # how much of the endless list was sent before the client hung up
    requests: list[str] = field(default_factory=list)  # method and path of every request, in order


def _inspect(name: str, nano_cpus: int) -> dict[str, Any]:
    return {"Id": name, "Name": f"/{name}", "State": {"Running": True},
            "Config": {"Image": "busybox", "Labels": {}},
            "HostConfig": {"Memory": 64 << 20, "NanoCpus": nano_cpus, "NetworkMode": "default"},
            "NetworkSettings": {"Networks": {}}, "Mounts": []}


def _handler(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _json(self, body: Any) -> None:
            self._json_text(json.dumps(body))

        def _json_text(self, text: str) -> None:
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _endless(self) -> None:
            self.send_response(200)
            if behaviour.content_type is not None:
                self.send_header("Content-Type", behaviour.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            item = json.dumps({"Id": "x" * 1000, "Names": ["/x"], "Labels": {}}).encode() + b","
            chunk = b"[" + item * 1000
            deadline = time.monotonic() + 60  # bounded: the stand-in stops by itself
            try:
                while time.monotonic() < deadline:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    behaviour.streamed_bytes += len(chunk)
                    chunk = item * 1000
            except OSError:  # the client hung up, as it should
                pass

        def _listed(self, path: str) -> str:
            """The listed container an inspect asks for, or ''."""
            name = unquote(path.split("/containers/", 1)[1].rsplit("/json", 1)[0])
            return name if name in behaviour.containers else ""

        def do_POST(self) -> None:
            behaviour.requests.append(f"POST {self.path}")
            if self.path.split("?")[0].endswith("/containers/create") and behaviour.hang_create:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(130)  # past any timeout of drorch's: the client gives up first
                return
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            behaviour.requests.append(f"GET {self.path}")
            path = self.path.split("?")[0]
            if behaviour.redirect is not None:
                self.send_response(302)
                self.send_header("Location", behaviour.redirect + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/_ping":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
            elif path.endswith("/info"):
                self._json({"NCPU": 8, "MemTotal": 16 << 30, "ExperimentalBuild": True, "DockerRootDir": "/x"})
            elif path.endswith("/networks"):
                self._json([{"Name": n} for n in behaviour.networks])
            elif path.endswith("/images/json"):
                self._json([{"RepoTags": ["busybox:latest"]}])
            elif "/images/" in path and path.endswith("/json"):
                self._json({"Id": "sha256:0", "RepoTags": ["busybox:latest"], "Size": 1})
            elif path.endswith("/containers/json") and behaviour.deep:
                self._json_text("[" * 2_000_000 + "]" * 2_000_000)
            elif path.endswith("/containers/json") and behaviour.endless:
                self._endless()
            elif path.endswith("/containers/json"):
                listed = [1, 2, 3] if behaviour.garbled else [
                    {"Id": n, "Names": [f"/{n}"], "Labels": {}} for n in behaviour.containers]
                self._json(listed)
            elif path.endswith("/json") and "/containers/" in path and self._listed(path):
                self._json(_inspect(self._listed(path), behaviour.nano_cpus))
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    return Handler


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """A stand-in served from a thread of its own while the block runs, then shut."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def standin_docker(behaviour: Behaviour) -> Iterator[str]:
    """The stand-in's endpoint (tcp://127.0.0.1:PORT) while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    server.daemon_threads = True
    with serving(server):
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
