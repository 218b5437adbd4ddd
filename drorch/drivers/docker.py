"""Docker driver: containers move by CRIU checkpoint and restore, or are redeployed from their image.

docker-py has no checkpoint call; the Engine API has POST /containers/{id}/checkpoints and a
`checkpoint` parameter on start, which the low-level APIClient sends. Docker 20.10 restores only
from a container's own checkpoint folder, so the checkpoint files are copied from the source
daemon's data root into the new container's folder on the target: both data roots must be
reachable as paths from where drorch runs. When they are not, or a daemon lacks checkpoint
support, or the dump fails, the move falls back to a redeploy and says so.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils import parse_repository_tag

from drorch.drivers.base import Endpoint, Handle, HostFacts, MoveRequest, Phase, Progress, Shipped, WorkloadInfo
from drorch.drivers.jobs import ThreadedDriver
from drorch.errors import MoveFailed, SiteUnreachable
from drorch.playbook import Mappings, Resources, Strategy, WorkloadKind
from drorch.records import DRILL_LABEL

# What a recreated container keeps of the original's host configuration.
HOST_CONFIG_KEYS = (
    "Binds", "NetworkMode", "PortBindings", "RestartPolicy", "Memory", "NanoCpus", "CpuShares",
    "Mounts", "Privileged", "CapAdd", "CapDrop", "ExtraHosts", "LogConfig", "Tmpfs", "Ulimits",
)
CHUNK = 1 << 20


def _reason(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return str(exc)


def clone_config(
    inspect: dict[str, Any], mappings: Mappings | None = None, resources: Resources | None = None
) -> dict[str, Any]:
    """The create-container body that recreates `inspect`'s container elsewhere, mapped for the target."""
    m = mappings or Mappings()
    config = {k: v for k, v in inspect["Config"].items() if k not in ("Hostname",)}
    config["Image"] = m.image(config["Image"])
    host = inspect.get("HostConfig") or {}
    hc = {k: host[k] for k in HOST_CONFIG_KEYS if host.get(k) not in (None, "", [], {})}
    if "NetworkMode" in hc:
        hc["NetworkMode"] = m.network(hc["NetworkMode"])
    if "PortBindings" in hc:
        hc["PortBindings"] = {
            port: [{**b, "HostPort": str(m.port(int(b["HostPort"]))) if b.get("HostPort") else b.get("HostPort", "")}
                   for b in binds or []]
            for port, binds in hc["PortBindings"].items()
        }
    if resources is not None and resources.memory_mib:
        hc["Memory"] = resources.memory_mib << 20
    if resources is not None and resources.vcpus:
        hc["NanoCpus"] = resources.vcpus * 10**9
    config["HostConfig"] = hc
    return config


def drill_config(inspect: dict[str, Any], clone: str, network: str) -> dict[str, Any]:
    """A drill clone's create body: no published ports, no restart policy, and on `network` unless it had
    no network at all (then its own empty namespace already isolates it); labelled as a drill's."""
    config = clone_config(inspect)
    hc = config["HostConfig"]
    for key in ("PortBindings", "RestartPolicy"):
        hc.pop(key, None)
    config.pop("ExposedPorts", None)
    if hc.get("NetworkMode") != "none":
        hc["NetworkMode"] = network
    config["Labels"] = {**(config.get("Labels") or {}), DRILL_LABEL: clone}
    return config


def published_ports(inspect: dict[str, Any]) -> tuple[int, ...]:
    bindings = (inspect.get("HostConfig") or {}).get("PortBindings") or {}
    return tuple(sorted({int(b["HostPort"]) for binds in bindings.values() for b in binds or [] if b.get("HostPort")}))


