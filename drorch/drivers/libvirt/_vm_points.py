"""Recovery points of a VM's disks on the secondary, as the site's own volumes say them.

Each disk's points form chains of standalone volumes in the disk's pool: a full copy, then the increments
written by push-mode incremental backups since the previous point's checkpoint on the source. A volume's name
says its disk, its time and, for an increment, the point it builds on, so any point's chain is read from the
pool alone (no file of the site is read by drorch). Whatever starts from a point (a disaster restart, a drill)
writes into a new overlay and names the chain in the definition it starts (libvirt's backingStore input), so
the point is never written to. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from drorch.errors import MoveFailed

POINT = "@point-"  # <disk volume>@point-<time>, the volume of one point of one disk
AFTER = ".after-"  # an increment's name ends with the time of the point it builds on
CHECKPOINT = "drorch-"  # the source's libvirt checkpoint of a point: drorch-<time>


def new_stamp() -> str:
    """Times that sort as they were taken, in names that libvirt takes for volumes and checkpoints."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}"


def point_name(stamp: str) -> str:
    """A point as drorch's records name it."""
    return f"point-{stamp}"


def stamp_of(point: str) -> str:
    """The time in a point's name (`point-<time>`, or `point<time>` as earlier versions named full points)."""
    return point.removeprefix("point-").removeprefix("point")


def checkpoint_of(stamp: str) -> str:
    return f"{CHECKPOINT}{stamp}"


@dataclass(frozen=True)
class PointVolume:
    """One disk's volume of one point: a full copy (no parent) or the changes since its parent point."""

    name: str
    stamp: str
    parent: str | None

    @property
    def kind(self) -> str:
        return "full" if self.parent is None else "incremental"


def volume_name(disk: str, stamp: str, parent: str | None) -> str:
    return f"{disk}{POINT}{stamp}{AFTER + parent if parent else ''}"


def base_volume(name: str) -> str:
    """The disk a volume belongs to: a point's volume names its disk first."""
    return name.split(POINT, 1)[0]


def _all_point_volumes(names: Iterable[str], disk: str) -> list[PointVolume]:
    found = []
    for name in names:
        if not name.startswith(f"{disk}{POINT}"):
            continue
        stamp, _, parent = name.removeprefix(f"{disk}{POINT}").partition(AFTER)
        if stamp and POINT not in stamp:
            found.append(PointVolume(name, stamp, parent or None))
    return found


def point_volumes(names: Iterable[str], disk: str) -> dict[str, PointVolume]:
    """The disk's point volumes among a pool's volume names, by the time of their point. Where a point has two
    (a merge under way or interrupted), the one that builds on the newer point is read: the merged one is whole
    only once the volume it replaces is gone."""
    found: dict[str, PointVolume] = {}
    for vol in _all_point_volumes(names, disk):
        other = found.get(vol.stamp)
        if other is None or (vol.parent or "") > (other.parent or ""):
            found[vol.stamp] = vol
    return found


def superseded(names: Iterable[str], disk: str) -> list[str]:
    """The disk's point volumes that no point reads: merges that did not finish."""
    names = list(names)
    read = {v.name for v in point_volumes(names, disk).values()}
    return [v.name for v in _all_point_volumes(names, disk) if v.name not in read]


@dataclass(frozen=True)
class Merge:
    """A kept point whose chain passes through dropped increments: its volume is made again, with its own
    changes and those of the dropped increments (`over`, newest first, then `base`, the oldest) committed into it,
    building on `parent` (the next kept point, or a dropped full copy, which stays as the chain's base: merging
    into it would copy the whole disk at every ship)."""

    point: str
    base: str
    over: tuple[str, ...]
    parent: str | None


def merges(vols: dict[str, PointVolume], kept: Iterable[str]) -> list[Merge]:
    """What thinning to the `kept` points takes: a merge for each kept point that builds on a dropped one."""
    keep = set(kept)
    out = []
    for stamp in sorted(keep & vols.keys()):
        dropped = []
        at = vols[stamp].parent
        while at is not None and at not in keep and at in vols:
            dropped.append(at)
            at = vols[at].parent
        if at is None and dropped:  # the chain's full copy stays under it
            at = dropped.pop()
        if dropped and (at is None or at in vols):  # a chain already broken is not mended by a merge
            out.append(Merge(stamp, dropped[-1], tuple(dropped[:-1]), at))
    return out


def chain(vols: dict[str, PointVolume], stamp: str) -> list[PointVolume]:
    """The volumes a point reads, its own first and its full copy last; MoveFailed when one is missing."""
    out: list[PointVolume] = []
    at: str | None = stamp
    while at is not None:
        vol = vols.get(at)
        if vol is None:
            whose = f"point {point_name(stamp)}" + (f" (which builds on {point_name(at)})" if at != stamp else "")
            raise MoveFailed(f"{whose}: the volume of {point_name(at)} is missing")
        if len(out) > len(vols):
            raise MoveFailed(f"point {point_name(stamp)}: its volumes name each other in a loop")
        out.append(vol)
        at = vol.parent
    return out


def intact(vols: dict[str, PointVolume], stamp: str) -> bool:
    try:
        chain(vols, stamp)
    except MoveFailed:
        return False
    return True


def needed(vols: dict[str, PointVolume], stamps: Iterable[str]) -> set[str]:
    """The volumes that the given points read; a point whose chain is broken needs the volumes it still has."""
    names: set[str] = set()
    for stamp in stamps:
        at: str | None = stamp
        while at is not None and at in vols and vols[at].name not in names:
            names.add(vols[at].name)
            at = vols[at].parent
    return names


def removable(names: Iterable[str], disk: str, kept: Iterable[str]) -> list[str]:
    """The disk's point volumes among a pool's names that no `kept` point reads: dropped points, what a merge
    cut short left. MoveFailed when a kept point's chain has a gap in them: what lies under it cannot be shown to
    be unread, so nothing is."""
    names = list(names)
    vols = point_volumes(names, disk)
    gaps = [s for s in kept if s in vols and not intact(vols, s)]
    if gaps:
        raise MoveFailed(f"the pool lists the chain of {point_name(gaps[0])} with a gap: no volume removed")
    keep = needed(vols, kept)
    return [v.name for v in vols.values() if v.name not in keep] + superseded(names, disk)
