"""An LXD instance's move, run in a background thread: server to server through LXD's migration API.

`copy` stops the instance, has the target pull it (refreshing a copy the target holds already, such as the one
recovery points are kept on, so only what changed travels), and starts it there. `stateful` asks LXD to move it
running, with its CRIU state; where LXD or the container cannot, the move goes on as a copy and says why.
`redeploy` makes it anew on the target from its image (pulled from the source when the target lacks it). The
source keeps its stopped instance (`drorch prune` removes it), so a move back refreshes it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from drorch.drivers.background import Jobs
from drorch.drivers.base import Handle, Phase, Progress
from drorch.drivers.lxd._lxd_api import LxdError, LxdSite
from drorch.drivers.lxd._lxd_config import POINT_KEY, is_point_copy, target_body
from drorch.drivers.lxd._lxd_relay import send
from drorch.drivers.lxd._lxd_stage import drop_stage, land
from drorch.errors import DrorchError, MoveFailed
from drorch.model.playbook import Strategy


class LxdMoves:
    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs

    def run(self, handle: Handle, src: LxdSite, dst: LxdSite) -> Progress:
        req = handle.request
        name = req.workload
        step = self._jobs.set_step
        step(handle.id, "preparing")
        inst = src.instance(name)
        if inst is None:
            raise MoveFailed(f"instance {name} is on neither site {req.source.site} nor site {req.target.site}")
        was_running = inst.get("status") == "Running"
        there = dst.instance(name)
        made_here = there is None  # a copy the target held before (points, or an earlier stay) is refreshed
        warning = ""
        try:
            if req.strategy is Strategy.REDEPLOY:
                return self._redeploy(handle, inst, src, dst, there)
            if req.strategy is Strategy.STATEFUL and was_running:
                if there is not None:  # LXD cannot refresh while moving live, and the copy may hold points
                    warning = (f"site {req.target.site} holds a stopped copy of it (its recovery points, or an "
                               "earlier stay), which a live move would replace: copied instead")
                else:
                    try:
                        step(handle.id, "moving with its live state")
                        self._pull(handle, inst, src, dst, None, live=True)  # made new: no point copy to own
                        return Progress(Phase.COMPLETED, message=f"running on site {req.target.site} (its live "
                                                                 "state moved)")
                    except LxdError as exc:
                        warning = f"its live state could not move ({exc}): stopped and copied instead"
                        if src.status(name) != "Running":
                            src.set_state(name, "start")
                        there = dst.instance(name)
            step(handle.id, "stopping on the source")
            if src.status(name) == "Running":
                src.set_state(name, "stop")
            step(handle.id, "copying")
            self._pull(handle, inst, src, dst, there, live=False)
            step(handle.id, "starting on the target")
            self._own(dst, name)
            self._jobs.set_step(handle.id, "started on the target", cancellable=False)
            dst.set_state(name, "start")
        except DrorchError:
            self._roll_back(src, dst, name, was_running, made_here)
            raise
        said = "copied stopped" if not warning else "copied stopped, not live"
        return Progress(Phase.COMPLETED, message=f"running on site {req.target.site} ({said})", warning=warning)

    def _pull(self, handle: Handle, inst: dict[str, Any], src: LxdSite, dst: LxdSite, there: dict[str, Any] | None,
              live: bool) -> None:
        req = handle.request
        if there is not None and there.get("status") != "Stopped":
            dst.set_state(req.workload, "stop", force=True)
        body, count = target_body(inst, req.mappings, req.resources), self._jobs.counter(handle.id)
        if live:
            send(src, dst, req.workload, body, live=True, refresh=False, count=count)
        else:
            land(src, dst, req.workload, body, there, count)

    @staticmethod
    def _own(dst: LxdSite, name: str) -> None:
        """The copy is the workload now, no longer a copy that points are kept on."""
        found = dst.instance(name)
        if found is not None and is_point_copy(found):
            dst.update(name, {"config": {POINT_KEY: ""}})
        drop_stage(dst, name)

    def _redeploy(self, handle: Handle, inst: dict[str, Any], src: LxdSite, dst: LxdSite,
                  there: dict[str, Any] | None) -> Progress:
        req = handle.request
        fingerprint = str((inst.get("config") or {}).get("volatile.base_image") or "")
        if not fingerprint:
            raise MoveFailed(f"instance {req.workload} was not made from an image, so it cannot be redeployed: "
                             "use strategy copy")
        wanted = req.mappings.image(fingerprint[:12])
        self._jobs.set_step(handle.id, "finding the image")
        if wanted in dst.image_aliases():
            image: dict[str, Any] = {"type": "image", "alias": wanted}
        else:
            image = {"type": "image", "fingerprint": self._image_on(dst, src, wanted, fingerprint)}
        if there is not None:
            if there.get("status") == "Running":
                raise MoveFailed(f"instance {req.workload} already runs on site {req.target.site}")
            self._jobs.set_step(handle.id, "removing the target's stopped copy")
            dst.delete(req.workload)
        self._jobs.set_step(handle.id, "stopping on the source")
        if src.status(req.workload) == "Running":
            src.set_state(req.workload, "stop")
        try:
            self._jobs.set_step(handle.id, "creating from the image")
            dst.create({**target_body(inst, req.mappings, req.resources, volatile=False), "source": image})
            self._jobs.set_step(handle.id, "started on the target", cancellable=False)
            dst.set_state(req.workload, "start")
        except DrorchError:
            self._roll_back(src, dst, req.workload, True, True)
            raise
        return Progress(Phase.COMPLETED, message=f"running on site {req.target.site} (redeployed from image "
                                                 f"{wanted})")

    @staticmethod
    def _image_on(dst: LxdSite, src: LxdSite, wanted: str, fingerprint: str) -> str:
        """The fingerprint of the image on the target, pulled there from the source's image store if missing."""
        have = [fp for fp in dst.image_fingerprints() if fp.startswith(wanted)]
        if have:
            return have[0]
        if wanted != fingerprint[:12] or fingerprint not in src.image_fingerprints():
            raise MoveFailed(f"image {wanted} is on neither site {dst.ep.site} nor the source to send")
        if src.ep.relay or dst.ep.relay:  # an image is pulled server to server: none is relayed
            raise MoveFailed(f"image {wanted} is not on site {dst.ep.site}, whose LXD cannot pull it from site "
                             f"{src.ep.site}'s (lxd_relay): import it there")
        token = src.act("post", "images", fingerprint, "secret", wait=False)  # the operation, still running
        server = src.image_server()
        dst.act("post", "images", body={"source": {"type": "image", "mode": "pull", "server": server["server"],
                                                   "certificate": server["certificate"],
                                                   "secret": token["metadata"]["secret"],
                                                   "fingerprint": fingerprint}})
        return fingerprint

    @staticmethod
    def _roll_back(src: LxdSite, dst: LxdSite, name: str, was_running: bool, made_here: bool) -> None:
        """A move that failed or was cancelled before the target took over leaves the instance on its source."""
        with contextlib.suppress(DrorchError):
            if made_here and dst.status(name) not in (None, "Running"):
                dst.delete(name)
            if was_running and src.status(name) != "Running":
                src.set_state(name, "start")
