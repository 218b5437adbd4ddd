"""Incremental VM recovery points on the lab: bytes and time of an incremental point against a full one, and
drorch's incremental point against the same increment taken and shipped by hand with virsh. Prints figures;
asserts nothing.

The lab VM gets a 1 GiB qcow2 data disk of random bytes (vdb). Each round takes a full point with drorch (a
new record, so nothing to build on), then has the guest rewrite 10 MiB of vdb at a random place and ships that
change twice: first by hand (`virsh backup-begin` of an incremental backup since drorch's newest checkpoint,
`vol-download` into a local file, `vol-create-as` and `vol-upload` on site b, the backup deleted), then as
drorch's incremental point (in-process: protect() over the libvirt driver), which sends the same changes.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/points.py [--rounds N]
(the lab must be up: integration/lab up; `isolate` hides the sites' data, so both sides share nothing)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.drivers.libvirt.vm_driver import LibvirtDriver  # noqa: E402
from drorch.model.playbook import WorkloadKind  # noqa: E402
from drorch.model.playbook_file import load_playbook  # noqa: E402
from drorch.recovery.shipping import protect  # noqa: E402
from drorch.store.rows import RecoveryPoint  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402
from integration import lab_base, lab_libvirt, labctl  # noqa: E402
from integration.bench.failover import check, sub_playbook, virsh  # noqa: E402
from integration.lab_vm import upload_qcow2  # noqa: E402

VM = lab_base.VM_NAME
DATA_DISK = f"{lab_libvirt.VM_DISK}-data"  # named after the VM's disk: a lab reset removes it too
DATA_MIB, CHANGED_MIB = 1024, 10


def attach_data_disk(tmp: Path, mib: int = DATA_MIB) -> None:
    """A qcow2 volume of random bytes in site a's pool, uploaded through the storage API, attached as vdb."""
    raw, image = tmp / "data.raw", tmp / "data.qcow2"
    with raw.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", str(raw), str(image)],
                   check=True)
    raw.unlink()
    conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
    try:
        upload_qcow2(conn, DATA_DISK, image, mib)
        image.unlink()
        dom = conn.lookupByName(VM)
        dom.attachDeviceFlags(
            f"<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source pool='{labctl.SITES['a'].pool}' volume='{DATA_DISK}'/><target dev='vdb' bus='virtio'/></disk>",
            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        dom.destroy()  # the lab guest has no ACPI, hence no PCI hotplug: it boots again with the disk
        dom.create()
    finally:
        conn.close()
    serial = labctl.SITES["a"].serial_log(VM)
    deadline = time.monotonic() + 60
    while "count 2" not in serial.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)


