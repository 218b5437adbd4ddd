"""Consistency groups on the lab: how long a group of three (a quiesced VM, two containers) stays frozen for
its cut, and what one group point costs beside three separate points of the same workloads. Prints figures;
asserts nothing.

The group is the lab's (integration/lab_group.py: the VM with its guest agent and ext4 data disk, two containers
with a volume each) with its writer running, which the group's pre_freeze hook stops at a transaction's end.
Each round ships one group point and then three separate points (no group, no quiesce), each in-process through
drorch's protect() over the real drivers, and times by hand what the freeze alone costs with the bare tools:
`virsh domfsfreeze`, `docker pause` of both containers, then `virsh domfsthaw` and `docker unpause`.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/groups.py [--rounds N]
(the lab must be up: integration/lab up)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.drivers import make_drivers  # noqa: E402
from drorch.model.playbook_file import load_playbook  # noqa: E402
from drorch.recovery.shipping import protect  # noqa: E402
from drorch.store.rows import RecoveryPoint  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402
from integration import lab_group, labctl, seq_control  # noqa: E402
from integration.bench.failover import check, virsh  # noqa: E402


def ship(book: Path, store: Store) -> tuple[float, list[RecoveryPoint]]:
    pb = load_playbook(book)
    drivers = make_drivers(pb.kinds)
    try:
        start = time.perf_counter()
        points = protect(pb, drivers, store).points
        took = time.perf_counter() - start
    finally:
        for d in drivers.values():
            d.close()
    check(all(p.complete for p in points), f"a point failed: {[p.error for p in points]}")
    return took, points


def docker(*args: str) -> None:
    subprocess.run(["docker", "-H", labctl.SITES["a"].docker_url, *args], check=True, capture_output=True)


def bare_freeze(writer: Path) -> float:
    """The freeze window by hand, with nothing cut inside it: what holding three workloads still costs. The writer
    is stopped first, as the group's hook stops it (an exec racing a pause can wedge the container)."""
    uri = labctl.SITES["a"].libvirt_uri
    seq_control.pause(writer)
    start = time.perf_counter()
    virsh(uri, "domfsfreeze", lab_group.DB)
    for name in lab_group.SEQ:
        docker("pause", name)
    virsh(uri, "domfsthaw", lab_group.DB)
    for name in lab_group.SEQ:
        docker("unpause", name)
    took = time.perf_counter() - start
    seq_control.resume(writer)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    labctl.cmd_up(argparse.Namespace(reset=False))
    lab_group.create()
    runs: dict[str, list[float]] = {k: [] for k in ("group_s", "freeze_ms", "separate_s", "bare_ms")}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "writer"
        folder.mkdir()
        writer = subprocess.Popen([sys.executable, "-m", "integration.seq_writer", "run", str(folder)], cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while not (folder / "written").exists():  # the writer under way before the first cut
                check(time.monotonic() < deadline and writer.poll() is None, "the writer did not start")
                time.sleep(0.1)
            grouped = lab_group.playbook(tmp, grouped=True, writer=folder)
            separate = lab_group.playbook(tmp, grouped=False)
            store = Store(f"sqlite:///{tmp / 'bench.db'}")
            for r in range(args.rounds):
                took, points = ship(grouped, store)
                runs["group_s"].append(took)
                runs["freeze_ms"].append(points[0].freeze_ms or 0.0)
                check(len({p.cut for p in points}) == 1, "a group point of more than one cut")
                took, _ = ship(separate, store)
                runs["separate_s"].append(took)
                runs["bare_ms"].append(bare_freeze(folder) * 1000)
                print(f"round {r + 1}/{args.rounds}: group point {runs['group_s'][-1]:.2f} s (frozen "
                      f"{runs['freeze_ms'][-1]:.0f} ms), three separate points {runs['separate_s'][-1]:.2f} s, "
                      f"bare freeze and thaw {runs['bare_ms'][-1]:.0f} ms", flush=True)
        finally:
            (folder / "stop").touch()
            writer.wait(timeout=60)
            lab_group.remove()
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\nmedians over {args.rounds} rounds, a group of a quiesced VM ({lab_group.DB_MIB} MiB ext4 disk) and two "
          "containers with a volume each, its writer running:")
    print(f"  freeze window of the group's cut (drorch)        {med['freeze_ms']:7.0f} ms")
    print(f"  freeze and thaw alone, by hand (virsh, docker)   {med['bare_ms']:7.0f} ms")
    print(f"  one group point (drorch)                         {med['group_s']:7.2f} s")
    print(f"  three separate points (drorch)                   {med['separate_s']:7.2f} s")
    print(f"  group point / separate points: time {med['group_s'] / med['separate_s']:.2f}")


if __name__ == "__main__":
    main()
