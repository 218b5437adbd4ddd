"""LXD driver: system containers and LXD's VMs, moved server to server through LXD's own migration API.

Recovery points are LXD snapshots (`drorch-<time>`) taken on the source and sent to the secondary as a refresh
of a stopped copy there (marked `user.drorch.point`): LXD's refresh sends only what changed since the snapshots
both servers hold, and mirrors the source's snapshots, so the points kept are pruned on the source before it is
sent. A disaster restart restores the chosen snapshot into the copy's own volume and starts it, and a drill
copies the snapshot into a clone: a snapshot itself never changes. The moves themselves run in `_lxd_moves`; an
instance that lands as a container on the other site moves, and ships its points, through `_land_as_container`, and on
that site the container driver restarts and clones it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drorch.drivers.background import SiteClients, ThreadedDriver
from drorch.drivers.base import (
    Cut,
    DrillNet,
    Endpoint,
    Handle,
    HostFacts,
    MoveRequest,
    Phase,
    Progress,
    Retention,
    Sent,
    Shipped,
    WorkloadInfo,
    chosen,
)
from drorch.drivers.lxd._land_as_container import LxdLanding, lands_apart
from drorch.drivers.lxd._lxd_api import LxdSite
from drorch.drivers.lxd._lxd_config import (
    DRILL_KEY,
    POINT_KEY,
    SNAPSHOT_PREFIX,
    STAGE_KEY,
    bridge_name,
    info,
    is_point_copy,
    isolated_devices,
    missing_names,
    network_subnets,
    point_names,
    target_body,
)
from drorch.drivers.lxd._lxd_moves import LxdMoves
from drorch.drivers.lxd._lxd_stage import drop_stage, land
from drorch.errors import MoveFailed
from drorch.model.playbook import Mappings, WorkloadKind
from drorch.model.records import utcnow


class LxdDriver(ThreadedDriver):
    kind = WorkloadKind.LXD

    def __init__(self) -> None:
        self._site = SiteClients(LxdSite)
        super().__init__()
        self._moves = LxdMoves(self._jobs)
        self._landing = LxdLanding(self._jobs)

    def _lxd_end(self, request: MoveRequest) -> LxdSite:
        """The LXD of a move where the workload lands as a container on the other end."""
        return self._site(request.target if request.source.containers else request.source)

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        found = self._site(site).instances()
        return sorted((info(i, site.site, site.host) for i in found
                       if not {DRILL_KEY, STAGE_KEY} & set(i.get("config") or {})), key=lambda w: w.name)

    def host_facts(self, site: Endpoint, brief: bool = False) -> HostFacts:
        s = self._site(site)
        res = s.resources()
        images = s.image_aliases() + [fp[:12] for fp in s.image_fingerprints()]
        networks = s.networks()
        return HostFacts(vcpus=int(res["cpu"]["total"]) or None, memory_mib=int(res["memory"]["total"]) >> 20 or None,
                         networks=tuple(sorted(str(n.get("name")) for n in networks)),
                         pools=tuple(sorted(s.names("storage-pools"))), images=tuple(images), engine="lxd",
                         subnets=network_subnets(networks))

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        if site.containers:  # where it lands as a container
            return self._landing.locate(name, site)
        found = self._site(site).instance(name)
        return None if found is None else info(found, site.site, site.host)

    def preflight(self, request: MoveRequest) -> list[str]:
        """What the target lacks that no mapping covers: profiles, networks, storage pools, the image."""
        if lands_apart(request):
            return self._landing.preflight(request, self._lxd_end(request))
        src, dst = self._site(request.source), self._site(request.target)
        inst = src.instance(request.workload)
        if inst is None:
            return []
        missing = missing_names(inst, request.mappings, dst.names("profiles"), dst.names("networks"),
                                dst.names("storage-pools"))
        return [f"instance {request.workload}: {m} does not exist on site {request.target.site} host "
                f"{request.target.host or request.target.shown}: create it there or map it" for m in missing]

    def _begin_move(self, handle: Handle) -> None:
        req = handle.request
        if lands_apart(req):
            lxd = self._lxd_end(req)
            self._jobs.submit(handle.id, lambda: self._landing.run(handle, lxd))
            return
        src, dst = self._site(req.source), self._site(req.target)
        if src.instance(req.workload) is None:
            raise MoveFailed(f"instance {req.workload} is on neither site {req.source.site} nor site "
                             f"{req.target.site}")
        self._jobs.submit(handle.id, lambda: self._moves.run(handle, src, dst))

    def cancel(self, handle: Handle) -> None:
        """Honoured at the move's next step before the target starts the instance; the rollback starts it again
        on its source. A move that another process runs is not reached."""
        self._jobs.cancel(handle)

    def fence(self, name: str, site: Endpoint) -> bool:
        s = self._site(site)
        if s.status(name) != "Running":
            return False
        s.set_state(name, "stop", force=True)
        return True

    def start(self, name: str, site: Endpoint) -> str:
        s = self._site(site)
        inst = s.instance(name)
        if inst is None or is_point_copy(inst):  # a point copy is started only by a restart, from a point
            raise MoveFailed(f"site {site.site} holds no instance {name} that ran there to start")
        if inst["status"] == "Running":
            return f"already running on site {site.site}"
        s.set_state(name, "start")
        return f"started on site {site.site} on its filesystem as it was"

    # --- recovery points -------------------------------------------------------------------------------------

    def cut(self, request: MoveRequest, retention: Retention, held: bool) -> Cut:
        """LXD's copy and its snapshot are one call: the instant is when the copy's last pass froze it."""
        at = utcnow()
        return Sent(at, self._ship(request, retention, at))

    def _ship(self, request: MoveRequest, retention: Retention, at: datetime) -> Shipped:
        if lands_apart(request):
            return self._landing.ship(request, self._lxd_end(request))
        src, dst = self._site(request.source), self._site(request.target)
        name = request.workload
        inst = src.instance(name)
        if inst is None:
            raise MoveFailed(f"instance {name} is not on site {request.source.site}")
        there = dst.instance(name)
        if there is not None and there.get("status") == "Running":
            raise MoveFailed(f"instance {name} runs on site {request.target.site}: no point is shipped onto it")
        body = target_body(inst, request.mappings)
        land(src, dst, name, {**body, "config": {**body["config"], POINT_KEY: "1"}}, there)
        src.thawed(name)  # LXD froze it for the last pass: protecting leaves it running as it was
        if there is not None and not is_point_copy(there):  # a copy left by an earlier stay keeps the points now
            dst.update(name, {"config": {POINT_KEY: "1"}})
        # The point is a snapshot of the copy, taken where it is kept: it holds the target's mapped networks and
        # pools, which a snapshot taken on the source and sent would not (the target refuses those it lacks).
        point = f"{SNAPSHOT_PREFIX}{utcnow():%Y%m%d-%H%M%S-%f}"
        dst.snapshot(name, point)
        keep = retention.kept(point, at)
        held = point_names(dst.snapshots(name))
        for old in held:
            if old not in keep:
                dst.delete_snapshot(name, old)
        kept = len(keep & set(held))
        return Shipped(f"snapshot {point} of instance {name} on site {request.target.site} "
                       f"({'refreshed' if there is not None else 'first copy'}; {kept} kept)", name=point,
                       kind="incremental" if there is not None else "full")

    def held_points(self, name: str, site: Endpoint) -> list[str] | None:
        s = self._site(site)
        if s.instance(name) is None:
            return None
        return point_names(s.snapshots(name))

    @staticmethod
    def _copy_at(s: LxdSite, name: str, point: str | None) -> tuple[dict[str, Any], str]:
        """The site's copy of the instance and its recovery point `point` (or the newest); MoveFailed without."""
        inst = s.instance(name)
        if inst is None:
            raise MoveFailed(f"site {s.ep.site} holds no copy of instance {name}")
        snap = chosen(point_names(s.snapshots(name)), point, f"instance {name}")
        if snap is None:
            raise MoveFailed(f"instance {name} has no recovery point on site {s.ep.site}")
        return inst, snap

    def restart(self, name: str, site: Endpoint, point: str | None = None) -> Progress:
        s = self._site(site)
        if s.status(name) == "Running":
            return Progress(Phase.COMPLETED, message=f"already running on site {site.site}")
        inst, snap = self._copy_at(s, name, point)
        s.act("put", "instances", name, body={"restore": snap})  # the copy's volume; the snapshot stays as it is
        if is_point_copy(inst):
            s.update(name, {"config": {POINT_KEY: ""}})
        drop_stage(s, name)
        s.set_state(name, "start")
        return Progress(Phase.COMPLETED, message=f"running on site {site.site} (restarted from point {snap})")

    def clone(self, name: str, clone: str, site: Endpoint, net: DrillNet, point: str | None = None,
              addresses: tuple[str, ...] = ()) -> str:
        s = self._site(site)
        made = s.status(clone)
        if made == "Running":
            return f"{clone} already up on site {site.site}"
        inst, snap = self._copy_at(s, name, point)
        network = net.name
        devices = isolated_devices(inst, network, addresses)
        if devices:
            s.ensure_network(bridge_name(network), net.subnets)
        if made is None:
            # LXD takes a copy's profiles, config and devices from the request, not from what it copies
            body = target_body(inst, Mappings(), volatile=False)
            s.create({**body, "name": clone, "source": {"type": "copy", "source": f"{name}/{snap}"},
                          "devices": {**body["devices"], **devices}, "config": {**body["config"], DRILL_KEY: "1"}})
        s.set_state(clone, "start")
        at = f" at {', '.join(addresses)}" if devices and addresses else ""
        where = f" on network {bridge_name(network)}{at}" if devices else " (no network)"
        return f"{clone} started on site {site.site} from point {snap}{where}"

    def discard(self, clone: str, site: Endpoint) -> list[str]:
        return [f"instance {clone}"] if self._site(site).delete(clone) else []

    def drop_network(self, network: str, site: Endpoint) -> bool:
        return self._site(site).delete_network(bridge_name(network))

    def leftovers(self, name: str, site: Endpoint) -> list[str]:
        s = self._site(site)
        inst = s.instance(name)
        if inst is None or is_point_copy(inst) or inst["status"] == "Running":
            return []
        return [f"stopped instance {name}, which ran here before"]

    def remove_leftovers(self, name: str, site: Endpoint) -> list[str]:
        if not self.leftovers(name, site):
            return []
        self._site(site).delete(name)
        return [f"stopped instance {name}"]

    def close(self) -> None:
        super().close()
        self._site.close()
        self._landing.close()