class _Site:
    """One Docker daemon, with the calls the driver needs and errors turned into drorch's."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        try:
            # Typed loosely: the stubs lack the raw calls that checkpoints need.
            self.api: Any = docker.APIClient(base_url=ep.uri, version="auto", timeout=120)
        except (DockerException, requests.RequestException) as exc:
            raise SiteUnreachable(f"site {ep.site}: Docker at {ep.uri} does not answer: {_reason(exc)}") from None

    def inspect(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.inspect_container(name)  # type: ignore[no-any-return]
        except NotFound:
            return None
        except (DockerException, requests.RequestException) as exc:
            raise SiteUnreachable(f"site {self.ep.site}: Docker at {self.ep.uri}: {_reason(exc)}") from None

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        return self.api.info()  # type: ignore[no-any-return]

    def data_root(self) -> Path | None:
        """The daemon's data root when this machine can reach it as a folder."""
        root = Path(self.info["DockerRootDir"])
        return root if (root / "containers").is_dir() else None

    def checkpoint_dir(self, container_id: str, checkpoint: str) -> Path:
        root = self.data_root()
        if root is None:
            raise MoveFailed(f"the data root of Docker on site {self.ep.site} is not reachable from this machine")
        return root / "containers" / container_id / "checkpoints" / checkpoint

    def checkpoints_supported(self) -> bool:
        return bool(self.info.get("ExperimentalBuild"))

    def checkpoint(self, container: str, name: str, leave_running: bool = False) -> None:
        res = self.api._post_json(self.api._url("/containers/{0}/checkpoints", container),
                                  data={"CheckpointID": name, "Exit": not leave_running})
        self.api._raise_for_status(res)

    def drop_checkpoint(self, container: str, name: str) -> None:
        res = self.api._delete(self.api._url("/containers/{0}/checkpoints/{1}", container, name))
        if res.status_code != 404:
            self.api._raise_for_status(res)

    def newest_checkpoint(self, container_id: str) -> str | None:
        """drorch's newest checkpoint in the container's folder, when this machine can see it."""
        root = self.data_root()
        folder = root / "containers" / container_id / "checkpoints" if root else None
        if folder is None or not folder.is_dir():
            return None
        ours = [d for d in folder.iterdir() if d.name.startswith("drorch-") and d.is_dir()]
        return max(ours, key=lambda d: d.stat().st_mtime).name if ours else None

    def start(self, container: str, checkpoint: str | None = None) -> None:
        params = {"checkpoint": checkpoint} if checkpoint else {}
        res = self.api._post(self.api._url("/containers/{0}/start", container), params=params)
        self.api._raise_for_status(res)

    def has_image(self, image: str) -> bool:
        try:
            self.api.inspect_image(image)
        except ImageNotFound:
            return False
        return True

    def close(self) -> None:
        self.api.close()


