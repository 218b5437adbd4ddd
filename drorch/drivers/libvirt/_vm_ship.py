"""One recovery point of a VM shipped from its site to the other through both sites' libvirt: an increment
since the previous point's checkpoint when one can be built, else a full copy and why; the target's definition
over the new point's chains; then, once it is recorded, the dropped points merged and the volumes no kept point
reads removed. How points lie on a site is in
`_vm_points`, how a disk's bytes travel in `_disk_transfer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import libvirt

from drorch.drivers.base import Cut, MoveRequest, Retention, Shipped
from drorch.drivers.libvirt._disk_transfer import (
    Backup,
    Disk,
    backup,
    begin_backup,
    create_volume,
    delete_quietly,
    reason,
    refresh,
    stream_volume,
    volume_backing,
)
from drorch.drivers.libvirt._domain_xml import Chain, disk_chain, map_domain_xml, point_disks_at, writable_disks
from drorch.drivers.libvirt._vm_addresses import NetworkView, with_shipped
from drorch.drivers.libvirt._vm_merge import clear_merges, merge
from drorch.drivers.libvirt._vm_points import (
    CHECKPOINT,
    PointVolume,
    chain,
    checkpoint_of,
    intact,
    merges,
    point_name,
    point_volumes,
    removable,
    stamp_of,
    volume_name,
)
from drorch.drivers.libvirt._vm_recovery import chain_files
from drorch.errors import MoveFailed
from drorch.model.playbook import Mappings, Resources

BACKUP, COPY = ".drorch-backup-", ".drorch-copy-"  # a ship's and a cold move's copies, in the source's pool
RELIST_S = (0.2, 0.5, 1.0)  # pauses before a pool's list that lacks part of a chain is asked for again


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
    pending: Backup | None = None  # the backup job that makes `copies`, still under way

    def ready(self) -> list[libvirt.virStorageVol]:
        """The copies, once the job that makes them is done."""
        if self.pending is not None:
            self.copies, self.pending = self.pending.wait(), None
        return self.copies


class Shipper:
    """One ship of one VM's disks from a source to a target site."""

    def __init__(self, dom: libvirt.virDomain, source: libvirt.virConnect, target: libvirt.virConnect,
                 disks: list[tuple[Disk, str]], stamp: str, retention: Retention) -> None:
        self.dom, self.source, self.target = dom, source, target
        self.disks, self.stamp, self.retention = disks, stamp, retention
        self.landed: list[libvirt.virStorageVol] = []
        self.at = datetime.now(UTC)  # the instant the point describes: when its copies began

    def cut(self) -> Taken | None:
        """The point's instant: its copies begun (a running guest's by a backup job), None without disks;
        MoveFailed, with nothing of it left behind, when they cannot be."""
        try:
            return self.take() if self.disks else None
        except (libvirt.libvirtError, MoveFailed) as exc:
            raise MoveFailed(str(exc) if isinstance(exc, MoveFailed) else reason(exc)) from None

    def ship(self, xml: str, mappings: Mappings, resources: Resources | None, where: str,
             taken: Taken | None) -> Shipped:
        """The point of cut `taken` shipped and the target's definition made over its chains (`xml` is the
        source's, `where` names the target site); MoveFailed, with nothing of it left behind, when it cannot be.
        Retention is left to `thin`: a merge would delay the point by seconds."""
        try:
            try:
                sent = self.send(taken) if taken is not None else 0
            finally:
                for copy in taken.copies if taken is not None and taken.temporary else []:
                    delete_quietly(copy)
            chains = self.define(xml, mappings, resources)
            if taken is not None and taken.checkpoint:
                self.drop_old_checkpoints()
        except (libvirt.libvirtError, MoveFailed) as exc:
            self.abandon(taken)  # nothing half-shipped stays behind
            raise MoveFailed(str(exc) if isinstance(exc, MoveFailed) else reason(exc)) from None
        if taken is None:
            return Shipped(f"definition on site {where}", len(xml.encode()), "definition")
        kind = "incremental" if taken.parent else "full"
        length = len(next(iter(chains.values())))
        how = (f"changes since {point_name(taken.parent)}" if taken.parent
               else "crash-consistent full backups" if self.dom.isActive() else "full copies of the stopped disks")
        said = [f"{kind} point of {len(self.disks)} disks ({how}, {sent / 2**20:.1f} MiB sent), chain of {length}"]
        if taken.why_full:
            said.append(f"full because {taken.why_full}")
        return Shipped(f"{'; '.join(said)} on site {where}", sent + len(xml.encode()), point_name(self.stamp), kind,
                       length)

    def define(self, xml: str, mappings: Mappings, resources: Resources | None) -> dict[str, Chain]:
        """The target's definition of the VM over the newest point's chains (`xml` is the source's); the chains."""
        chains = self.chains()
        volumes = {d.key: (pool, d.volume) for d, pool in self.disks}
        nics = NetworkView(self.source).nics(xml, self.dom)
        self.target.defineXML(with_shipped(map_domain_xml(point_disks_at(xml, volumes, chains), mappings,
                                                          resources), nics, mappings))
        return chains

    def thin(self, xml: str, mappings: Mappings, resources: Resources | None) -> str:
        """The points thinned to those retention keeps, after the new one is recorded; the definition made again
        when a merge changed the newest point's chain. What was done, in a line."""
        try:
            removed, merged, said = self.retain()
            if merged:
                self.define(xml, mappings, resources)
        except (libvirt.libvirtError, MoveFailed) as exc:
            why = str(exc) if isinstance(exc, MoveFailed) else reason(exc)
            return f"thinning the points failed ({why}): a later ship thins them"
        if merged:
            said.insert(0, f"{merged} kept points merged with the dropped ones under them")
        if removed:
            said.append(f"{removed} volumes no kept point reads removed")
        return "; ".join(said)

    def _target_vols(self, disk: Disk, pool: str, whole: str | None = None) -> dict[str, PointVolume]:
        """The disk's point volumes as the target's pool lists them. With `whole`, a point whose chain must be
        there: a list that lacks part of it is asked for again a few times, as libvirt's list of a directory pool
        can briefly lack volumes while other ships write into that pool."""
        p = self.target.storagePoolLookupByName(pool)
        pauses = iter(RELIST_S)
        while True:
            refresh(p)
            vols = point_volumes(p.listVolumes(), disk.volume)
            pause = next(pauses, None)
            if whole is None or pause is None or intact(vols, whole):
                return vols
            time.sleep(pause)

    def parent(self) -> tuple[str | None, str]:
        """The point a running guest's increment builds on, or why the new one is full ('' for a first point)."""
        known = [stamp_of(p) for p in self.retention.points]
        if not known:
            return None, ""
        last = known[0]
        if any(d.fmt != "qcow2" for d, _ in self.disks):
            return None, "a disk is not qcow2, which alone holds the bitmaps of increments"
        for disk, pool in self.disks:
            vols = self._target_vols(disk, pool, last)
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
            self.at = datetime.now(UTC)
            copies = frozen if frozen is not None else [self.source.storageVolLookupByPath(d.path) for d in plain]
            why = "the VM is stopped: its disks are copied whole" if self.retention.points else ""
            return Taken(copies, frozen is not None, None, False, why)
        parent, why = self.parent()
        names = [(d, f"{d.volume}{BACKUP}{self.stamp}") for d in plain]
        with_checkpoint = all(d.fmt == "qcow2" for d in plain)
        self.at = datetime.now(UTC)
        if parent is not None:
            try:
                return Taken([], True, parent, True, "", begin_backup(self.dom, self.source, names,
                                                                     checkpoint_of(parent), self._checkpoint_xml()))
            except (MoveFailed, libvirt.libvirtError) as exc:
                why = f"the incremental backup failed ({exc if isinstance(exc, MoveFailed) else reason(exc)})"
        if with_checkpoint:
            try:
                return Taken([], True, None, True, why,
                             begin_backup(self.dom, self.source, names, None, self._checkpoint_xml()))
            except libvirt.libvirtError as exc:  # e.g. a qcow2 of the old version, which holds no bitmaps
                why = why or f"no checkpoint can be made on the source ({reason(exc)}): every point is full"
        return Taken([], True, None, False, why, begin_backup(self.dom, self.source, names))

    def send(self, taken: Taken, counted: Callable[[int], None] | None = None) -> int:
        """Each copy into its own new point volume on the target; the bytes sent."""
        sent = 0
        for (disk, pool), copy in zip(self.disks, taken.ready(), strict=True):
            fmt = "qcow2" if taken.parent else disk.fmt
            name = volume_name(disk.volume, self.stamp, taken.parent)
            self.landed.append(create_volume(self.target, pool, name, dataclasses.replace(disk, fmt=fmt)))
            sent += stream_volume(copy, self.source, self.landed[-1], self.target, counted)
        return sent

    def chains(self) -> dict[str, Chain]:
        """Each disk's chain of the new point, as files of the target."""
        return {disk.key: chain_files(self.target.storagePoolLookupByName(pool),
                                      self._target_vols(disk, pool, self.stamp), self.stamp)
                for disk, pool in self.disks}

    def retain(self) -> tuple[int, int, list[str]]:
        """Thin the points to those retention keeps: each kept point over dropped ones merged with them, then
        every point volume that no kept point reads removed (dropped points, what an interrupted ship or merge
        left). The volumes removed, the merges made, and a line per merge that failed (its volumes stay)."""
        kept = [stamp_of(p) for p in self.retention.kept(point_name(self.stamp), self.at)]
        removed, merged, failed = 0, 0, []
        for disk, pool in self.disks:
            p = self.target.storagePoolLookupByName(pool)
            clear_merges(self.target, p, disk.volume)
            for m in merges(self._target_vols(disk, pool), kept):
                try:
                    merge(self.target, p, disk, self._target_vols(disk, pool), m, self.retention.merge_mib_s)
                    merged += 1
                except MoveFailed as exc:
                    failed.append(f"disk {disk.dev}: {exc}; the points under it stay until a later ship merges them")
            refresh(p)
            try:
                doomed = removable(p.listVolumes(), disk.volume, kept)
            except MoveFailed as exc:
                failed.append(f"disk {disk.dev}: {exc}")
                continue
            for name in doomed:
                with contextlib.suppress(libvirt.libvirtError):  # gone already
                    p.storageVolLookupByName(name).delete(0)
                    removed += 1
        return removed, merged, failed

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
        if taken is not None and taken.pending is not None:
            taken.pending.abandon()
        for copy in taken.copies if taken is not None and taken.temporary else []:
            delete_quietly(copy)
        if taken is not None and taken.checkpoint:
            with contextlib.suppress(libvirt.libvirtError):
                _drop_checkpoint(self.dom.checkpointLookupByName(checkpoint_of(self.stamp)))


class VmCut(Cut):
    """A VM's cut: its backup job begun (or a stopped guest's copies made); `send` streams it."""

    def __init__(self, shipper: Shipper, xml: str, request: MoveRequest) -> None:
        self._shipper, self._xml, self._request = shipper, xml, request
        self._taken = shipper.cut()
        self.at = shipper.at

    def send(self) -> Shipped:
        req = self._request
        try:
            return self._shipper.ship(self._xml, req.mappings, req.resources, req.target.site, self._taken)
        except MoveFailed as exc:
            raise MoveFailed(f"shipping VM {req.workload} to site {req.target.site} failed: {exc}") from None

    def thin(self) -> str:
        return self._shipper.thin(self._xml, self._request.mappings, self._request.resources)

    def abandon(self) -> None:
        self._shipper.abandon(self._taken)


def _drop_checkpoint(cp: libvirt.virDomainCheckpoint) -> None:
    """A checkpoint and its bitmap; only its record where the bitmap is gone (a disk replaced since)."""
    try:
        cp.delete(0)
    except libvirt.libvirtError:
        with contextlib.suppress(libvirt.libvirtError):
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)


