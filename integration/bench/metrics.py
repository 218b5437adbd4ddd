"""How long a scrape of /metrics takes at 10,000 workloads. Prints figures; asserts nothing.

A state store (SQLite) holds what a busy estate leaves: 10,000 workloads with 3 recovery points each, their
failovers and drills (a step per workload each), readiness checks and two daemons. One scrape reads it all and
writes the text format (a reading); the daemon's listener serves a scrape the newest reading, made anew at most
every second or every ten times what a reading takes (drorch.web._cached_reading). Beside them,
prometheus_client writing the same number of samples from memory (the floor any exporter of that many series pays
for each reading).

Usage: integration/bench/metrics.py [--workloads N] [--rounds N]   (needs no lab)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from drorch.model.playbook_file import parse_playbook
from drorch.model.records import Action, Operation, RunState, StepState, utcnow
from drorch.store.rows import DaemonRow, ReadinessCheck, RecoveryPoint, Run, Step
from drorch.store.sql_store import Store
from drorch.web.listener import Listen, Web
from drorch.web.metrics import StoreCollector, exposition


def fill(store: Store, workloads: int) -> None:
    now = utcnow()
    names = [(("vm", "container")[i % 2], f"w{i:05d}") for i in range(workloads)]
    store.add_points([RecoveryPoint(playbook="estate", workload=w, kind=k, site="b",
                                    taken_at=now - timedelta(seconds=60 * age + i % 50), size_bytes=1 << 20,
                                    point_kind="incremental" if age else "full")
                      for i, (k, w) in enumerate(names) for age in range(3)])
    operations = (Operation.FAILOVER, Operation.FAILBACK, Operation.DRILL, Operation.FAILOVER, Operation.DRILL)
    for n, operation in enumerate(operations):
        start = now - timedelta(hours=10 - n)
        run = Run(operation=operation, playbook="estate", playbook_path="estate.yaml", source_site="a",
                  target_site="b", state=RunState.SUCCEEDED, pid=1, host="h", started_at=start,
                  ended_at=start + timedelta(minutes=30))
        store.add_run(run, [Step(run_id=0, seq=i, workload=w, kind=k, strategy="live", source_site="a",
                                 target_site="b", action=Action.DRILL if operation == Operation.DRILL else Action.MOVE,
                                 state=StepState.SUCCEEDED, started_at=start + timedelta(seconds=i % 600),
                                 ended_at=start + timedelta(seconds=i % 600 + 5 + i % 90))
                            for i, (k, w) in enumerate(names)])
    store.save(*[ReadinessCheck(playbook="estate", ready=True, checked_at=now - timedelta(minutes=m), hosts="[]")
                 for m in range(100)],
               DaemonRow(identity="h:1", leader=True, lease_s=15), DaemonRow(identity="h:2", lease_s=15))


@contextlib.contextmanager
def estate(workloads: int) -> Iterator[tuple[Store, float]]:
    """A store of its own holding that many workloads' history, and how long filling it took."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/drorch.db")
        t = time.perf_counter()
        fill(store, workloads)
        yield store, time.perf_counter() - t


def floor(samples: int) -> bytes:
    """The same number of samples, from memory."""
    registry = CollectorRegistry()
    gauge = Gauge("drorch_bench_sample", "one per series", ["workload"], registry=registry)
    for i in range(samples):
        gauge.labels(f"w{i:05d}").set(i)
    return generate_latest(registry)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as res:
        return bytes(res.read())


def timed(fn: object, rounds: int) -> tuple[float, bytes]:
    took, out = [], b""
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()  # type: ignore[operator]
        took.append(time.perf_counter() - t)
    return statistics.median(took), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    with estate(args.workloads) as (store, made):
        pb = parse_playbook("name: estate\nprimary: a\nsecondary: b\nsites:\n"
                            "  a: {hosts: [{name: a1, libvirt: 'qemu:///system'}]}\n"
                            "  b: {hosts: [{name: b1, libvirt: 'qemu:///system'}]}\n"
                            "workloads: [{match: '*', kind: vm}]\nprotect: {interval_s: 300, keep: 3}\n", "estate.yaml")
        collector = StoreCollector(store, lambda: {pb.name: pb})
        reading, text = timed(lambda: exposition(collector), args.rounds)
        samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        bare, _ = timed(lambda: floor(samples), args.rounds)
        web = Web(Listen("127.0.0.1", 0), store, lambda: exposition(collector))
        web.start()
        try:
            url = f"http://127.0.0.1:{web.port}/metrics"
            get(url)  # the first scrape waits for the first reading
            took, body = [], b""
            for _ in range(args.rounds * 5):  # 5 a second: a reading is made anew beside them, as it would be
                time.sleep(0.2)
                t = time.perf_counter()
                body = get(url)
                took.append(time.perf_counter() - t)
        finally:
            web.close()
        assert body.count(b"\n# TYPE") == text.count(b"\n# TYPE")  # the same families, read at another time
    print(f"metrics at {args.workloads:,} workloads ({samples:,} samples, {len(text) / 2**20:.1f} MiB; store filled in "
          f"{made:.1f} s), median of {args.rounds}:\n"
          f"  a scrape over HTTP, served the newest reading       {statistics.median(took) * 1000:6.0f} ms  "
          f"(slowest {max(took) * 1000:.0f} ms, of {len(took)} at 5 a second)\n"
          f"  a reading: the store read and the text written      {reading * 1000:6.0f} ms  "
          "(made again after ten times that)\n"
          f"  prometheus_client writing as many samples from memory {bare * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
