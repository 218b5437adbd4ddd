"""Continuous protection on the lab: 10 workloads (4 VMs with their disks, 6 Docker containers with a volume each,
a writer changing data in every one) protected every 10 s by `drorch daemon`, for 10 minutes. The RPO each
workload actually had, sampled every second from the state store (the age of its newest complete point, from
the instant that point describes), as its maximum and 99th percentile beside the ship interval; the fixed cost of
a ship (planning) and of each workload's point, from the daemon's log, beside the bare tools' own point of one
workload (`virsh backup-begin` of a VM's disk, `docker checkpoint create --leave-running`) in the same run.
Prints figures; asserts nothing.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/rpo.py [--minutes 10] [--interval 10]
(the lab must be up: integration/lab up; the extra VMs and containers are made here and removed at the end)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import libvirt
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.model.records import naive, utcnow  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402
from integration import lab_base, lab_libvirt, labctl  # noqa: E402

VMS = 4
CONTAINERS = [f"rpo-c{i}" for i in range(1, 7)]
WRITER = 'trap "exit 0" TERM; i=0; while true; do i=$((i+1)); echo $i >> /data/count; sleep 1; done'


def start_containers() -> None:
    client = docker.DockerClient(base_url=labctl.SITES["a"].docker_url)
    try:
        for name in CONTAINERS:
            client.containers.run(lab_base.IMAGE, ["/bin/sh", "-c", WRITER], name=name, detach=True,
                                  network_mode="none", mem_limit=lab_base.CONTAINER_MEMORY,
                                  volumes={f"{name}-data": {"bind": "/data", "mode": "rw"}})
    finally:
        client.close()


def remove_containers() -> None:
    for site in labctl.SITES.values():
        client = docker.DockerClient(base_url=site.docker_url)
        try:
            for c in client.containers.list(all=True):
                if c.name in CONTAINERS:
                    c.remove(force=True)
            for v in client.volumes.list():
                if v.name.startswith("rpo-c"):
                    v.remove(force=True)
        finally:
            client.close()


def playbook(tmp: Path, vms: list[str], interval: int) -> Path:
    pb: dict[str, Any] = yaml.safe_load((REPO / "playbooks" / "lab.yaml").read_text())
    (a1,), (b1,) = pb["sites"]["a"]["hosts"], pb["sites"]["b"]["hosts"]
    a1["capacity"] = b1["capacity"] = {"vcpus": 16, "memory_mib": 8192}  # declared: both sites share the machine
    pb["workloads"] = [*({"name": vm, "kind": "vm", "strategy": "live"} for vm in vms),
                       *({"name": c, "kind": "container", "strategy": "checkpoint" if i % 2 else "redeploy"}
                         for i, c in enumerate(CONTAINERS))]
    pb["protect"] = {"interval_s": interval, "keep": 3, "full_every": 1000, "parallel": 4}
    pb["schedules"] = [{"job": "protect", "every_s": interval}]
    path = tmp / "rpo.yaml"
    path.write_text(yaml.safe_dump(pb))
    return path


def sample(store: Store, names: list[str], recorded: dict[str, dict[str, float]] | None = None
           ) -> dict[str, float | None]:
    """Each workload's RPO now: the age of its newest complete point on site b, from its instant. `recorded`
    gathers, by workload and point, how long after its instant each point was recorded."""
    now = naive(utcnow())
    newest: dict[str, float] = {}
    for p in store.points("lab"):
        if p.complete and p.site == "b" and p.workload in names:
            age = (now - p.instant).total_seconds()
            newest[p.workload] = min(newest.get(p.workload, math.inf), age)
            if recorded is not None and p.name:
                recorded.setdefault(p.workload, {})[p.name] = (naive(p.taken_at) - p.instant).total_seconds()
    return {n: newest.get(n) for n in names}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def bare_points(vm: str, container: str, rounds: int = 3) -> tuple[float, float]:
    """The bare tools' own point of one workload, median seconds: a push backup of the VM's disk to a file of
    site a's pool, and a CRIU dump of the container that leaves it running."""
    uri, url = labctl.SITES["a"].libvirt_uri, labctl.SITES["a"].docker_url
    conn = libvirt.open(uri)
    pool = conn.storagePoolLookupByName(labctl.SITES["a"].pool)
    target = f"{pool.XMLDesc(0).split('<path>')[1].split('</path>')[0]}/bench-rpo-backup.qcow2"
    vm_times, ct_times = [], []
    try:
        for _ in range(rounds):
            xml = (f"<domainbackup><disks><disk name='vda' type='file'><target file='{target}'/>"
                   "<driver type='qcow2'/></disk></disks></domainbackup>")
            start = time.perf_counter()
            conn.lookupByName(vm).backupBegin(xml, None, 0)
            while conn.lookupByName(vm).jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                time.sleep(0.02)
            vm_times.append(time.perf_counter() - start)
            pool.refresh(0)
            pool.storageVolLookupByName("bench-rpo-backup.qcow2").delete(0)
            start = time.perf_counter()
            subprocess.run(["docker", "-H", url, "checkpoint", "create", "--leave-running", container, "bench"],
                           check=True, capture_output=True)
            ct_times.append(time.perf_counter() - start)
            subprocess.run(["docker", "-H", url, "checkpoint", "rm", container, "bench"], check=True,
                           capture_output=True)
    finally:
        conn.close()
    return statistics.median(vm_times), statistics.median(ct_times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--interval", type=int, default=10)
    args = ap.parse_args()
    vms = lab_libvirt.vm_names(VMS)
    labctl.cmd_up(argparse.Namespace(reset=True, vms=VMS))  # every workload fresh on site a
    remove_containers()
    start_containers()
    names = [*vms, *CONTAINERS]
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            book = playbook(tmp, vms, args.interval)
            (tmp / "state").mkdir(mode=0o700)
            env = {**os.environ, "DRORCH_STATE_DIR": str(tmp / "state")}
            env.pop("DRORCH_DB_URL", None)
            log_file = tmp / "daemon.log"
            with log_file.open("w") as log_out:
                daemon = subprocess.Popen([str(REPO / ".venv" / "bin" / "drorch"), "daemon", "run", str(book),
                                           "--lease-s", "3"], env=env, stderr=log_out, stdout=subprocess.DEVNULL,
                                          cwd=REPO)
            try:
                store = Store(f"sqlite:///{tmp / 'state' / 'drorch.db'}")
                began = time.monotonic()
                while not all(sample(store, names).values()):  # the first points: the full copies, not counted
                    if time.monotonic() - began > 300 or daemon.poll() is not None:
                        failed = {p.workload: p.error for p in store.points("lab") if not p.complete}
                        missing = [n for n, age in sample(store, names).items() if age is None]
                        raise SystemExit(f"bench: no point within 5 minutes of {', '.join(missing)}: {failed}")
                    time.sleep(1)
                first_s = time.monotonic() - began
                ages: dict[str, list[float]] = {n: [] for n in names}
                recorded: dict[str, dict[str, float]] = {}
                end = time.monotonic() + args.minutes * 60
                while time.monotonic() < end:
                    for name, age in sample(store, names, recorded).items():
                        ages[name].append(age or 0.0)
                    time.sleep(1)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=300)
            log = log_file.read_text()
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"job": "protect"' in line]
        took: dict[str, list[float]] = {}
        for e in events:
            if "took_s" in e:
                took.setdefault(e["unit"].split("/", 1)[1], []).append(e["took_s"])
        failed = [f"{name}: {why}" for e in events for name, why in (e.get("failed") or {}).items()]
        failed += [line.split("\\n")[0] + ": " + line.rstrip("\\n").split("\\n")[-1]
                   for line in log.splitlines() if ": the ship of " in line]  # a ship that raised
        planned = [e["planned_ms"] for e in events if e.get("planned_ms") is not None]
        ticks = [e for e in events if "begun" in e]
        skipped = sum(len(e.get("skipped", [])) for e in ticks)
        bare_vm, bare_ct = bare_points(vms[0], CONTAINERS[1])
        lags = {n: list(by_point.values()) for n, by_point in recorded.items()}

        def median(of: list[str], what: dict[str, list[float]]) -> float:
            values = [v for n in of for v in what.get(n, [])]
            return statistics.median(values) if values else math.nan

        print(f"{len(names)} workloads ({VMS} VMs, {len(CONTAINERS)} containers) protected every {args.interval} s "
              f"for {args.minutes:g} min by drorch daemon (first points of all: {first_s:.0f} s, not counted); "
              f"RPO sampled every second:")
        print(f"  {'workload':<12} {'interval':>8} {'RPO max':>8} {'RPO p99':>8} {'cut to record':>14} "
              f"{'ship in all':>12} {'points':>7}   (medians)")
        for name in names:
            print(f"  {name:<12} {args.interval:>7} s {max(ages[name]):>6.1f} s {p99(ages[name]):>6.1f} s "
                  f"{median([name], lags):>12.2f} s {median([name], took):>10.2f} s {len(took.get(name, [])):>7}")
        worst = max(p99(a) for a in ages.values())
        print(f"  worst p99 {worst:.1f} s (target here: 15 s); {len(ticks)} due times, {skipped} ships skipped "
              f"(the last still ran), {len(failed)} points failed{''.join(chr(10) + '    ' + f for f in failed)}")
        print(f"  fixed cost per ship: planning {statistics.median(planned) if planned else math.nan:.0f} ms median "
              f"when made again ({len(planned)} of {len(ticks)} due times; otherwise reused), "
              f"the rest of a due time under 1 ms")
        checkpointed = CONTAINERS[1::2]
        print(f"  fixed cost per workload, all shipping at once: a VM's point {median(vms, lags):.2f} s from its "
              f"cut to its record (its few changes sent to site b and its definition there), its ship "
              f"{median(vms, took):.2f} s with the thinning after (the dropped point merged into the next) (the bare "
              f"cut alone, virsh backup-begin of its whole disk to a file on site a, nothing else running: "
              f"{bare_vm:.2f} s); a checkpointed container's {median(checkpointed, lags):.2f} s to its record, "
              f"{median(checkpointed, took):.2f} s in all (the bare cut alone, docker checkpoint create "
              f"--leave-running: {bare_ct:.2f} s)")
    finally:
        remove_containers()
        labctl.remove_extra_vms()


if __name__ == "__main__":
    main()
