"""What a DR drill makes on the secondary through libvirt, and takes away again."""

from __future__ import annotations

import libvirt

from drorch.drivers.libvirt_storage import guest_disks, refresh
from drorch.drivers.libvirt_xml import Chain


def overlays(conn: libvirt.virConnect, clone: str, xml: str) -> dict[str, tuple[str, Chain]]:
    """A qcow2 overlay in the same pool for each writable disk of the definition, by the disk's source, with
    the disk under it: the drill never writes to it."""
    found = {}
    for i, disk in enumerate(guest_disks(conn, xml)):
        overlay = conn.storagePoolLookupByName(disk.pool).createXML(
            f"<volume><name>{clone}-disk{i}.qcow2</name><capacity unit='bytes'>{disk.capacity}</capacity>"
            f"<target><format type='qcow2'/></target><backingStore><path>{disk.path}</path>"
            f"<format type='{disk.fmt}'/></backingStore></volume>", 0)
        found[disk.key] = (overlay.path(), [(disk.path, disk.fmt)])
    return found


def isolated_network(conn: libvirt.virConnect, network: str) -> None:
    """No forward mode and no address: clones reach each other and nothing else."""
    if network not in conn.listNetworks():
        conn.networkCreateXML(f"<network><name>{network}</name></network>")


def remove_clone(conn: libvirt.virConnect, dom: libvirt.virDomain | None, clone: str) -> list[str]:
    """The clone and its overlays; what was removed."""
    removed = []
    if dom is not None:
        persistent = dom.isPersistent()  # a transient clone is gone once destroyed
        if dom.isActive():
            dom.destroy()
        if persistent:
            dom.undefine()
        removed.append(f"VM {clone}")
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        refresh(pool)
        for vol in pool.listAllVolumes():
            if vol.name().startswith(f"{clone}-disk"):
                vol.delete(0)
                removed.append(f"volume {vol.name()}")
    return removed


def remove_network(conn: libvirt.virConnect, network: str) -> bool:
    """The drill's network; False when there was none."""
    try:
        net = conn.networkLookupByName(network)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return False
        raise
    persistent = net.isPersistent()
    if net.isActive():
        net.destroy()
    if persistent:
        net.undefine()
    return True
