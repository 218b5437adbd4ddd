"""Container driver: containers move by CRIU checkpoint and restore, or are redeployed from their image.

A host runs Docker or Podman; both speak the Engine API, through which everything crosses between sites
(see `docker_engine`): the image by save and load, the checkpoint and the contents of named volumes as tar
streams relayed through this process and checked on arrival. Between two Podman hosts a checkpoint
travels as Podman exports it (see `_podman_checkpoints`). The moves themselves run in `_container_moves`; here are the
inventory, recovery points, disaster restarts and drill clones. A move falls back to a redeploy only when
a checkpoint cannot be taken or restored (an engine without checkpoint support, Docker on one end and
Podman on the other, a dump that fails), and says so.
"""

from __future__ import annotations

import threading
from typing import Any

from docker.errors import APIError
from docker.types import IPAMConfig, IPAMPool

from drorch.drivers.background import SiteClients, ThreadedDriver
from drorch.drivers.base import (
    Cut,
    DrillNet,
    Endpoint,
    Frozen,
    Handle,
    HostFacts,
    MoveRequest,
    Progress,
    Retention,
    WorkloadInfo,
)
from drorch.drivers.containers._container_moves import ContainerMoves, back_home
from drorch.drivers.containers._podman_checkpoints import PodmanCheckpoints
from drorch.drivers.containers.container_points import ContainerPoints, held, make_way, point_copy, ran
from drorch.drivers.containers.docker_config import (
    POINT_SUFFIX,
    clone_volume,
    is_point_copy,
    network_subnets,
    size_count,
    unmapped_binds,
    workload_info,
)
from drorch.drivers.containers.docker_engine import (
    API_ERRORS,
    HELPER_LABEL,
    DockerSite,
    reason,
)
from drorch.drivers.containers.podman_engine import PodmanSite, engine_site
from drorch.errors import MoveFailed, SiteUnreachable
from drorch.model.playbook import WorkloadKind, short_image
from drorch.model.records import DRILL_CLONE, DRILL_LABEL


