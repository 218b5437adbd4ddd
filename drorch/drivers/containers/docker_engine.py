"""One Docker daemon as the driver sees it: the Engine API calls docker-py lacks, and data in and out.

docker-py has no checkpoint call: the Engine API's POST/GET/DELETE /containers/{id}/checkpoints and
the `checkpoint` parameter of start are sent here through the low-level client. Files cross between
daemons only through the API: a short-lived helper container, created and never started, binds the
folder or volume on the daemon's own machine, and its archive endpoint streams it out or in. drorch
never opens a daemon's files; the paths below are handed back to that daemon.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.tls
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from drorch.drivers.base import Endpoint, chosen
from drorch.drivers.containers._tar_relay import CHUNK, Manifest, manifest, relay
from drorch.drivers.containers.docker_config import volumes
from drorch.drivers.http_limits import failure, guard_answers, tls_problem
from drorch.errors import MoveFailed, SiteUnreachable
from drorch.process import owner, owner_alive

HELPER_LABEL = "drorch.transfer"  # on helper containers, which inventories leave out
HELPER_OWNER = owner()  # the label's value: the process that made the helper
VOLUMES_AT = "/drorch/volumes"  # where helper containers mount the volumes that travel
CHECKPOINTS_AT = "/drorch/checkpoints"  # and the checkpoint folder
CHECKPOINT_PREFIX = "drorch-"
# Docker 20.10 and later speak it, and Podman's compatible API: no round trip to negotiate a version.
API_VERSION = "1.41"
API_ERRORS = (DockerException, requests.RequestException)
GARBLED = (KeyError, TypeError, AttributeError, ValueError, RecursionError)  # an answer not shaped as the API's


def reason(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return str(exc)


class DockerSite:
    """One daemon, with the calls the driver needs and errors turned into drorch's."""

    engine = "docker"
    label = "Docker"  # what messages call it
    slow_info = False  # whether its size and checkpoint support take long to ask

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        tls: docker.tls.TLSConfig | bool = False
        if ep.tls is not None:
            ca, cert, key = ep.tls
            unusable = tls_problem(ep.tls)
            if unusable:
                raise SiteUnreachable(f"{self.where}: TLS file {unusable}")
            tls = docker.tls.TLSConfig(client_cert=(cert, key), ca_cert=ca, verify=True)
        self._tls = tls
        # Questions and short calls wait the site's answer_timeout_s for each answer; `slow` is for the calls
        # that work before they answer (a checkpoint, a restore, data sent), bounded by operation_timeout_s.
        self.api: Any = self._client(ep.answer_timeout_s)  # loosely typed: the stubs lack the raw calls

    def _client(self, timeout: float) -> Any:
        try:
            api = docker.APIClient(base_url=self.ep.uri, version=API_VERSION, timeout=math.ceil(timeout), tls=self._tls)
        except API_ERRORS as exc:
            raise self.unreachable(exc) from None
        # The playbook's endpoint and CA, as given: REQUESTS_CA_BUNDLE or a proxy of the environment would
        # otherwise replace the daemon's CA or redirect the connection.
        api.trust_env = False
        guard_answers(api)
        return api

    @functools.cached_property
    def slow(self) -> Any:
        return self._client(self.ep.operation_timeout_s)

    @property
    def where(self) -> str:
        return f"site {self.ep.site}: {self.label} at {self.ep.shown}"

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Questions to the daemon whose failure is one line about it: it did not answer, or it answered what the
        Engine API never does (a missing field, a negative size), and is not used."""
        try:
            yield
        except API_ERRORS as exc:
            raise self.unreachable(exc) from None
        except GARBLED as exc:
            raise SiteUnreachable(f"{self.where}: answers what the Engine API never does ({type(exc).__name__}: "
                                  f"{str(exc)[:100]})") from None

    def unreachable(self, exc: Exception) -> SiteUnreachable:
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return SiteUnreachable(f"{self.where} {failure(exc)}")
        return SiteUnreachable(f"{self.where}: {reason(exc)}")

    def inspect(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.inspect_container(name)  # type: ignore[no-any-return]  # docker-py returns untyped JSON
        except NotFound:
            return None
        except API_ERRORS as exc:
            raise self.unreachable(exc) from None

    def create(self, config: dict[str, Any], name: str) -> dict[str, Any]:
        """A new container from a create body, as inspect shows it (its mounts are what volumes travel to)."""
        created = self.inspect(self.api.create_container_from_config(config, name=name)["Id"])
        if created is None:
            raise MoveFailed(f"container {name} vanished on site {self.ep.site} right after it was created")
        return created

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        return self.api.info()  # type: ignore[no-any-return]  # docker-py returns untyped JSON

    def wrong_engine(self) -> str | None:
        """Why the endpoint is not the engine the playbook lists it as (Docker or Podman), or None. Podman
        names itself in a header of every answer, the cheapest of which is a ping's."""
        try:
            res = self.api._get(f"{self.api.base_url}/_ping")
            self.api._raise_for_status(res)
        except API_ERRORS as exc:
            raise self.unreachable(exc) from None
        podman = "Libpod-Api-Version" in res.headers
        if podman == (self.engine == "podman"):
            return None
        actual, key = ("a Podman service", "podman") if podman else ("a Docker daemon", "docker")
        return f"{self.ep.shown} answers as {actual}: list it under {key}:, not {self.engine}:"

    def checkpoint_problem(self) -> str | None:
        """Why this engine cannot take or restore a checkpoint, or None."""
        return None if self.info.get("ExperimentalBuild") else "runs without --experimental, which checkpoints need"

    def checkpoint_obstacle(self) -> str | None:
        """What keeps a move from a checkpoint, as far as the engine tells without slowing the move down."""
        return self.checkpoint_problem()

    def checkpoint_folder(self, container_id: str) -> str:
        """Where the daemon keeps a container's checkpoints, on its own machine."""
        return f"{self.info['DockerRootDir']}/containers/{container_id}/checkpoints"

    # --- checkpoints (raw endpoints) -------------------------------------------------------------------------

    def checkpoint(self, container: str, name: str, leave_running: bool = False) -> None:
        res = self.slow._post_json(self.slow._url("/containers/{0}/checkpoints", container),
                                   data={"CheckpointID": name, "Exit": not leave_running})
        self.slow._raise_for_status(res)

    def checkpoints(self, container: str) -> list[str]:
        res = self.api._get(self.api._url("/containers/{0}/checkpoints", container))
        return [c["Name"] for c in self.api._result(res, True) or []]

    def drop_checkpoint(self, container: str, name: str) -> None:
        res = self.api._delete(self.api._url("/containers/{0}/checkpoints/{1}", container, name))
        if res.status_code != 404:
            self.api._raise_for_status(res)

    def newest_checkpoint(self, container_id: str, point: str | None = None) -> str | None:
        """drorch's checkpoint `point` of the container, or its newest: their names sort by the time they were
        taken. MoveFailed when the one asked for is not there."""
        ours = sorted(c for c in self.checkpoints(container_id) if c.startswith(CHECKPOINT_PREFIX))
        return chosen(ours, point, f"container {container_id[:12]}")

    def start(self, container: str, checkpoint: str | None = None) -> None:
        params = {"checkpoint": checkpoint} if checkpoint else {}
        api = self.slow if checkpoint else self.api  # a restore works before it answers
        res = api._post(api._url("/containers/{0}/start", container), params=params)
        api._raise_for_status(res)

    def remove(self, container: dict[str, Any]) -> None:
        """A container that moved away, with its volumes: their contents now live on the other site. A named
        volume that another container still uses stays."""
        self.api.remove_container(container["Id"], force=True, v=True)
        for mount in container.get("Mounts") or []:
            if mount.get("Type") == "volume":
                with contextlib.suppress(NotFound, APIError):
                    self.api.remove_volume(mount["Name"])

    def has_image(self, image: str) -> bool:
        try:
            self.api.inspect_image(image)
        except ImageNotFound:
            return False
        return True

    # --- files in and out, through helper containers -----------------------------------------------------------

    def new_helper(self, name: str, image: str, binds: list[str]) -> str:
        """A container that is created and never started, binding `binds`: its archive endpoint reads and
        writes them. One of that name left by an interrupted transfer is replaced."""
        config = {"Image": image, "Cmd": ["true"], "Labels": {HELPER_LABEL: HELPER_OWNER},
                  "HostConfig": {"Binds": binds, "NetworkMode": "none"}}
        try:
            return self.api.create_container_from_config(config, name=name)["Id"]  # type: ignore[no-any-return]  # docker-py returns untyped JSON
        except APIError as exc:
            if exc.status_code != 409:
                raise
        self.api.remove_container(name, force=True)
        return self.api.create_container_from_config(config, name=name)["Id"]  # type: ignore[no-any-return]  # docker-py returns untyped JSON

    def drop_helper(self, helper_id: str) -> None:
        with contextlib.suppress(*API_ERRORS):
            self.api.remove_container(helper_id, force=True, v=False)

    def drop_stale_helpers(self) -> list[str]:
        """Helpers whose process died before removing them (or whose daemon stopped under the transfer), found
        by the owner each is labelled with; a helper of a live process, here or on another machine, stays."""
        stale = []
        for c in self.api.containers(all=True, filters={"label": HELPER_LABEL}):
            if not owner_alive(str((c.get("Labels") or {}).get(HELPER_LABEL, ""))):
                self.drop_helper(c["Id"])
                stale.append(str((c.get("Names") or [c["Id"]])[0]).lstrip("/"))
        return stale

    def read(self, helper_id: str, path: str) -> Iterator[bytes]:
        stream, _stat = self.slow.get_archive(helper_id, path, chunk_size=CHUNK)
        return stream  # type: ignore[no-any-return]  # docker-py leaves its archive stream untyped

    def write(self, helper_id: str, path: str, chunks: Iterable[bytes]) -> None:
        self.slow.put_archive(helper_id, path, chunks)

    def close(self) -> None:
        self.api.close()
        if "slow" in self.__dict__:
            self.slow.close()


