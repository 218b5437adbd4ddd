"""How fast the planner and the validator are on an estate-sized playbook. Prints figures; asserts nothing.

- plan: 10,000 workloads (VMs and containers, three tiers, anti-affinity groups, dependencies)
  from 1,000 primary hosts onto 500 smaller DR hosts, then ten times that (100,000 workloads, 10,000
  hosts onto 5,000), and the ratio of the two times: n log n growth would be 12.5;
- validate: parse and check a 1,000-workload playbook file (YAML with positions, schema, references).

Usage: integration/bench/planner.py [--repeat N]   (needs no lab)
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import parse_with_positions
from drorch.model.records import Action
from drorch.plan.inventory import HostFacts, HostInventory, Snapshot, WorkloadInfo
from drorch.plan.planner import plan

TIERS = {"gold": {"priority": 0, "on_shortage": "required"},
         "silver": {"priority": 1, "on_shortage": "degrade"},
         "bronze": {"priority": 2, "on_shortage": "skip"}}


def estate(workloads: int, primary_hosts: int, dr_hosts: int) -> tuple[Playbook, Snapshot]:
    rng = random.Random(42)

    def hosts(site: str, n: int, memory: int) -> list[dict[str, object]]:
        return [{"name": f"{site}{i:04d}", "libvirt": f"qemu+tcp://{site}{i}/system",
                 "docker": f"tcp://{site}{i}:2375", "capacity": {"vcpus": 32, "memory_mib": memory}}
                for i in range(n)]

    entries: list[dict[str, object]] = []
    for tier in TIERS:
        entries.append({"match": f"vm-{tier}-*", "kind": "vm", "tier": tier, "strategy": "cold",
                        "dr_resources": {"memory_mib": 1024}, "anti_affinity": None})
        entries.append({"match": f"ct-{tier}-*", "kind": "container", "tier": tier,
                        "dr_resources": {"memory_mib": 256}})
    entries.append({"name": "vm-gold-00000", "kind": "vm", "tier": "gold", "wave": "data"})
    entries.append({"name": "ct-gold-00001", "kind": "container", "tier": "gold", "wave": "apps",
                    "depends_on": ["vm-gold-00000"]})
    pb = Playbook.model_validate({
        "name": "estate", "primary": "p", "secondary": "d",
        "sites": {"p": {"hosts": hosts("p", primary_hosts, 262144)},
                  "d": {"overcommit": {"cpu": 4.0, "memory": 1.2}, "hosts": hosts("d", dr_hosts, 16384)}},
        "tiers": TIERS, "waves": [{"name": "data"}, {"name": "apps", "parallel": 8}],
        "defaults": {"tier": "silver", "wave": "apps"},
        "workloads": [{k: v for k, v in e.items() if v is not None} for e in entries],
    })
    invs = [HostInventory("p", f"p{i:04d}", {k: HostFacts() for k in WorkloadKind}) for i in range(primary_hosts)]
    invs += [HostInventory("d", f"d{i:04d}", {k: HostFacts() for k in WorkloadKind}) for i in range(dr_hosts)]
    for n in range(workloads):
        vm = n % 3 == 0
        tier = rng.choice(list(TIERS))
        name = f"{'vm' if vm else 'ct'}-{tier}-{n:05d}"
        if n == 0:
            name = "vm-gold-00000"
        elif n == 1:
            name = "ct-gold-00001"
        host = invs[n % primary_hosts]
        host.workloads.append(WorkloadInfo(
            name=name, kind=WorkloadKind.VM if vm else WorkloadKind.CONTAINER, site="p", running=True,
            memory_mib=rng.choice([2048, 4096, 8192]) if vm else rng.choice([256, 512, 1024]),
            vcpus=rng.choice([1, 2, 4]) if vm else 1, host=host.host))
    return pb, Snapshot(invs)


def playbook_text(workloads: int) -> str:
    doc = {
        "name": "big", "primary": "p", "secondary": "d",
        "sites": {"p": {"hosts": [{"name": "p1", "libvirt": "qemu:///system", "docker": "unix:///run/docker.sock"}]},
                  "d": {"hosts": [{"name": "d1", "libvirt": "qemu+ssh://dr/system", "docker": "tcp://dr:2375"}]}},
        "mappings": {"networks": {f"net{i}": f"dr-net{i}" for i in range(20)}},
        "tiers": TIERS, "waves": [{"name": "data"}, {"name": "apps", "parallel": 8}],
        "defaults": {"tier": "silver", "wave": "apps"},
        "workloads": [
            {"name": f"w{i:04d}", "kind": "vm" if i % 2 else "container",
             "strategy": "live" if i % 2 else "checkpoint", "tier": list(TIERS)[i % 3],
             **({"depends_on": [f"w{i - 1:04d}"]} if i % 10 == 1 else {}),
             "dr_resources": {"memory_mib": 512}}
            for i in range(workloads)
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        gc.collect()  # each run starts with what the one before left collected
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    took = {}
    for workloads, hosts, dr_hosts in ((10_000, 1_000, 500), (100_000, 10_000, 5_000)):
        pb, snap = estate(workloads, hosts, dr_hosts)
        result = plan(pb, snap, "p", "d")
        counts = {a.value: sum(i.action is a for i in result.items) for a in Action}
        repeat = args.repeat * (3 if workloads < 100_000 else 1)  # the short run is the noisier one
        took[workloads] = timed(lambda pb=pb, snap=snap: plan(pb, snap, "p", "d"), repeat)
        moves = ", ".join(f"{n} {a}" for a, n in counts.items() if n)
        print(f"plan: {workloads:,} workloads onto {dr_hosts:,} DR hosts in {took[workloads]:.3f} s (median of "
              f"{repeat}); {moves}; {len(result.problems)} problems")
        del pb, snap, result
    print(f"plan: 100,000 workloads take {took[100_000] / took[10_000]:.1f} times as long as 10,000")
    text = playbook_text(1_000)
    took = timed(lambda: parse_with_positions(text, "big.yaml"), args.repeat)
    print(f"validate: a 1,000-workload playbook ({len(text.splitlines())} lines) in {took:.3f} s "
          f"(median of {args.repeat})")


if __name__ == "__main__":
    main()
