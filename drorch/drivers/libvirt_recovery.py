"""A VM's recovery points through two sites' libvirt: shipped as full or incremental disk volumes, kept by
retention, and started from (a disaster restart, a drill clone) on overlays that leave the point as it was.

How points lie on a site is in libvirt_points; how a disk's bytes travel is in libvirt_storage.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from drorch.drivers.base import Retention
from drorch.drivers.libvirt_points import (
    CHECKPOINT,
    POINT,
    PointVolume,
    base_volume,
    chain,
    checkpoint_of,
    intact,
    needed,
    point_name,
    point_volumes,
    stamp_of,
    volume_name,
)
from drorch.drivers.libvirt_storage import (
    Disk,
    backup,
    create_volume,
    delete_quietly,
    reason,
    refresh,
    stream_volume,
    volume_backing,
    volume_format,
)
from drorch.drivers.libvirt_xml import Chain, disk_chain, disk_source, point_disks_at, writable_disks
from drorch.errors import MoveFailed

BACKUP, COPY = ".drorch-backup-", ".drorch-copy-"  # a ship's and a cold move's copies, in the source's pool


@dataclass(frozen=True)
class PointDisk:
    """A disk of a shipped definition whose pool holds recovery points of it."""

    key: str  # the source as the definition names it
    pool: libvirt.virStoragePool
    base: str  # the disk's own volume name: what the overlay a restart runs on is called
    vols: dict[str, PointVolume]
    named_chain: Chain  # the chain the definition names now

    def paths(self, stamp: str) -> Chain:
        """The point's chain as files of the site, its own volume first."""
        out = []
        for pv in chain(self.vols, stamp):
            vol = self.pool.storageVolLookupByName(pv.name)
            out.append((vol.path(), volume_format(vol)))
        return out


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


def whole_points(conn: libvirt.virConnect, xml: str) -> list[str]:
    """The points of a shipped definition whose every disk's chain the site holds whole, oldest first."""
    disks = point_disks(conn, xml)
    if not disks:
        return []
    return [point_name(s) for s in sorted(disks[0].vols) if all(intact(d.vols, s) for d in disks)]


def choose(disks: list[PointDisk], point: str | None, what: str) -> str:
    """The time of the point asked for, or of the newest one whose every disk's chain is whole."""
    whole = sorted(s for s in disks[0].vols if all(intact(d.vols, s) for d in disks))
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


def chained(conn: libvirt.virConnect, xml: str, disks: list[Disk]) -> bool:
    """Whether a disk reads files under it: a copy of its own file would miss what they hold."""
    return any(disk_chain(d) for d in writable_disks(xml)) or any(
        volume_backing(conn.storageVolLookupByPath(d.path)) for d in disks)


def frozen_copies(dom: libvirt.virDomain, conn: libvirt.virConnect, xml: str, disks: list[Disk],
                  stamp: str) -> list[libvirt.virStorageVol] | None:
    """Whole copies of a stopped guest's disks made by the backup API, when a disk has a chain under it: the
    guest is started paused for it (it runs no instruction) and stopped again. None when its own volumes are
    whole copies already."""
    if not disks or not chained(conn, xml, disks):
        return None
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        return backup(dom, conn, [(d, f"{d.volume}{COPY}{stamp}") for d in disks])
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()


@dataclass
class Taken:
    """The copies a ship streams, and what kind of point they make."""

    copies: list[libvirt.virStorageVol]
    temporary: bool  # made for the ship: removed after
    parent: str | None  # the point an increment builds on
    checkpoint: bool  # a checkpoint of this point was made on the source
    why_full: str  # why a point after the first is a full one


