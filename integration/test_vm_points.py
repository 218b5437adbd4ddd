"""VM recovery points in time: a full point then increments, restarts and drills from any of them on overlays
that leave every point as it was, and a whole DR cycle that ends with each disk under its own name.

The lab VM writes a mark at K MiB of its disk when told on its second serial port, and at boot prints every
mark it finds there ("found mark K"); its counter at the start of the disk tells the point's time too. The
tests run under `integration/lab isolate`: the sites' storage is invisible, and a point's contents are read
back through libvirt's volume download only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import libvirt
import pytest

from integration import lab_base, lab_libvirt, labctl
from integration.bench.points import DATA_DISK, attach_data_disk
from integration.lab_vm import vm_playbook, volumes
from integration.support.lab_views import DRORCH, Drorch, vm_counts, wait_until, where
from integration.support.vm_guest import listed_volumes, mark, marks_at_boot

VM = lab_base.VM_NAME
DISK = lab_libvirt.VM_DISK


def point_sums(site: str) -> dict[str, str]:
    """Every point volume of the VM's disk on the site, and the SHA-256 of its bytes read through libvirt."""
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    sums = {}
    try:
        pool = conn.storagePoolLookupByName(labctl.SITES[site].pool)
        pool.refresh(0)
        for name in pool.listVolumes():
            if not name.startswith(f"{DISK}@point-"):
                continue
            digest, stream = hashlib.sha256(), conn.newStream(0)
            pool.storageVolLookupByName(name).download(stream, 0, 0, 0)
            while data := stream.recv(1 << 20):
                digest.update(data)
            stream.finish()
            sums[name] = digest.hexdigest()
    finally:
        conn.close()
    return sums


def volumes_now(site: str) -> list[str]:
    """The pool's volumes, or none while the pool builds one (libvirt refuses a refresh then)."""
    try:
        return volumes(site)
    except libvirt.libvirtError as exc:
        if "asynchronous jobs" in str(exc):
            return []
        raise


def destroy(site: str) -> None:
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        conn.lookupByName(VM).destroy()
    finally:
        conn.close()