def send_tree(src: DockerSite, src_helper: str, src_path: str, dst: DockerSite, dst_helper: str, dst_path: str,
              private: bool = False, counted: Callable[[int], None] | None = None, inside: bool = False) -> Manifest:
    """Stream the folder `src_path` of one helper into `dst_path` of another (with `inside`, its contents into
    `dst_path` itself, an existing folder of the same last name), then read the copy back and check every
    file's size and checksum; raises MoveFailed on a difference. Returns what was sent."""
    sent = relay(src.read(src_helper, src_path), private=private, counted=counted, inside=inside)
    dst.write(dst_helper, dst_path, sent.chunks)
    name = src_path.rstrip("/").rpartition("/")[2]
    landed = manifest(dst.read(dst_helper, dst_path if inside else f"{dst_path.rstrip('/')}/{name}"))
    wrong = sent.manifest.differences(landed)
    if wrong:
        raise MoveFailed(f"the copy of {name} on site {dst.ep.site} differs from site {src.ep.site}'s: "
                         f"{'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}")
    return sent.manifest


def copy_in_place(name: str, s: DockerSite, image: str, pairs: list[tuple[str, str]]) -> int:
    """Each (volume, copy) pair of one daemon: the volume's contents into the copy, checked, through two helpers
    of that daemon (one container's archive endpoint does not read and write at once); returns the bytes copied."""
    out = [f"{vol}:{VOLUMES_AT}/v{i}:ro" for i, (vol, _) in enumerate(pairs)]
    into = [f"{copy}:{VOLUMES_AT}/v{i}" for i, (_, copy) in enumerate(pairs)]
    with _helpers(name, s, image, out, s, image, into) as (h_out, h_in):
        return sum(send_tree(s, h_out, f"{VOLUMES_AT}/v{i}", s, h_in, f"{VOLUMES_AT}/v{i}", inside=True).size
                   for i in range(len(pairs)))


