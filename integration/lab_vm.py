"""The lab VM as the VM tests use it: a playbook of it alone, and the volumes a site's pool holds."""

from __future__ import annotations

import sys
from pathlib import Path

import libvirt
import yaml

from integration import lab_base, labctl
from integration.lab_base import SITES
from integration.support.lab_views import LAB_PLAYBOOK


def volumes(site: str) -> list[str]:
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        pool = conn.storagePoolLookupByName(labctl.SITES[site].pool)
        pool.refresh(0)
        return sorted(pool.listVolumes())
    finally:
        conn.close()


def vm_playbook(tmp_path: Path, strategy: str, checked: bool = False, **extra: object) -> Path:
    """The lab VM alone; `checked`: with a check, drills too, that waits until the guest counts."""
    pb = yaml.safe_load(LAB_PLAYBOOK.read_text())
    pb["workloads"] = [{"name": lab_base.VM_NAME, "kind": "vm", "strategy": strategy}]
    if checked:
        check = {"run": [sys.executable, "-m", "integration.drill_check", "60"], "timeout": 90, "drill": True}
        pb["workloads"][0]["hooks"] = {"after": [check]}
    pb.update(extra)
    path = tmp_path / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(pb))
    return path


def upload_qcow2(conn: libvirt.virConnect, name: str, image: Path, mib: int) -> None:
    """A qcow2 image made here, put into site a's pool as a volume through libvirt's storage API."""
    pool = conn.storagePoolLookupByName(SITES["a"].pool)
    vol = pool.createXML(f"<volume><name>{name}</name><capacity unit='MiB'>{mib}</capacity>"
                         "<target><format type='qcow2'/><compat>1.1</compat></target></volume>", 0)
    stream = conn.newStream(0)
    vol.upload(stream, 0, 0, 0)
    with image.open("rb") as f:
        while chunk := f.read(1 << 20):
            stream.send(chunk)
    stream.finish()