@pytest.mark.usefixtures("fresh_lab")
def test_points_in_time_and_a_clean_dr_cycle(run_drorch: Drorch, tmp_path: Path) -> None:
    playbook = vm_playbook(tmp_path, "live", checked=True, protect={"interval_s": 60, "keep": 4})
    taken = []
    for k in range(1, 5):  # mark k is on the disk from point k on
        mark("a", k)
        res = run_drorch("protect", "ship", str(playbook), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        point = json.loads(res.stdout)[0]
        assert (point["point_kind"], point["chain"]) == ("full" if k == 1 else "incremental", k), point
        assert ("changes since point-" in point["detail"]) is (k > 1)
        taken.append(point["taken_at"])
    listed = run_drorch("protect", "status", "--points", str(playbook))
    assert listed.returncode == 0 and listed.stdout.count(" incremental ") == 3 and " full " in listed.stdout
    sums = point_sums("b")
    assert len(sums) == 4 and where(VM)["vms"] == ["a"] and volumes("a") == [DISK]

    # A drill from the second point boots its data, and every point stays byte for byte as it was.
    drill = run_drorch("drill", "--point", taken[1], str(playbook))
    assert drill.returncode == 0, drill.stdout + drill.stderr
    clone = re.search(r"(lab-vm-drill-\d+)", drill.stdout)
    assert clone is not None and marks_at_boot("b", clone.group(1)) == [1, 2]
    assert point_sums("b") == sums and not [v for v in volumes("b") if "drill" in v]

    bad = run_drorch("failover", "--disaster", "--confirm-primary-down", "--point", "2000-01-01T00:00:00",
                     str(playbook))
    assert bad.returncode == 2 and "it keeps: " in bad.stderr and where(VM)["vms"] == ["a"]

    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        # Disaster: the newest point, then (the guest stopped) the second one; the points do not change.
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", str(playbook))
        assert res.returncode == 0, res.stdout + res.stderr
        assert marks_at_boot("b") == [1, 2, 3, 4]
        destroy("b")
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", "--point", taken[1], str(playbook))
        assert res.returncode == 0 and "a full copy and 1 increments" in res.stdout, res.stdout + res.stderr
        assert marks_at_boot("b") == [1, 2]
        assert point_sums("b") == sums and DISK in volumes("b")  # the guest writes on its overlay

        # Site a comes back with its old definition and disk: named as stale, never started.
        lab_libvirt.start_libvirt(labctl.SITES["a"])
        status = run_drorch("status", str(playbook))
        assert "stale: site a host a1 holds a stale copy of vm lab-vm" in status.stdout, status.stdout
        assert "stopped definition" in status.stdout and f"disk prod-pool/{DISK}" in status.stdout
        mark("b", 5)
        back = run_drorch("protect", "ship", "--failback", str(playbook), "--json")
        assert back.returncode == 0 and json.loads(back.stdout)[0]["point_kind"] == "full", back.stdout
        pruned = run_drorch("prune", str(playbook))
        assert pruned.returncode == 0 and f"disk prod-pool/{DISK}" in pruned.stdout, pruned.stdout + pruned.stderr
        res = run_drorch("failback", str(playbook))
        assert res.returncode == 0, res.stdout + res.stderr
        assert where(VM)["vms"] == ["a"]
        wait_until(lambda: len(vm_counts("a")) >= 2, "the guest counting on site a")
        res = run_drorch("protect", "ship", str(playbook), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "full because" in json.loads(res.stdout)[0]["detail"]

        # Each disk runs under its own name; every other volume on either pool is read by a listed point.
        listed_vols = listed_volumes(run_drorch, playbook)
        assert set(volumes("a")) == {DISK, *listed_vols.get("a", set())}
        assert set(volumes("b")) == listed_vols["b"]
        assert run_drorch("status", str(playbook)).stdout.count("stale") == 0
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


def delete_volume(site: str, name: str) -> None:
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        conn.storagePoolLookupByName(labctl.SITES[site].pool).storageVolLookupByName(name).delete(0)
    finally:
        conn.close()


@pytest.mark.usefixtures("fresh_lab")
def test_what_an_increment_cannot_build_on_makes_a_full_point(run_drorch: Drorch, tmp_path: Path) -> None:
    """A chain missing a volume on the target, checkpoints deleted by hand on the source, and a volume left by
    an interrupted ship: each is found, and the next point is a full one that says why."""
    playbook = vm_playbook(tmp_path, "live", protect={"interval_s": 600, "keep": 3})
    shipped = []
    for _ in range(3):
        res = run_drorch("protect", "ship", str(playbook), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        shipped.append(json.loads(res.stdout)[0]["name"].removeprefix("point-"))
    middle = next(v for v in volumes("b") if v.startswith(f"{DISK}@point-{shipped[1]}"))
    delete_volume("b", middle)
    status = run_drorch("protect", "status", "--points", str(playbook))
    assert status.stdout.count("NOT WHOLE: site b no longer holds point-") == 2, status.stdout
    assert "2 not whole" in status.stdout
    ready = run_drorch("readiness", "--check", str(playbook))
    assert ready.returncode == 1 and "vm lab-vm: 2 kept points are not whole" in ready.stdout, ready.stdout
    res = run_drorch("protect", "ship", str(playbook), "--json")
    point = json.loads(res.stdout)[0]
    assert point["point_kind"] == "full" and "2 points no longer whole dropped" in point["detail"], point
    assert not [v for v in volumes("b") if shipped[1] in v or shipped[2] in v]  # what was left of them is gone

    conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
    try:
        for cp in conn.lookupByName(VM).listAllCheckpoints():
            cp.delete(0)
    finally:
        conn.close()
    # What a ship killed while streaming leaves: its backup in the source's pool, a volume in no record.
    half, backup = f"{DISK}@point-20000101T000000000000", f"{DISK}.drorch-backup-20000101T000000000000"
    for site, name in (("b", half), ("a", backup)):
        conn = libvirt.open(labctl.SITES[site].libvirt_uri)
        try:
            conn.storagePoolLookupByName(labctl.SITES[site].pool).createXML(
                f"<volume><name>{name}</name><capacity unit='MiB'>1</capacity></volume>", 0)
        finally:
            conn.close()
    res = run_drorch("protect", "ship", str(playbook), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    point = json.loads(res.stdout)[0]
    assert point["point_kind"] == "full" and "the source holds no checkpoint of point-" in point["detail"]
    assert half not in volumes("b") and "volumes no kept point reads removed" in point["detail"]
    assert volumes("a") == [DISK]
    assert run_drorch("readiness", "--check", str(playbook)).returncode == 0


@pytest.mark.usefixtures("fresh_lab")
def test_a_ship_killed_while_it_streams_leaves_no_point(run_drorch: Drorch, state_dir: Path, tmp_path: Path) -> None:
    """SIGKILL while a full point of a 256 MiB disk streams: no point is recorded, and the next ship removes what
    the killed one left on both sites (its volume on b, its backup copy on a) and ships a whole point."""
    attach_data_disk(tmp_path, 256)
    playbook = vm_playbook(tmp_path, "live", protect={"interval_s": 60, "keep": 2})
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
    ship = subprocess.Popen([str(DRORCH), "protect", "ship", str(playbook)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(v.startswith(f"{DATA_DISK}@point-") for v in volumes_now("b")),
                   "the data disk streaming", 120)
        time.sleep(0.3)
        assert ship.poll() is None, "the ship ended before it could be killed"
    finally:
        ship.send_signal(signal.SIGKILL)
        ship.wait()
    assert [v for v in volumes("a") if ".drorch-backup-" in v]  # what the killed ship left
    status = run_drorch("protect", "status", str(playbook))
    assert status.returncode == 1 and "no recovery points" in status.stderr, status.stdout + status.stderr
    res = run_drorch("protect", "ship", str(playbook), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    point = json.loads(res.stdout)[0]
    assert point["point_kind"] == "full" and "volumes no kept point reads removed" in point["detail"], point
    stamp = point["name"].removeprefix("point-")
    assert volumes("b") == sorted(f"{disk}@point-{stamp}" for disk in (DISK, DATA_DISK))
    assert volumes("a") == sorted([DISK, DATA_DISK])
