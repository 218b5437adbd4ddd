"""Guest disks that travel between sites through libvirt alone.

Target volumes are created in the mapped pool through the storage API, with the source's format and
capacity; their contents go by libvirt's storage migration (live moves) or are streamed through this
process with volume download and upload (cold moves, recovery points). A running guest's recovery
point is a crash-consistent copy made by libvirt's backup API into its own pool (full, or the changes
since a checkpoint), then streamed.
"""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from drorch.drivers.libvirt._domain_xml import disk_source, writable_disks
from drorch.errors import MoveFailed

CHUNK = 1 << 20
FILE_POOLS = frozenset({"dir", "fs", "netfs"})  # pools of files, which take any image format


@dataclass(frozen=True)
class Disk:
    """A guest disk as it lies in a pool of its site."""

    key: str  # the source as the definition names it: a file path or pool/volume
    dev: str  # the guest's device name, which libvirt's storage migration goes by
    pool: str
    volume: str
    fmt: str
    capacity: int  # bytes the guest sees
    allocation: int  # bytes its file holds now: about what a copy sends
    path: str


def reason(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


def guest_disks(conn: libvirt.virConnect, xml: str) -> list[Disk]:
    """Every writable disk of the definition, found in the site's pools; raises MoveFailed for one that is
    in none, since only a pool's volume can be created, copied and streamed through libvirt."""
    found = []
    for disk in writable_disks(xml):
        key = disk_source(disk) or ""
        target, driver = disk.find("target"), disk.find("driver")
        try:
            if disk.get("type") == "volume":
                pool_name, _, vol_name = key.partition("/")
                vol = conn.storagePoolLookupByName(pool_name).storageVolLookupByName(vol_name)
            else:
                vol = conn.storageVolLookupByPath(key)
            pool = vol.storagePoolLookupByVolume()
            _kind, capacity, allocation = vol.info()
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"disk {key} is in no storage pool that libvirt knows ({reason(exc)}): it cannot be "
                             "copied") from None
        found.append(Disk(key, target.get("dev", "") if target is not None else "", pool.name(), vol.name(),
                          driver.get("type", "raw") if driver is not None else "raw", capacity, allocation,
                          vol.path()))
    return found


def pool_type(pool: libvirt.virStoragePool) -> str:
    return ET.fromstring(pool.XMLDesc(0)).get("type", "")


def format_problem(kind: str, fmt: str) -> str | None:
    """A pool of block devices or of an object store holds raw images only."""
    if kind in FILE_POOLS or fmt == "raw":
        return None
    return f"a {kind} pool takes raw images only, not {fmt}"


def placement_problems(conn: libvirt.virConnect, disks: list[tuple[Disk, str]]) -> list[str]:
    """What stops each disk from being created in its target pool: a pool that is not there or not active, a
    format it cannot take, or less room than the disks' full size (what the guest may fill)."""
    problems: list[str] = []
    need: dict[str, int] = {}
    for disk, pool_name in disks:
        try:
            pool = conn.storagePoolLookupByName(pool_name)
            if not pool.isActive():
                problems.append(f"disk {disk.dev}: pool {pool_name} is not active")
                continue
            wrong = format_problem(pool_type(pool), disk.fmt)
        except libvirt.libvirtError as exc:
            problems.append(f"disk {disk.dev}: pool {pool_name} cannot be used: {reason(exc)}")
            continue
        if wrong:
            problems.append(f"disk {disk.dev}: {wrong} (pool {pool_name})")
        need[pool_name] = need.get(pool_name, 0) + disk.capacity
    for pool_name, size in sorted(need.items()):
        available = conn.storagePoolLookupByName(pool_name).info()[3]
        if available < size:
            problems.append(f"pool {pool_name} has {available / 2**30:.1f} GiB free, its disks need "
                            f"{size / 2**30:.1f} GiB")
    return problems


def shared(conn: libvirt.virConnect, disk: Disk) -> bool:
    """The target sees the very same file (shared storage): nothing to copy."""
    try:
        conn.storageVolLookupByPath(disk.path)
    except libvirt.libvirtError:
        return False
    return True


def refresh(pool: libvirt.virStoragePool, wait_s: float = 10.0) -> None:
    """The pool's volumes read again from its storage. libvirt refuses while the pool builds a volume (another
    move's disk being created); its own list is current then, so after a while it is used as it is."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            if "asynchronous jobs" not in str(exc):
                raise
            if time.monotonic() > deadline:
                return
        time.sleep(0.05)


def create_volume(conn: libvirt.virConnect, pool_name: str, name: str, disk: Disk,
                  backing: tuple[str, str] | None = None) -> libvirt.virStorageVol:
    """A new, empty volume for the disk's copy (or an overlay over `backing`, a (path, format)); one of that
    name left by an earlier copy is replaced. qcow2 is made in its current version, which holds the bitmaps
    that incremental backups need."""
    pool = conn.storagePoolLookupByName(pool_name)
    refresh(pool)
    try:
        pool.storageVolLookupByName(name).delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
    fmt = "qcow2" if backing else disk.fmt
    compat = "<compat>1.1</compat>" if fmt == "qcow2" else ""
    under = (f"<backingStore><path>{backing[0]}</path><format type='{backing[1]}'/></backingStore>"
             if backing else "")
    return pool.createXML(f"<volume><name>{name}</name><capacity unit='bytes'>{disk.capacity}</capacity>"
                          f"<target><format type='{fmt}'/>{compat}</target>{under}</volume>", 0)


def volume_format(vol: libvirt.virStorageVol) -> str:
    return ET.fromstring(vol.XMLDesc(0)).find("./target/format").get("type", "raw")  # type: ignore[union-attr]  # libvirt always writes it


def volume_backing(vol: libvirt.virStorageVol) -> str | None:
    """The file a volume's own header names under it, if any."""
    return ET.fromstring(vol.XMLDesc(0)).findtext("./backingStore/path")