class Shipper:
    """One ship of one VM's disks from a source to a target site."""

    def __init__(self, dom: libvirt.virDomain, source: libvirt.virConnect, target: libvirt.virConnect,
                 disks: list[tuple[Disk, str]], stamp: str, retention: Retention) -> None:
        self.dom, self.source, self.target = dom, source, target
        self.disks, self.stamp, self.retention = disks, stamp, retention
        self.landed: list[libvirt.virStorageVol] = []

    def _target_vols(self, disk: Disk, pool: str) -> dict[str, PointVolume]:
        p = self.target.storagePoolLookupByName(pool)
        refresh(p)
        return point_volumes(p.listVolumes(), disk.volume)

    def parent(self) -> tuple[str | None, str]:
        """The point to build an increment on, or why the new one is full ('' for a first point)."""
        known = [stamp_of(p) for p in self.retention.points]
        if not known:
            return None, ""
        last = known[0]
        if not self.dom.isActive():
            return None, "the VM is stopped: its disks are copied whole"
        if any(d.fmt != "qcow2" for d, _ in self.disks):
            return None, "a disk is not qcow2, which alone holds the bitmaps of increments"
        for disk, pool in self.disks:
            vols = self._target_vols(disk, pool)
            try:
                length = len(chain(vols, last))
            except MoveFailed as exc:
                return None, f"disk {disk.dev}: {exc}"
            if length >= self.retention.full_every:
                return None, f"a full point every {self.retention.full_every}"
        try:
            self.dom.checkpointLookupByName(checkpoint_of(last))
        except libvirt.libvirtError:
            return None, (f"the source holds no checkpoint of {point_name(last)} (the VM moved or restarted, "
                          "or its checkpoints were deleted)")
        return last, ""

    def _checkpoint_xml(self) -> str:
        disks = "".join(f"<disk name='{d.dev}' checkpoint='bitmap'/>" for d, _ in self.disks)
        return f"<domaincheckpoint><name>{checkpoint_of(self.stamp)}</name><disks>{disks}</disks></domaincheckpoint>"

    def clear_leftovers(self) -> None:
        """The source's copies that an interrupted ship left in its pools (none while a job runs: a backup
        under way is another's)."""
        if self.dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            return
        for disk, _ in self.disks:
            pool = self.source.storagePoolLookupByName(disk.pool)
            refresh(pool)
            for name in pool.listVolumes():
                if name.startswith((f"{disk.volume}{BACKUP}", f"{disk.volume}{COPY}")):
                    delete_quietly(pool.storageVolLookupByName(name))

    def take(self) -> Taken:
        """The copies to stream: an increment when one can be taken, else a full copy and why."""
        self.clear_leftovers()
        plain = [d for d, _ in self.disks]
        if not self.dom.isActive():
            xml = self.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            frozen = frozen_copies(self.dom, self.source, xml, plain, self.stamp)
            copies = frozen if frozen is not None else [self.source.storageVolLookupByPath(d.path) for d in plain]
            why = "the VM is stopped: its disks are copied whole" if self.retention.points else ""
            return Taken(copies, frozen is not None, None, False, why)
        parent, why = self.parent()
        names = [(d, f"{d.volume}{BACKUP}{self.stamp}") for d in plain]
        with_checkpoint = all(d.fmt == "qcow2" for d in plain)
        if parent is not None:
            try:
                return Taken(backup(self.dom, self.source, names, checkpoint_of(parent), self._checkpoint_xml()),
                             True, parent, True, "")
            except (MoveFailed, libvirt.libvirtError) as exc:
                why = f"the incremental backup failed ({exc if isinstance(exc, MoveFailed) else reason(exc)})"
        if with_checkpoint:
            try:
                return Taken(backup(self.dom, self.source, names, None, self._checkpoint_xml()), True, None, True,
                             why)
            except libvirt.libvirtError as exc:  # e.g. a qcow2 of the old version, which holds no bitmaps
                why = why or f"no checkpoint can be made on the source ({reason(exc)}): every point is full"
        return Taken(backup(self.dom, self.source, names), True, None, False, why)

    def send(self, taken: Taken, counted: Callable[[int], None] | None = None) -> int:
        """Each copy into its own new point volume on the target; the bytes sent."""
        sent = 0
        for (disk, pool), copy in zip(self.disks, taken.copies, strict=True):
            fmt = "qcow2" if taken.parent else disk.fmt
            name = volume_name(disk.volume, self.stamp, taken.parent)
            self.landed.append(create_volume(self.target, pool, name, dataclasses.replace(disk, fmt=fmt)))
            sent += stream_volume(copy, self.source, self.landed[-1], self.target, counted)
        return sent

    def chains(self) -> dict[str, Chain]:
        """Each disk's chain of the new point, as files of the target."""
        out = {}
        for disk, pool in self.disks:
            p = self.target.storagePoolLookupByName(pool)
            vols = self._target_vols(disk, pool)
            out[disk.key] = [(p.storageVolLookupByName(v.name).path(), volume_format(p.storageVolLookupByName(v.name)))
                             for v in chain(vols, self.stamp)]
        return out

    def retain(self) -> int:
        """Remove every point volume that no kept point reads (older points, and what an interrupted ship left);
        the number removed."""
        kept = [self.stamp, *(stamp_of(p) for p in self.retention.points[:max(self.retention.keep, 1) - 1])]
        removed = 0
        for disk, pool in self.disks:
            vols = self._target_vols(disk, pool)
            keep = needed(vols, kept)
            p = self.target.storagePoolLookupByName(pool)
            for vol in vols.values():
                if vol.name not in keep:
                    delete_quietly(p.storageVolLookupByName(vol.name))
                    removed += 1
        return removed

    def drop_old_checkpoints(self) -> None:
        """The source keeps only the newest point's checkpoint, which the next increment starts from."""
        with contextlib.suppress(libvirt.libvirtError):
            for cp in self.dom.listAllCheckpoints():
                if cp.getName().startswith(CHECKPOINT) and cp.getName() != checkpoint_of(self.stamp):
                    _drop_checkpoint(cp)

    def abandon(self, taken: Taken | None) -> None:
        """A failed ship leaves nothing that names a point: its volumes and its checkpoint go."""
        for vol in self.landed:
            delete_quietly(vol)
        if taken is not None and taken.checkpoint:
            with contextlib.suppress(libvirt.libvirtError):
                _drop_checkpoint(self.dom.checkpointLookupByName(checkpoint_of(self.stamp)))


def _drop_checkpoint(cp: libvirt.virDomainCheckpoint) -> None:
    """A checkpoint and its bitmap; only its record where the bitmap is gone (a disk replaced since)."""
    try:
        cp.delete(0)
    except libvirt.libvirtError:
        with contextlib.suppress(libvirt.libvirtError):
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)


def started_on_overlays(conn: libvirt.virConnect, dom: libvirt.virDomain, point: str | None, what: str
                        ) -> tuple[str, str]:
    """The shipped definition redefined with each point disk on an overlay (named as the disk itself) over
    the point's chain, and the point's time and a word on its chain. A restart run again finds its overlay
    over the same chain and keeps it: what the guest wrote since is not thrown away."""
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    disks = point_disks(conn, xml)
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
    disks = point_disks(conn, xml)
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
