"""Recovery points of containers on the secondary, and what starts from them.

A workload's points lie on the target beside one stopped copy of it: created from its image and config, never
started, labelled as a point copy, its named volumes named apart (`<volume>.drorch-point`) and left empty: they
say where each volume is mounted. Each point has its own copies of the volumes (`<volume>.<point>`, labelled
with the workload and the point) and, when the container ran and checkpoints travel, a checkpoint: kept in the
copy on Docker, a checkpoint image between Podman services. The state store's records are the catalogue: a ship
keeps its own point and the `keep - 1` newest recorded ones and removes every other point of the workload (what
an interrupted ship left, too). A disaster restart and a drill never start the copy: each makes a new
container on copies of the chosen point's volumes, so every kept point stays as shipped. After a restart or a
move the copy waits under `<name>.drorch-point`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from docker.errors import APIError, NotFound

from drorch.drivers.base import Cut, DrillNet, Handle, MoveRequest, Phase, Progress, Retention, Sent, Shipped, chosen
from drorch.drivers.containers._container_cut import CUT_OF, ContainerCut, shipped
from drorch.drivers.containers._container_moves import ContainerMoves, checkpoint_name
from drorch.drivers.containers.docker_config import (
    POINT_NAME,
    POINT_OF,
    POINT_SUFFIX,
    binds,
    drill_config,
    is_point_copy,
    point_config,
    point_copy_name,
    point_view,
    point_volume_labels,
    restart_config,
    volumes,
    whole_points,
)
from drorch.drivers.containers.docker_engine import API_ERRORS, CHECKPOINT_PREFIX, DockerSite, reason
from drorch.drivers.containers.podman_engine import PodmanSite, checkpoint_image
from drorch.errors import MoveFailed
from drorch.model.playbook import Strategy
from drorch.model.records import utcnow


def ran(c: dict[str, Any]) -> bool:
    """A stopped container that ran before: not a shipped copy (created, never started) but a stale one."""
    state = c.get("State") or {}
    return not state.get("Running") and not str(state.get("StartedAt") or "0001").startswith("0001")


def drop(s: DockerSite, c: dict[str, Any]) -> None:
    """A container and its named volumes."""
    s.api.remove_container(c["Id"], force=True, v=True)
    for vol in volumes(c).values():
        s.api.remove_volume(vol, force=True)


def point_copy(s: DockerSite, name: str) -> dict[str, Any] | None:
    """The workload's point copy on the site, under its name or set aside beside the workload itself."""
    c = s.inspect(name)
    if c is not None and is_point_copy(c):
        return c
    return s.inspect(point_copy_name(name))


def set_aside(s: DockerSite, name: str, copy: dict[str, Any]) -> None:
    """The point copy renamed out of the workload's way (an older one set aside before goes)."""
    older = s.inspect(point_copy_name(name))
    if older is not None and older["Id"] != copy["Id"]:
        drop(s, older)
    if copy["Name"].lstrip("/") == name:
        s.api.rename(copy["Id"], point_copy_name(name))


def make_way(s: DockerSite, name: str, there: dict[str, Any] | None) -> None:
    """The site's container of that name out of a move's way: a point copy set aside with its points, any other
    (left by an interrupted move, or one that ran here before) removed."""
    if there is None:
        return
    if is_point_copy(there):
        set_aside(s, name, there)
    else:
        s.api.remove_container(there["Id"], force=True, v=True)


def point_volumes(s: DockerSite, name: str) -> list[dict[str, Any]]:
    """The volumes that hold points of workload `name` on the site."""
    return (s.api.volumes(filters={"label": f"{POINT_OF}={name}"}) or {}).get("Volumes") or []


def checkpoints(s: DockerSite, name: str, copy: dict[str, Any]) -> list[str]:
    """The checkpoints of the workload's points held on the site: in the copy, or as Podman images."""
    if isinstance(s, PodmanSite):
        return s.checkpoint_images(name)
    return [c for c in s.checkpoints(copy["Id"]) if c.startswith(CHECKPOINT_PREFIX)]


