"""The lab VM's guest as tests see it: its serial log, the commands its second serial port takes (reached through
libvirt's console API), the marks it finds on its disk at boot, and the volumes the kept points read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import libvirt

from integration import lab_base, lab_libvirt, labctl
from integration.lab_vm import volumes
from integration.support.lab_views import Drorch, wait_until

VM = lab_base.VM_NAME
DISK = lab_libvirt.VM_DISK


def serial(site: str, vm: str = VM) -> str:
    path = labctl.SITES[site].serial_log(vm)
    return path.read_text(errors="replace") if path.exists() else ""


def tell(site: str, command: str, done: str, timeout: float = 30) -> None:
    """The guest runs a command of its second serial port (told through libvirt's console API) and says `done`."""
    conn = libvirt.open(labctl.SITES[site].libvirt_uri)
    try:
        stream = conn.newStream(0)
        conn.lookupByName(VM).openConsole("serial1", stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        stream.send(f"{command}\n".encode())
        wait_until(lambda: done in serial(site), f"the guest's {command} on site {site}", timeout)
        stream.finish()
    finally:
        conn.close()


def mark(site: str, k: int) -> None:
    """The guest writes mark k at k MiB of its disk."""
    tell(site, f"mark {k}", f"marked {k}")


def fill(site: str, at_mib: int, mib: int) -> None:
    """The guest writes `mib` MiB of random bytes at `at_mib` MiB of its disk."""
    tell(site, f"fill vda {at_mib} {mib}", f"filled vda {at_mib} {mib}", 60)


def _last_boot(site: str, vm: str) -> str:
    text = serial(site, vm)
    return text[text.rfind("\ndisk "):] if "\ndisk " in text else ""


def marks_at_boot(site: str, vm: str = VM) -> list[int]:
    """The marks the guest found on its disk when it last booted (libvirt starts its serial log anew)."""
    wait_until(lambda: "count " in _last_boot(site, vm), f"{vm} booting on site {site}", 60)
    return sorted(int(k) for k in re.findall(r"^found mark (\d+)", _last_boot(site, vm), re.M))


def listed_volumes(run_drorch: Drorch, playbook: Path) -> dict[str, set[str]]:
    """Per site, the volumes that the points `protect status --points` lists read: each one's own and those
    its name says it builds on."""
    res = run_drorch("protect", "status", "--points", str(playbook), "--json")
    out: dict[str, set[str]] = {}
    for row in json.loads(res.stdout):
        names = out.setdefault(row["site"], set())
        held = volumes(row["site"])
        for point in row["kept"]:
            stamp: str | None = point["name"].removeprefix("point-")
            while stamp is not None:
                vol = next(v for v in held if v.startswith(f"{DISK}@point-{stamp}"))
                names.add(vol)
                stamp = vol.split(".after-")[1] if ".after-" in vol else None
    return out
