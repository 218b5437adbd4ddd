"""One writer on this machine feeding one sequence to the lab group's members: transaction n appends n to the
VM's /data/seq (with its checksum, through the guest agent) and puts a file named n in each container's
/data/seq (Docker's archive API), all three at once, and ends when all three hold it. A group's pre_freeze hook
asks it to stop at a transaction's end and its post_thaw lets it go on (`integration.seq_control`). Its files in
DIR: pause (asked), paused (done: the last n), written (the last n), stop.

    python -m integration.seq_writer run DIR
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import libvirt
import libvirt_qemu
from docker.errors import APIError
from docker.models.containers import Container

from integration.lab_base import SITES
from integration.lab_group import DB, SEQ


def checksum(n: int) -> str:
    return hashlib.md5(str(n).encode()).hexdigest()[:8]


def whole(record: str) -> bool:
    """A VM record `n checksum` as the writer wrote it."""
    n, _, digest = record.partition(" ")
    return n.isdigit() and digest == checksum(int(n))


def agent(dom: libvirt.virDomain, execute: str, **arguments: object) -> Any:
    """What the guest agent returns for a command (JSON)."""
    said = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": execute, "arguments": arguments}), 5, 0)
    return json.loads(said).get("return")


def in_guest(dom: libvirt.virDomain, script: str) -> str:
    """A shell script run in the guest through its agent, waited for; its output. libvirtError when the agent
    refuses (a frozen guest's agent runs no command)."""
    pid = agent(dom, "guest-exec", path="/bin/sh", arg=["-c", script], **{"capture-output": True})["pid"]
    while True:
        status = agent(dom, "guest-exec-status", pid=pid)
        if status.get("exited"):
            return base64.b64decode(str(status.get("out-data") or "")).decode()
        time.sleep(0.01)


def _put(path: Path, text: str) -> None:
    """Written whole before anyone sees it."""
    path.with_suffix(".new").write_text(text)
    path.with_suffix(".new").rename(path)


def _into_guest(dom: libvirt.virDomain, n: int) -> None:
    while True:  # a guest frozen without asking the writer first refuses; the transaction waits for it
        try:
            in_guest(dom, f"echo '{n} {checksum(n)}' >> /data/seq")
            return
        except libvirt.libvirtError:
            time.sleep(0.02)


def _into_container(container: Container, n: int) -> None:
    """n as a file of its own in the container's /data/seq, through Docker's archive API: no process runs in the
    container for it, so a pause (or a CRIU dump) never meets a write half-started inside."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.addfile(tarfile.TarInfo(str(n)), io.BytesIO(b""))
    while True:
        try:
            if container.put_archive("/data/seq", data.getvalue()):
                return
        except APIError:
            pass
        time.sleep(0.02)


def run(folder: Path) -> None:
    """Transactions until DIR/stop: n written to all three members at once, the next only once all hold it."""
    conn = libvirt.open(SITES["a"].libvirt_uri)
    dom = conn.lookupByName(DB)
    members = [docker.DockerClient(base_url=SITES["a"].docker_url).containers.get(name) for name in SEQ]
    n = 0
    with ThreadPoolExecutor(max_workers=len(members) + 1) as pool:
        while not (folder / "stop").exists():
            if (folder / "pause").exists():
                _put(folder / "paused", str(n))
                while (folder / "pause").exists() and not (folder / "stop").exists():
                    time.sleep(0.005)
                (folder / "paused").unlink(missing_ok=True)
                continue
            n += 1
            writes = [pool.submit(_into_guest, dom, n), *(pool.submit(_into_container, c, n) for c in members)]
            for w in writes:
                w.result()
            _put(folder / "written", str(n))

if __name__ == "__main__":
    run(Path(sys.argv[2]))
