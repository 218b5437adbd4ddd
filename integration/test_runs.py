"""Runs that survive crashes, faults and disasters, on the real lab."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest

from drorch.store.sql_store import Store
from integration import lab_base, labctl
from integration.support.lab_views import (
    DRORCH,
    LAB_PLAYBOOK,
    REPO,
    Drorch,
    container_counts,
    drorch_process,
    vm_counts,
    vm_disk_counts,
    wait_until,
    where,
)

BOUNDARIES = 6  # the lab playbook's three moves, each recorded before and after it acts


def placement() -> dict[str, list[str]]:
    """Every lab workload and the sites it runs on: exactly one each, or the test fails."""
    found = {lab_base.VM_NAME: where(lab_base.VM_NAME)["vms"]}
    found.update({n: where(n)["containers"] for n in labctl.CONTAINERS})
    return found


def run_id(out: str) -> int:
    match = re.search(r"^run (\d+):", out, re.M)
    assert match, out
    return int(match.group(1))


def vm_only(tmp_path: Path, migration: str = "") -> Path:
    """The lab playbook with the VM alone, and live-migration limits."""
    head = LAB_PLAYBOOK.read_text().split("workloads:\n")[0]
    path = tmp_path / "vm.yaml"
    path.write_text(head + f"workloads:\n  - {{name: lab-vm, kind: vm, strategy: live{migration}}}\n")
    return path


@pytest.mark.parametrize("boundary", range(1, BOUNDARIES + 2))
def test_killed_at_a_step_boundary_then_resumed(lab: None, run_drorch: Drorch, state_dir: Path,
                                                boundary: int) -> None:
    """SIGKILL at the Nth transition; `resume` finishes with every workload once, on site b, state continued.
    One boundary past the last, the run completes untouched: every boundary was covered."""
    labctl.cmd_up(argparse.Namespace(reset=True))
    wait_until(lambda: max(vm_counts("a"), default=0) >= 3, "the VM's counter")
    wait_until(lambda: max(container_counts("a", labctl.CHECKPOINT_CONTAINER), default=0) >= 3, "lab-counter")
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir), "DRORCH_TEST_KILL_AT": str(boundary)}
    killed = subprocess.run([str(DRORCH), "failover", str(LAB_PLAYBOOK)], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=300)
    ctr_a = container_counts("a", labctl.CHECKPOINT_CONTAINER) if where(
        labctl.CHECKPOINT_CONTAINER)["containers"] == ["a"] else []
    if boundary > BOUNDARIES:
        assert killed.returncode == 0, killed.stdout + killed.stderr
    else:
        assert killed.returncode == -9, killed.stdout + killed.stderr
        assert all(len(sites) == 1 for sites in placement().values()), placement()
        held = run_drorch("failover", str(LAB_PLAYBOOK))
        assert held.returncode == 4 and "interrupted run 1" in held.stderr and "drorch resume 1" in held.stderr
        res = run_drorch("resume", "1")
        assert res.returncode == 0, res.stdout + res.stderr
    assert placement() == {lab_base.VM_NAME: ["b"], **{n: ["b"] for n in labctl.CONTAINERS}}
    wait_until(lambda: len(vm_counts("b")) >= 2, "the VM's counter on site b")
    assert vm_counts("b")[0] > 1  # the guest went on counting: live-migrated, not rebooted
    wait_until(lambda: len(container_counts("b", labctl.CHECKPOINT_CONTAINER)) >= 2, "lab-counter on site b")
    ctr_b = container_counts("b", labctl.CHECKPOINT_CONTAINER)
    assert ctr_b[0] > 1 and (not ctr_a or ctr_b[0] >= ctr_a[-1])
    store = Store(f"sqlite:///{state_dir / 'drorch.db'}")
    assert [r.state for r in store.runs()] == ["succeeded"]
    assert [s.state for s in store.steps(1)] == ["succeeded"] * 3


def vm_state(site: str) -> str:
    """The lab VM's state and its reason on a site, as libvirt reports them."""
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        state, why = conn.lookupByName(lab_base.VM_NAME).state()
        return f"state {state} reason {why}"
    finally:
        conn.close()


