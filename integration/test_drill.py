"""DR drills on the real lab: scheduled under `drorch daemon`, clones isolated on site b while the originals
count on at site a, a report with RTO and checks, nothing left behind, also when the daemon is killed;
and two daemons sharing one PostgreSQL store."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import docker
import libvirt
import pytest
import yaml

from integration import lab_base, labctl
from integration.postgres import Cluster
from integration.support.lab_views import (
    DRORCH,
    LAB_PLAYBOOK,
    REPO,
    Drorch,
    container_counts,
    vm_counts,
    wait_until,
    where,
)

VM_CLONE, COUNTER_CLONE = f"{lab_base.VM_NAME}-drill-{{}}", f"{labctl.CHECKPOINT_CONTAINER}-drill-{{}}"


def drill_playbook(path: Path, every_s: float, hold_s: float, checks: bool = True) -> Path:
    """The lab playbook with a drill schedule and, for each workload, a check that it counts on."""
    doc = yaml.safe_load(LAB_PLAYBOOK.read_text())
    if checks:
        check = {"run": [sys.executable, "-m", "integration.drill_check", "40"], "timeout": 60, "drill": True}
        for w in doc["workloads"]:
            w["hooks"] = {"after": [check]}
    doc["drill"] = {"hold_s": hold_s}
    doc["schedules"] = [{"job": "drill", "every_s": every_s}]
    path.write_text(yaml.safe_dump(doc))
    return path


def leftovers(run_id: int | None = None) -> list[str]:
    """What drills made, on either site: domains, libvirt networks and volumes, containers, Docker networks."""
    tag = f"-drill-{run_id}" if run_id is not None else "-drill-"
    found = []
    for site in labctl.SITES.values():
        conn = libvirt.open(site.libvirt_uri)
        try:
            found += [f"{site.name}: domain {d.name()}" for d in conn.listAllDomains() if tag in d.name()]
            found += [f"{site.name}: network {n}" for n in conn.listNetworks() + conn.listDefinedNetworks()
                      if f"drorch{tag}" in n]
            for pool in conn.listAllStoragePools():
                found += [f"{site.name}: volume {v}" for v in pool.listVolumes() if tag in v]
        finally:
            conn.close()
        client = docker.DockerClient(base_url=site.docker_url)
        try:
            found += [f"{site.name}: container {c.name}" for c in client.containers.list(all=True) if tag in c.name]
            found += [f"{site.name}: docker network {n.name}" for n in client.networks.list()
                      if f"drorch{tag}" in (n.name or "")]
        finally:
            client.close()
    return found


def clones_up(run_id: int) -> bool:
    conn = libvirt.open(labctl.SITES["b"].libvirt_uri)
    try:
        active = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        vm_up = VM_CLONE.format(run_id) in [d.name() for d in active]
    finally:
        conn.close()
    client = docker.DockerClient(base_url=labctl.SITES["b"].docker_url)
    try:
        running = [c.name for c in client.containers.list()]
    finally:
        client.close()
    return vm_up and COUNTER_CLONE.format(run_id) in running


def consecutive(counts: list[int]) -> bool:
    """The original never stopped or started again: its counter went up by one each second."""
    return len(counts) > 1 and all(b == a + 1 for a, b in itertools.pairwise(counts))


def assert_isolated(run_id: int) -> None:
    network = f"drorch-drill-{run_id}"
    b = libvirt.open(labctl.SITES["b"].libvirt_uri)
    a = libvirt.open(labctl.SITES["a"].libvirt_uri)
    try:
        dom = ET.fromstring(b.lookupByName(VM_CLONE.format(run_id)).XMLDesc(0))
        ifaces = dom.findall("./devices/interface")
        assert ifaces and all(i.find("source").get("network") == network for i in ifaces)  # type: ignore[union-attr]
        net = ET.fromstring(b.networkLookupByName(network).XMLDesc(0))
        assert net.find("forward") is None and net.find("ip") is None  # no route out, no address
        assert network not in a.listNetworks() + a.listDefinedNetworks()
    finally:
        a.close()
        b.close()
    client = docker.DockerClient(base_url=labctl.SITES["b"].docker_url)
    try:
        clone = client.containers.get(COUNTER_CLONE.format(run_id))
        assert clone.attrs["HostConfig"]["NetworkMode"] == "none" and not clone.attrs["HostConfig"]["PortBindings"]
    finally:
        client.close()


def report(run_drorch: Drorch, run_id: int) -> dict[str, object]:
    res = run_drorch("report", str(run_id), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def start_daemon(playbook: Path, env: dict[str, str], lease_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen([str(DRORCH), "daemon", "run", str(playbook), "--lease-s", str(lease_s)], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def events(log: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("fresh_lab")
def test_scheduled_drills_run_isolated_and_leave_nothing(run_drorch: Drorch, state_dir: Path,
                                                         tmp_path: Path) -> None:
    playbook = drill_playbook(tmp_path / "drilled.yaml", every_s=20, hold_s=8)
    shipped = run_drorch("protect", "ship", str(playbook))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
    vm_before, counter_before = vm_counts("a")[-1], container_counts("a", labctl.CHECKPOINT_CONTAINER)[-1]
    daemon = start_daemon(playbook, env, lease_s=3)
    logs = []
    try:
        wait_until(lambda: clones_up(1), "the first drill's clones on site b", timeout=90)
        assert_isolated(1)
        wait_until(lambda: len(vm_counts("b", VM_CLONE.format(1))) >= 2, "the VM clone counting")
        wait_until(lambda: len(container_counts("b", COUNTER_CLONE.format(1))) >= 1, "the container clone counting")
        first = container_counts("b", COUNTER_CLONE.format(1))
        assert first and first[0] > 1  # restored from its checkpoint, not started afresh
        assert where(lab_base.VM_NAME)["vms"] == ["a"] and where(labctl.CHECKPOINT_CONTAINER)["containers"] == ["a"]

        wait_until(lambda: report(run_drorch, 1)["state"] != "running", "the first drill to end", timeout=90)
        doc = report(run_drorch, 1)
        assert doc["state"] == "succeeded" and doc["passed"] is True and doc["mode"] == "drill", doc
        assert set(doc["workload_rto_s"]) == {f"vm/{lab_base.VM_NAME}", *(f"container/{c}" for c in labctl.CONTAINERS)}
        assert doc["rto_s"] is not None and 0 < float(doc["rto_s"]) < 60  # type: ignore[arg-type]
        checks = [c for r in doc["steps"] for c in r["checks"] or []]  # type: ignore[attr-defined]
        assert len(checks) == 6 and all(c["ok"] for c in checks)  # running + counting, for each of three
        assert leftovers(1) == []

        page = tmp_path / "drill.html"
        assert run_drorch("report", "1", "--html", str(page)).returncode == 0
        assert "<svg" in page.read_text() and f"vm/{lab_base.VM_NAME}" in page.read_text()

        wait_until(lambda: clones_up(2), "the second drill's clones", timeout=90)
        daemon.send_signal(signal.SIGKILL)  # in the middle of drill 2
        logs.append(daemon.communicate(timeout=30)[1])
        assert leftovers(2), "drill 2 had clones up when its daemon was killed"

        daemon = start_daemon(playbook, env, lease_s=3)
        wait_until(lambda: report(run_drorch, 2)["state"] != "running", "drill 2 cleaned up", timeout=60)
        doc = report(run_drorch, 2)
        assert doc["state"] == "failed" and "interrupted" in str(doc["error"])
        assert leftovers(2) == []
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)  # a drill under way stops and tears down
            logs.append(daemon.communicate(timeout=120)[1])
    assert daemon.returncode == 0, logs[-1]
    assert leftovers() == []  # nothing of any drill, on either site
    runs = json.loads(run_drorch("history", "--json").stdout)
    assert all(r["state"] != "running" for r in runs)
    assert consecutive([n for n in vm_counts("a") if n >= vm_before])  # the originals never stopped
    assert consecutive([n for n in container_counts("a", labctl.CHECKPOINT_CONTAINER) if n >= counter_before])
    assert where(lab_base.VM_NAME)["vms"] == ["a"]


def leader(env: dict[str, str]) -> str | None:
    res = subprocess.run([str(DRORCH), "daemon", "status", "--json"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    rows = json.loads(res.stdout)["daemons"] if res.stdout.strip() else []
    live = [d["daemon"] for d in rows if d["leader"] and not d["stopped"]]
    return live[0] if live else None


DRILL_BOUNDARIES = 8  # the lab playbook's three clones and the teardown, each recorded before and after it acts


@pytest.mark.parametrize("boundary", range(1, DRILL_BOUNDARIES + 2))
def test_a_drill_killed_at_a_step_boundary_is_torn_down_by_the_next(
        fresh_lab: None, run_drorch: Drorch, state_dir: Path, tmp_path: Path, boundary: int) -> None:
    """SIGKILL at the Nth transition of a drill: the next drill tears down what it left and passes, and nothing
    of either stays on a site. One boundary past the last, the drill ends untouched: every boundary was
    covered."""
    path = drill_playbook(tmp_path / "drill.yaml", every_s=3600, hold_s=0, checks=False)
    shipped = run_drorch("protect", "ship", str(path))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir), "DRORCH_TEST_KILL_AT": str(boundary)}
    killed = subprocess.run([str(DRORCH), "drill", str(path)], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=300)
    dies = boundary <= DRILL_BOUNDARIES
    assert killed.returncode == (-9 if dies else 0), killed.stdout + killed.stderr
    again = run_drorch("drill", str(path), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    first = report(run_drorch, 1)
    assert first["state"] == ("failed" if dies else "succeeded"), first
    assert leftovers() == []


@pytest.mark.usefixtures("fresh_lab")
def test_two_daemons_on_postgresql_run_each_drill_once(postgres: Cluster, tmp_path: Path) -> None:
    url = postgres.new_database("drorch_two_daemons")
    env = {**os.environ, "DRORCH_DB_URL": url}
    playbook = drill_playbook(tmp_path / "drilled.yaml", every_s=10, hold_s=0, checks=False)
    shipped = subprocess.run([str(DRORCH), "protect", "ship", str(playbook)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    lease_s = 6.0
    first = start_daemon(playbook, env, lease_s)
    wait_until(lambda: leader(env) == f"{os.uname().nodename}:{first.pid}", "the first daemon leading")
    second = start_daemon(playbook, env, lease_s)
    daemons = [first, second]
    logs: dict[int, str] = {}
    from drorch.store.sql_store import Store

    store = Store(url)
    try:
        wait_until(lambda: sum(r.state != "running" for r in store.runs_of("drill")) >= 2, "two drills",
                   timeout=120)
        first.send_signal(signal.SIGTERM)  # the leader stops; the other takes over
        logs[first.pid] = first.communicate(timeout=120)[1]
        stopped = time.monotonic()
        wait_until(lambda: leader(env) == f"{os.uname().nodename}:{second.pid}", "the second daemon leading",
                   timeout=lease_s * 2)
        took = time.monotonic() - stopped
        assert took <= lease_s, f"took over after {took:.1f} s"
        done = sum(r.state != "running" for r in store.runs_of("drill"))
        wait_until(lambda: sum(r.state != "running" for r in store.runs_of("drill")) >= done + 2,
                   "two drills under the second daemon", timeout=120)
    finally:
        for d in daemons:
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
                logs[d.pid] = d.communicate(timeout=120)[1]
    runs = store.runs_of("drill")
    fired = [e for log in logs.values() for e in events(log) if e.get("event") == "job ended"]
    scheduled = [str(e["scheduled"]) for e in fired]
    assert len(scheduled) == len(set(scheduled)) == len(runs) >= 4, (scheduled, [r.id for r in runs])
    assert {r.pid for r in runs} == {first.pid, second.pid}
    ordered = sorted(runs, key=lambda r: r.started_at)
    for before, after in itertools.pairwise(ordered):
        assert before.ended_at is not None and before.ended_at <= after.started_at  # never two at once
    assert all(r.state in ("succeeded", "aborted") for r in runs), [(r.id, r.state, r.error) for r in runs]
    assert leftovers() == []
