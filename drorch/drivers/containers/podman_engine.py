"""One Podman service as the driver sees it: its Docker-compatible API for everything a redeploy needs, and
the libpod endpoints for what that API lacks.

A Podman checkpoint leaves its host as a stream, never as files drorch must reach:
- a move exports it (`POST /libpod/containers/{id}/checkpoint?export=true`) and the target imports the
  same bytes (`POST /libpod/containers/import/restore?import=true`), relayed chunk by chunk;
- a recovery point is a checkpoint image (`createImage`), sent like any image by save and load, and a
  disaster restart or a drill restores a container from it under the name it is given.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any

from drorch.drivers.base import Endpoint
from drorch.drivers.containers._tar_relay import CHUNK
from drorch.drivers.containers.docker_engine import API_ERRORS, DockerSite
from drorch.errors import MoveFailed, SiteUnreachable

LIBPOD = "/v4.0.0/libpod"  # Podman 4 and 5 serve it
CHECKPOINT_REPO = "localhost/drorch-checkpoint"  # recovery points: CHECKPOINT_REPO/<container>:<when>
# Runtimes that call CRIU. crun does only when built with it, which its version line says (+CRIU).
CRIU_RUNTIMES = ("runc",)
SCHEMES = ("unix://", "tcp://", "http://")  # what docker-py can speak to a Podman service


def checkpoint_problem(info: dict[str, Any]) -> str | None:
    """Why this Podman cannot checkpoint, from `GET /libpod/info`, or None."""
    host = info.get("host") or {}
    if (host.get("security") or {}).get("rootless"):
        return "runs rootless: CRIU needs a rootful Podman service"
    runtime = host.get("ociRuntime") or {}
    name, version = runtime.get("name") or "", runtime.get("version") or ""
    if name not in CRIU_RUNTIMES and "+CRIU" not in version:
        return f"runs containers with {name or 'an unknown OCI runtime'}, which was built without CRIU"
    return None


def checkpoint_image(container: str, point: str) -> str:
    """The image that holds recovery point `point` of `container` (a checkpoint name, which sorts by time)."""
    return f"{CHECKPOINT_REPO}/{container}:{point}"


class PodmanSite(DockerSite):
    """A rootful Podman service: the compatible API through docker-py, checkpoints through libpod."""

    engine = "podman"
    label = "Podman"
    slow_info = True  # Podman asks the system's package manager about its parts on every info

    def __init__(self, ep: Endpoint) -> None:
        if not ep.uri.startswith(SCHEMES):
            raise SiteUnreachable(f"site {ep.site} host {ep.host}: Podman at {ep.shown}: drorch reaches Podman over "
                                  "unix:// or tcp:// (for ssh, forward the service's socket with ssh -L)")
        super().__init__(ep)

    def _libpod(self, path: str, *args: str) -> str:
        return f"{self.api.base_url}{LIBPOD}{path.format(*args)}"

    def _checked(self, res: Any) -> Any:
        if res.status_code >= 400:
            try:
                why = res.json().get("cause") or res.json().get("message") or res.text
            except ValueError:
                why = res.text
            raise MoveFailed(f"Podman on site {self.ep.site}: {why.strip()}")
        return res

    @functools.cached_property
    def libpod_info(self) -> dict[str, Any]:
        res = self.api._get(self._libpod("/info"))
        self.api._raise_for_status(res)
        return res.json()  # type: ignore[no-any-return]  # requests returns untyped JSON

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        """What the driver reads of Docker's info, from libpod's: Podman's answer to either is slow (see
        slow_info), so only one is asked."""
        host = self.libpod_info.get("host") or {}
        return {"NCPU": host.get("cpus"), "MemTotal": host.get("memTotal"), "ExperimentalBuild": True}

    def checkpoint_problem(self) -> str | None:
        return checkpoint_problem(self.libpod_info)

    def checkpoint_obstacle(self) -> str | None:
        """None: a move does not ask first (that takes as long as the checkpoint); a checkpoint this Podman
        cannot take fails at once, and the move redeploys saying why. validate asks beforehand."""
        return None

    def checkpoints(self, container: str) -> list[str]:
        """Podman keeps no checkpoints in a container for drorch: its recovery points are images."""
        return []

    # --- a move: export, relayed into an import --------------------------------------------------------------

    @contextlib.contextmanager
    def export(self, container: str) -> Iterator[Iterator[bytes]]:
        """The container's checkpoint as a tar stream, open while in the context; the container stops. Its
        checkpoint is also kept where it is (keep), so that `restore_here` can bring it back if the other end
        fails."""
        res = self._checked(self.slow._post(self._libpod("/containers/{0}/checkpoint", container),
                                            params={"export": "true", "keep": "true"}, stream=True))
        try:
            yield res.iter_content(CHUNK)
        finally:
            res.close()

    def import_(self, chunks: Iterable[bytes], publish: list[str] | None = None) -> str:
        """A container created from an exported checkpoint and restored, under the name it had; its id."""
        params: dict[str, Any] = {"import": "true"}
        if publish:
            params["publishPorts"] = publish
        res = self._checked(self.slow._post(self._libpod("/containers/import/restore"), params=params,
                                            data=chunks, headers={"Content-Type": "application/x-tar"}))
        return str(res.json()["Id"])

    def restore_here(self, container: str) -> None:
        """Restore a container from the checkpoint an export left in place."""
        self._checked(self.slow._post(self._libpod("/containers/{0}/restore", container)))

    # --- recovery points: checkpoint images ------------------------------------------------------------------

    def checkpoint_to_image(self, container: str, image: str) -> None:
        """A checkpoint of the running container as an image; the container runs on."""
        self._checked(self.slow._post(self._libpod("/containers/{0}/checkpoint", container),
                                      params={"createImage": image, "leaveRunning": "true"}))

    def checkpoint_images(self, container: str) -> list[str]:
        """The recovery points of `container` held here as checkpoint images, oldest first (by their tags)."""
        repo = checkpoint_image(container, "")
        try:
            tags = {t for img in self.api.images() for t in img.get("RepoTags") or [] if t.startswith(repo)}
        except API_ERRORS as exc:
            raise self.unreachable(exc) from None
        return sorted(t.removeprefix(repo) for t in tags)

    def restore_image(self, image: str, name: str, own_volumes: bool = False) -> str:
        """A new container `name` restored from a checkpoint image; its id. With `own_volumes`, on the named
        volumes already there rather than on those the image would bring. (The image's id goes in the path:
        libpod's router does not take a name with slashes there.)"""
        image_id = str(self.api.inspect_image(image)["Id"]).rpartition(":")[2]
        params = {"name": name, **({"ignoreVolumes": "true"} if own_volumes else {})}
        res = self._checked(self.slow._post(self._libpod("/containers/{0}/restore", image_id), params=params))
        return str(res.json()["Id"])

    def drop_image(self, image: str) -> None:
        self.api.remove_image(image, force=True)


def engine_site(ep: Endpoint) -> DockerSite:
    """The container engine a host entry names: Podman's service, or Docker."""
    return (PodmanSite if ep.podman else DockerSite)(ep)
