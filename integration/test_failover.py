"""`drorch failover` on the real lab: libvirtd + QEMU and dockerd + CRIU on two sites."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
from pathlib import Path

import docker
import pytest
import yaml

from drorch.drivers.containers.docker_engine import HELPER_LABEL
from drorch.store.sql_store import Store
from integration import lab_base, lab_libvirt, labctl
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


def last(counts: list[int]) -> int:
    assert counts, "no counter output yet"
    return counts[-1]


@pytest.mark.usefixtures("fresh_lab")
def test_failover_and_failback_keep_every_workload_going(run_drorch: Drorch, state_dir: Path) -> None:
    vm_before = last(vm_counts("a"))
    ctr_before = last(container_counts("a", labctl.CHECKPOINT_CONTAINER))

    res = run_drorch("failover", str(LAB_PLAYBOOK))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "run 1 succeeded" in res.stdout

    assert where(lab_base.VM_NAME)["vms"] == ["b"]
    for name in labctl.CONTAINERS:
        assert where(name)["containers"] == ["b"]
    # The VM's guest kept counting: site B's serial log goes on from where site A's stopped.
    wait_until(lambda: len(vm_counts("b")) >= 2, "the VM's counter on site b")
    first_b = vm_counts("b")[0]
    assert vm_before <= first_b <= last(vm_counts("a")) + 1
    assert first_b > 1
    # The checkpointed container's process went on: no restart from 1.
    wait_until(lambda: len(container_counts("b", labctl.CHECKPOINT_CONTAINER)) >= 2, "lab-counter on site b")
    ctr_b = container_counts("b", labctl.CHECKPOINT_CONTAINER)
    assert ctr_b[0] > ctr_before - 1 and ctr_b[0] > 1
    assert ctr_b == list(range(ctr_b[0], ctr_b[0] + len(ctr_b)))
    # The redeployed one was recreated from its image: a new process counting from 1.
    wait_until(lambda: len(container_counts("b", labctl.REDEPLOY_CONTAINER)) >= 1, "lab-redeploy on site b")
    assert container_counts("b", labctl.REDEPLOY_CONTAINER)[0] == 1

    # The run and each step are in the state store.
    store = Store(f"sqlite:///{state_dir / 'drorch.db'}")
    (run,) = store.runs()
    assert (run.operation, run.state, run.source_site, run.target_site) == ("failover", "succeeded", "a", "b")
    steps = store.steps(run.id or 0)
    assert [(s.workload, s.strategy, s.state) for s in steps] == [
        ("lab-vm", "live", "succeeded"),
        ("lab-counter", "checkpoint", "succeeded"),
        ("lab-redeploy", "redeploy", "succeeded"),
    ]
    assert steps[1].outcome == "running on site b (restored from checkpoint)"
    assert all(s.started_at and s.ended_at and s.ended_at >= s.started_at and s.handle for s in steps)
    assert steps[0].bytes_total and steps[0].bytes_total >= 128 << 20

    # Back home: the same machinery with the sites swapped, state continued again.
    vm_on_b = last(vm_counts("b"))
    res = run_drorch("failback", str(LAB_PLAYBOOK), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["operation"] == "failback" and report["state"] == "succeeded"
    assert where(lab_base.VM_NAME)["vms"] == ["a"]
    assert all(where(n)["containers"] == ["a"] for n in labctl.CONTAINERS)
    wait_until(lambda: len(vm_counts("a")) >= 2, "the VM's counter back on site a")
    assert vm_counts("a")[0] >= vm_on_b

    status = json.loads(run_drorch("status", str(LAB_PLAYBOOK), "--json").stdout)
    assert {r["workload"]: r["running_on"] for r in status["workloads"]} == {
        "lab-vm": ["a"], "lab-counter": ["a"], "lab-redeploy": ["a"]}
    history = json.loads(run_drorch("history", "--json").stdout)
    assert [(h["id"], h["operation"], h["state"]) for h in history] == [
        (2, "failback", "succeeded"), (1, "failover", "succeeded")]


def _vm_only_playbook(tmp_path: Path) -> Path:
    pb = yaml.safe_load(LAB_PLAYBOOK.read_text())
    pb["workloads"] = [w for w in pb["workloads"] if w["kind"] == "vm"]
    path = tmp_path / "vm-only.yaml"
    path.write_text(yaml.safe_dump(pb))
    return path


@pytest.mark.usefixtures("fresh_lab")
@pytest.mark.parametrize("daemon", ["libvirtd", "dockerd"])
def test_target_daemon_stopped_fails_cleanly_and_leaves_workloads_home(
    daemon: str, run_drorch: Drorch, state_dir: Path, tmp_path: Path
) -> None:
    labctl.cmd_stop(argparse.Namespace(site="b", daemon=daemon))
    try:
        res = run_drorch("failover", str(LAB_PLAYBOOK))
        # The workloads of the other technology still move: the run is partly done.
        assert res.returncode == 3, res.stdout + res.stderr
        (line,) = res.stderr.splitlines()
        b = labctl.SITES["b"]
        tech = f"libvirt at {b.libvirt_tls_uri}" if daemon == "libvirtd" else f"Docker at {b.docker_tls_url}"
        assert line.startswith("drorch: run 1 partial: ") and f"site b: {tech}" in line
        assert ("does not answer" in line or "refused the connection" in line) and "Traceback" not in res.stderr
        stopped = [lab_base.VM_NAME] if daemon == "libvirtd" else list(labctl.CONTAINERS)
        for name in stopped:
            assert where(name)["vms" if daemon == "libvirtd" else "containers"] == ["a"]
        steps = {s.workload: s for s in Store(f"sqlite:///{state_dir / 'drorch.db'}").steps(1)}
        for name in stopped:
            assert steps[name].state == "failed" and "site b" in (steps[name].error or "")
        if daemon == "libvirtd":
            res = run_drorch("failover", str(_vm_only_playbook(tmp_path)))
            assert res.returncode == 1 and len(res.stderr.splitlines()) == 1
            assert where(lab_base.VM_NAME)["vms"] == ["a"]
    finally:
        labctl.cmd_start(argparse.Namespace(site="b", daemon=daemon))


@pytest.mark.usefixtures("lab")
def test_malformed_playbook_names_file_line_and_problem(run_drorch: Drorch, state_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(LAB_PLAYBOOK.read_text().replace("strategy: checkpoint", "strategy: teleport"))
    res = run_drorch("failover", str(bad))
    assert res.returncode == 2
    line = next(n for n, text in enumerate(LAB_PLAYBOOK.read_text().splitlines(), 1)
                if text.startswith("    strategy: checkpoint"))
    assert res.stderr == (f"{bad}:{line}:15: workloads.1.strategy: Input should be 'live', 'cold', 'replica', "
                          "'checkpoint', 'redeploy', 'copy' or 'stateful'\n")
    assert "Traceback" not in res.stderr
    assert not (state_dir / "drorch.db").exists()  # refused before anything was recorded or touched


@pytest.mark.usefixtures("fresh_lab")
def test_readme_first_command_ends_with_workloads_on_site_b() -> None:
    readme = (REPO / "README.md").read_text()
    command = readme.split("```sh\n", 1)[1].split("```", 1)[0].strip()
    assert "integration/lab up" in command and "drorch failover playbooks/lab.yaml" in command
    res = subprocess.run(["bash", "-ec", command], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert where(lab_base.VM_NAME)["vms"] == ["b"]
    assert all(where(n)["containers"] == ["b"] for n in labctl.CONTAINERS)


@pytest.mark.usefixtures("fresh_lab")
def test_vms_move_side_by_side_with_their_disks(run_drorch: Drorch, tmp_path: Path) -> None:
    """Four VMs in one wave with parallel 4: their disks are built in site b's pool at once, which libvirt
    refuses to refresh meanwhile; all land, and their guests keep counting."""
    vms = lab_libvirt.vm_names(4)
    labctl.ensure_workloads(vms=len(vms))
    try:
        for vm in vms:
            wait_until(lambda vm=vm: len(vm_counts("a", vm)) >= 2, f"{vm}'s counter")
        pb = yaml.safe_load(LAB_PLAYBOOK.read_text())
        pb["sites"]["a"]["hosts"][0]["capacity"] = {"vcpus": 8, "memory_mib": 4096}  # the sites share 2 cores
        pb["waves"] = [{"name": "vms", "parallel": len(vms)}]
        pb["workloads"] = [{"name": vm, "kind": "vm", "strategy": "live", "wave": "vms"} for vm in vms]
        path = tmp_path / "two.yaml"
        path.write_text(yaml.safe_dump(pb))
        for target, op in (("b", "failover"), ("a", "failback")):
            res = run_drorch(op, str(path), "--json")
            assert res.returncode == 0, res.stdout + res.stderr
            steps = json.loads(res.stdout)["steps"]
            # Side by side: each started before the first ended.
            assert all(s["started_at"] < steps[0]["ended_at"] for s in steps), steps
            for vm in vms:
                assert where(vm)["vms"] == [target]
                wait_until(lambda vm=vm, t=target: len(vm_counts(t, vm)) >= 2, f"{vm} counting on site {target}")
    finally:
        labctl.remove_extra_vms()


@pytest.mark.usefixtures("fresh_lab")
def test_a_run_whose_target_dockerd_restarts_midway_ends_with_every_container_running_once(
        run_drorch: Drorch, state_dir: Path, tmp_path: Path) -> None:
    """Twelve checkpointed containers, four at a time; site b's dockerd is stopped once three have moved (the moved
    ones die with it) and started again. Neither the run nor its resume may say a container runs on site b while
    it does not; after the resume every container runs exactly once, on site b, nothing of drorch's is left on
    either daemon, and what the run says of each matches what the daemons report."""
    names = [f"dd-counter-{i:02}" for i in range(12)]
    clients = {s: docker.DockerClient(base_url=labctl.SITES[s].docker_url) for s in ("a", "b")}
    doc = yaml.safe_load(LAB_PLAYBOOK.read_text())
    doc["waves"] = [{"name": "all", "parallel": 4}]
    doc["workloads"] = [{"name": n, "kind": "container", "strategy": "checkpoint", "wave": "all"} for n in names]
    path = tmp_path / "dd.yaml"
    path.write_text(yaml.safe_dump(doc))

    def seen() -> dict[str, list[tuple[str, str]]]:
        """Every container of the test on either daemon, stopped ones too: (site, status) per name."""
        found: dict[str, list[tuple[str, str]]] = {}
        for site, client in clients.items():
            for c in client.containers.list(all=True, filters={"name": "dd-counter-"}):
                found.setdefault(c.name, []).append((site, c.status))
        return found

    try:
        for n in names:
            clients["a"].containers.run(lab_base.IMAGE, name=n, detach=True, network_mode="none",
                                        mem_limit="64m")  # twelve fit on site b beside what the lab runs there
        env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
        proc = subprocess.Popen([str(DRORCH), "failover", str(path)], env=env, cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        state_dir.mkdir(parents=True, exist_ok=True)
        store = Store(f"sqlite:///{state_dir / 'drorch.db'}")
        wait_until(lambda: proc.poll() is not None or (bool(store.runs()) and sum(
            s.state == "succeeded" for s in store.steps(1)) >= 3), "three containers moved", timeout=120)
        assert proc.poll() is None, proc.communicate()
        moved_before = {s.workload for s in store.steps(1) if s.state == "succeeded"}
        labctl.cmd_stop(argparse.Namespace(site="b", daemon="dockerd"))
        labctl.cmd_start(argparse.Namespace(site="b", daemon="dockerd"))
        out, err = proc.communicate(timeout=300)
        assert "internal error" not in err and "Traceback" not in err, out + err
        after_run = seen()
        steps = {s.workload: s for s in store.steps(1)}
        said_there = {n for n, s in steps.items() if s.state == "succeeded"}
        assert all(("b", "running") in after_run.get(n, []) for n in said_there), (after_run, said_there)
        for n in moved_before:  # they died with the daemon: the run ended saying so, in the daemon's words
            assert steps[n].state == "failed" and f"{n} got to site b, but was found exited (code" in \
                (steps[n].error or ""), (n, steps[n].error)
        assert store.run(1).state != "succeeded" and proc.returncode != 0

        resumed = run_drorch("resume", "1")
        assert "internal error" not in resumed.stderr and "Traceback" not in resumed.stderr, resumed.stderr
        assert seen() == {n: [("b", "running")] for n in names}  # each once, on b, no stopped copy anywhere
        for client in clients.values():
            assert client.containers.list(all=True, filters={"label": HELPER_LABEL}) == []
        steps = {s.workload: s for s in store.steps(1)}
        assert {n: s.state for n, s in steps.items()} == dict.fromkeys(names, "succeeded")
        lost = "what it held in memory since the move is lost"
        restarted = {n for n, s in steps.items() if lost in (s.warning or "")}
        assert moved_before <= restarted and not restarted & said_there, (moved_before, restarted, said_there)
        assert store.run(1).state == "succeeded with warnings" and resumed.returncode == 5
    finally:
        for c, n in itertools.product(clients.values(), names):
            for found in c.containers.list(all=True, filters={"name": f"^{n}(.drorch-point)?$"}):
                found.remove(force=True)
        for c in clients.values():
            c.close()
