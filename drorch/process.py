"""Facts about processes on this machine."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs here; a zombie does not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def run_alive(host: str, pid: int, here: str) -> bool:
    """Whether the process that runs a run still does (a run of another machine is taken to be alive)."""
    return host != here or pid_alive(pid)


def owner() -> str:
    """This process as the things it makes are labelled with: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    """Whether the process an `owner()` label names still runs (one of another machine is taken to); a label that
    names no process does not."""
    host, sep, pid = owner.rpartition(":")
    return bool(sep and pid.isdigit()) and run_alive(host, int(pid), socket.gethostname())


def kill_at() -> int | None:
    """DRORCH_TEST_KILL_AT, the fault-injection hook of the tests: SIGKILL at that step transition of a run (the
    command's, or a daemon's automatic one)."""
    value = os.environ.get("DRORCH_TEST_KILL_AT")
    return int(value) if value else None
