"""Parallel evacuation on the lab: N VMs failed over and back with `parallel: 1, 2, 4` (and with a host's
`max_moves`), each makespan against the ideal, ceil(N / p) times one move's time measured in the same run.
Prints figures; asserts nothing.

Every VM is a 128 MiB TCG guest with its own 16 MiB disk that travels with it; the moves are drorch's
engine in-process (no interpreter start-up in the figures) over the lab's plain transports.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/parallel.py [--vms 4] [--rounds 3]
(starts the extra VMs itself and removes them at the end)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.drivers.libvirt.vm_driver import LibvirtDriver  # noqa: E402
from drorch.engine.runner import Engine  # noqa: E402
from drorch.model.playbook import WorkloadKind  # noqa: E402
from drorch.model.playbook_file import load_playbook  # noqa: E402
from drorch.model.records import Operation, RunState  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402
from integration import lab_libvirt, labctl  # noqa: E402

# (label, wave parallel, max_moves of the DR host or None)
SETUPS = (("parallel 1", 1, None), ("parallel 2", 2, None), ("parallel 4", 4, None),
          ("parallel 4, max_moves 2 on b1", 4, 2))


def playbook(tmp: Path, vms: list[str], parallel: int, max_moves: int | None) -> Path:
    """The lab's playbook with these VMs in one wave, site b reached over plain TCP."""
    pb: dict[str, Any] = yaml.safe_load((REPO / "playbooks" / "lab.yaml").read_text())
    (a1,), (b1,) = pb["sites"]["a"]["hosts"], pb["sites"]["b"]["hosts"]
    a1["capacity"] = b1["capacity"] = {"vcpus": 8, "memory_mib": 4096}  # declared: both sites share 2 cores
    b1.pop("tls", None)
    b1.update(libvirt=labctl.SITES["b"].libvirt_uri, docker=labctl.SITES["b"].docker_url)
    if max_moves:
        b1["max_moves"] = max_moves
    pb["waves"] = [{"name": "vms", "parallel": parallel}]
    pb["workloads"] = [{"name": vm, "kind": "vm", "strategy": "live", "wave": "vms"} for vm in vms]
    path = tmp / f"p{parallel}-m{max_moves}-{len(vms)}.yaml"
    path.write_text(yaml.safe_dump(pb))
    return path


def move(store: Store, path: Path, source: str, target: str) -> tuple[float, float]:
    """The run's makespan, and the sum of its moves' own times."""
    pb = load_playbook(path)
    driver = LibvirtDriver()
    try:
        start = time.perf_counter()
        operation = Operation.FAILOVER if source == pb.primary else Operation.FAILBACK
        run = Engine(store, {WorkloadKind.VM: driver}).operate(pb, str(path), operation, source, target)
        took = time.perf_counter() - start
    finally:
        driver.close()
    if run.state is not RunState.SUCCEEDED:
        failed = "; ".join(f"{s.workload}: {s.error}" for s in store.steps(run.id or 0) if s.error)
        raise SystemExit(f"bench: run {run.id} {source}->{target} ended {run.state}: {failed or run.error}")
    steps = [s for s in store.steps(run.id or 0) if s.started_at and s.ended_at]
    return took, sum((s.ended_at - s.started_at).total_seconds() for s in steps if s.started_at and s.ended_at)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vms", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="single moves each way for the one-move time")
    args = ap.parse_args()
    vms = lab_libvirt.vm_names(args.vms)
    labctl.cmd_up(argparse.Namespace(reset=True, vms=args.vms))  # every VM fresh on site a
    time.sleep(3)  # let the new guests finish booting before the first migration
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            store = Store(f"sqlite:///{tmp / 'bench.db'}")
            alone = playbook(tmp, vms[:1], 1, None)
            one = [move(store, alone, s, t)[0] for _ in range(args.rounds) for s, t in (("a", "b"), ("b", "a"))]
            single = statistics.median(one)
            print(f"one VM move: median {single:.2f} s of {len(one)} ({', '.join(f'{t:.2f}' for t in one)}); a 128 MiB "
                  "TCG guest's move lasts about 2.0 s or about 2.9 s here, whoever moves it", flush=True)
            for label, parallel, max_moves in SETUPS:
                path = playbook(tmp, vms, parallel, max_moves)
                at_once = min(parallel, max_moves or parallel)
                ideal = math.ceil(len(vms) / at_once) * single
                for source, target in (("a", "b"), ("b", "a")):
                    makespan, busy = move(store, path, source, target)
                    # Lanes left idle: the makespan beyond the moves' own time spread over the lanes.
                    idle = makespan - busy / at_once
                    print(f"{len(vms)} VMs, {label:<30} {source}->{target} makespan {makespan:5.2f} s, ideal "
                          f"{ideal:5.2f} s, ratio {makespan / ideal:.2f}; moves {busy:5.2f} s in all, "
                          f"lanes idle {idle:5.2f} s", flush=True)
    finally:
        labctl.remove_extra_vms()


if __name__ == "__main__":
    main()