class DockerDriver(ThreadedDriver):
    kind = WorkloadKind.CONTAINER

    def __init__(self) -> None:
        self._sites: dict[str, _Site] = {}
        self._lock = threading.Lock()
        super().__init__()
        self._bytes: dict[str, tuple[int, int]] = {}

    def _site(self, ep: Endpoint) -> _Site:
        site = self._sites.get(ep.uri)
        if site is None:
            site = self._sites[ep.uri] = _Site(ep)
        return site

    @staticmethod
    def _info(c: dict[str, Any], ep: Endpoint) -> WorkloadInfo:
        host = c.get("HostConfig") or {}
        memory = host.get("Memory") or 0
        cpus = host.get("NanoCpus") or 0
        networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
        return WorkloadInfo(
            name=c["Name"].lstrip("/"),
            kind=WorkloadKind.CONTAINER,
            site=ep.site,
            running=bool(c["State"]["Running"]),
            memory_mib=memory // (1 << 20) or None,
            vcpus=cpus // 10**9 or None,
            image=c["Config"]["Image"],
            host=ep.host,
            labels=dict(c["Config"].get("Labels") or {}),
            networks=tuple(sorted(networks)) or (host.get("NetworkMode") or "default",),
            ports=published_ports(c),
        )

    def host_facts(self, site: Endpoint) -> HostFacts:
        s = self._site(site)
        try:
            info = s.info
            networks = sorted(n["Name"] for n in s.api.networks())
            images = sorted({t for img in s.api.images() for t in img.get("RepoTags") or [] if t != "<none>:<none>"})
        except (DockerException, requests.RequestException) as exc:
            raise SiteUnreachable(f"site {site.site}: Docker at {site.uri}: {_reason(exc)}") from None
        return HostFacts(vcpus=info.get("NCPU"), memory_mib=(info.get("MemTotal") or 0) >> 20 or None,
                         networks=(*networks, "none", "host", "default"), images=tuple(images),
                         checkpoints=bool(info.get("ExperimentalBuild")))

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        s = self._site(site)
        try:
            ids = [c["Id"] for c in s.api.containers(all=True) if DRILL_LABEL not in (c.get("Labels") or {})]
        except (DockerException, requests.RequestException) as exc:
            raise SiteUnreachable(f"site {site.site}: Docker at {site.uri}: {_reason(exc)}") from None
        found = (s.inspect(i) for i in ids)
        return sorted((self._info(c, site) for c in found if c), key=lambda w: w.name)

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        c = self._site(site).inspect(name)
        return None if c is None else self._info(c, site)

    def start_move(self, request: MoveRequest) -> Handle:
        name, src_ep, dst_ep = request.workload, request.source, request.target
        handle = Handle(request)
        src, dst = self._site(src_ep), self._site(dst_ep)
        on_target = dst.inspect(name)
        if on_target and on_target["State"]["Running"]:
            handle.data["already_there"] = True
            return handle
        on_source = src.inspect(name)
        if on_source is not None and not on_source["State"]["Running"]:
            on_source = self._revive(src, on_source)  # an interrupted move stopped it: back where it was first
        if on_source is None:
            raise MoveFailed(f"container {name} is running neither on site {src_ep.site} nor on site {dst_ep.site}")
        if on_target is not None:  # a copy left by an interrupted move never ran: the source is authoritative
            dst.api.remove_container(on_target["Id"], force=True)
        handle.data["source_id"] = on_source["Id"]
        self._jobs.submit(handle.id, lambda: self._move(handle, on_source, src, dst))
        return handle

    @staticmethod
    def _revive(src: _Site, stopped: dict[str, Any]) -> dict[str, Any] | None:
        """Start a source container that a move stopped and did not finish: from the checkpoint that move
        took, so its process goes on. The planner only moves running containers, so it was running."""
        checkpoint = src.newest_checkpoint(stopped["Id"])
        try:
            src.start(stopped["Id"], checkpoint=checkpoint)
        except APIError:
            if checkpoint is None:
                return None
            src.start(stopped["Id"])  # the checkpoint does not restore: a fresh start beats none
        if checkpoint is not None:
            src.drop_checkpoint(stopped["Id"], checkpoint)
        return src.inspect(stopped["Id"])

    def fence(self, name: str, site: Endpoint) -> bool:
        s = self._site(site)
        c = s.inspect(name)
        if c is None or not c["State"]["Running"]:
            return False
        try:
            s.api.kill(c["Id"])
        except (DockerException, requests.RequestException) as exc:
            raise SiteUnreachable(f"site {site.site}: Docker at {site.uri}: {_reason(exc)}") from None
        return True

    def restart(self, name: str, site: Endpoint) -> str:
        s = self._site(site)
        c = s.inspect(name)
        if c is None:
            raise MoveFailed(f"site {site.site} holds no copy of container {name} to start from")
        if c["State"]["Running"]:
            return f"already running on site {site.site}"
        checkpoint = s.newest_checkpoint(c["Id"]) if s.checkpoints_supported() else None
        try:
            if checkpoint is not None:
                try:
                    s.start(c["Id"], checkpoint=checkpoint)
                    return f"restored on site {site.site} from checkpoint {checkpoint}"
                except APIError as exc:
                    s.start(c["Id"])
                    return (f"started on site {site.site} from its image: checkpoint {checkpoint} failed "
                            f"({_reason(exc)})")
            s.start(c["Id"])
        except (DockerException, requests.RequestException) as exc:
            raise MoveFailed(f"container {name} did not start on site {site.site}: {_reason(exc)}") from None
        return f"started on site {site.site} from its image (no checkpoint shipped)"

    def clone(self, name: str, clone: str, site: Endpoint, network: str) -> str:
        """A new container from the stopped copy's config, restored from a copy of its newest checkpoint."""
        s = self._site(site)
        copy = s.inspect(name)
        if copy is None:
            raise MoveFailed(f"site {site.site} holds no copy of container {name} to clone")
        if copy.get("Mounts"):
            raise MoveFailed(f"container {name} has volumes or binds, which a clone would share with the "
                             "recovery point: it is not cloned")
        try:
            there = s.inspect(clone)
            if there is not None and there["State"]["Running"]:
                return f"{clone} already up on site {site.site}"
            config = drill_config(copy, clone, network)
            if config["HostConfig"]["NetworkMode"] == network:
                self._isolated_network(s, network)
            target = there["Id"] if there else s.api.create_container_from_config(config, name=clone)["Id"]
            checkpoint = s.newest_checkpoint(copy["Id"]) if s.checkpoints_supported() else None
            if checkpoint is None:
                s.start(target)
                return f"{clone} started on site {site.site} from its image (no checkpoint shipped)"
            restored = s.checkpoint_dir(target, checkpoint)
            _copy_private(s.checkpoint_dir(copy["Id"], checkpoint), restored)
            try:
                s.start(target, checkpoint=checkpoint)
            finally:
                shutil.rmtree(restored, ignore_errors=True)  # it holds the process's memory
        except (APIError, DockerException, requests.RequestException, OSError) as exc:
            raise MoveFailed(f"clone {clone} of container {name} did not start on site {site.site}: "
                             f"{_reason(exc)}") from None
        return f"{clone} restored on site {site.site} from checkpoint {checkpoint}"

    def _isolated_network(self, s: _Site, network: str) -> None:
        """An internal network: no gateway, no route off it, so clones reach each other and nothing else."""
        with self._lock:
            if not s.api.networks(names=[network]):
                s.api.create_network(network, driver="bridge", internal=True, labels={DRILL_LABEL: network})

    def discard(self, clone: str, site: Endpoint) -> list[str]:
        s = self._site(site)
        c = s.inspect(clone)
        if c is None:
            return []
        try:
            s.api.remove_container(c["Id"], force=True)
        except (APIError, DockerException, requests.RequestException) as exc:
            raise SiteUnreachable(f"site {site.site}: removing container {clone}: {_reason(exc)}") from None
        return [f"container {clone}"]

    def drop_network(self, network: str, site: Endpoint) -> bool:
        s = self._site(site)
        try:
            found = [n for n in s.api.networks(names=[network]) if n["Name"] == network]
            for n in found:
                s.api.remove_network(n["Id"])
        except (APIError, DockerException, requests.RequestException) as exc:
            raise SiteUnreachable(f"site {site.site}: removing network {network}: {_reason(exc)}") from None
        return bool(found)

    def ship(self, request: MoveRequest, keep: int = 1) -> Shipped:
        """Image and a stopped copy on the target, with a checkpoint of the running source in it."""
        name = request.workload
        src, dst = self._site(request.source), self._site(request.target)
        original = src.inspect(name)
        if original is None:
            raise MoveFailed(f"container {name} is not on site {request.source.site}")
        try:
            copy = dst.inspect(name)
            if copy is not None and copy["State"]["Running"]:
                raise MoveFailed(f"container {name} runs on site {request.target.site}: not shipped over it")
            hid = Handle(request).id
            image = original["Config"]["Image"]
            if not dst.has_image(request.mappings.image(image)):
                self._send_image(hid, image, src, dst)
            if copy is None:
                config = clone_config(original, request.mappings, request.resources)
                copy = {"Id": dst.api.create_container_from_config(config, name=name)["Id"]}
            what, size, checkpoint = "image and config", None, None
            if request.strategy is Strategy.CHECKPOINT and self._checkpoint_obstacle(src, dst) is None \
                    and original["State"]["Running"]:
                checkpoint = f"drorch-{hid}"
                src.checkpoint(original["Id"], checkpoint, leave_running=True)
                shipped = dst.checkpoint_dir(copy["Id"], checkpoint)
                try:
                    _copy_private(src.checkpoint_dir(original["Id"], checkpoint), shipped)
                finally:
                    src.drop_checkpoint(original["Id"], checkpoint)
                size = sum(f.stat().st_size for f in shipped.rglob("*") if f.is_file())
                older = sorted((d for d in shipped.parent.iterdir() if d != shipped), key=lambda d: d.stat().st_mtime)
                for old in older[:max(0, len(older) - (keep - 1))]:
                    shutil.rmtree(old, ignore_errors=True)  # beyond the retention policy
                what += f", checkpoint {checkpoint}"
        except (APIError, DockerException, requests.RequestException, OSError) as exc:
            raise MoveFailed(f"shipping container {name} to site {request.target.site} failed: "
                             f"{_reason(exc)}") from None
        return Shipped(f"{what} on site {request.target.site}", size, checkpoint)

    # --- the move itself, in a background thread -----------------------------------------------------------

    def _move(self, handle: Handle, original: dict[str, Any], src: _Site, dst: _Site) -> Progress:
        try:
            message = self._transfer(handle, original, src, dst)
            done, total = self._bytes.get(handle.id, (None, None))
            return Progress(Phase.COMPLETED, bytes_done=done, bytes_total=total, message=message)
        except (APIError, DockerException, requests.RequestException, OSError) as exc:
            raise MoveFailed(f"moving container {handle.request.workload} failed: {_reason(exc)}") from None

    def _transfer(self, handle: Handle, original: dict[str, Any], src: _Site, dst: _Site) -> str:
        req, hid = handle.request, handle.id
        name, image = req.workload, original["Config"]["Image"]
        target_image = req.mappings.image(image)
        self._jobs.set_step(hid, "image")
        if not dst.has_image(target_image):
            if target_image != image and src.has_image(target_image):
                image = target_image  # the mapped image is known at home: send that one
            self._send_image(hid, image, src, dst)
            if target_image != image:
                repo, tag = parse_repository_tag(target_image)
                dst.api.tag(image, repo, tag or "latest")
        self._jobs.set_step(hid, "create")
        config = clone_config(original, req.mappings, req.resources)
        created = dst.api.create_container_from_config(config, name=name)
        target_id: str = created["Id"]
        handle.data["target_id"] = target_id
        fallback = ""
        if req.strategy is Strategy.CHECKPOINT:
            why_not = self._checkpoint_obstacle(src, dst)
            if why_not is None:
                try:
                    return self._restore(handle, original["Id"], target_id, src, dst)
                except _DumpFailed as exc:
                    why_not = f"the checkpoint failed ({exc})"
            fallback = f" (redeployed from {image}: {why_not})"
        self._jobs.set_step(hid, "stop source")
        src.api.stop(original["Id"], timeout=10)
        self._jobs.set_step(hid, "start")
        try:
            dst.start(target_id)
        except APIError as exc:
            src.start(original["Id"])
            dst.api.remove_container(target_id, force=True)
            raise MoveFailed(f"{name} did not start on site {req.target.site}, restarted on site "
                             f"{req.source.site}: {_reason(exc)}") from None
        src.api.remove_container(original["Id"], force=True)
        return f"running on site {req.target.site}{fallback}"

    @staticmethod
    def _checkpoint_obstacle(src: _Site, dst: _Site) -> str | None:
        for site in (src, dst):
            if not site.checkpoints_supported():
                return f"Docker on site {site.ep.site} runs without --experimental, which checkpoints need"
            if site.data_root() is None:
                return f"the data root of Docker on site {site.ep.site} is not reachable from this machine"
        return None

    def _restore(self, handle: Handle, source_id: str, target_id: str, src: _Site, dst: _Site) -> str:
        req, hid = handle.request, handle.id
        checkpoint = f"drorch-{hid}"
        handle.data["checkpoint"] = checkpoint
        self._jobs.set_step(hid, "checkpoint")
        try:
            src.checkpoint(source_id, checkpoint)
        except APIError as exc:
            raise _DumpFailed(_reason(exc)) from None
        src_dir, dst_dir = src.checkpoint_dir(source_id, checkpoint), dst.checkpoint_dir(target_id, checkpoint)
        try:
            self._jobs.set_step(hid, "copy checkpoint")
            _copy_private(src_dir, dst_dir)
            self._jobs.set_step(hid, "restore")
            dst.start(target_id, checkpoint=checkpoint)
        except (APIError, OSError) as exc:
            src.start(source_id, checkpoint=checkpoint)  # the process goes on where it stopped, at home
            dst.api.remove_container(target_id, force=True)
            raise MoveFailed(f"restore of {req.workload} on site {req.target.site} failed, restored on site "
                             f"{req.source.site} instead: {_reason(exc)}") from None
        self._jobs.set_step(hid, "cleanup")
        shutil.rmtree(dst_dir, ignore_errors=True)  # it holds the process's memory
        src.api.remove_container(source_id, force=True)
        return f"running on site {req.target.site} (restored from checkpoint)"

    def _send_image(self, hid: str, image: str, src: _Site, dst: _Site) -> None:
        self._jobs.set_step(hid, "send image")
        total = int(src.api.inspect_image(image).get("Size") or 0)
        done = 0

        def counted() -> Iterator[bytes]:
            nonlocal done
            for chunk in src.api.get_image(image, chunk_size=CHUNK):
                done += len(chunk)
                self._bytes[hid] = (done, max(total, done))
                yield chunk

        for _ in dst.api.load_image(counted()):
            pass

    def progress(self, handle: Handle) -> Progress:
        req = handle.request
        if handle.data.get("already_there"):
            return Progress(Phase.COMPLETED, message=f"already running on site {req.target.site}")
        fut = self._jobs.future(handle.id)
        if fut is None:  # started by another process: only reality tells
            there = self.locate(req.workload, req.target)
            if there is not None and there.running:
                return Progress(Phase.COMPLETED, message=f"running on site {req.target.site}")
            return Progress(Phase.FAILED, message=f"no move of container {req.workload} is under way (interrupted?)")
        if fut.done():
            exc = fut.exception()
            if exc is not None:
                return Progress(Phase.FAILED, message=str(exc))
            return fut.result()
        done, total = self._bytes.get(handle.id, (None, None))
        return Progress(Phase.RUNNING, step=self._jobs.step(handle.id), bytes_done=done, bytes_total=total)

    def close(self) -> None:
        super().close()
        for site in self._sites.values():
            site.close()
        self._sites.clear()


class _DumpFailed(Exception):
    """CRIU could not dump the container; it keeps running on the source."""


def _copy_private(src: Path, dst: Path) -> None:
    """Copy checkpoint files readable by root only: they hold the process's memory, secrets included."""
    old = os.umask(0o077)
    try:
        shutil.copytree(src, dst, dirs_exist_ok=True)
    finally:
        os.umask(old)
    dst.chmod(0o700)