def held(s: DockerSite, name: str, copy: dict[str, Any]) -> list[str]:
    """The points of the workload the site holds whole, oldest first."""
    return whole_points(copy, checkpoints(s, name, copy), point_volumes(s, name))


def start_point(s: DockerSite, name: str, copy: dict[str, Any], point: str | None) -> tuple[str | None, bool]:
    """The point a restart or a clone starts from (`point`, or the newest held whole), and whether its
    checkpoint is on the site: one listing of the site's checkpoints answers both."""
    ours = checkpoints(s, name, copy)
    at = chosen(whole_points(copy, ours, point_volumes(s, name)), point, f"container {name}")
    return at, at is not None and at in ours


def retain(s: DockerSite, name: str, copy: dict[str, Any], kept: set[str]) -> None:
    """Every point of the workload on the site but `kept` removed: its checkpoint and its volumes."""
    for point in checkpoints(s, name, copy):
        if point not in kept:
            if isinstance(s, PodmanSite):
                s.drop_image(checkpoint_image(name, point))
            else:
                s.drop_checkpoint(copy["Id"], point)
    for vol in point_volumes(s, name):
        if (vol.get("Labels") or {}).get(POINT_NAME) not in kept:
            with contextlib.suppress(NotFound):
                s.api.remove_volume(vol["Name"])


def fresh_volume(s: DockerSite, name: str) -> None:
    """An empty volume of that name: one left on the site (a stale copy of the workload's) goes first. Asked by
    exact name, as Podman takes an unknown name for the prefix of others (the points' own volumes)."""
    found = (s.api.volumes(filters={"name": name}) or {}).get("Volumes") or []
    if any(v["Name"] == name for v in found):
        s.api.remove_volume(name)
    s.api.create_volume(name)