def vm_diagnosis(site: str) -> str:
    """What a site shows of the lab VM when its guest says nothing: libvirt's state, what QEMU itself says of the
    guest, QEMU's own log of starts and stops, and the end of the serial log."""
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        dom = conn.lookupByName(lab_base.VM_NAME)
        said = []
        for command in ("info status", "info chardev"):
            try:
                said.append(libvirt_qemu.qemuMonitorCommand(dom, command,
                                                            libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP).strip())
            except libvirt.libvirtError as exc:
                said.append(f"({command}: {exc})")
    finally:
        conn.close()
    site_root = labctl.SITES[site].root
    events = [line for line in (site_root / "log" / "qemu" / f"{lab_base.VM_NAME}.log").read_text(
        errors="replace").splitlines() if re.match(r"20\d\d-", line) or "terminating" in line]
    return (f"on site {site}: {vm_state(site)}, QEMU says {said!r}, QEMU's "
            f"log {events[-8:]!r}, serial log ends "
            f"{labctl.SITES[site].serial_log().read_text(errors='replace')[-300:]!r}")


@contextlib.contextmanager
def slow_migration(state_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Store]]:
    """A failover of the VM at 1 MiB/s, yielded once its migration runs; killed if the test leaves it."""
    playbook = vm_only(tmp_path, ", migration: {bandwidth_mib_s: 1}")
    with drorch_process(state_dir, "failover", str(playbook)) as proc:
        state_dir.mkdir(parents=True, exist_ok=True)
        store = Store(f"sqlite:///{state_dir / 'drorch.db'}")
        wait_until(lambda: bool(store.runs()) and bool(store.steps(1)[0].handle), "the migration to start")
        yield proc, store


@pytest.mark.usefixtures("fresh_lab")
def test_target_libvirtd_killed_mid_migration(run_drorch: Drorch, state_dir: Path, tmp_path: Path) -> None:
    """The VM stays on site a, the step records libvirt's reason; resume with the target back completes. Where
    libvirtd went before it cleared the paused end of the migration on site b, the resume, run at once, must
    neither take that for the guest nor collide with it."""
    with slow_migration(state_dir, tmp_path) as (proc, store):
        time.sleep(2)
        labctl.cmd_stop(argparse.Namespace(site="b", daemon="libvirtd"))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    (step,) = store.steps(1)
    assert step.state == "failed" and step.error and "live migration of lab-vm failed" in step.error
    assert "still runs on site a" in step.error
    before = vm_counts("a")[-1]
    wait_until(lambda: vm_counts("a")[-1] > before, "the VM still counting on site a")
    assert where(lab_base.VM_NAME)["vms"] == ["a"]

    labctl.cmd_start(argparse.Namespace(site="b", daemon="libvirtd"))
    # The resume migrates as the run was planned, at 1 MiB/s; the operator raises the limit on the running job
    # (virsh migrate-setspeed). Left for minutes at 1 MiB/s after a target that died mid-way, QEMU 7.2 under TCG
    # landed the guest with its memory corrupt in some runs (a kernel spinning in a timer tree with a loop in it).
    with drorch_process(state_dir, "resume", "1", "--json") as resume:
        conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
        try:
            dom = conn.lookupByName(lab_base.VM_NAME)
            wait_until(lambda: dom.jobStats().get("memory_processed", 0) > 0, "the resumed migration's memory")
            dom.migrateSetMaxSpeed(1024)
        finally:
            conn.close()
        out, err = resume.communicate(timeout=300)
    res = subprocess.CompletedProcess(resume.args, resume.returncode, out, err)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["state"] == "succeeded"
    assert where(lab_base.VM_NAME)["vms"] == ["b"]
    try:
        wait_until(lambda: len(vm_counts("b")) >= 1, "the VM's counter on site b")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {vm_diagnosis('b')}; the resume said {res.stdout[-400:]!r}") from None
    assert vm_counts("b")[0] > before  # live migration: the same guest goes on