def send_state(name: str, src: DockerSite, source: dict[str, Any], dst: DockerSite, target: dict[str, Any],
               checkpoint: str | None, counted: Callable[[int], None] | None = None) -> int:
    """The contents of the source container's volumes into the target's (matched by where they are mounted)
    and its checkpoint into the target's checkpoint folder, each checked on arrival, through one helper on each
    side named after `name`; returns the bytes sent."""
    theirs = volumes(target)
    pairs = [(f"v{i}", vol, theirs[dest]) for i, (dest, vol) in enumerate(sorted(volumes(source).items()))
             if dest in theirs]
    out = [f"{vol}:{VOLUMES_AT}/{key}:ro" for key, vol, _ in pairs]
    into = [f"{vol}:{VOLUMES_AT}/{key}" for key, _, vol in pairs]
    if checkpoint is not None:
        out.append(f"{src.checkpoint_folder(source['Id'])}/{checkpoint}:{CHECKPOINTS_AT}/{checkpoint}:ro")
        into.append(f"{dst.checkpoint_folder(target['Id'])}:{CHECKPOINTS_AT}")
    if not out:
        return 0
    sent = 0
    with _helpers(name, src, source["Image"], out, dst, target["Image"], into) as (h_out, h_in):
        for key, _, _ in pairs:
            # Into the mounted volume itself: Podman writes a path above a mount into the container's own files.
            sent += send_tree(src, h_out, f"{VOLUMES_AT}/{key}", dst, h_in, f"{VOLUMES_AT}/{key}", counted=counted,
                              inside=True).size
        if checkpoint is not None:
            sent += send_tree(src, h_out, f"{CHECKPOINTS_AT}/{checkpoint}", dst, h_in, CHECKPOINTS_AT,
                              private=True, counted=counted).size
    return sent


@contextlib.contextmanager
def _helpers(name: str, src: DockerSite, src_image: str, out: list[str], dst: DockerSite, dst_image: str,
             into: list[str]) -> Iterator[tuple[str, str]]:
    """A helper on each daemon, created side by side, both removed afterwards (and one whose twin failed)."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="drorch-helper") as pool:
        for site in (src, dst):
            site.drop_stale_helpers()
        made = [pool.submit(src.new_helper, f"drorch-out-{name}", src_image, out),
                pool.submit(dst.new_helper, f"drorch-in-{name}", dst_image, into)]
        try:
            h_out, h_in = (f.result() for f in made)
            yield h_out, h_in
        finally:
            for site, future in zip((src, dst), made, strict=True):
                if future.exception() is None:
                    pool.submit(site.drop_helper, future.result())
