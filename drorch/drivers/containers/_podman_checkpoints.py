"""What differs when both ends are Podman: a checkpoint travels as a stream or an image, not as a folder.

The container driver does everything else the same way on Docker and Podman, through the API both speak.
Here:
- a checkpoint move exports the container's checkpoint on the source and imports the same stream on the
  target, which recreates the container from the configuration the stream carries and restores it;
- a recovery point's checkpoint is a checkpoint image of the running source, sent by save and load; a
  disaster restart restores the workload from it (`container_points`).

An imported checkpoint keeps the container's image, network and size: a move whose mappings change those
(or that resizes the container) cannot be restored from it and is redeployed instead, saying why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from drorch.drivers.background import Jobs
from drorch.drivers.base import Handle
from drorch.drivers.containers.docker_engine import API_ERRORS, DockerSite, reason
from drorch.drivers.containers.podman_engine import PodmanSite, checkpoint_image
from drorch.errors import MoveCancelled, MoveFailed
from drorch.model.playbook import Mappings

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
            try:
                self._jobs.set_step(hid, "copy state")
                handle.data["target_id"] = dst.import_(self._counted(hid, stream), published(original, req.mappings))
            except (*API_ERRORS, MoveFailed) as exc:
                open_streams.close()  # the export's connection, before the source is restored
                half = dst.inspect(req.workload)
                if half is not None:
                    dst.api.remove_container(half["Id"], force=True)
                src.restore_here(original["Id"])  # the process goes on where it stopped, at home
                if isinstance(exc, MoveCancelled):
                    raise
                raise MoveFailed(f"restore of {req.workload} on site {req.target.site} failed, restored on site "
                                 f"{req.source.site} instead: {reason(exc)}") from None
        self._jobs.set_step(hid, "cleanup", cancellable=False)
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
             point: str) -> str:
        """Recovery point `point`: a checkpoint image of the running source, sent to the target; its name."""
        image = checkpoint_image(name, point)
        self._jobs.set_step(hid, "checkpoint")
        src.checkpoint_to_image(original["Id"], image)
        try:
            self._send_image(hid, image, src, dst)
        finally:
            with contextlib.suppress(*API_ERRORS):
                src.drop_image(image)  # it holds the process's memory
        return image