@pytest.mark.usefixtures("fresh_lab")
def test_no_progress_timeout_aborts_and_leaves_the_vm_home(run_drorch: Drorch, tmp_path: Path) -> None:
    playbook = vm_only(tmp_path, ", migration: {bandwidth_mib_s: 1, timeout_s_per_gib: 16}")  # 2 s for 128 MiB
    res = run_drorch("failover", str(playbook), timeout=120)
    assert res.returncode == 1
    assert "aborted, not done within 2 s" in res.stderr and "still runs on site a" in res.stderr
    assert where(lab_base.VM_NAME)["vms"] == ["a"]
    before = vm_counts("a")[-1]
    wait_until(lambda: vm_counts("a")[-1] > before, "the VM still counting on site a")


@pytest.mark.usefixtures("fresh_lab")
def test_concurrent_failovers_of_one_playbook(state_dir: Path) -> None:
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
    procs = [subprocess.Popen([str(DRORCH), "failover", str(LAB_PLAYBOOK)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read() if p.stdout else "", p.stderr.read() if p.stderr else "")
               for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 4], results
    refused = next(err for code, _, err in results if code == 4)
    assert len(refused.splitlines()) == 1 and "playbook/lab is " in refused
    assert placement() == {lab_base.VM_NAME: ["b"], **{n: ["b"] for n in labctl.CONTAINERS}}
    assert len(Store(f"sqlite:///{state_dir / 'drorch.db'}").runs()) == 1


@pytest.mark.usefixtures("fresh_lab")
def test_disaster_failover_needs_fencing_then_starts_what_site_b_holds(run_drorch: Drorch) -> None:
    shipped = run_drorch("protect", "ship", str(LAB_PLAYBOOK), "--json")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    rows = {r["workload"]: r["detail"] for r in json.loads(shipped.stdout)}
    assert rows[lab_base.VM_NAME].startswith("full point of 1 disks (crash-consistent full backups, ")
    assert "checkpoint drorch-" in rows[labctl.CHECKPOINT_CONTAINER]
    wait_until(lambda: max(container_counts("a", labctl.CHECKPOINT_CONTAINER)) >= 6, "lab-counter past 5")
    at_ship = max(container_counts("a", labctl.CHECKPOINT_CONTAINER))
    assert placement() == {lab_base.VM_NAME: ["a"], **{n: ["a"] for n in labctl.CONTAINERS}}  # protect moves nothing

    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        refused = run_drorch("failover", "--disaster", str(LAB_PLAYBOOK))
        assert refused.returncode == 1
        assert "site a cannot be fenced" in refused.stderr and "--confirm-primary-down" in refused.stderr
        assert placement() == {lab_base.VM_NAME: [], **{n: [] for n in labctl.CONTAINERS}}  # nothing started

        res = run_drorch("failover", "--disaster", "--confirm-primary-down", str(LAB_PLAYBOOK))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "declared down by the operator" in res.stdout
        assert placement() == {lab_base.VM_NAME: ["b"], **{n: ["b"] for n in labctl.CONTAINERS}}
        wait_until(lambda: len(vm_counts("b")) >= 1, "the VM booting on site b")
        assert vm_disk_counts("b")[0] > 0  # from the disk it shipped, not from an empty one
        wait_until(lambda: len(container_counts("b", labctl.CHECKPOINT_CONTAINER)) >= 1, "lab-counter on b")
        first = container_counts("b", labctl.CHECKPOINT_CONTAINER)[0]
        assert 1 < first <= at_ship + 1  # restored from the shipped checkpoint, not from 1
        report = json.loads(run_drorch("report", "1", "--json").stdout)
        assert report["mode"] == "disaster" and report["rto_s"] > 0
        assert report["steps"][0]["kind"] == "fence"
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


@pytest.mark.usefixtures("fresh_lab")
def test_a_fresh_store_at_the_dr_site_refuses_a_disaster_until_the_primary_is_fenced(run_drorch: Drorch,
                                                                                     tmp_path: Path) -> None:
    """Points shipped from one store; the primary lost; the disaster is run from a store that holds no run and no
    point (a new machine at the DR site): it is refused, naming the silent hosts, until a fencing command fences
    them, and only then does anything start on site b."""
    shipped = run_drorch("protect", "ship", str(LAB_PLAYBOOK))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    fresh = tmp_path / "fresh-state"
    env = {**os.environ, "DRORCH_STATE_DIR": str(fresh)}
    env.pop("DRORCH_DB_URL", None)

    def fresh_drorch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DRORCH), *args], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)

    fenced = tmp_path / "fenced.yaml"
    fenced.write_text(LAB_PLAYBOOK.read_text() + "\nfencing: {command: [/bin/true]}\n")
    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        refused = fresh_drorch("failover", "--disaster", str(LAB_PLAYBOOK))
        assert refused.returncode == 1 and refused.stdout == "", refused.stdout + refused.stderr
        (line,) = refused.stderr.splitlines()
        assert line.startswith("drorch: error: site a cannot be fenced: host a1 (") and "--confirm-primary-down" in line
        assert json.loads(fresh_drorch("history", "--json").stdout) == []  # no run, no step
        assert placement() == {lab_base.VM_NAME: [], **{n: [] for n in labctl.CONTAINERS}}  # nothing started

        res = fresh_drorch("failover", "--disaster", str(fenced))
        assert res.returncode == 0, res.stdout + res.stderr
        fence = json.loads(fresh_drorch("report", "1", "--json").stdout)["steps"][0]
        assert fence["kind"] == "fence" and "hosts a1 fenced by /bin/true" in fence["outcome"], fence
        assert placement() == {lab_base.VM_NAME: ["b"], **{n: ["b"] for n in labctl.CONTAINERS}}
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


