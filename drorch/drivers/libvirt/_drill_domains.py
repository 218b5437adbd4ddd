"""What a DR drill makes on the secondary through libvirt, and takes away again."""

from __future__ import annotations

import hashlib
import ipaddress

import libvirt

from drorch.drivers.base import DrillNet
from drorch.drivers.libvirt._disk_transfer import guest_disks, refresh
from drorch.drivers.libvirt._domain_xml import Chain


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


def isolated_network(conn: libvirt.virConnect, net: DrillNet) -> None:
    """No forward mode: clones reach each other and, at the gateway address of each of its subnets, the host
    (none: nothing at all). An IPv4 subnet has DHCP for the upper half of its addresses, and the reservations
    of the clones with a drill address."""
    if net.name in conn.listNetworks():
        return
    ips = []
    for cidr, gateway in net.subnets:
        subnet = ipaddress.ip_network(cidr)
        if subnet.version == 6:
            ips.append(f"<ip family='ipv6' address='{gateway}' prefix='{subnet.prefixlen}'/>")
            continue
        hosts = [h for h in subnet.hosts() if str(h) != gateway]
        upper = hosts[len(hosts) // 2:]
        dhcp = f"<dhcp><range start='{upper[0]}' end='{upper[-1]}'/></dhcp>" if upper else ""
        ips.append(f"<ip address='{gateway}' prefix='{subnet.prefixlen}'>{dhcp}</ip>")
    conn.networkCreateXML(f"<network><name>{net.name}</name>{''.join(ips)}</network>")


def clone_mac(clone: str) -> str:
    """A locally administered MAC of QEMU's prefix, the same for the clone's name in every attempt, so that
    its reservation on the drill network is found again."""
    digest = hashlib.sha256(clone.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


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
