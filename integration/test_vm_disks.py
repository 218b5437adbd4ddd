"""VMs with local disks move and come back from recovery points with their disks, through libvirt alone.

The lab VM keeps its counter on a qcow2 disk in site a's pool and reads it back at boot ("disk N" on its
serial console). The tests run under `integration/lab isolate`, where neither site's storage is visible:
a disk that did not travel through libvirt shows as a guest that boots from 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import libvirt
import pytest

from integration import lab_base, lab_libvirt, labctl
from integration.lab_vm import vm_playbook, volumes
from integration.support.lab_views import Drorch, vm_counts, vm_disk_counts, wait_until, where

HUGE = f"{lab_libvirt.VM_DISK}.huge"  # named after the VM's disk, so that a lab reset removes it too


def reboot(site: str) -> None:
    """Power the guest off and on where it runs: at boot it reads its count back from its disk."""
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        dom = conn.lookupByName(lab_base.VM_NAME)
        dom.destroy()
        dom.create()
    finally:
        conn.close()


@pytest.mark.usefixtures("fresh_lab")
def test_live_migration_copies_the_disk(run_drorch: Drorch, tmp_path: Path) -> None:
    assert volumes("a") == [lab_libvirt.VM_DISK] and lab_libvirt.VM_DISK not in volumes("b")
    res = run_drorch("failover", str(vm_playbook(tmp_path, "live")), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    step = json.loads(res.stdout)["steps"][0]
    assert step["bytes_total"] and step["bytes_total"] >= step["bytes_done"] > 0
    assert where(lab_base.VM_NAME)["vms"] == ["b"]
    # The disk moved with the guest: none left on a, one on b, and the guest wrote on there.
    assert lab_libvirt.VM_DISK not in volumes("a") and lab_libvirt.VM_DISK in volumes("b")
    wait_until(lambda: len(vm_counts("b")) >= 3, "the VM counting on b")
    written = vm_counts("b")[-1]
    reboot("b")
    wait_until(lambda: len(vm_disk_counts("b")) >= 1 and len(vm_counts("b")) >= 1, "the VM booting again on b")
    assert vm_disk_counts("b")[0] >= written - 1 > 1  # what it wrote before the reboot was on b's disk

    back = run_drorch("failback", str(vm_playbook(tmp_path, "live")))
    assert back.returncode == 0, back.stdout + back.stderr
    assert volumes("a") == [lab_libvirt.VM_DISK] and lab_libvirt.VM_DISK not in volumes("b")


@pytest.mark.usefixtures("fresh_lab")
def test_cold_move_streams_the_disk(run_drorch: Drorch, tmp_path: Path) -> None:
    before = vm_counts("a")[-1]
    res = run_drorch("failover", str(vm_playbook(tmp_path, "cold")))
    assert res.returncode == 0, res.stdout + res.stderr
    assert where(lab_base.VM_NAME)["vms"] == ["b"]
    assert lab_libvirt.VM_DISK not in volumes("a") and lab_libvirt.VM_DISK in volumes("b")
    wait_until(lambda: len(vm_disk_counts("b")) >= 1 and len(vm_counts("b")) >= 2, "the VM booting on b")
    assert vm_disk_counts("b")[0] >= before  # booted from its own disk, copied while it was shut down
    assert vm_counts("b")[0] == vm_disk_counts("b")[0] + 1


@pytest.mark.usefixtures("fresh_lab")
def test_disaster_restart_and_drill_boot_from_the_shipped_disk(run_drorch: Drorch, tmp_path: Path) -> None:
    playbook = vm_playbook(tmp_path, "live", checked=True, protect={"interval_s": 60, "keep": 2})
    for _ in range(3):  # three points, of which two are kept
        shipped = run_drorch("protect", "ship", str(playbook), "--json")
        assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    at_ship = vm_counts("a")[-1]
    point = json.loads(shipped.stdout)[0]
    assert "incremental point" in point["detail"] and point["size_bytes"] > 0
    points = [v for v in volumes("b") if v.startswith(f"{lab_libvirt.VM_DISK}@point-")]
    assert len(points) == 3  # the two kept ones, and the full copy under them
    assert where(lab_base.VM_NAME)["vms"] == ["a"] and volumes("a") == [lab_libvirt.VM_DISK]  # no backup left behind

    drill = run_drorch("drill", str(playbook))
    assert drill.returncode == 0, drill.stdout + drill.stderr
    clone = f"{lab_base.VM_NAME}-drill-1"
    assert vm_disk_counts("b", clone) and 1 < vm_disk_counts("b", clone)[0] <= at_ship + 1
    assert sorted(v for v in volumes("b") if "drill" in v) == []  # its overlays went with it

    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", str(playbook))
        assert res.returncode == 0, res.stdout + res.stderr
        wait_until(lambda: len(vm_disk_counts("b")) >= 1 and len(vm_counts("b")) >= 1, "the VM booting on b")
        assert 1 < vm_disk_counts("b")[0] <= at_ship + 1  # the newest point's disk, not an empty one
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


@pytest.mark.usefixtures("fresh_lab")
def test_a_pool_too_small_is_refused_before_anything_moves(run_drorch: Drorch, tmp_path: Path) -> None:
    """A second disk of 1 PiB: site b's pool cannot hold it, said by validate and by failover, the VM stays."""
    conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
    disk = ("<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source pool='prod-pool' volume='{HUGE}'/><target dev='vdb' bus='virtio'/></disk>")
    try:
        conn.storagePoolLookupByName("prod-pool").createXML(
            f"<volume><name>{HUGE}</name><capacity unit='PiB'>1</capacity><target><format type='qcow2'/></target>"
            "</volume>", 0)
        dom = conn.lookupByName(lab_base.VM_NAME)
        dom.destroy()  # the guest's bus takes no hot-plugged disk: it starts again with the second one
        conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace("<devices>", f"<devices>{disk}", 1))
        dom.create()
        playbook = vm_playbook(tmp_path, "live")
        res = run_drorch("validate", str(playbook))
        assert res.returncode == 1
        line = next(x for x in res.stderr.splitlines() if "VM lab-vm: site b host b1: pool dr-pool has " in x)
        assert "its disks need 1048576.0 GiB" in line and f"{playbook}:" in line
        moved = run_drorch("failover", str(playbook))  # the same pre-flight stops it before anything moves
        assert moved.returncode == 1 and line in moved.stderr and "run 1" not in moved.stdout, moved.stderr
        assert where(lab_base.VM_NAME)["vms"] == ["a"] and HUGE not in volumes("b")
    finally:
        conn.close()
        labctl.cmd_up(argparse.Namespace(reset=True))  # the VM anew, without the second disk, which goes too
