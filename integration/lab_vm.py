"""The lab VM as the VM tests use it: a playbook of it alone, and the volumes a site's pool holds."""

from __future__ import annotations

import sys
from pathlib import Path

import libvirt
import yaml

from integration import lab_base, labctl
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
