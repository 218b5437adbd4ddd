"""A VM's recovery points through two sites' libvirt: shipped as full or incremental disk volumes, kept by
retention, and started from (a disaster restart, a drill clone) on overlays that leave the point as it was.

How points lie on a site is in `_vm_points`; how a disk's bytes travel is in `_disk_transfer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from drorch.drivers.libvirt._disk_transfer import (
    Disk,
    create_volume,
    delete_quietly,
    refresh,
    volume_backing,
    volume_format,
)
from drorch.drivers.libvirt._domain_xml import Chain, disk_chain, disk_source, point_disks_at, writable_disks
from drorch.drivers.libvirt._vm_merge import clear_merges
from drorch.drivers.libvirt._vm_points import (
    POINT,
    PointVolume,
    base_volume,
    chain,
    intact,
    point_name,
    point_volumes,
    stamp_of,
)
from drorch.errors import MoveFailed


def chain_files(pool: libvirt.virStoragePool, vols: dict[str, PointVolume], stamp: str) -> Chain:
    """A point's chain as files of the site, its own volume first."""
    out = []
    for pv in chain(vols, stamp):
        vol = pool.storageVolLookupByName(pv.name)
        out.append((vol.path(), volume_format(vol)))
    return out


@dataclass(frozen=True)
class PointDisk:
    """A disk of a shipped definition whose pool holds recovery points of it."""

    key: str  # the source as the definition names it
    pool: libvirt.virStoragePool
    base: str  # the disk's own volume name: what the overlay a restart runs on is called
    vols: dict[str, PointVolume]
    named_chain: Chain  # the chain the definition names now

    def paths(self, stamp: str) -> Chain:
        return chain_files(self.pool, self.vols, stamp)


def point_disks(conn: libvirt.virConnect, xml: str) -> list[PointDisk]:
    found = []
    for disk in writable_disks(xml):
        key = disk_source(disk) or ""
        if disk.get("type") != "volume":
            continue
        pool_name, _, volume = key.partition("/")
        try:
            pool = conn.storagePoolLookupByName(pool_name)
        except libvirt.libvirtError:
            continue
        refresh(pool)
        base = base_volume(volume)
        vols = point_volumes(pool.listVolumes(), base)
        if vols:
            found.append(PointDisk(key, pool, base, vols, disk_chain(disk)))
    return found


def _opened(conn: libvirt.virConnect, xml: str) -> list[PointDisk]:
    """The point disks a restart or a drill is to open: a merge of their points still under way (left by a process
    that hangs, or cut off) is stopped first, as its commit holds them; a merge is never needed to keep a point."""
    disks = point_disks(conn, xml)
    for disk in disks:
        clear_merges(conn, disk.pool, disk.base)
    return disks


def _whole(disks: list[PointDisk]) -> list[str]:
    """The times of the points whose every disk's chain the site holds whole, oldest first."""
    return sorted(s for s in disks[0].vols if all(intact(d.vols, s) for d in disks)) if disks else []


def whole_points(conn: libvirt.virConnect, xml: str) -> list[str]:
    """The points of a shipped definition that the site holds whole, oldest first."""
    return [point_name(s) for s in _whole(point_disks(conn, xml))]


def choose(disks: list[PointDisk], point: str | None, what: str) -> str:
    """The time of the point asked for, or of the newest one whose every disk's chain is whole."""
    whole = _whole(disks)
    if point is None:
        if not whole:
            raise MoveFailed(f"{what}: no recovery point on this site has all its volumes")
        return whole[-1]
    stamp = stamp_of(point)
    if stamp not in whole:
        held = ", ".join(point_name(s) for s in reversed(whole)) or "none whole"
        raise MoveFailed(f"{what} has no whole recovery point {point} on this site (it holds: {held})")
    return stamp