class ContainerDriver(ThreadedDriver):
    kind = WorkloadKind.CONTAINER

    def __init__(self) -> None:
        self._site = SiteClients(engine_site)
        self._lock = threading.Lock()
        super().__init__()
        self._moves = ContainerMoves(self._jobs)
        self._points = ContainerPoints(self._moves)

    def host_facts(self, site: Endpoint, brief: bool = False) -> HostFacts:
        s = self._site(site)
        with s.answering():
            wrong = s.wrong_engine()
            if wrong is not None:
                raise SiteUnreachable(f"site {site.site} host {site.host}: {wrong}")
            full = not (brief and s.slow_info)
            info = s.info if full else {}
            problem = s.checkpoint_problem() if full else None
            listed = s.api.networks()
            networks = sorted(str(n["Name"]) for n in listed)
            tags = {str(t) for img in s.api.images() for t in img.get("RepoTags") or [] if t != "<none>:<none>"}
            images = sorted(tags | {short_image(t) for t in tags})  # as a playbook may name them
            return HostFacts(vcpus=size_count(info.get("NCPU")) or None,
                             memory_mib=size_count(info.get("MemTotal")) >> 20 or None,
                             networks=(*networks, "none", "host", "default"), images=tuple(images),
                             checkpoints=problem is None if full else None, engine=s.engine,
                             checkpoint_problem=problem, subnets=network_subnets(listed))

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        s = self._site(site)
        with s.answering():
            ids = [c["Id"] for c in s.api.containers(all=True)
                   if not {DRILL_LABEL, HELPER_LABEL} & set(c.get("Labels") or {}) and not self._drill_clone(s, c)
                   and not any(n.endswith(POINT_SUFFIX) for n in c.get("Names") or [])]  # points set aside
            found = (s.inspect(i) for i in ids)
            return sorted((workload_info(c, site) for c in found if c), key=lambda w: w.name)

    @staticmethod
    def _drill_clone(s: DockerSite, listed: dict[str, Any]) -> bool:
        """Podman restores a drill's clone with the labels of its original, so it is known by its name."""
        return s.engine == "podman" and any(DRILL_CLONE.fullmatch(n.lstrip("/")) for n in listed.get("Names") or [])

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        c = self._site(site).inspect(name)
        return None if c is None else workload_info(c, site)

    def preflight(self, request: MoveRequest) -> list[str]:
        """A bind mount's folder cannot travel: the playbook must name where the secondary holds it."""
        c = self._site(request.source).inspect(request.workload)
        if c is None:
            return []
        return [f"container {request.workload}: bind mount of {path} has no counterpart on site "
                f"{request.target.site}: map it under mappings.paths, or use a named volume, whose contents travel"
                for path in unmapped_binds(c, request.mappings)]

    def _begin_move(self, handle: Handle) -> None:
        try:
            self._prepare_move(handle)
        except API_ERRORS as exc:  # e.g. a removal of the target's copy that its daemon still has in progress
            req = handle.request
            raise MoveFailed(f"container {req.workload}: the move could not begin: {reason(exc)}") from None

    def _prepare_move(self, handle: Handle) -> None:
        request = handle.request
        name, src_ep, dst_ep = request.workload, request.source, request.target
        src, dst = self._site(src_ep), self._site(dst_ep)
        on_target = dst.inspect(name)
        on_source = src.inspect(name)
        if on_source is not None and not on_source["State"]["Running"]:
            on_source = self._revive(src, on_source)  # an interrupted move stopped it: back where it was first
        if on_source is None:
            raise MoveFailed(f"container {name} is running neither on site {src_ep.site} nor on site {dst_ep.site}")
        make_way(dst, name, on_target)  # the source is authoritative; the target's recovery points stay
        handle.data["source_id"] = on_source["Id"]
        self._jobs.submit(handle.id, lambda: self._moves.run(handle, on_source, src, dst))

    @staticmethod
    def _revive(src: DockerSite, stopped: dict[str, Any]) -> dict[str, Any] | None:
        """Start a source container that a move stopped and did not finish: from the checkpoint that move
        took, so its process goes on. The planner only moves running containers, so it was running."""
        if isinstance(src, PodmanSite):
            PodmanCheckpoints.revive(src, stopped)
            return src.inspect(stopped["Id"])
        try:
            back_home(src, stopped["Id"], src.newest_checkpoint(stopped["Id"]))
        except APIError:
            return None
        return src.inspect(stopped["Id"])

    def start(self, name: str, site: Endpoint) -> str:
        s = self._site(site)
        c = s.inspect(name)
        if c is None or is_point_copy(c):  # a point copy is never started: it is what restarts start from
            raise MoveFailed(f"site {site.site} holds no container {name} that ran there to start")
        if c["State"]["Running"]:
            return f"already running on site {site.site}"
        try:
            s.start(c["Id"])
        except API_ERRORS as exc:
            raise MoveFailed(f"container {name} did not start on site {site.site}: {reason(exc)}") from None
        return f"started on site {site.site} on its filesystem and volumes as they were"

    def fence(self, name: str, site: Endpoint) -> bool:
        s = self._site(site)
        c = s.inspect(name)
        if c is None or not c["State"]["Running"]:
            return False
        try:
            s.api.kill(c["Id"])
        except API_ERRORS as exc:
            raise s.unreachable(exc) from None
        return True

    def restart(self, name: str, site: Endpoint, point: str | None = None) -> Progress:
        s = self._site(site)
        try:
            return self._points.restart(name, s, point)
        except API_ERRORS as exc:
            raise MoveFailed(f"container {name} did not start on site {site.site}: {reason(exc)}") from None

    def clone(self, name: str, clone: str, site: Endpoint, net: DrillNet, point: str | None = None,
              addresses: tuple[str, ...] = ()) -> str:
        try:
            return self._points.clone(name, clone, self._site(site), net, point, addresses, self._isolated_network)
        except (*API_ERRORS, MoveFailed) as exc:
            raise MoveFailed(f"clone {clone} of container {name} did not start on site {site.site}: "
                             f"{reason(exc)}") from None

    def _isolated_network(self, s: DockerSite, net: DrillNet) -> None:
        """An internal network: no route off it, so clones reach each other and, at its gateways, the host."""
        with self._lock:
            if not s.api.networks(names=[net.name]):
                pools = [IPAMPool(subnet=cidr, gateway=gw) for cidr, gw in net.subnets]
                s.api.create_network(net.name, driver="bridge", internal=True, labels={DRILL_LABEL: net.name},
                                     ipam=IPAMConfig(pool_configs=pools) if pools else None,
                                     enable_ipv6=any(":" in cidr for cidr, _ in net.subnets))

    def held_points(self, name: str, site: Endpoint) -> list[str] | None:
        s = self._site(site)
        copy = point_copy(s, name) or s.inspect(name)
        with s.answering():
            return None if copy is None else held(s, name, copy)

    def leftovers(self, name: str, site: Endpoint) -> list[str]:
        c = self._site(site).inspect(name)
        return [f"stopped container {name}, which ran here before"] if c is not None and ran(c) else []

    def remove_leftovers(self, name: str, site: Endpoint) -> list[str]:
        s = self._site(site)
        c = s.inspect(name)
        if c is None or not ran(c):
            return []
        try:
            s.api.remove_container(c["Id"], force=True)
        except API_ERRORS as exc:
            raise s.unreachable(exc) from None
        return [f"stopped container {name}"]

    def discard(self, clone: str, site: Endpoint) -> list[str]:
        s = self._site(site)
        c = s.inspect(clone)
        removed = []
        try:
            if c is not None:
                s.api.remove_container(c["Id"], force=True, v=True)
                removed.append(f"container {clone}")
            for vol in (s.api.volumes(filters={"name": clone}) or {}).get("Volumes") or []:
                if vol["Name"].endswith(clone_volume("", clone)):  # the clone's own copies of named volumes
                    s.api.remove_volume(vol["Name"], force=True)
                    removed.append(f"volume {vol['Name']}")
        except API_ERRORS as exc:
            raise SiteUnreachable(f"site {site.site}: removing container {clone}: {reason(exc)}") from None
        return removed

    def drop_network(self, network: str, site: Endpoint) -> bool:
        s = self._site(site)
        try:
            found = [n for n in s.api.networks(names=[network]) if n["Name"] == network]
            for n in found:
                s.api.remove_network(n["Id"])
        except API_ERRORS as exc:
            raise SiteUnreachable(f"site {site.site}: removing network {network}: {reason(exc)}") from None
        return bool(found)

    def cut(self, request: MoveRequest, retention: Retention, held: bool) -> Cut:
        return self._points.cut(request, retention, held, self._site(request.source), self._site(request.target))

    def freeze(self, name: str, site: Endpoint, quiesce: bool) -> Frozen:
        """Its processes held by its cgroup (docker pause): a group's containers write nothing during the cut."""
        s = self._site(site)
        try:
            c = s.inspect(name)
            if c is None or not c["State"]["Running"]:
                raise MoveFailed(f"container {name} does not run on site {site.site}")
            if not c["State"].get("Paused"):
                s.api.pause(c["Id"])
        except API_ERRORS as exc:
            raise MoveFailed(f"container {name} could not be paused: {reason(exc)}") from None
        return Frozen.PAUSED

    def thaw(self, name: str, site: Endpoint, how: Frozen) -> bool:
        s = self._site(site)
        try:
            c = s.inspect(name)
            if c is None or not c["State"].get("Paused"):
                return False
            s.api.unpause(c["Id"])
        except API_ERRORS as exc:
            raise MoveFailed(f"container {name} could not be unpaused: {reason(exc)}") from None
        return True

    def cancel(self, handle: Handle) -> None:
        """Honoured at the move's next step before the target takes over, whose rollback leaves the container on its
        source (restored from its checkpoint when one was taken); a move that has started on the target ends there.
        A move that another process runs is not reached."""
        self._jobs.cancel(handle)

    def close(self) -> None:
        super().close()
        self._site.close()

