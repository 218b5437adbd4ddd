"""Plans for a DR site that does not mirror the primary, checked and landed on the real lab."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import docker
import libvirt
import pytest

from drorch.store.sql_store import Store
from integration import lab_base, lab_libvirt, labctl
from integration.support.lab_views import REPO, Drorch, container_counts, vm_counts, vm_disk_counts, wait_until, where

TIERS = REPO / "playbooks" / "lab-tiers.yaml"


def vm_networks(site: str) -> list[str]:
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        root = ET.fromstring(conn.lookupByName(lab_base.VM_NAME).XMLDesc(0))
    finally:
        conn.close()
    return [s.get("network", "") for s in root.findall("./devices/interface/source")]


def container_memory_mib(site: str, name: str) -> int:
    client = docker.DockerClient(base_url=labctl.SITES[site].docker_url)
    try:
        return int(client.containers.get(name).attrs["HostConfig"]["Memory"]) >> 20
    finally:
        client.close()


@pytest.mark.usefixtures("fresh_lab")
def test_three_tiers_plan_and_failover_lands_exactly_that_plan(run_drorch: Drorch, state_dir: Path) -> None:
    res = run_drorch("validate", str(TIERS))
    assert res.returncode == 0, res.stderr
    res = run_drorch("plan", str(TIERS), "--json")
    assert res.returncode == 0, res.stderr
    planned = {i["workload"]: i for i in json.loads(res.stdout)["items"]}
    assert {n: (i["action"], i["to_host"], i["after"]) for n, i in planned.items()} == {
        "lab-vm": ("move", "b1", {"vcpus": 1, "memory_mib": 128}),
        "lab-counter": ("degrade", "b1", {"vcpus": 0, "memory_mib": 64}),
        "lab-redeploy": ("skip", None, None),
    }
    assert [(i["wave"], i["workload"]) for i in json.loads(res.stdout)["items"]] == [
        ("core", "lab-vm"), ("apps", "lab-counter"), ("apps", "lab-redeploy")]
    table = run_drorch("plan", str(TIERS)).stdout
    assert "required" not in table and "left behind: site b is short of room" in table

    vm_before = vm_counts("a")[-1]
    ctr_before = container_counts("a", labctl.CHECKPOINT_CONTAINER)[-1]
    res = run_drorch("failover", str(TIERS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("1 left behind as planned")

    # Exactly the plan: the VM on b on b's own network, state kept; the container on b, smaller, state kept;
    # the bulk container still at home.
    assert where(lab_base.VM_NAME)["vms"] == ["b"]
    assert vm_networks("b") == ["dr-net"]
    wait_until(lambda: len(vm_counts("b")) >= 1, "the VM's counter on site b")
    assert vm_counts("b")[0] >= vm_before > 1
    assert where(labctl.CHECKPOINT_CONTAINER)["containers"] == ["b"]
    assert container_memory_mib("b", labctl.CHECKPOINT_CONTAINER) == 64
    wait_until(lambda: len(container_counts("b", labctl.CHECKPOINT_CONTAINER)) >= 1, "lab-counter on site b")
    assert container_counts("b", labctl.CHECKPOINT_CONTAINER)[0] >= ctr_before > 1
    assert where(labctl.REDEPLOY_CONTAINER)["containers"] == ["a"]
    steps = Store(f"sqlite:///{state_dir / 'drorch.db'}").steps(1)
    assert [(s.workload, s.action, s.to_host, s.state) for s in steps] == [
        ("lab-vm", "move", "b1", "succeeded"),
        ("lab-counter", "degrade", "b1", "succeeded"),
        ("lab-redeploy", "skip", None, "skipped"),
    ]

    # Home again with the mappings inverted: the VM back on site a's network.
    res = run_drorch("failback", str(TIERS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert where(lab_base.VM_NAME)["vms"] == ["a"] and vm_networks("a") == ["prod-net"]
    assert all(where(n)["containers"] == ["a"] for n in labctl.CONTAINERS)


@pytest.mark.usefixtures("fresh_lab")
def test_a_saved_inventory_plans_like_the_live_sites(run_drorch: Drorch, tmp_path: Path) -> None:
    res = run_drorch("inventory", str(TIERS), "--json")
    assert res.returncode == 0, res.stderr
    snapshot = json.loads(res.stdout)
    b1 = next(h for h in snapshot["hosts"] if h["host"] == "b1")
    assert "dr-net" in b1["facts"]["vm"]["networks"] and "dr-pool" in b1["facts"]["vm"]["pools"]
    a1 = next(h for h in snapshot["hosts"] if h["host"] == "a1")
    lab_vm = next(w for w in a1["workloads"] if w["name"] == lab_base.VM_NAME)
    assert (lab_vm["memory_mib"], lab_vm["networks"]) == (128, ["prod-net"])
    saved = tmp_path / "lab.json"
    saved.write_text(res.stdout)
    live = run_drorch("plan", str(TIERS), "--json")
    offline = run_drorch("plan", str(TIERS), "--inventory", str(saved), "--json")
    assert live.returncode == offline.returncode == 0
    assert json.loads(live.stdout) == json.loads(offline.stdout)


@pytest.mark.usefixtures("lab")
def test_validate_finds_a_mapping_that_points_nowhere_on_the_real_site(run_drorch: Drorch, tmp_path: Path) -> None:
    text = TIERS.read_text().replace("networks: {prod-net: dr-net}", "networks: {prod-net: dr-lan}")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    line = text.splitlines().index("  networks: {prod-net: dr-lan}") + 1
    res = run_drorch("validate", str(broken))
    assert res.returncode == 1
    assert res.stderr == (f"{broken}:{line}:24: vm lab-vm: network 'dr-lan' does not exist on site b host b1 "
                          "(app-net-dr, dr-net)\n")


@pytest.mark.usefixtures("lab")
def test_validate_checks_a_vms_disks_can_travel(run_drorch: Drorch, tmp_path: Path) -> None:
    """A disk in a pool of site a is copied on the way: fine. A disk file that no active pool holds cannot be
    created or streamed through libvirt: validate says so, naming the disk."""
    a = libvirt.open(labctl.SITES["a"].libvirt_uri)
    scratch = a.storagePoolDefineXML("<pool type='dir'><name>scratch</name><target><path>"
                                     f"{labctl.SITES['a'].root / 'scratch'}</path></target></pool>")
    scratch.build(0)
    scratch.create()
    vol = scratch.createXML("<volume><name>disk-vm.raw</name><capacity unit='MiB'>1</capacity></volume>")
    path = vol.path()
    xml = lab_libvirt.domain_xml().replace(f"<name>{lab_base.VM_NAME}</name>", "<name>disk-vm</name>").replace(
        lab_libvirt.SERIAL_LOG, "/var/log/libvirt/qemu/disk-vm.serial")
    pooled = xml.replace(f"volume='{lab_libvirt.VM_DISK}'", f"volume='{lab_libvirt.VM_DISK}.second'")
    disk = lab_libvirt.VM_DISK
    loose = xml.replace(f"<source pool='prod-pool' volume='{disk}'/>", f"<source file='{path}'/>").replace(
        "type='volume' device='disk'", "type='file' device='disk'").replace("type='qcow2'", "type='raw'")
    playbook = tmp_path / "disk.yaml"
    entry = "  - {name: disk-vm, kind: vm, wave: core}"
    playbook.write_text(TIERS.read_text().split("workloads:\n")[0] + f"workloads:\n{entry}\n")
    line = playbook.read_text().splitlines().index(entry) + 1
    a.storagePoolLookupByName("prod-pool").createXML(
        f"<volume><name>{lab_libvirt.VM_DISK}.second</name><capacity unit='MiB'>1</capacity>"
        "<target><format type='qcow2'/></target></volume>")
    dom = a.defineXML(pooled)
    try:
        dom.create()
        res = run_drorch("validate", str(playbook))
        assert res.returncode == 0, res.stderr
        dom.destroy()
        dom.undefine()
        scratch.destroy()  # the file stays, but no active pool holds it
        dom = a.defineXML(loose)
        dom.create()
        res = run_drorch("validate", str(playbook))
        assert res.returncode == 1
        assert res.stderr.startswith(f"{playbook}:{line}:5: VM disk-vm: disk {path} is in no storage pool that "
                                     "libvirt knows"), res.stderr
        assert res.stderr.rstrip().endswith("it cannot be copied")
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        if not scratch.isActive():
            scratch.create()
        for v in scratch.listAllVolumes():
            v.delete(0)
        scratch.destroy()
        scratch.delete(0)
        scratch.undefine()
        a.storagePoolLookupByName("prod-pool").storageVolLookupByName(f"{lab_libvirt.VM_DISK}.second").delete(0)
        a.close()


@pytest.mark.usefixtures("fresh_lab")
def test_cold_move_resizes_and_replica_starts_the_copy_at_home(run_drorch: Drorch, tmp_path: Path) -> None:
    """Too little room on b for the VM's 128 MiB: a cold move starts it there with its 96 MiB DR size.
    Home again by `replica`: the copy defined on site a starts, the one on b stops."""
    text = (REPO / "playbooks" / "lab.yaml").read_text().replace(
        "capacity: {vcpus: 4, memory_mib: 2048}", "capacity: {vcpus: 4, memory_mib: 100}")
    head = text.split("workloads:\n")[0]
    cold = tmp_path / "cold.yaml"
    cold.write_text(head + "tiers:\n  standard: {priority: 0, on_shortage: degrade}\ndefaults: {tier: standard}\n"
                    "workloads:\n  - {name: lab-vm, kind: vm, strategy: cold, dr_resources: {memory_mib: 96}}\n")
    planned = json.loads(run_drorch("plan", str(cold), "--json").stdout)["items"]
    assert [(i["action"], i["after"]["memory_mib"]) for i in planned] == [("degrade", 96)]

    res = run_drorch("failover", str(cold), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert where(lab_base.VM_NAME)["vms"] == ["b"] and vm_networks("b") == ["dr-net"]
    conn = libvirt.open(labctl.SITES["b"].libvirt_uri)
    try:
        assert conn.lookupByName(lab_base.VM_NAME).maxMemory() == 96 * 1024
    finally:
        conn.close()
    wait_until(lambda: len(vm_counts("b")) >= 1, "the VM's counter on site b")
    assert vm_counts("b")[0] == vm_disk_counts("b")[0] + 1 > 1  # booted again, from its disk, which came along

    home = libvirt.open(labctl.SITES["a"].libvirt_uri)
    try:
        assert lab_base.VM_NAME not in home.listDefinedDomains()  # the definition moved with the guest
        lab_libvirt.ensure_disk(home)  # a replica kept at home, with a disk of its own
        home.defineXML(lab_libvirt.domain_xml())
    finally:
        home.close()
    replica = tmp_path / "replica.yaml"
    replica.write_text(head + "workloads:\n  - {name: lab-vm, kind: vm, strategy: replica}\n")
    res = run_drorch("failback", str(replica), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "from its replica" in res.stdout
    assert where(lab_base.VM_NAME)["vms"] == ["a"] and vm_networks("a") == ["prod-net"]