def overlay(disk: PointDisk, name: str, backing: Chain) -> str:
    """A new qcow2 volume over the chain's first file, sized as the point: what a restart or a clone writes."""
    conn = disk.pool.connect()
    capacity = conn.storageVolLookupByPath(backing[0][0]).info()[1]
    vol = create_volume(conn, disk.pool.name(), name,
                        Disk(disk.key, "", disk.pool.name(), name, "qcow2", capacity, 0, ""), backing[0])
    return str(vol.path())


def started_on_overlays(conn: libvirt.virConnect, dom: libvirt.virDomain, point: str | None, what: str
                        ) -> tuple[str, str]:
    """The shipped definition redefined with each point disk on an overlay (named as the disk itself) over
    the point's chain, and the point's time and a word on its chain. A restart run again finds its overlay
    over the same chain and keeps it: what the guest wrote since is not thrown away."""
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    disks = _opened(conn, xml)
    if not disks:
        return xml, ""
    stamp = choose(disks, point, what)
    volumes, chains = {}, {}
    for disk in disks:
        backing = disk.paths(stamp)
        if not _overlay_over(disk, backing) or point is not None:
            overlay(disk, disk.base, backing)
        volumes[disk.key], chains[disk.key] = (disk.pool.name(), disk.base), backing
    length = len(chain(disks[0].vols, stamp))
    return point_disks_at(xml, volumes, chains), f"{point_name(stamp)} ({_chain_words(length)})"


def _overlay_over(disk: PointDisk, backing: Chain) -> bool:
    try:
        vol = disk.pool.storageVolLookupByName(disk.base)
    except libvirt.libvirtError:
        return False
    return volume_backing(vol) == backing[0][0] and disk.named_chain == backing


def _chain_words(length: int) -> str:
    return "a full copy" if length == 1 else f"a full copy and {length - 1} increments"


def clone_overlays(conn: libvirt.virConnect, clone: str, xml: str, point: str | None, what: str
                   ) -> tuple[dict[str, tuple[str, Chain]], str]:
    """An overlay per point disk for a drill clone, over the chosen point's chain; the point's name."""
    disks = _opened(conn, xml)
    if not disks:
        return {}, ""
    stamp = choose(disks, point, what)
    found = {}
    for i, disk in enumerate(disks):
        backing = disk.paths(stamp)
        found[disk.key] = (overlay(disk, f"{clone}-disk{i}.qcow2", backing), backing)
    return found, point_name(stamp)



Leftover = tuple[str, Callable[[], None]]  # what it is, and how it goes


def leftovers(conn: libvirt.virConnect, dom: libvirt.virDomain | None) -> list[Leftover]:
    """What a site holds of a VM that runs on another site, beside its recovery points: a definition that is not
    a shipped one (it names no point's chain) and its disks, or a disk standing where a restart would put its
    overlay. A recovery point's volume is never one."""
    if dom is None or dom.isActive():
        return []
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    if any(disk_chain(d) for d in writable_disks(xml)):  # a shipped definition: only a disk in its overlay's place
        return [(f"disk {d.pool.name()}/{d.base} (not over its recovery point)", _deleter(d.pool, d.base))
                for d in point_disks(conn, xml) if _volume(d.pool, d.base) is not None
                and not _overlay_over(d, d.named_chain)]
    found: list[Leftover] = [("stopped definition", lambda: dom.undefineFlags(
        libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE))]
    for disk in writable_disks(xml):
        key = disk_source(disk) or ""
        try:
            if disk.get("type") == "volume":
                pool_name, _, name = key.partition("/")
                pool = conn.storagePoolLookupByName(pool_name)
            else:
                vol = conn.storageVolLookupByPath(key)
                pool, name = vol.storagePoolLookupByVolume(), vol.name()
        except libvirt.libvirtError:
            continue
        if POINT not in name and _volume(pool, name) is not None:
            found.append((f"disk {pool.name()}/{name}", _deleter(pool, name)))
    return found


def _volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    refresh(pool)
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def _deleter(pool: libvirt.virStoragePool, name: str) -> Callable[[], None]:
    return lambda: delete_quietly(_volume(pool, name))
