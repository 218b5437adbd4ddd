"""Readiness on the real lab: ready while both sites answer and the recovery points are fresh; site b's
Docker stopping is drift that is recorded and told to the playbook's command once; back, it is ready again."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from integration import labctl
from integration.support.lab_views import LAB_PLAYBOOK, Drorch


@pytest.mark.usefixtures("fresh_lab")
def test_drift_is_seen_told_once_and_cleared(run_drorch: Drorch, tmp_path: Path) -> None:
    told = tmp_path / "told"
    script = f"import os; open({str(told)!r}, 'a').write(os.environ['DRORCH_PROBLEMS'] + '|')"
    playbook = tmp_path / "watched.yaml"
    playbook.write_text(LAB_PLAYBOOK.read_text() + "\nprotect: {interval_s: 300}\nreadiness:\n"
                        f"  command: [{sys.executable}, -c, {json.dumps(script)}]\n")
    assert run_drorch("protect", "ship", str(playbook)).returncode == 0
    ready = run_drorch("readiness", str(playbook), "--check")
    assert ready.returncode == 0 and "lab: ready since" in ready.stdout, ready.stdout + ready.stderr

    labctl.cmd_stop(argparse.Namespace(site="b", daemon="dockerd"))
    try:
        for _ in range(2):
            drift = run_drorch("readiness", str(playbook), "--check", "--json")
            assert drift.returncode == 1, drift.stderr
        doc = json.loads(drift.stdout)
        assert doc["ready"] is False and any("site b" in p and "Docker" in p for p in doc["problems"]), doc
        assert told.read_text().count("|") == 1  # told on the change, not on every check
    finally:
        labctl.cmd_start(argparse.Namespace(site="b", daemon="dockerd"))
    back = run_drorch("readiness", str(playbook), "--check", "--json")
    assert back.returncode == 0 and json.loads(back.stdout)["problems"] == []
