"""A Podman checkpoint move, drorch against the hand-run podman commands, on the lab. Prints figures; asserts
nothing.

The lab's counting container on site a's Podman moves to site b's and back each round, alternating drorch and
the bare sequence as integration/bench/failover.py does (drorch a->b, bare b->a, bare a->b, drorch b->a):
- bare: `podman --url A container checkpoint --export FILE`, a copy of FILE (to the other host, here a
  local copy), `podman --url B container restore --import FILE`, `podman --url A rm`: the remote client
  writes and reads the archive on this machine, as drorch relays it;
- drorch: its engine in-process (a run in a SQLite store, the export relayed into the import, the source
  removed), and as the `drorch failover|failback` command.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/podman.py [--rounds N]
(the lab must be up: integration/lab up; `isolate` hides the sites' data, Podman's storage included)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.model.playbook import WorkloadKind  # noqa: E402
from integration import lab_podman, labctl  # noqa: E402
from integration.bench.failover import Mover, check, drorch_command, drorch_engine, measure, report  # noqa: E402

CTR = lab_podman.CHECKPOINT_CONTAINER


def checkpoint_playbook(tmp: Path) -> Path:
    pb = yaml.safe_load((REPO / "playbooks" / "lab-podman.yaml").read_text())
    pb["workloads"] = [w for w in pb["workloads"] if w["name"] == CTR]
    path = tmp / "podman.yaml"
    path.write_text(yaml.safe_dump(pb))
    return path


def podman_cli(tmp: Path) -> Mover:
    def move(src: str, dst: str) -> None:
        def pm(site: str, *args: str) -> None:
            res = subprocess.run(["podman", "--url", lab_podman.url(labctl.SITES[site]), *args], capture_output=True,
                                 text=True)
            check(res.returncode == 0, f"podman {' '.join(args)} failed: {res.stderr.strip()}")

        exported, copied = tmp / f"{CTR}.tar.gz", tmp / f"{CTR}-copy.tar.gz"
        pm(src, "container", "checkpoint", "--export", str(exported), CTR)
        shutil.copyfile(exported, copied)
        pm(dst, "container", "restore", "--import", str(copied))
        pm(src, "rm", CTR)
        exported.unlink()
        copied.unlink()
    return move


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    labctl.cmd_up(argparse.Namespace(reset=True))
    time.sleep(2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pb = checkpoint_playbook(tmp)
        pairs = {
            "Podman checkpoint, in-process": (drorch_engine(pb, tmp, WorkloadKind.CONTAINER), podman_cli(tmp)),
            "Podman checkpoint, commands": (drorch_command(pb, tmp), podman_cli(tmp)),
        }
        report(args.rounds, measure(args.rounds, pairs))


if __name__ == "__main__":
    main()
