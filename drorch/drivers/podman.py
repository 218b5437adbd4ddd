"""What differs when both ends are Podman: a checkpoint travels as a stream or an image, not as a folder.

The container driver does everything else the same way on Docker and Podman, through the API both speak.
Here:
- a checkpoint move exports the container's checkpoint on the source and imports the same stream on the
  target, which recreates the container from the configuration the stream carries and restores it;
- a recovery point is a checkpoint image of the running source, sent by save and load; a disaster restart
  and a drill clone restore a container from the newest one.

An imported checkpoint keeps the container's image, network and size: a move whose mappings change those
(or that resizes the container) cannot be restored from it and is redeployed instead, saying why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from drorch.drivers.base import Handle, Phase, Progress, chosen
from drorch.drivers.docker_config import clone_config
from drorch.drivers.docker_engine import API_ERRORS, DockerSite, reason
from drorch.drivers.jobs import Jobs
from drorch.drivers.podman_engine import PodmanSite, checkpoint_image
from drorch.errors import MoveFailed
from drorch.playbook import Mappings

SendImage = Callable[[str, str, DockerSite, DockerSite], None]  # (handle id, image, from, to)


def import_obstacle(mappings: Mappings, resized: bool, original: dict[str, Any]) -> str | None:
    """Why an imported checkpoint cannot be what the target needs, or None."""
    image = original["Config"]["Image"]
    network = (original.get("HostConfig") or {}).get("NetworkMode") or "default"
    if mappings.image(image) != image:
        return f"the image is mapped to {mappings.image(image)}, and a restored checkpoint keeps {image}"
    if mappings.network(network) != network:
        return f"the network is mapped to {mappings.network(network)}, and a restored checkpoint keeps {network}"
    if resized:
        return "the container is resized on the target, and a restored checkpoint keeps its size"
    return None


def published(original: dict[str, Any], mappings: Mappings) -> list[str]:
    """The container's published ports as Podman's restore takes them, mapped; empty when nothing changes."""
    bindings = (original.get("HostConfig") or {}).get("PortBindings") or {}
    out, changed = [], False
    for port, binds in sorted(bindings.items()):
        for b in binds or []:
            host = b.get("HostPort") or ""
            mapped = str(mappings.port(int(host))) if host else host
            changed |= mapped != host
            out.append(f"{b['HostIp']}:{mapped}:{port}" if b.get("HostIp") else f"{mapped}:{port}")
    return out if changed else []


class PodmanCheckpoints:
    def __init__(self, jobs: Jobs, send_image: SendImage) -> None:
        self._jobs = jobs
        self._send_image = send_image

    def _counted(self, hid: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        count = self._jobs.counter(hid)
        for chunk in chunks:
            count(len(chunk))
            yield chunk

    def move(self, handle: Handle, original: dict[str, Any], src: PodmanSite, dst: PodmanSite
             ) -> tuple[str | None, str]:
        """Export, relay, import. Returns how it ended, or (None, why) when the checkpoint could not be taken
        (the container runs on at home and the caller redeploys). A failed import restores it at home."""
        req, hid = handle.request, handle.id
        image = original["Config"]["Image"]
        self._jobs.set_step(hid, "image")
        if not dst.has_image(image):
            self._send_image(hid, image, src, dst)
        self._jobs.set_step(hid, "checkpoint")
        with contextlib.ExitStack() as open_streams:
            try:
                stream = open_streams.enter_context(src.export(original["Id"]))
            except (*API_ERRORS, MoveFailed) as exc:
                return None, f"the checkpoint failed ({reason(exc)})"
            handle.data["checkpoint"] = "exported"
            self._jobs.set_step(hid, "copy state")
            try:
                handle.data["target_id"] = dst.import_(self._counted(hid, stream), published(original, req.mappings))
            except (*API_ERRORS, MoveFailed) as exc:
                open_streams.close()  # the export's connection, before the source is restored
                half = dst.inspect(req.workload)
                if half is not None:
                    dst.api.remove_container(half["Id"], force=True)
                src.restore_here(original["Id"])  # the process goes on where it stopped, at home
                raise MoveFailed(f"restore of {req.workload} on site {req.target.site} failed, restored on site "
                                 f"{req.source.site} instead: {reason(exc)}") from None
        self._jobs.set_step(hid, "cleanup")
        src.remove(original)
        return f"running on site {req.target.site} (restored from checkpoint)", ""

    @staticmethod
    def revive(src: PodmanSite, stopped: dict[str, Any]) -> None:
        """A source container that an interrupted move exported: restored from the checkpoint the export left."""
        try:
            src.restore_here(stopped["Id"])
        except (*API_ERRORS, MoveFailed):
            src.start(stopped["Id"])  # the checkpoint does not restore: a fresh start beats none

    def ship(self, hid: str, name: str, original: dict[str, Any], src: PodmanSite, dst: PodmanSite,
             keep: int) -> str:
        """A checkpoint image of the running source on the target, keeping the `keep` newest; its tag."""
        tag = checkpoint_image(name, hid)
        self._jobs.set_step(hid, "checkpoint")
        src.checkpoint_to_image(original["Id"], tag)
        try:
            self._send_image(hid, tag, src, dst)
        finally:
            with contextlib.suppress(*API_ERRORS):
                src.drop_image(tag)  # it holds the process's memory
        ours = dst.checkpoint_images(name)
        for old in ours[:max(0, len(ours) - keep)]:
            dst.drop_image(old)  # beyond the retention policy
        return tag

    @staticmethod
    def restart(name: str, s: PodmanSite, copy: dict[str, Any] | None, point: str | None = None) -> Progress | None:
        """Disaster: the container restored from its recovery point `point` (or the newest), in place of the
        stopped copy. None when there is none to restore from; a restore that fails falls back to the copy,
        said as a warning."""
        newest = chosen(s.checkpoint_images(name), point, f"container {name}")
        if newest is None:
            return None
        config = clone_config(copy) if copy is not None else None
        if copy is not None:
            s.api.remove_container(copy["Id"], force=True)  # the restored container takes its name
        try:
            s.restore_image(newest, name)
        except (*API_ERRORS, MoveFailed) as exc:
            if config is None:
                raise
            s.start(s.create(config, name)["Id"])
            return Progress(Phase.COMPLETED, message=f"started on site {s.ep.site} from its image",
                            warning=f"checkpoint {newest} did not restore ({reason(exc)})")
        return Progress(Phase.COMPLETED, message=f"restored on site {s.ep.site} from checkpoint {newest}")

    @staticmethod
    def clone(name: str, clone: str, s: PodmanSite, copy: dict[str, Any], point: str | None = None) -> str | None:
        """Drill: `clone` restored from the recovery point `point` (or the newest). None when that cannot be
        isolated (a restored checkpoint keeps its network, which a drill must not join) or there is none: the
        caller starts the clone from its image instead."""
        network = (copy.get("HostConfig") or {}).get("NetworkMode") or "default"
        image = chosen(s.checkpoint_images(name), point, f"container {name}")
        if network != "none" or image is None:
            return None
        s.restore_image(image, clone)
        return f"{clone} restored on site {s.ep.site} from checkpoint {image}"