def rewrite(mib: int) -> None:
    """The guest writes `mib` MiB of random bytes at a random place of vdb (told through libvirt's console)."""
    at = random.randrange(0, DATA_MIB - mib)
    serial = labctl.SITES["a"].serial_log(VM)
    conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
    try:
        stream = conn.newStream(0)
        conn.lookupByName(VM).openConsole("serial1", stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        stream.send(f"fill vdb {at} {mib}\n".encode())
        deadline = time.monotonic() + 120
        while f"filled vdb {at} {mib}" not in serial.read_text(errors="replace"):
            check(time.monotonic() < deadline, "the guest did not rewrite its disk")
            time.sleep(0.1)
        stream.finish()
    finally:
        conn.close()


def drorch_point(pb_path: Path, store: Store) -> RecoveryPoint:
    driver = LibvirtDriver()
    try:
        (point,) = protect(load_playbook(pb_path), {WorkloadKind.VM: driver}, store, "a", "b").points
    finally:
        driver.close()
    check(point.complete, f"recovery point failed: {point.error}")
    return point


def virsh_increment(since: str, tmp: Path) -> int:
    """By hand: an incremental backup of vdb since drorch's newest checkpoint, downloaded into a local file
    and uploaded into a new volume of site b's pool; the backup is deleted. Returns the bytes moved."""
    a, b = labctl.SITES["a"], labctl.SITES["b"]
    folder = ET.fromstring(virsh(a.libvirt_uri, "pool-dumpxml", a.pool)).findtext("./target/path")
    name = f"hand-{time.monotonic_ns()}.qcow2"
    spec = tmp / "backup.xml"
    spec.write_text(f"<domainbackup mode='push'><incremental>{since}</incremental><disks>"
                    f"<disk name='vdb' backup='yes' type='file'><target file='{folder}/{name}'/>"
                    "<driver type='qcow2'/></disk><disk name='vda' backup='no'/></disks></domainbackup>")
    virsh(a.libvirt_uri, "backup-begin", VM, "--backupxml", str(spec))
    while "None" not in virsh(a.libvirt_uri, "domjobinfo", VM).splitlines()[0]:
        time.sleep(0.02)
    virsh(a.libvirt_uri, "pool-refresh", a.pool)
    local = tmp / name
    virsh(a.libvirt_uri, "vol-download", "--pool", a.pool, name, str(local))
    virsh(b.libvirt_uri, "vol-create-as", b.pool, name, f"{DATA_MIB}M", "--format", "qcow2")
    virsh(b.libvirt_uri, "vol-upload", "--pool", b.pool, name, str(local))
    virsh(a.libvirt_uri, "vol-delete", "--pool", a.pool, name)
    size = local.stat().st_size
    local.unlink()
    return size


def drop_hand_volumes() -> None:
    conn = libvirt.open(labctl.SITES["b"].libvirt_uri)
    try:
        pool = conn.storagePoolLookupByName(labctl.SITES["b"].pool)
        for name in pool.listVolumes():
            if name.startswith("hand-"):
                pool.storageVolLookupByName(name).delete(0)
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    labctl.cmd_up(argparse.Namespace(reset=True))
    runs: dict[str, list[float]] = {k: [] for k in ("full_s", "full_b", "inc_s", "inc_b", "hand_s", "hand_b")}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        attach_data_disk(tmp)
        pb_path = sub_playbook(tmp, "vm")
        pb_path.write_text(pb_path.read_text() + "protect: {interval_s: 3600, keep: 2, full_every: 1000}\n")
        for r in range(args.rounds):
            store = Store(f"sqlite:///{tmp / f'round{r}.db'}")  # a new record: the point is a full one
            start = time.perf_counter()
            full = drorch_point(pb_path, store)
            runs["full_s"].append(time.perf_counter() - start)
            check(full.point_kind == "full", f"expected a full point: {full.detail}")
            runs["full_b"].append(full.size_bytes or 0)
            rewrite(CHANGED_MIB)
            start = time.perf_counter()
            runs["hand_b"].append(virsh_increment(f"drorch-{(full.name or '').removeprefix('point-')}", tmp))
            runs["hand_s"].append(time.perf_counter() - start)
            drop_hand_volumes()
            start = time.perf_counter()
            inc = drorch_point(pb_path, store)
            runs["inc_s"].append(time.perf_counter() - start)
            check(inc.point_kind == "incremental", f"expected an incremental point: {inc.detail}")
            runs["inc_b"].append(inc.size_bytes or 0)
            print(f"round {r + 1}/{args.rounds}: full {runs['full_s'][-1]:.2f} s {full.size_bytes / 2**20:.1f} MiB, "
                  f"hand-run increment {runs['hand_s'][-1]:.2f} s {runs['hand_b'][-1] / 2**20:.1f} MiB, drorch "
                  f"increment {runs['inc_s'][-1]:.2f} s {(inc.size_bytes or 0) / 2**20:.1f} MiB", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\nmedians over {args.rounds} rounds, VM with {lab_libvirt.DISK_MIB} MiB + {DATA_MIB} MiB of disks, "
          f"{CHANGED_MIB} MiB rewritten between points:")
    print(f"  full point (drorch)              {med['full_s']:6.2f} s  {med['full_b'] / 2**20:8.1f} MiB sent")
    print(f"  incremental point (drorch)       {med['inc_s']:6.2f} s  {med['inc_b'] / 2**20:8.1f} MiB sent")
    print(f"  incremental by hand (virsh)      {med['hand_s']:6.2f} s  {med['hand_b'] / 2**20:8.1f} MiB moved")
    print(f"  incremental / full: bytes {med['inc_b'] / med['full_b']:.3f}, time {med['inc_s'] / med['full_s']:.3f}")
    print(f"  drorch increment / hand-run increment: time {med['inc_s'] / med['hand_s']:.2f}")


if __name__ == "__main__":
    main()
