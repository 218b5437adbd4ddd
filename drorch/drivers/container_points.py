"""Recovery points of containers on the secondary, and what starts from them.

A workload's points lie in one stopped copy on the target: created from its image and config, never started,
labelled as a point copy, with its own copies of the named volumes (named apart on Docker) and its kept
checkpoints (Docker); between Podman services the points are checkpoint images. A disaster restart and a drill
never start the copy itself: each makes a new container from it, on volumes copied from the copy's, so every
kept point stays as shipped. After a restart or a move the copy keeps its points under `<name>.drorch-point`.
"""

from __future__ import annotations

from typing import Any

from docker.errors import APIError

from drorch.drivers.base import Handle, MoveRequest, Phase, Progress, Retention, Shipped
from drorch.drivers.container_moves import ContainerMoves, checkpoint_name
from drorch.drivers.docker_config import (
    binds,
    drill_config,
    is_point_copy,
    point_config,
    point_copy_name,
    restart_config,
    volumes,
)
from drorch.drivers.docker_engine import API_ERRORS, CHECKPOINT_PREFIX, DockerSite, reason
from drorch.drivers.podman import PodmanCheckpoints
from drorch.drivers.podman_engine import PodmanSite
from drorch.errors import MoveFailed
from drorch.playbook import Strategy


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


