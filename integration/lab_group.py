"""The lab's consistency group: a VM with the QEMU guest agent and an ext4 data disk, and two containers with a
volume each, fed one sequence by one writer on this machine (`integration.seq_writer`). Each member keeps the
numbers it receives in /data/seq (the VM appends each with its own checksum, a container holds a file per
number), so a restore shows whether the members' states belong to one instant.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import docker
import libvirt
import yaml
from docker.errors import NotFound

from integration import labctl
from integration.lab_base import IMAGE, SITES, log, wait_for
from integration.lab_libvirt import domain_xml, with_agent
from integration.lab_vm import upload_qcow2
from integration.support.lab_views import LAB_PLAYBOOK

DB = "lab-vm-db"  # its name starts as the lab VMs' do, so `lab down` and `lab reset` take it along
DB_DISK = f"{DB}.qcow2"
DB_MIB = 64
SEQ = ("lab-seq-1", "lab-seq-2")  # one restored from its checkpoint, one redeployed
IDLE = "mkdir -p /data/seq; while true; do sleep 1; done"


def playbook(tmp: Path, grouped: bool, writer: Path | None = None, **group: object) -> Path:
    """The lab playbook over the three; `grouped`: one group (the VM quiesced) whose hooks, given the writer's
    folder, stop the writer at a transaction's end for the cut and let it go on after."""
    doc = yaml.safe_load(LAB_PLAYBOOK.read_text())
    doc["workloads"] = [{"name": DB, "kind": "vm", "strategy": "live"},
                        {"name": SEQ[0], "kind": "container", "strategy": "checkpoint"},
                        {"name": SEQ[1], "kind": "container", "strategy": "redeploy"}]
    doc["protect"] = {"keep": 4}
    if grouped:
        doc["workloads"][0]["quiesce"] = True
        for w in doc["workloads"]:
            w["group"] = "app"
        hooks = {when: [{"run": [sys.executable, "-S", "-m", "integration.seq_control", verb, str(writer)]}]
                 for when, verb in (("pre_freeze", "pause"), ("post_thaw", "resume"))} if writer else {}
        doc["groups"] = [{"name": "app", "hooks": hooks, **group}]
    path = tmp / f"group-{grouped}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def db_xml() -> str:
    """The lab guest with the agent, its disk holding ext4 (lab.data=ext4), and no network."""
    xml = domain_xml(DB)
    start, end = xml.index("    <interface "), xml.index("</interface>\n") + len("</interface>\n")
    return with_agent((xml[:start] + xml[end:]).replace("quiet panic=-1", "quiet panic=-1 lab.data=ext4"))


def ext4_image(tmp: Path) -> Path:
    raw, image = tmp / "db.raw", tmp / "db.qcow2"
    with raw.open("wb") as f:
        f.truncate(DB_MIB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "labdb", str(raw)], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", str(raw), str(image)],
                   check=True)
    return image


def remove() -> None:
    """The group's workloads, disks, volumes and points gone from both sites."""
    for site in SITES.values():
        conn = libvirt.open(site.libvirt_uri)
        try:
            for dom in conn.listAllDomains():
                if dom.name() == DB:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                pool.refresh(0)
                for vol in pool.listAllVolumes():
                    if vol.name().startswith(DB_DISK):
                        vol.delete(0)
        finally:
            conn.close()
        site.serial_log(DB).unlink(missing_ok=True)
        client = docker.DockerClient(base_url=site.docker_url)
        try:
            for c in client.containers.list(all=True):
                if c.name.startswith((*SEQ, "drorch-")):  # and helpers an interrupted transfer left
                    c.remove(force=True, v=True)
            for v in client.volumes.list():
                if v.name.startswith(SEQ):
                    v.remove(force=True)
        finally:
            client.close()


def create() -> None:
    """The group new on site a: the VM booted on its fresh ext4 disk, the containers running with empty volumes."""
    remove()
    conn = libvirt.open(SITES["a"].libvirt_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            upload_qcow2(conn, DB_DISK, ext4_image(Path(tmp)), DB_MIB)
        conn.defineXML(db_xml()).create()
    finally:
        conn.close()
    client = docker.DockerClient(base_url=SITES["a"].docker_url)
    try:
        for name in SEQ:
            client.containers.run(IMAGE, ["/bin/sh", "-c", IDLE], name=name, detach=True,
                                  volumes={f"{name}-data": {"bind": "/data", "mode": "rw"}})
    finally:
        client.close()
    log(f"group {DB}, {', '.join(SEQ)} up on site a")
    wait_for(lambda: "mounted /data" in serial("a"), f"{DB} mounting its data disk", 60)


def serial(site: str) -> str:
    path = labctl.SITES[site].serial_log(DB)
    return path.read_text(errors="replace") if path.exists() else ""


def container_seq(site: str, name: str) -> list[int]:
    """The numbers a member container holds on the site, in order ([] when it holds none)."""
    client = docker.DockerClient(base_url=SITES[site].docker_url)
    try:
        res = client.containers.get(name).exec_run(["ls", "/data/seq"])
    except NotFound:
        return []
    finally:
        client.close()
    return sorted(int(n) for n in res.output.decode().split() if n.isdigit()) if res.exit_code == 0 else []
