"""A container's move between two engines, run in a background thread by the container driver.

Both ends speak the Engine API (Docker, or Podman's compatible one). A checkpoint move between Docker
daemons dumps on the source while the target gets its image and container, sends the checkpoint folder
through helper containers (`docker_engine`) and starts from it; between Podman services it is exported and
imported (podman). Otherwise, and where a checkpoint cannot be taken or restored, the container is
recreated on the target from its image and config, its volumes' contents copied over, and the move says
why it was not a checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from docker.errors import APIError
from docker.utils import parse_repository_tag

from drorch.drivers.background import Jobs
from drorch.drivers.base import Handle, Phase, Progress
from drorch.drivers.containers._podman_checkpoints import PodmanCheckpoints, import_obstacle
from drorch.drivers.containers._tar_relay import CHUNK
from drorch.drivers.containers.docker_config import clone_config
from drorch.drivers.containers.docker_engine import API_ERRORS, CHECKPOINT_PREFIX, DockerSite, reason, send_state
from drorch.drivers.containers.podman_engine import PodmanSite
from drorch.errors import MoveCancelled, MoveFailed
from drorch.model.playbook import Strategy

RESTORE_WAITS = (0.0, 0.5, 2.0)  # a restore right after the dump may find the engine still tearing the task down


def back_home(src: DockerSite, container: str, checkpoint: str | None) -> None:
    """A source container a move stopped, running again: its process goes on from `checkpoint`, tried again
    briefly while the engine is still clearing the dumped task; a checkpoint that does not restore, or none,
    gives a fresh start, which beats none. The checkpoint goes afterwards: it holds the process's memory."""
    for pause in RESTORE_WAITS if checkpoint is not None else ():
        time.sleep(pause)
        try:
            src.start(container, checkpoint=checkpoint)
            break
        except APIError:
            continue
    else:
        src.start(container)
    if checkpoint is not None:
        with contextlib.suppress(*API_ERRORS):
            src.drop_checkpoint(container, checkpoint)


def checkpoint_name(handle_id: str) -> str:
    """Names that sort by the time they were taken, so the newest is found through the API alone."""
    return f"{CHECKPOINT_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{handle_id}"


