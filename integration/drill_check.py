"""A health check for the lab's workloads: the workload counts on. In a drill it checks the clone
(DRORCH_CLONE), after a move the workload itself.

Run by drorch as an after hook (marked `drill: true` to run in drills too); exits 0 once the workload
printed two counts on the target site, 1 if it did not within the seconds given on the command line.
"""

from __future__ import annotations

import os
import sys
import time

import docker.errors

from integration.support.lab_views import container_counts, vm_counts


def counts(kind: str, site: str, clone: str) -> list[int]:
    try:
        return vm_counts(site, clone) if kind == "vm" else container_counts(site, clone)
    except docker.errors.NotFound:
        return []


def main() -> int:
    kind, site = os.environ["DRORCH_KIND"], os.environ["DRORCH_TARGET_SITE"]
    clone = os.environ.get("DRORCH_CLONE") or os.environ["DRORCH_WORKLOAD"]
    deadline = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 30)
    seen: list[int] = []
    while time.monotonic() < deadline:
        seen = counts(kind, site, clone)
        if len(seen) >= 2 and seen[-1] > seen[0]:
            print(f"{clone} counts: {seen[0]}..{seen[-1]}")
            return 0
        time.sleep(0.5)
    print(f"{clone} did not count on: {seen}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
