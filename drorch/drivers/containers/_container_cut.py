"""A container's recovery point in two parts: its cut on the source (a CRIU dump that leaves it running and, when
it is held still for a group, its volumes copied in place in its own daemon), then the point sent to the target
while it runs. Docker has no volume snapshot: a held container's volumes are copied volume to volume through two
helper containers of its daemon, inside the freeze window.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from docker.errors import NotFound

from drorch.drivers.base import Cut, MoveRequest, Retention, Shipped
from drorch.drivers.containers._container_moves import ContainerMoves
from drorch.drivers.containers.docker_config import point_view, point_volume_labels, volumes
from drorch.drivers.containers.docker_engine import API_ERRORS, DockerSite, copy_in_place, reason
from drorch.errors import MoveFailed
from drorch.model.records import utcnow


class PointShipping(Protocol):
    """What a cut asks of the container points it belongs to."""

    @property
    def moves(self) -> ContainerMoves: ...
    def copy(self, request: MoveRequest, hid: str, original: dict[str, Any], src: DockerSite, dst: DockerSite
             ) -> dict[str, Any]: ...
    def keep_only(self, s: DockerSite, name: str, copy: dict[str, Any], kept: set[str]) -> None: ...

CUT_OF = "drorch.cut-of"  # on the volumes a cut copied in place: the workload's name


def snapshot_name(volume: str, hid: str) -> str:
    return f"{volume}.drorch-cut-{hid}"


def shipped(request: MoveRequest, original: dict[str, Any], point: str, size: int, checkpoint: str | None,
            in_place: bool = False) -> Shipped:
    """What a container's point holds, as its record says it."""
    n = len(volumes(original))
    what = ["image and config", *([f"{n} volume{'s' if n > 1 else ''} copied whole"] if n else []),
            *([f"checkpoint {checkpoint}"] if checkpoint else []),
            *(["its volumes as they were at the cut, copied in place while it was held"] if in_place else [])]
    return Shipped(f"{', '.join(what)} on site {request.target.site}", size, point if n or checkpoint else None,
                   "full", 1)


class ContainerCut(Cut):
    """One container's cut: `checkpoint` dumped on the source (or None), and its volumes' copies made in place
    (`snapshot`: the source's inspect with its mounts on them), or None when they are sent as they are."""

    def __init__(self, points: PointShipping, request: MoveRequest, retention: Retention, src: DockerSite,
                 dst: DockerSite, original: dict[str, Any], hid: str, point: str, checkpoint: bool,
                 held: bool) -> None:
        self._points, self.request, self.retention = points, request, retention
        self.src, self.dst, self.original, self.hid, self.point = src, dst, original, hid, point
        self.checkpoint = checkpoint
        self.at = utcnow()
        if checkpoint:
            src.checkpoint(original["Id"], point, leave_running=True)
        self.snapshot: dict[str, Any] | None = None
        if held and volumes(original):
            try:
                self._copy_in_place()
            except BaseException:
                self.abandon()
                raise

    def _copy_in_place(self) -> None:
        """The container's volumes copied into new ones beside them, in its own daemon; its inspect, mounted
        on the copies, is what `send` then reads."""
        mounts = [{**mt, "Name": snapshot_name(mt["Name"], self.hid)} if mt.get("Type") == "volume" else mt
                  for mt in self.original.get("Mounts") or []]
        self.snapshot = {**self.original, "Mounts": mounts}
        pairs = [(vol, snapshot_name(vol, self.hid)) for vol in volumes(self.original).values()]
        for _, copy in pairs:
            self.src.api.create_volume(copy, labels={CUT_OF: self.request.workload})
        copy_in_place(f"cut-{self.hid}", self.src, self.original["Image"], pairs)

    def send(self) -> Shipped:
        name = self.request.workload
        try:
            copy = self._points.copy(self.request, self.hid, self.original, self.src, self.dst)
            target = point_view(copy, self.point)
            for vol in volumes(target).values():
                self.dst.api.create_volume(vol, labels=point_volume_labels(name, self.point, self.checkpoint))
            size = self._points.moves.send_state(self.hid, self.src, self.snapshot or self.original, self.dst,
                                                 target, self.point if self.checkpoint else None)
            self._points.keep_only(self.dst, name, copy, self.retention.kept(self.point, self.at))
        except API_ERRORS as exc:
            raise MoveFailed(f"shipping container {name} to site {self.request.target.site} failed: "
                             f"{reason(exc)}") from None
        finally:
            self.abandon()
        return shipped(self.request, self.original, self.point, size, self.point if self.checkpoint else None,
                       self.snapshot is not None)

    def abandon(self) -> None:
        """The source's checkpoint and volume copies of this cut go, once sent or unsent."""
        with contextlib.suppress(*API_ERRORS):
            if self.checkpoint:
                self.src.drop_checkpoint(self.original["Id"], self.point)
            for vol in volumes(self.snapshot or {}).values():
                with contextlib.suppress(NotFound):
                    self.src.api.remove_volume(vol, force=True)
