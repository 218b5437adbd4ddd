"""What the lab tests share: drorch run as a process against the lab, and the lab's workloads as the lab itself sees
them (their counters on each site, where each runs), waited for within bounds."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pylxd
from prometheus_client.parser import text_string_to_metric_families

from integration import lab_base, lab_lxd, lab_podman, labctl

Drorch = Callable[..., subprocess.CompletedProcess[str]]  # the run_drorch fixture: drorch as a process

REPO = Path(__file__).resolve().parents[2]
DRORCH = REPO / ".venv" / "bin" / "drorch"
LAB_PLAYBOOK = REPO / "playbooks" / "lab.yaml"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a daemon's /metrics by name, as Prometheus's own parser reads it."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as res:
        text = res.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def vm_counts(site: str, vm: str = lab_base.VM_NAME) -> list[int]:
    path = labctl.SITES[site].serial_log(vm)
    text = path.read_text(errors="replace") if path.exists() else ""
    return [int(n) for n in re.findall(r"^count (\d+)", text, re.M)]


def vm_disk_counts(site: str, vm: str = lab_base.VM_NAME) -> list[int]:
    """The counts the guest found on its disk at each boot on that site (its serial log since it started)."""
    path = labctl.SITES[site].serial_log(vm)
    text = path.read_text(errors="replace") if path.exists() else ""
    return [int(n) for n in re.findall(r"^disk (\d+)", text, re.M)]


def container_counts(site: str, name: str) -> list[int]:
    client = docker.DockerClient(base_url=labctl.SITES[site].docker_url)
    try:
        logs = client.containers.get(name).logs().decode()
    finally:
        client.close()
    return [int(n) for n in re.findall(r"^count (\d+)", logs, re.M)]


def podman_counts(site: str, name: str, since: float | None = None) -> list[int]:
    """The counts a container on the site's Podman printed, or those printed after `since` (a time.time()).
    A restored checkpoint brings the container's log along, so its first lines are older than its move."""
    api = lab_podman.client(labctl.SITES[site])
    try:
        logs = api.logs(name, since=int(since) if since else None).decode()
    finally:
        api.close()
    return [int(n) for n in re.findall(r"^count (\d+)", logs, re.M)]


def where(name: str) -> dict[str, list[str]]:
    """Sites where each kind of lab workload with this name runs, from the lab's own view."""
    st = labctl.status()
    return {
        "vms": [s for s, info in st.items() if name in info.get("vms", [])],  # type: ignore[union-attr]
        "containers": [s for s, info in st.items() if name in info.get("containers", [])],  # type: ignore[union-attr]
    }


def refresh(containers_only: bool = False) -> None:
    """Every lab daemon up and the workloads (or only the containers) new on site A, their counters past 3."""
    labctl.cmd_up(argparse.Namespace(reset=True, containers_only=containers_only))
    if not containers_only:
        wait_until(lambda: max(vm_counts("a"), default=0) >= 3, "the VM's counter")
    for name in labctl.CONTAINERS:
        wait_until(lambda n=name: max(container_counts("a", n), default=0) >= 3, f"{name}'s counter")
    for name in lab_podman.CONTAINERS:
        wait_until(lambda n=name: max(podman_counts("a", n), default=0) >= 3, f"{name}'s counter")
    wait_until(lambda: lxd_count("a") >= 3, f"{lab_lxd.CONTAINER}'s counter")


def lxd_count(site: str) -> int:
    """The LXD system container's count on that site, or 0 before it has one."""
    try:
        return lab_lxd.counter(labctl.SITES[site])
    except (pylxd.exceptions.LXDAPIException, ValueError):
        return 0


def drorch_env(state_dir: Path, kill_at: int | None = None) -> dict[str, str]:
    """drorch's environment in a test: the test's own state store (never a database the machine names), and
    with `kill_at` the fault-injection hook that kills it at that step transition."""
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
    env.pop("DRORCH_DB_URL", None)
    if kill_at is not None:
        env["DRORCH_TEST_KILL_AT"] = str(kill_at)
    return env


@contextlib.contextmanager
def drorch_process(state_dir: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """drorch running beside the test, its output piped; killed if the test leaves it running."""
    proc = subprocess.Popen([str(DRORCH), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=drorch_env(state_dir), cwd=REPO)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