def delete_quietly(vol: libvirt.virStorageVol | None) -> None:
    if vol is None:
        return
    with contextlib.suppress(libvirt.libvirtError):
        vol.delete(0)


def stream_volume(src: libvirt.virStorageVol, src_conn: libvirt.virConnect, dst: libvirt.virStorageVol,
                  dst_conn: libvirt.virConnect, counted: Callable[[int], None] | None = None) -> int:
    """The volume's file, chunk by chunk from one site's libvirt into the other's; returns the bytes sent.
    The copy is checked by its size, which libvirt reports from the target's own file."""
    down, up = src_conn.newStream(0), dst_conn.newStream(0)
    sent = 0
    try:
        src.download(down, 0, 0, 0)
        dst.upload(up, 0, 0, 0)
        while True:
            data = down.recv(CHUNK)
            if not data:
                break
            view = memoryview(data)
            while view:
                n = up.send(bytes(view))
                view = view[n:]
            sent += len(data)
            if counted is not None:
                counted(len(data))
        down.finish()
        up.finish()
    except BaseException:
        for stream in (down, up):
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
        raise
    refresh(dst.storagePoolLookupByVolume())
    # Sizes of the files themselves: what is allocated to them is counted in whole blocks of the file system.
    landed = dst_conn.storageVolLookupByKey(dst.key()).infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
    expected = src.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
    if landed < sent or sent < expected:
        raise MoveFailed(f"the copy of volume {src.name()} is {landed} bytes on the target, {sent} were sent, "
                         f"its file at the source has {expected}")
    return sent


@dataclass
class Backup:
    """A backup job under way: its copies describe the instant it began, whatever the guest writes since (QEMU
    copies a block before the guest overwrites it)."""

    dom: libvirt.virDomain
    conn: libvirt.virConnect
    targets: list[tuple[libvirt.virStoragePool, str]]  # each copy's pool and file
    timeout_s: float

    def wait(self) -> list[libvirt.virStorageVol]:
        """The copies once the job is done; MoveFailed, none of them left, when it failed."""
        deadline, pause = time.monotonic() + self.timeout_s, 0.01
        while self.dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            if time.monotonic() > deadline:
                self.dom.abortJob()
                break
            time.sleep(pause)
            pause = min(pause * 1.5, 0.25)  # a small disk is done in milliseconds, a large one in minutes
        done = self.dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        vols = self.found()
        if done.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED or len(vols) != len(self.targets):
            for vol in vols:
                delete_quietly(vol)
            why = done.get("errmsg") or (f"not done within {self.timeout_s:.0f} s" if time.monotonic() > deadline
                                         else "libvirt gave no reason")
            raise MoveFailed(f"the backup of {self.dom.name()}'s disks failed: {why}")
        return vols

    def found(self) -> list[libvirt.virStorageVol]:
        vols = []
        for pool, path in self.targets:
            refresh(pool)
            with contextlib.suppress(libvirt.libvirtError):
                vols.append(self.conn.storageVolLookupByPath(path))
        return vols

    def abandon(self) -> None:
        """The job stopped and its copies removed."""
        with contextlib.suppress(libvirt.libvirtError):
            if self.dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                self.dom.abortJob()
        for vol in self.found():
            delete_quietly(vol)


def begin_backup(dom: libvirt.virDomain, conn: libvirt.virConnect, disks: list[tuple[Disk, str]],
                 incremental: str | None = None, checkpoint: str | None = None,
                 timeout_s: float = 3600.0) -> Backup:
    """Crash-consistent copies of a running guest's disks, all of one instant (now), begun by one job of
    libvirt's backup API (push mode), each into a new volume of its own pool named as given with it: full copies,
    or with `incremental` (a checkpoint's name) qcow2 files holding only what changed since. `checkpoint`, a
    checkpoint's XML, is made at the same instant for the next one."""
    targets = []
    for disk, name in disks:
        pool = conn.storagePoolLookupByName(disk.pool)
        kind = pool_type(pool)
        if kind not in FILE_POOLS:
            raise MoveFailed(f"disk {disk.dev}: backups are written to a pool of files, and {disk.pool} is a {kind} "
                             "pool")
        folder = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path") or ""
        targets.append((disk, pool, f"{folder.rstrip('/')}/{name}"))
    since = f"<incremental>{incremental}</incremental>" if incremental else ""
    dom.backupBegin(f"<domainbackup mode='push'>{since}<disks>" + "".join(
        f"<disk name='{disk.dev}' backup='yes' type='file'><target file='{path}'/>"
        f"<driver type='{'qcow2' if incremental else disk.fmt}'/></disk>"
        for disk, _, path in targets) + "</disks></domainbackup>", checkpoint, 0)
    return Backup(dom, conn, [(pool, path) for _, pool, path in targets], timeout_s)


def backup(dom: libvirt.virDomain, conn: libvirt.virConnect, disks: list[tuple[Disk, str]],
           incremental: str | None = None, checkpoint: str | None = None) -> list[libvirt.virStorageVol]:
    """`begin_backup`, waited for."""
    return begin_backup(dom, conn, disks, incremental, checkpoint).wait()
