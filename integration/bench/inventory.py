"""How long a snapshot of both sites takes when every host is a round trip away. Prints figures; asserts
nothing.

The fake driver answers each question after a fixed latency (20 ms, a daemon across a WAN link). An estate
of 200 hosts (100 per site) with 50 containers each is snapshot the way every command does it (each host
asked its facts and its workloads, all hosts at once by a bounded pool), and compared with one host's two
questions asked one after the other.

Usage: integration/bench/inventory.py [--latency-ms 20] [--repeat 5]   (needs no lab)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drorch.drivers.base import Endpoint
from drorch.drivers.fake import FakeCloud, FakeDriver, FakeSite, FakeWorkload
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.reach import SNAPSHOT_THREADS, snapshot

HOSTS_PER_SITE, WORKLOADS = 100, 50


def estate(latency_s: float) -> tuple[Playbook, FakeCloud]:
    cloud = FakeCloud()
    sites: dict[str, object] = {}
    for site in ("a", "b"):
        hosts = []
        for i in range(HOSTS_PER_SITE):
            uri = f"fake://{site}{i}/docker"
            hosts.append({"name": f"{site}{i}", "docker": uri})
            running = {f"{site}{i}-c{j}": FakeWorkload(WorkloadKind.CONTAINER) for j in range(WORKLOADS)}
            cloud.sites[uri] = FakeSite(latency_s=latency_s, workloads=running)
        sites[site] = {"hosts": hosts}
    pb = Playbook.model_validate({"name": "wan", "primary": "a", "secondary": "b", "sites": sites,
                                  "workloads": [{"match": "*", "kind": "container", "strategy": "redeploy"}]})
    return pb, cloud


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    pb, cloud = estate(args.latency_ms / 1000)
    driver = FakeDriver(cloud, WorkloadKind.CONTAINER)
    one = Endpoint("a", "fake://a0/docker", host="a0")
    alone, whole = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        driver.host_facts(one)
        driver.inventory(one)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        snap = snapshot(pb, {WorkloadKind.CONTAINER: driver})
        whole.append(time.perf_counter() - start)
    found = sum(len(inv.workloads) for inv in snap.hosts)
    host, sites = statistics.median(alone), statistics.median(whole)
    print(f"inventory: one host's two questions one after the other: {host * 1000:.0f} ms; "
          f"{len(snap.hosts)} hosts ({found:,} workloads, {args.latency_ms:g} ms a question, "
          f"{SNAPSHOT_THREADS} questions at once): {sites * 1000:.0f} ms, {sites / host:.2f} times one host "
          f"(median of {args.repeat})")


if __name__ == "__main__":
    main()