class ContainerMoves:
    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs
        self.podman = PodmanCheckpoints(jobs, self.send_image)

    def send_state(self, hid: str, src: DockerSite, source: dict[str, Any], dst: DockerSite,
                    target: dict[str, Any], checkpoint: str | None) -> int:
        self._jobs.set_step(hid, "copy state")
        return send_state(hid, src, source, dst, target, checkpoint, self._jobs.counter(hid))

    def run(self, handle: Handle, original: dict[str, Any], src: DockerSite, dst: DockerSite) -> Progress:
        try:
            message, warning = self._transfer(handle, original, src, dst)
            done, total = self._jobs.sent(handle.id)
            return Progress(Phase.COMPLETED, bytes_done=done, bytes_total=total, message=message, warning=warning)
        except API_ERRORS as exc:
            raise MoveFailed(f"moving container {handle.request.workload} failed: {reason(exc)}") from None

    def _transfer(self, handle: Handle, original: dict[str, Any], src: DockerSite, dst: DockerSite
                  ) -> tuple[str, str]:
        req, hid = handle.request, handle.id
        why_not = ""
        if req.strategy is Strategy.CHECKPOINT:
            why_not = self.checkpoint_obstacle(src, dst) or ""
        podman = (src, dst) if isinstance(src, PodmanSite) and isinstance(dst, PodmanSite) else None
        if req.strategy is Strategy.CHECKPOINT and podman and not why_not:
            why_not = import_obstacle(req.mappings, req.resources is not None, original) or ""
        if req.strategy is Strategy.CHECKPOINT and not why_not and podman:
            done, why_not = self.podman.move(handle, original, *podman)
            if done is not None:
                return done, ""
            target, image = self._prepare(handle, original, src, dst)
        elif req.strategy is Strategy.CHECKPOINT and not why_not:
            checkpoint = checkpoint_name(hid)
            handle.data["checkpoint"] = checkpoint
            target, image, dump_error = self._dump_and_prepare(handle, original, src, dst, checkpoint)
            if dump_error is None:
                return self._restore(handle, original, target, src, dst, checkpoint), ""
            why_not = f"the checkpoint failed ({dump_error})"
        else:
            target, image = self._prepare(handle, original, src, dst)
        try:
            self._jobs.set_step(hid, "stop source")
            src.api.stop(original["Id"], timeout=10)
            self.send_state(hid, src, original, dst, target, None)
            self._jobs.set_step(hid, "start")
            dst.start(target["Id"])
        except (*API_ERRORS, MoveFailed) as exc:
            src.start(original["Id"])  # a source not stopped yet takes this as a no-op
            dst.api.remove_container(target["Id"], force=True, v=True)
            if isinstance(exc, MoveCancelled):
                raise
            raise MoveFailed(f"{req.workload} did not start on site {req.target.site}, restarted on site "
                             f"{req.source.site}: {reason(exc)}") from None
        src.remove(original)
        return f"running on site {req.target.site}", (f"redeployed from {image}: {why_not}" if why_not else "")

    def _prepare(self, handle: Handle, original: dict[str, Any], src: DockerSite, dst: DockerSite
                 ) -> tuple[dict[str, Any], str]:
        """The image on the target (sent when missing) and the container created from the mapped config;
        returns the container and the image it was made from."""
        req, hid = handle.request, handle.id
        image = original["Config"]["Image"]
        target_image = req.mappings.image(image)
        self._jobs.set_step(hid, "image")
        if not dst.has_image(target_image):
            if target_image != image and src.has_image(target_image):
                image = target_image  # the mapped image is known at home: send that one
            self.send_image(hid, image, src, dst)
            if target_image != image:
                repo, tag = parse_repository_tag(target_image)
                dst.api.tag(image, repo, tag or "latest")
        self._jobs.set_step(hid, "create")
        target = dst.create(clone_config(original, req.mappings, req.resources), req.workload)
        handle.data["target_id"] = target["Id"]
        return target, image

    def _dump_and_prepare(self, handle: Handle, original: dict[str, Any], src: DockerSite, dst: DockerSite,
                          checkpoint: str) -> tuple[dict[str, Any], str, str | None]:
        """The source is checkpointed while the target gets its image and container: two daemons, side by
        side. Returns what _prepare does and why the dump failed (None when it did not)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drorch-dump") as pool:
            dump = pool.submit(src.checkpoint, original["Id"], checkpoint)
            try:
                target, image = self._prepare(handle, original, src, dst)
            except BaseException:
                if dump.exception() is None:
                    back_home(src, original["Id"], checkpoint)
                raise
            # A cancel is honoured at the restore's first step, whose rollback also removes the new container.
            self._jobs.set_step(handle.id, "checkpoint", cancellable=False)
        failed = dump.exception()
        if failed is None:
            return target, image, None
        if isinstance(failed, APIError):  # CRIU could not dump it: it runs on at home
            return target, image, reason(failed)
        dst.api.remove_container(target["Id"], force=True, v=True)
        raise failed

    @staticmethod
    def checkpoint_obstacle(src: DockerSite, dst: DockerSite) -> str | None:
        if src.engine != dst.engine:
            return (f"a {src.engine.title()} checkpoint cannot be restored by {dst.engine.title()} on site "
                    f"{dst.ep.site}")
        for site in (src, dst):
            problem = site.checkpoint_obstacle()
            if problem is not None:
                return f"{site.engine.title()} on site {site.ep.site} {problem}"
        return None

    def _restore(self, handle: Handle, source: dict[str, Any], target: dict[str, Any], src: DockerSite,
                 dst: DockerSite, checkpoint: str) -> str:
        req, hid = handle.request, handle.id
        try:
            self.send_state(hid, src, source, dst, target, checkpoint)
            self._jobs.set_step(hid, "restore")
            dst.start(target["Id"], checkpoint=checkpoint)
        except (*API_ERRORS, MoveFailed) as exc:
            back_home(src, source["Id"], checkpoint)
            dst.api.remove_container(target["Id"], force=True, v=True)
            if isinstance(exc, MoveCancelled):
                raise
            raise MoveFailed(f"restore of {req.workload} on site {req.target.site} failed, restored on site "
                             f"{req.source.site} instead: {reason(exc)}") from None
        self._jobs.set_step(hid, "cleanup", cancellable=False)
        dst.drop_checkpoint(target["Id"], checkpoint)  # it holds the process's memory
        src.remove(source)
        return f"running on site {req.target.site} (restored from checkpoint)"

    def send_image(self, hid: str, image: str, src: DockerSite, dst: DockerSite) -> None:
        self._jobs.set_step(hid, "send image")
        count = self._jobs.counter(hid, int(src.api.inspect_image(image).get("Size") or 0))

        def counted() -> Iterator[bytes]:
            for chunk in src.slow.get_image(image, chunk_size=CHUNK):
                count(len(chunk))
                yield chunk

        for _ in dst.slow.load_image(counted()):
            pass
