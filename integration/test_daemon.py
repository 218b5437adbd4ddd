"""`drorch daemon` on the real lab: recovery points shipped on a schedule, then a disaster restart from them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from integration import lab_base, labctl
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


def fresh(rows: list[dict[str, object]], names: set[str]) -> bool:
    mine = {str(r["workload"]): r for r in rows}
    return names <= set(mine) and all(not mine[n]["stale"] and int(str(mine[n]["points"])) >= 2 for n in names)


@pytest.mark.usefixtures("fresh_lab")
def test_scheduled_protection_then_disaster_restart_from_it(run_drorch: Drorch, state_dir: Path,
                                                            tmp_path: Path) -> None:
    playbook = tmp_path / "protected.yaml"
    playbook.write_text(LAB_PLAYBOOK.read_text() + "\nprotect: {interval_s: 3, keep: 2}\n"
                        "schedules:\n  - {job: protect, every_s: 3}\n")
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
    daemon = subprocess.Popen([str(DRORCH), "daemon", "run", str(playbook), "--lease-s", "3"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def status() -> list[dict[str, object]]:
            res = run_drorch("protect", "status", str(playbook), "--json")
            return json.loads(res.stdout) if res.stdout.strip() else []

        wait_until(lambda: fresh(status(), {lab_base.VM_NAME, labctl.CHECKPOINT_CONTAINER}),
                   "two fresh recovery points of the VM and of lab-counter", timeout=90)
        shown = run_drorch("protect", "status", str(playbook))
        assert shown.returncode == 0 and f"vm        {lab_base.VM_NAME}" in shown.stdout and "STALE" not in shown.stdout
        ds = json.loads(run_drorch("daemon", "status", "--json").stdout)
        assert [d["leader"] for d in ds["daemons"]] == [True] and ds["jobs"][0]["id"] == "lab:protect:0"
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, log = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, log
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{") and '"event"' in line]
    assert events[0] == "started" and "leading: scheduler started" in events and events[-1] == "stopped"
    assert placement_a_untouched()
    last_a = container_counts("a", labctl.CHECKPOINT_CONTAINER)[-1]

    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", str(playbook))
        assert res.returncode == 0, res.stdout + res.stderr
        assert where(lab_base.VM_NAME)["vms"] == ["b"]
        wait_until(lambda: len(vm_counts("b")) >= 1, "the VM booting on site b")
        wait_until(lambda: len(container_counts("b", labctl.CHECKPOINT_CONTAINER)) >= 1, "lab-counter on site b")
        first = container_counts("b", labctl.CHECKPOINT_CONTAINER)[0]
        assert 1 < first <= last_a + 1  # from its newest recovery point, not from 1
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


def placement_a_untouched() -> bool:
    """Protection moves nothing: the lab's workloads all still run on site a only."""
    return where(lab_base.VM_NAME)["vms"] == ["a"] and all(
        where(n)["containers"] == ["a"] for n in labctl.CONTAINERS)
