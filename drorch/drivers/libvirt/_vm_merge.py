"""Thinning a VM's recovery points on the secondary through its libvirt: the changes of the points dropped under a
kept one are merged into a new volume of the kept point, so that no kept point reads them and they can go.

No volume a kept point reads is ever written. The new volume starts empty; the dropped increments and the kept
point's own are committed into it by a block commit in a helper domain that is started paused (it runs no guest
code) with that chain, the new volume last, under a scratch overlay. (The chain is given in the domain's XML: what
a shipped increment's own header names under it is a file of the other site.) Until the kept
point's old volume is deleted, it is the one read (`_vm_points.point_volumes`); so a merge cut short at any step
leaves every kept point whole, and the next ship removes what it left (`clear_merges`).
"""

from __future__ import annotations

import contextlib
import time
from xml.sax.saxutils import quoteattr

import libvirt

from drorch.drivers.libvirt._disk_transfer import Disk, create_volume, delete_quietly, reason, refresh, volume_format
from drorch.drivers.libvirt._vm_points import Merge, PointVolume, point_name, volume_name
from drorch.errors import MoveFailed

HELPER = "drorch-merge-"  # drorch-merge-<disk volume>: the helper domain and its scratch overlay
MERGE_TIMEOUT_S = 3600.0


def helper_name(volume: str) -> str:
    """The helper domain of a merge of the disk whose volume this is, and (with .qcow2) its scratch overlay."""
    return f"{HELPER}{volume}"


def clear_merges(conn: libvirt.virConnect, pool: libvirt.virStoragePool, volume: str) -> None:
    """What a merge of the disk cut short left: its helper domain, stopped first (while its commit runs, the
    points it reads cannot be opened by a restart), and its overlay. The volume it was making is a superseded
    one, which retention removes. A helper dies with the connection that started it; this is for one whose
    process hangs, or a site that had not noticed yet."""
    name = helper_name(volume)
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(name).destroy()
    refresh(pool)
    with contextlib.suppress(libvirt.libvirtError):
        pool.storageVolLookupByName(f"{name}.qcow2").delete(0)


def merge(conn: libvirt.virConnect, pool: libvirt.virStoragePool, disk: Disk, vols: dict[str, PointVolume],
          m: Merge, bandwidth_mib: int = 0) -> None:
    """The kept point `m.point` made again over `m.parent`; MoveFailed when it cannot be, with every point as
    it was (what was made is removed by the next ship if not here)."""
    made: libvirt.virStorageVol | None = None
    try:
        unlisted = [s for s in (m.point, *m.over, m.base) if s not in vols]
        if unlisted:
            raise MoveFailed(f"the pool no longer lists the volume of {point_name(unlisted[0])}")
        above = [pool.storageVolLookupByName(vols[s].name) for s in (m.point, *m.over, m.base)]
        name = volume_name(disk.volume, m.point, m.parent)  # made anew if an earlier merge's was cut short
        made = create_volume(conn, pool.name(), name, Disk(disk.key, disk.dev, pool.name(), name, "qcow2",
                                                           disk.capacity, 0, ""))
        chain = [(v.path(), volume_format(v)) for v in above] + [(made.path(), "qcow2")]
        _commit(conn, pool, disk, chain, bandwidth_mib)
    except (libvirt.libvirtError, MoveFailed) as exc:
        delete_quietly(made)
        why = str(exc) if isinstance(exc, MoveFailed) else reason(exc)
        raise MoveFailed(f"merging the points under {m.point} into it: {why}") from None
    pool.storageVolLookupByName(vols[m.point].name).delete(0)  # the merged volume is the point's from now


def _commit(conn: libvirt.virConnect, pool: libvirt.virStoragePool, disk: Disk, chain: list[tuple[str, str]],
            bandwidth_mib: int) -> None:
    """Commit every file of `chain` (newest first) into its last one, in a paused helper domain."""
    name = helper_name(disk.volume)
    clear_merges(conn, pool, disk.volume)
    top = create_volume(conn, pool.name(), f"{name}.qcow2", Disk(disk.key, "vda", pool.name(), f"{name}.qcow2",
                                                                  "qcow2", disk.capacity, 0, ""), chain[0])
    # Paused: it runs no guest code. Destroyed by libvirt if this process dies: its commit holds the points open.
    dom = conn.createXML(_helper_xml(conn, name, top.path(), chain),
                         libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY)
    try:
        dom.blockCommit("vda", chain[-1][0], chain[0][0], bandwidth_mib, 0)
        deadline = time.monotonic() + MERGE_TIMEOUT_S
        while dom.blockJobInfo("vda", 0):
            if time.monotonic() > deadline:
                raise MoveFailed(f"the block commit did not end within {MERGE_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        still = [p for p, _ in chain[:-1] if p in dom.XMLDesc(0)]
        if still:  # a commit that ends leaves its layers out of the chain; one that failed leaves them
            raise MoveFailed(f"the block commit of {len(still)} volumes ended without merging them")
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        delete_quietly(top)


def _helper_xml(conn: libvirt.virConnect, name: str, top: str, chain: list[tuple[str, str]]) -> str:
    """A domain that only holds the chain: no network, the least memory, never resumed."""
    arch = conn.getInfo()[0]  # the host's: its capabilities would say the same, far more slowly
    backing = "<backingStore/>"
    for path, fmt in reversed(chain):
        backing = (f"<backingStore type='file'><format type={quoteattr(fmt)}/><source file={quoteattr(path)}/>"
                   f"{backing}</backingStore>")
    return (f"<domain type='qemu'><name>{_text(name)}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>"
            f"<os><type arch={quoteattr(arch)}>hvm</type></os><devices><disk type='file' device='disk'>"
            f"<driver name='qemu' type='qcow2'/><source file={quoteattr(top)}/>{backing}"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>")


def _text(value: str) -> str:
    return quoteattr(value)[1:-1]