@pytest.mark.usefixtures("fresh_lab")
def test_abort_cancels_a_live_migration_and_the_vm_stays_home(run_drorch: Drorch, state_dir: Path,
                                                              tmp_path: Path) -> None:
    with slow_migration(state_dir, tmp_path) as (proc, store):
        time.sleep(1)
        res = run_drorch("abort", "1")
        out, err = proc.communicate(timeout=60)
    assert res.returncode == 0 and res.stdout == "run 1 aborted\n", res.stderr
    assert proc.returncode == 1 and "run 1 aborted" in err, out + err
    (step,) = store.steps(1)
    assert step.state == "cancelled" and "still runs on site a" in (step.error or "")
    assert where(lab_base.VM_NAME)["vms"] == ["a"]
    before = vm_counts("a")[-1]
    wait_until(lambda: vm_counts("a")[-1] > before, "the VM still counting on site a")


@pytest.mark.usefixtures("fresh_lab")
@pytest.mark.parametrize("controls", [
    "{auto_converge: true, max_downtime_ms: 500, no_progress_timeout_s: 30, timeout_s_per_gib: 600}",
    "{post_copy: true, bandwidth_mib_s: 64}",
])
def test_live_migration_controls_are_taken_by_libvirt(run_drorch: Drorch, tmp_path: Path, controls: str) -> None:
    before = vm_counts("a")[-1]
    res = run_drorch("failover", str(vm_only(tmp_path, f", migration: {controls}")))
    assert res.returncode == 0, res.stdout + res.stderr
    assert where(lab_base.VM_NAME)["vms"] == ["b"]
    wait_until(lambda: len(vm_counts("b")) >= 1, "the VM's counter on site b")
    assert vm_counts("b")[0] >= before  # the same guest, still counting