class ContainerPoints:
    def __init__(self, moves: ContainerMoves) -> None:
        self._moves = moves

    @property
    def moves(self) -> ContainerMoves:
        return self._moves

    def cut(self, request: MoveRequest, retention: Retention, held: bool, src: DockerSite, dst: DockerSite) -> Cut:
        """The point's instant on the source: a checkpoint of the running container that leaves it running (when
        checkpoints travel) and, `held`, its volumes copied in place; the image, the point copy, the point's own
        volumes and the checkpoint follow on `send`. Between Podman services the checkpoint is exported with its
        volumes, so the cut sends it all."""
        name = request.workload
        original = src.inspect(name)
        if original is None:
            raise MoveFailed(f"container {name} is not on site {request.source.site}")
        hid = Handle(request).id
        point = checkpoint_name(hid)
        checkpoint = request.strategy is Strategy.CHECKPOINT and original["State"]["Running"] \
            and self._moves.checkpoint_obstacle(src, dst) is None
        try:
            src.drop_stale_helpers()  # an interrupted cut's helper holds its copies
            for stale in (src.api.volumes(filters={"label": f"{CUT_OF}={name}"}) or {}).get("Volumes") or []:
                with contextlib.suppress(NotFound, APIError):  # in use: another process's cut, under way
                    src.api.remove_volume(stale["Name"], force=True)  # an interrupted cut's
            podman = isinstance(src, PodmanSite) and isinstance(dst, PodmanSite)
            if checkpoint and isinstance(src, PodmanSite) and isinstance(dst, PodmanSite) \
                    and not original["State"].get("Paused"):
                at = utcnow()
                return Sent(at, self._podman_point(request, retention, hid, point, at, original, src, dst))
            taken = ContainerCut(self, request, retention, src, dst, original, hid, point, checkpoint and not podman,
                                 held)
            if checkpoint and podman:
                taken.warning = ("no checkpoint: Podman checkpoints no paused container, so its point is its image, "
                                 "config and volumes at the cut")
            return taken
        except API_ERRORS as exc:
            raise MoveFailed(f"the cut of container {name} on site {request.source.site} failed: "
                             f"{reason(exc)}") from None

    def _podman_point(self, request: MoveRequest, retention: Retention, hid: str, point: str, at: datetime,
                      original: dict[str, Any], src: PodmanSite, dst: PodmanSite) -> Shipped:
        name = request.workload
        try:
            copy = self.copy(request, hid, original, src, dst)
            shown = self._moves.podman.ship(hid, name, original, src, dst, point)
            target = point_view(copy, point)
            for vol in volumes(target).values():
                dst.api.create_volume(vol, labels=point_volume_labels(name, point, True))
            size = self._moves.send_state(hid, src, original, dst, target, None)
            retain(dst, name, copy, retention.kept(point, at))
        except API_ERRORS as exc:
            raise MoveFailed(f"shipping container {name} to site {request.target.site} failed: "
                             f"{reason(exc)}") from None
        return shipped(request, original, point, size, shown)

    @staticmethod
    def keep_only(s: DockerSite, name: str, copy: dict[str, Any], kept: set[str]) -> None:
        retain(s, name, copy, kept)

    def copy(self, request: MoveRequest, hid: str, original: dict[str, Any], src: DockerSite, dst: DockerSite
              ) -> dict[str, Any]:
        """The point copy on the target under the workload's name, with the image; made anew when the
        workload's volumes are no longer mounted where the copy's are."""
        name = request.workload
        there = dst.inspect(name)
        if there is not None and there["State"]["Running"]:
            raise MoveFailed(f"container {name} runs on site {request.target.site}: not shipped over it")
        if there is not None and not is_point_copy(there):  # a stale copy (it ran here) is never reused
            drop(dst, there)
        copy = point_copy(dst, name)
        if copy is not None and set(volumes(copy)) != set(volumes(original)):
            drop(dst, copy)
            copy = None
        image = original["Config"]["Image"]
        if not dst.has_image(request.mappings.image(image)):
            self._moves.send_image(hid, image, src, dst)
        if copy is None:
            return dst.create(point_config(original, request.mappings, request.resources), name)
        if copy["Name"].lstrip("/") != name:
            dst.api.rename(copy["Id"], name)
        return copy

    def restart(self, name: str, s: DockerSite, point: str | None) -> Progress:
        """Disaster: the workload made anew from its point copy, on copies of the chosen point's volumes,
        restored from its checkpoint; the copy is set aside with its points. A stopped container of the
        workload that is no point copy is started as it is."""
        site = s.ep.site
        c = s.inspect(name)
        if c is not None and c["State"]["Running"]:
            return Progress(Phase.COMPLETED, message=f"already running on site {site}")
        copy = point_copy(s, name)
        if copy is None:
            if c is None:
                raise MoveFailed(f"site {site} holds no copy of container {name} to start from")
            s.start(c["Id"])
            return Progress(Phase.COMPLETED, message=f"started on site {site} as it was (no recovery point here)")
        at, checkpointed = start_point(s, name, copy, point)
        if c is not None and c["Id"] != copy["Id"]:
            s.api.remove_container(c["Id"], force=True)  # made by a restart that did not finish
        set_aside(s, name, copy)
        for vol in {v.removesuffix(POINT_SUFFIX) for v in volumes(copy).values()} - set(volumes(copy).values()):
            fresh_volume(s, vol)
        source, target = point_view(copy, at), s.create(restart_config(copy), name)
        if isinstance(s, PodmanSite) and at is not None and checkpointed:
            return self._restore_image(name, s, source, target, at)
        checkpoint = at if checkpointed and s.checkpoint_obstacle() is None else None
        started, warning = self._start(name, s, source, target, checkpoint, fallback=True)
        return Progress(Phase.COMPLETED, message=f"{started}, on a copy of the point", warning=warning)

    def _restore_image(self, name: str, s: PodmanSite, source: dict[str, Any], target: dict[str, Any],
                       point: str) -> Progress:
        """Podman: the volumes filled through `target`, which then makes way for the container restored from
        the point's checkpoint image (a restore creates its own, on the volumes' names the image keeps)."""
        if volumes(source):
            self._moves.send_state(name, s, source, s, target, None)
        s.api.remove_container(target["Id"], v=True)  # its anonymous volumes only: the named ones stay, filled
        image = checkpoint_image(name, point)
        try:
            s.restore_image(image, name, own_volumes=bool(volumes(source)))
        except (*API_ERRORS, MoveFailed) as exc:
            s.start(s.create(restart_config(source), name)["Id"])
            return Progress(Phase.COMPLETED, message=f"started on site {s.ep.site} from its image",
                            warning=f"checkpoint {image} did not restore ({reason(exc)})")
        return Progress(Phase.COMPLETED, message=f"restored on site {s.ep.site} from checkpoint {image}, on a copy "
                        "of the point")

    def _start(self, name: str, s: DockerSite, source: dict[str, Any], target: dict[str, Any],
               checkpoint: str | None, fallback: bool) -> tuple[str, str]:
        """`target` started on copies of `source`'s volumes, restored from a copy of its checkpoint; with
        `fallback`, from its image when the checkpoint does not restore, said as a warning. How it started."""
        if checkpoint is not None or volumes(source):
            self._moves.send_state(name, s, source, s, target, checkpoint)
        site = s.ep.site
        if checkpoint is None:
            s.start(target["Id"])
            return f"started on site {site} from its image (no checkpoint in the point)", ""
        try:
            s.start(target["Id"], checkpoint=checkpoint)
        except APIError as exc:
            if not fallback:
                raise
            s.start(target["Id"])
            return f"started on site {site} from its image", f"checkpoint {checkpoint} did not restore ({reason(exc)})"
        finally:
            s.drop_checkpoint(target["Id"], checkpoint)  # it holds the process's memory
        return f"restored on site {site} from checkpoint {checkpoint}", ""

    def clone(self, name: str, clone: str, s: DockerSite, net: DrillNet, point: str | None,
              addresses: tuple[str, ...], isolated: Any) -> str:
        """Drill: a new container from the point copy's config, on its own copies of the point's volumes,
        restored from a copy of the point's checkpoint."""
        site = s.ep.site
        copy = point_copy(s, name) or s.inspect(name)
        if copy is None:
            raise MoveFailed(f"site {site} holds no copy of container {name} to clone")
        if binds(copy):
            raise MoveFailed(f"container {name} has host folders bound in, which a clone would share with the "
                             "recovery point: it is not cloned")
        there = s.inspect(clone)
        if there is not None and there["State"]["Running"]:
            return f"{clone} already up on site {site}"
        at, checkpointed = start_point(s, name, copy, point)
        if isinstance(s, PodmanSite) and at is not None and checkpointed:
            return self._clone_image(name, clone, s, copy, there, at, net, addresses, isolated)
        checkpoint = at if checkpointed and s.checkpoint_obstacle() is None else None
        target = there or self._clone_container(copy, clone, s, net, addresses, isolated)
        started, _ = self._start(clone, s, point_view(copy, at), target, checkpoint, fallback=False)
        return f"{clone} {started}"

    def _clone_container(self, copy: dict[str, Any], clone: str, s: DockerSite, net: DrillNet,
                         addresses: tuple[str, ...], isolated: Any) -> dict[str, Any]:
        config = drill_config(copy, clone, net.name, addresses)
        if config["HostConfig"]["NetworkMode"] == net.name:
            isolated(s, net)
        return s.create(config, clone)

    def _clone_image(self, name: str, clone: str, s: PodmanSite, copy: dict[str, Any], there: dict[str, Any] | None,
                     point: str, net: DrillNet, addresses: tuple[str, ...], isolated: Any) -> str:
        """Podman: a restored checkpoint image keeps the workload's network and volume names, which a drill must
        not share; a clone that has neither is restored from it, any other starts from its image."""
        image = checkpoint_image(name, point)
        if there is None and not volumes(copy) and (copy.get("HostConfig") or {}).get("NetworkMode") == "none":
            s.restore_image(image, clone)
            return f"{clone} restored on site {s.ep.site} from checkpoint {image}"
        target = there or self._clone_container(copy, clone, s, net, addresses, isolated)
        self._start(clone, s, point_view(copy, point), target, None, fallback=False)
        return (f"{clone} started on site {s.ep.site} from its image: checkpoint {image} keeps the workload's "
                "network or volumes, which a drill does not share")