class ContainerPoints:
    def __init__(self, moves: ContainerMoves) -> None:
        self._moves = moves

    def ship(self, request: MoveRequest, retention: Retention, src: DockerSite, dst: DockerSite) -> Shipped:
        """Image and the point copy on the target, with its volumes' contents (copied whole into volumes made
        anew, so that what the source deleted is gone) and a checkpoint of the running source; the copy keeps
        the `keep` newest checkpoints, or only this one when volumes come with it (older checkpoints would
        restore beside volume contents of another time)."""
        name = request.workload
        original = src.inspect(name)
        if original is None:
            raise MoveFailed(f"container {name} is not on site {request.source.site}")
        try:
            there = dst.inspect(name)
            if there is not None and there["State"]["Running"]:
                raise MoveFailed(f"container {name} runs on site {request.target.site}: not shipped over it")
            if there is not None and not is_point_copy(there):  # a stale copy (it ran here) is never reused
                drop(dst, there)
            copy = point_copy(dst, name)
            if copy is not None and volumes(copy):
                drop(dst, copy)
                copy = None
            hid = Handle(request).id
            image = original["Config"]["Image"]
            if not dst.has_image(request.mappings.image(image)):
                self._moves.send_image(hid, image, src, dst)
            if copy is None:
                config = point_config(original, request.mappings, request.resources, not isinstance(dst, PodmanSite))
                copy = dst.create(config, name)
            elif copy["Name"].lstrip("/") != name:
                dst.api.rename(copy["Id"], name)
            checkpoint = image_checkpoint = None
            if request.strategy is Strategy.CHECKPOINT and self._moves.checkpoint_obstacle(src, dst) is None \
                    and original["State"]["Running"]:
                if isinstance(src, PodmanSite) and isinstance(dst, PodmanSite):
                    image_checkpoint = self._moves.podman.ship(hid, name, original, src, dst, retention.keep)
                else:
                    checkpoint = checkpoint_name(hid)
                    src.checkpoint(original["Id"], checkpoint, leave_running=True)
            try:
                size = self._moves.send_state(hid, src, original, dst, copy, checkpoint)
            finally:
                if checkpoint is not None:
                    src.drop_checkpoint(original["Id"], checkpoint)
            checkpoint = checkpoint or image_checkpoint
            ours = sorted(c for c in dst.checkpoints(copy["Id"]) if c.startswith(CHECKPOINT_PREFIX))
            for old in ours[:max(0, len(ours) - retention.keep)]:
                dst.drop_checkpoint(copy["Id"], old)  # beyond the retention policy
        except API_ERRORS as exc:
            raise MoveFailed(f"shipping container {name} to site {request.target.site} failed: "
                             f"{reason(exc)}") from None
        whole = " (copied whole: a point of a container with volumes replaces the one before)"
        what = ["image and config", *([f"{len(volumes(original))} volumes{whole}"] if volumes(original) else []),
                *([f"checkpoint {checkpoint}"] if checkpoint else [])]
        return Shipped(f"{', '.join(what)} on site {request.target.site}", size, checkpoint, "full", 1,
                       sole=bool(volumes(original)))

    def restart(self, name: str, s: DockerSite, point: str | None) -> Progress:
        """Disaster: the workload made anew from its point copy, on copies of its volumes, restored from the
        point's checkpoint; the copy is set aside with its points. A stopped container that is no point copy
        (shipped by an earlier version) is started as it is."""
        site = s.ep.site
        c = s.inspect(name)
        if c is not None and c["State"]["Running"]:
            return Progress(Phase.COMPLETED, message=f"already running on site {site}")
        if isinstance(s, PodmanSite) and (restored := PodmanCheckpoints.restart(name, s, c, point)) is not None:
            return restored
        copy = point_copy(s, name)
        if copy is None or (isinstance(s, PodmanSite) and volumes(copy)):  # Podman's copy would share them
            start = copy or c
            if start is None:
                raise MoveFailed(f"site {site} holds no copy of container {name} to start from")
            return self._start(name, s, start, point, start)
        if c is not None and c["Id"] != copy["Id"]:
            s.api.remove_container(c["Id"], force=True)  # made by a restart that did not finish
        set_aside(s, name, copy)
        for vol in {v.removesuffix(".drorch-point") for v in volumes(copy).values()} - set(volumes(copy).values()):
            try:  # a volume of the workload's own name left on this site: the point's copy replaces it
                s.api.remove_volume(vol)
            except APIError as exc:
                if exc.status_code != 404:
                    raise
        target = s.create(restart_config(copy), name)
        return self._start(name, s, target, point, copy)

    def _start(self, name: str, s: DockerSite, target: dict[str, Any], point: str | None,
               copy: dict[str, Any]) -> Progress:
        site = s.ep.site
        checkpoint = s.newest_checkpoint(copy["Id"], point) if s.checkpoint_obstacle() is None else None
        if target["Id"] != copy["Id"] and (checkpoint is not None or volumes(copy)):
            self._moves.send_state(name, s, copy, s, target, checkpoint)
        if checkpoint is None:
            s.start(target["Id"])
            return Progress(Phase.COMPLETED, message=f"started on site {site} from its image (no checkpoint shipped)")
        try:
            s.start(target["Id"], checkpoint=checkpoint)
        except APIError as exc:
            s.start(target["Id"])
            return Progress(Phase.COMPLETED, message=f"started on site {site} from its image",
                            warning=f"checkpoint {checkpoint} did not restore ({reason(exc)})")
        finally:
            if target["Id"] != copy["Id"]:
                s.drop_checkpoint(target["Id"], checkpoint)  # it holds the process's memory
        return Progress(Phase.COMPLETED, message=f"restored on site {site} from checkpoint {checkpoint}"
                        + (", on a copy of the point" if target["Id"] != copy["Id"] else ""))

    def clone(self, name: str, clone: str, s: DockerSite, network: str, point: str | None,
              isolated: Any) -> str:
        """Drill: a new container from the point copy's config, on its own copies of the volumes, restored from
        a copy of the point's checkpoint."""
        site = s.ep.site
        copy = point_copy(s, name) or s.inspect(name)
        if copy is None:
            raise MoveFailed(f"site {site} holds no copy of container {name} to clone")
        if binds(copy) or (isinstance(s, PodmanSite) and copy.get("Mounts")):
            raise MoveFailed(f"container {name} has host folders bound in (or volumes, on Podman), which a clone "
                             "would share with the recovery point: it is not cloned")
        there = s.inspect(clone)
        if there is not None and there["State"]["Running"]:
            return f"{clone} already up on site {site}"
        if isinstance(s, PodmanSite) and there is None:
            said = PodmanCheckpoints.clone(name, clone, s, copy, point)
            if said is not None:
                return said
        config = drill_config(copy, clone, network)
        if config["HostConfig"]["NetworkMode"] == network:
            isolated(s, network)
        target = there or s.create(config, clone)
        checkpoint = s.newest_checkpoint(copy["Id"], point) if s.checkpoint_obstacle() is None else None
        if checkpoint is not None or volumes(copy):  # its own copies of the point's volumes
            self._moves.send_state(clone, s, copy, s, target, checkpoint)
        if checkpoint is None:
            s.start(target["Id"])
            return f"{clone} started on site {site} from its image (no checkpoint shipped)"
        try:
            s.start(target["Id"], checkpoint=checkpoint)
        finally:
            s.drop_checkpoint(target["Id"], checkpoint)  # it holds the process's memory
        return f"{clone} restored on site {site} from checkpoint {checkpoint}"
