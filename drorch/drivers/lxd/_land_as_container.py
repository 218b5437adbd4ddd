"""An LXD instance that runs as a container on the secondary (`land_as: container`).

It lands as a redeploy: the container is made on the target's engine (Docker or Podman) from the image the
images mapping gives for the instance's image, with what of the instance's config a container has
(`_lxd_config.container_view`); the instance's root file system does not travel. The instance stays stopped at
home, so coming back starts it again as it was (or, when it is gone, makes it anew from the image the
container's maps back to) and removes the container. Its recovery point is a point copy on the secondary, the
image and config a disaster restart or a drill starts a container from, as for any container
(`drivers.containers.container_points`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from drorch.drivers.background import Jobs, SiteClients
from drorch.drivers.base import Endpoint, Handle, MoveRequest, Phase, Progress, Shipped, WorkloadInfo
from drorch.drivers.containers.container_points import drop, make_way, point_copy
from drorch.drivers.containers.docker_config import clone_config, is_point_copy, point_config, workload_info
from drorch.drivers.containers.docker_engine import API_ERRORS, DockerSite, reason
from drorch.drivers.containers.podman_engine import engine_site
from drorch.drivers.lxd._lxd_api import LxdSite
from drorch.drivers.lxd._lxd_config import container_view, image_key, instance_from_container
from drorch.errors import DrorchError, MoveCancelled, MoveFailed


def lands_apart(request: MoveRequest) -> bool:
    return request.source.containers or request.target.containers


class LxdLanding:
    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs
        self.engine: SiteClients[DockerSite] = SiteClients(engine_site)

    def locate(self, name: str, ep: Endpoint) -> WorkloadInfo | None:
        c = self.engine(ep).inspect(name)
        return None if c is None else workload_info(c, ep)

    # --- checks ----------------------------------------------------------------------------------------------

    def preflight(self, req: MoveRequest, lxd: LxdSite) -> list[str]:
        """What would stop it landing: the mapped image missing on the target (nothing is fetched from a
        registry), or, coming home to no instance, an image to make it anew from."""
        where = f"site {req.target.site} host {req.target.host or req.target.shown}"
        if req.target.containers:
            inst = lxd.instance(req.workload)
            if inst is None:
                return []
            try:
                image = self.image(req, inst)
            except MoveFailed as exc:
                return [str(exc)]
            if not self.engine(req.target).has_image(image):
                return [f"instance {req.workload} lands as a container from image {image}, which {where} does not "
                        f"have: load it there, or map image {image_key(inst)} under mappings.images"]
            return []
        c = self.engine(req.source).inspect(req.workload)
        if c is None or lxd.instance(req.workload) is not None:
            return []
        try:
            self._lxd_image(lxd, req.mappings.image(c["Config"]["Image"]), req)
        except MoveFailed as exc:
            return [str(exc)]
        return []

    @staticmethod
    def image(req: MoveRequest, inst: dict[str, Any]) -> str:
        """The container image the instance lands as: its image's key mapped (unmapped, no engine has it)."""
        key = image_key(inst)
        if not key:
            raise MoveFailed(f"instance {req.workload} was not made from an image: it cannot land as a container")
        return req.mappings.image(key)

    # --- moves -----------------------------------------------------------------------------------------------

    def run(self, handle: Handle, lxd: LxdSite) -> Progress:
        req = handle.request
        if req.target.containers:
            return self._to_container(handle, lxd, self.engine(req.target))
        return self._to_instance(handle, self.engine(req.source), lxd)

    def _to_container(self, handle: Handle, src: LxdSite, dst: DockerSite) -> Progress:
        req, name, step = handle.request, handle.request.workload, self._jobs.set_step
        step(handle.id, "preparing")
        inst = src.instance(name)
        if inst is None:
            raise MoveFailed(f"instance {name} is not on site {req.source.site}")
        image = self.image(req, inst)
        if not dst.has_image(image):
            raise MoveFailed(f"image {image} is not on site {req.target.site}: load it there (it is not fetched)")
        self._clear(dst, name, req)
        was_running = src.status(name) == "Running"
        made: dict[str, Any] | None = None
        try:
            step(handle.id, "creating the container")
            made = dst.create(clone_config(container_view(inst), req.mappings, req.resources), name)
            step(handle.id, "stopping the instance")
            if was_running:
                src.set_state(name, "stop")
            step(handle.id, "started on the target", cancellable=False)
            dst.start(made["Id"])
        except (*API_ERRORS, DrorchError) as exc:
            with contextlib.suppress(*API_ERRORS, DrorchError):
                if made is not None:
                    dst.api.remove_container(made["Id"], force=True, v=True)
                if was_running and src.status(name) != "Running":
                    src.set_state(name, "start")
            if isinstance(exc, MoveCancelled):
                raise
            raise MoveFailed(f"{name} did not start as a container on site {req.target.site}, left on site "
                             f"{req.source.site}: {reason(exc)}") from None
        return Progress(Phase.COMPLETED, message=f"running on site {req.target.site} as a container from image "
                                                 f"{image}; the instance waits stopped on site {req.source.site}")

    @staticmethod
    def _clear(dst: DockerSite, name: str, req: MoveRequest) -> None:
        """The target's container of that name out of the way (make_way); one that runs is the workload already."""
        there = dst.inspect(name)
        if there is not None and there["State"]["Running"]:
            raise MoveFailed(f"container {name} already runs on site {req.target.site}")
        make_way(dst, name, there)

    def _to_instance(self, handle: Handle, src: DockerSite, dst: LxdSite) -> Progress:
        req, name, step = handle.request, handle.request.workload, self._jobs.set_step
        step(handle.id, "preparing")
        c = src.inspect(name)
        if c is None or is_point_copy(c):
            raise MoveFailed(f"container {name} is not on site {req.source.site}")
        inst = dst.instance(name)
        made = inst is None
        if made:
            step(handle.id, "creating the instance from its image")
            source = self._lxd_image(dst, req.mappings.image(c["Config"]["Image"]), req)
            dst.create(instance_from_container(c, source, req.mappings))
        try:
            step(handle.id, "stopping the container")
            src.api.stop(c["Id"], timeout=10)
            step(handle.id, "started on the target", cancellable=False)
            if dst.status(name) != "Running":
                dst.set_state(name, "start")
        except (*API_ERRORS, DrorchError) as exc:
            with contextlib.suppress(*API_ERRORS, DrorchError):
                src.start(c["Id"])
                if made:
                    dst.delete(name)
            if isinstance(exc, MoveCancelled):
                raise
            raise MoveFailed(f"instance {name} did not start on site {req.target.site}, the container runs on "
                             f"site {req.source.site}: {reason(exc)}") from None
        with contextlib.suppress(*API_ERRORS):
            src.remove(c)
        how = "made anew from its image" if made else "as it was when it left"
        return Progress(Phase.COMPLETED, message=f"running on site {req.target.site} as an LXD instance, {how}")

    @staticmethod
    def _lxd_image(lxd: LxdSite, key: str, req: MoveRequest) -> dict[str, str]:
        """The image source an instance is made from: an alias, or a fingerprint that begins with `key`."""
        if key in lxd.image_aliases():
            return {"alias": key}
        found = [fp for fp in lxd.image_fingerprints() if fp.startswith(key)]
        if not found:
            raise MoveFailed(f"instance {req.workload} is not on site {req.target.site} to start again, and image "
                             f"{key} is not there to make it anew from: map the container's image to an LXD image "
                             "alias or fingerprint under mappings.images")
        return {"fingerprint": found[0]}

    # --- recovery points -------------------------------------------------------------------------------------

    def ship(self, req: MoveRequest, src: LxdSite) -> Shipped:
        """The point copy made anew from the instance's image and config as they are now."""
        if req.source.containers:
            raise MoveFailed(f"instance {req.workload} runs as a container on site {req.source.site}: its points are "
                             f"kept on the secondary only, and it returns to its stopped instance on "
                             f"site {req.target.site}")
        dst, name = self.engine(req.target), req.workload
        inst = src.instance(name)
        if inst is None:
            raise MoveFailed(f"instance {name} is not on site {req.source.site}")
        image = self.image(req, inst)
        try:
            if not dst.has_image(image):
                raise MoveFailed(f"image {image} is not on site {req.target.site}: load it there (it is not "
                                 "fetched)")
            there = dst.inspect(name)
            if there is not None and there["State"]["Running"]:
                raise MoveFailed(f"container {name} runs on site {req.target.site}: no point is shipped onto it")
            olds = {c["Id"]: c for c in (there, point_copy(dst, name)) if c is not None}  # one may be both
            for old in olds.values():
                drop(dst, old)
            dst.create(point_config(container_view(inst), req.mappings, req.resources), name)
        except API_ERRORS as exc:
            raise MoveFailed(f"shipping instance {name} to site {req.target.site} failed: {reason(exc)}") from None
        return Shipped(f"image {image} and config on site {req.target.site}, a container to start instance {name} "
                       "as (its root file system is not shipped)", kind="full", chain=1)

    def close(self) -> None:
        self.engine.close()
