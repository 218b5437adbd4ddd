"""libvirt driver: VMs move between sites by peer-to-peer live migration, or cold, or from a replica.

Disks that the target does not already see (shared storage) travel with the guest: by libvirt's
storage migration in a live move, streamed through libvirt's volume API otherwise (libvirt_storage).
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET

import libvirt

from drorch.drivers.base import (
    Endpoint,
    Handle,
    HostFacts,
    MoveRequest,
    Phase,
    Progress,
    Retention,
    Shipped,
    WorkloadInfo,
)
from drorch.drivers.jobs import ThreadedDriver
from drorch.drivers.libvirt_drill import isolated_network, overlays, remove_clone, remove_network
from drorch.drivers.libvirt_migration import Watchdog, migrate_params
from drorch.drivers.libvirt_points import new_stamp, point_name
from drorch.drivers.libvirt_recovery import (
    Shipper,
    clone_overlays,
    frozen_copies,
    leftovers,
    started_on_overlays,
    whole_points,
)
from drorch.drivers.libvirt_storage import (
    Disk,
    create_volume,
    delete_quietly,
    guest_disks,
    placement_problems,
    shared,
    stream_volume,
)
from drorch.drivers.libvirt_xml import domain_names, drill_domain_xml, map_domain_xml, point_disks_at
from drorch.errors import DrorchError, MoveFailed, SiteUnreachable
from drorch.playbook import Strategy, WorkloadKind
from drorch.records import DRILL_CLONE

# libvirt prints every error on stderr besides raising it; the exception is enough.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

COLD_SHUTDOWN_SECONDS = 30.0

def _stop(dom: libvirt.virDomain, grace_seconds: float = COLD_SHUTDOWN_SECONDS) -> None:
    """Ask the guest to shut down; pull the plug when it has not within the grace period."""
    if not dom.isActive():
        return
    dom.shutdown()
    deadline = time.monotonic() + grace_seconds
    while dom.isActive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if dom.isActive():
        dom.destroy()


def _reason(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


class LibvirtDriver(ThreadedDriver):
    kind = WorkloadKind.VM

    def __init__(self) -> None:
        self._conns: dict[str, libvirt.virConnect] = {}
        self._lock = threading.Lock()
        super().__init__()

    def _conn(self, ep: Endpoint) -> libvirt.virConnect:
        conn = self._conns.get(ep.uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
        try:
            conn = libvirt.open(ep.uri)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {ep.site}: libvirt at {ep.shown} does not answer: {_reason(exc)}") from None
        self._conns[ep.uri] = conn
        return conn

    def _domain(self, ep: Endpoint, name: str) -> libvirt.virDomain | None:
        try:
            return self._conn(ep).lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise SiteUnreachable(f"site {ep.site}: libvirt at {ep.shown}: {_reason(exc)}") from None

    @staticmethod
    def _info(dom: libvirt.virDomain, ep: Endpoint) -> WorkloadInfo:
        state, max_kib, _mem, vcpus, _cpu = dom.info()
        networks, pools = domain_names(dom.XMLDesc(0))
        return WorkloadInfo(
            name=dom.name(),
            kind=WorkloadKind.VM,
            site=ep.site,
            running=state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED),
            memory_mib=max_kib // 1024,
            vcpus=vcpus,
            host=ep.host,
            networks=networks,
            pools=pools,
        )

    def host_facts(self, site: Endpoint, brief: bool = False) -> HostFacts:
        conn = self._conn(site)
        try:
            _model, memory_mib, cpus, *_ = conn.getInfo()
            networks = sorted({*conn.listNetworks(), *conn.listDefinedNetworks()})
            pools = sorted({*conn.listStoragePools(), *conn.listDefinedStoragePools()})
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {_reason(exc)}") from None
        return HostFacts(vcpus=cpus, memory_mib=memory_mib, networks=tuple(networks), pools=tuple(pools))

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        try:
            domains = [d for d in self._conn(site).listAllDomains()
                       if not (DRILL_CLONE.fullmatch(d.name()) and not d.isPersistent())]  # drill clones
            return sorted((self._info(d, site) for d in domains), key=lambda w: w.name)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {_reason(exc)}") from None

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        dom = self._domain(site, name)
        try:
            return None if dom is None else self._info(dom, site)
        except libvirt.libvirtError:
            return None  # it left while we looked

    def _running_on(self, ep: Endpoint, name: str) -> bool:
        info = self.locate(name, ep)
        return info is not None and info.running

    def start_move(self, request: MoveRequest) -> Handle:
        name, src, dst = request.workload, request.source, request.target
        handle = Handle(request)
        dom = self._domain(src, name)
        if self._running_on(dst, name):
            handle.data["already_there"] = True
            return handle
        # A cold or replica move interrupted after the shutdown goes on from the stopped source.
        stopped_ok = request.strategy is not Strategy.LIVE
        if dom is None or not (dom.isActive() or stopped_ok):
            raise MoveFailed(f"VM {name} is running neither on site {src.site} nor on site {dst.site}")
        self._conn(dst)  # an unreachable target fails here, before the VM is touched
        if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            handle.data["joined"] = True  # a migration started earlier is still under way
            return handle
        moves = {Strategy.LIVE: lambda: self._migrate(dom, request),
                 Strategy.COLD: lambda: self._cold(dom, request, handle.id),
                 Strategy.REPLICA: lambda: self._replica(dom, request)}
        self._jobs.submit(handle.id, moves[request.strategy])
        return handle

    def preflight(self, request: MoveRequest) -> list[str]:
        """libvirt's own comparison of the guest's CPU model against the target host's hypervisor."""
        dom = self._domain(request.source, request.workload)
        if dom is None:
            return []
        xml = dom.XMLDesc(0)
        root = ET.fromstring(xml)
        problems = self._disk_problems(xml, request)
        cpu, os_type = root.find("cpu"), root.find("os/type")
        if cpu is None or cpu.find("model") is None or os_type is None:
            return problems
        try:
            result = self._conn(request.target).compareHypervisorCPU(
                None, os_type.get("arch"), os_type.get("machine"), root.get("type"),
                ET.tostring(cpu, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            return [*problems, f"VM {request.workload}: site {request.target.site} cannot run its CPU: {_reason(exc)}"]
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            model = cpu.findtext("model")
            problems.append(f"VM {request.workload}: the CPU of site {request.target.site} host "
                            f"{request.target.host} cannot run its CPU model {model}")
        return problems

    def _disk_problems(self, xml: str, request: MoveRequest) -> list[str]:
        """Each disk the target does not already see must fit, in a format it takes, in its mapped pool there."""
        where = f"VM {request.workload}: site {request.target.site} host {request.target.host}"
        try:
            todo = self._to_copy(xml, request)
            problems = placement_problems(self._conn(request.target), todo)
        except (MoveFailed, libvirt.libvirtError) as exc:
            return [f"VM {request.workload}: {exc}"]
        return [f"{where}: {p}" for p in problems]

    def _to_copy(self, xml: str, request: MoveRequest) -> list[tuple[Disk, str]]:
        """The guest's disks that must be copied, each with the pool it goes to on the target."""
        target = self._conn(request.target)
        return [(d, request.mappings.pool(d.pool)) for d in guest_disks(self._conn(request.source), xml)
                if not shared(target, d)]

    def _check_room(self, request: MoveRequest, disks: list[tuple[Disk, str]]) -> None:
        """Pre-flight again at the start of the move itself: nothing is touched when a disk cannot land."""
        problems = placement_problems(self._conn(request.target), disks)
        if problems:
            raise MoveFailed(f"{request.workload} cannot move to site {request.target.site}: {'; '.join(problems)}; "
                             f"it still runs on site {request.source.site}")

    def _landed(self, xml: str, disks: list[tuple[Disk, str]], name_of: dict[str, str] | None = None) -> str:
        """The definition with each copied disk on its volume in the target's pool."""
        return point_disks_at(xml, {d.key: (pool, (name_of or {}).get(d.key, d.volume)) for d, pool in disks})

    def _drop_sources(self, request: MoveRequest, disks: list[tuple[Disk, str]]) -> None:
        """After a move the disks live on the target: the source's copies go, so nothing is left behind."""
        conn = self._conn(request.source)
        for disk, _ in disks:
            try:
                vol = conn.storagePoolLookupByName(disk.pool).storageVolLookupByName(disk.volume)
            except libvirt.libvirtError:
                continue
            delete_quietly(vol)

    def _migrate(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        params, flags = migrate_params(request.target, request.controls)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        disks = self._to_copy(xml, request)
        self._check_room(request, disks)
        created: list[libvirt.virStorageVol] = []
        target = self._conn(request.target)
        try:
            for disk, pool in disks:  # storage migration writes into volumes that exist already
                created.append(create_volume(target, pool, disk.volume, disk))
        except libvirt.libvirtError as exc:
            for vol in created:
                delete_quietly(vol)
            raise MoveFailed(f"the disks of {request.workload} cannot be created on site {request.target.site}: "
                             f"{_reason(exc)}; it still runs on site {request.source.site}") from None
        if disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [d.dev for d, _ in disks]
        mapped = map_domain_xml(self._landed(xml, disks), request.mappings, None)  # a live guest keeps its size
        if mapped != xml:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = mapped
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = mapped
        size = dom.maxMemory() * 1024 + sum(d.capacity for d, _ in disks)
        watch = Watchdog(dom, request.controls, size) if request.controls else None
        if watch is not None:
            watch.start()
        try:
            dom.migrateToURI3(request.target.uri, params, flags)
        except libvirt.libvirtError as exc:
            for vol in created:  # nothing half-copied stays behind
                delete_quietly(vol)
            why = f"aborted, {watch.aborted}" if watch is not None and watch.aborted else "failed"
            raise MoveFailed(f"live migration of {request.workload} {why}: {_reason(exc)}; it still runs on "
                             f"site {request.source.site}") from None
        finally:
            if watch is not None:
                watch.stop.set()
        self._drop_sources(request, disks)
        return self._completed(request)

    def cancel(self, handle: Handle) -> None:
        dom = self._domain(handle.request.source, handle.request.workload)
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.abortJob()

    def fence(self, name: str, site: Endpoint) -> bool:
        dom = self._domain(site, name)
        try:
            if dom is None or not dom.isActive():
                return False
            dom.destroy()
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {_reason(exc)}") from None
        return True

    def restart(self, name: str, site: Endpoint, point: str | None = None) -> Progress:
        """The shipped definition started with its disks on overlays over the point's chains: the point stays."""
        dom = self._domain(site, name)
        if dom is None:
            raise MoveFailed(f"site {site.site} holds no definition of VM {name} to start from")
        try:
            if dom.isActive():
                return Progress(Phase.COMPLETED, message=f"already running on site {site.site}")
            conn = self._conn(site)
            xml, which = started_on_overlays(conn, dom, point, f"VM {name}")
            if which:
                dom = conn.defineXML(xml)
            dom.create()
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"VM {name} did not start on site {site.site}: {_reason(exc)}") from None
        except MoveFailed as exc:
            raise MoveFailed(f"VM {name} did not start on site {site.site}: {exc}") from None
        if not which:
            return Progress(Phase.COMPLETED, message=f"started on site {site.site} from its shipped definition")
        return Progress(Phase.COMPLETED, message=f"started on site {site.site} from {which}, on new overlays: the "
                                                 "point is unchanged")

    def ship(self, request: MoveRequest, retention: Retention) -> Shipped:
        """The mapped definition, defined (not started) on the target over the new point's chains, and the point
        itself: per disk a volume of the changes since the previous point (an incremental backup since that
        point's checkpoint) or a full copy, streamed into the mapped pool. Volumes no kept point reads go."""
        name = request.workload
        dom = self._domain(request.source, name)
        if dom is None:
            raise MoveFailed(f"VM {name} is not on site {request.source.site}")
        there = self._domain(request.target, name)
        source, target = self._conn(request.source), self._conn(request.target)
        taken = None
        shipper: Shipper | None = None
        try:
            if there is not None and there.isActive():
                raise MoveFailed(f"VM {name} runs on site {request.target.site}: not shipped over it")
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            disks = self._to_copy(xml, request)
            shipper = Shipper(dom, source, target, disks, new_stamp(), retention)
            taken = shipper.take() if disks else None
            try:
                sent = shipper.send(taken) if taken is not None else 0
            finally:
                for copy in taken.copies if taken is not None and taken.temporary else []:
                    delete_quietly(copy)
            chains = shipper.chains()
            volumes = {d.key: (pool, d.volume) for d, pool in disks}
            target.defineXML(map_domain_xml(point_disks_at(xml, volumes, chains), request.mappings,
                                            request.resources))
            removed = shipper.retain()
            if taken is not None and taken.checkpoint:
                shipper.drop_old_checkpoints()
        except (libvirt.libvirtError, MoveFailed) as exc:
            if shipper is not None:
                shipper.abandon(taken)  # nothing half-shipped stays behind
            why = exc if isinstance(exc, MoveFailed) else _reason(exc)
            raise MoveFailed(f"shipping VM {name} to site {request.target.site} failed: {why}") from None
        if taken is None:
            return Shipped(f"definition on site {request.target.site}", len(xml.encode()), "definition")
        kind = "incremental" if taken.parent else "full"
        length = len(next(iter(chains.values())))
        how = (f"changes since {point_name(taken.parent)}" if taken.parent
               else "crash-consistent full backups" if dom.isActive() else "full copies of the stopped disks")
        said = [f"{kind} point of {len(disks)} disks ({how}, {sent / 2**20:.1f} MiB sent), chain of {length}"]
        if taken.why_full:
            said.append(f"full because {taken.why_full}")
        if removed:
            said.append(f"{removed} volumes no kept point reads removed")
        return Shipped(f"{'; '.join(said)} on site {request.target.site}", sent + len(xml.encode()),
                       point_name(shipper.stamp), kind, length)

    def clone(self, name: str, clone: str, site: Endpoint, network: str, point: str | None = None) -> str:
        """A transient domain from the shipped definition; its disks on overlays over the point's chains, which
        the drill removes after."""
        copy = self._domain(site, name)
        if copy is None:
            raise MoveFailed(f"site {site.site} holds no definition of VM {name} to clone")
        if self._running_on(site, clone):
            return f"{clone} already up on site {site.site}"
        conn = self._conn(site)
        try:
            xml = copy.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            disks, stamp = clone_overlays(conn, clone, xml, point, f"VM {name}")
            if not disks:
                disks = overlays(conn, clone, xml)  # disks the site shares with the source: overlays over them
            if ET.fromstring(xml).find("./devices/interface") is not None:
                with self._lock:
                    isolated_network(conn, network)
            conn.createXML(drill_domain_xml(xml, clone, network, disks), 0)
        except (libvirt.libvirtError, MoveFailed) as exc:
            why = exc if isinstance(exc, MoveFailed) else _reason(exc)
            raise MoveFailed(f"clone {clone} of VM {name} did not start on site {site.site}: {why}") from None
        on = f", {len(disks)} disks on overlays" if disks else ""
        return f"{clone} booted on site {site.site} from {stamp or 'the shipped definition'}{on}"

    def held_points(self, name: str, site: Endpoint) -> list[str] | None:
        dom = self._domain(site, name)
        if dom is None:
            return None
        try:
            return whole_points(self._conn(site), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {_reason(exc)}") from None

    def leftovers(self, name: str, site: Endpoint) -> list[str]:
        try:
            return [what for what, _ in leftovers(self._conn(site), self._domain(site, name))]
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {_reason(exc)}") from None

    def remove_leftovers(self, name: str, site: Endpoint) -> list[str]:
        try:
            found = leftovers(self._conn(site), self._domain(site, name))
            for _, remove in reversed(found):  # the disks before their definition
                remove()
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {_reason(exc)}") from None
        return [what for what, _ in found]

    def discard(self, clone: str, site: Endpoint) -> list[str]:
        try:
            return remove_clone(self._conn(site), self._domain(site, clone), clone)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: removing {clone}: {_reason(exc)}") from None

    def drop_network(self, network: str, site: Endpoint) -> bool:
        try:
            return remove_network(self._conn(site), network)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: removing network {network}: {_reason(exc)}") from None

    def _cold(self, dom: libvirt.virDomain, request: MoveRequest, handle_id: str) -> Progress:
        """Shut down, stream the disks into the target's pools, define there with the mapped configuration and
        size, start there."""
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        source, target = self._conn(request.source), self._conn(request.target)
        created: list[libvirt.virStorageVol] = []
        try:
            disks = self._to_copy(xml, request)
            self._check_room(request, disks)
            self._jobs.set_step(handle_id, "shutdown")
            _stop(dom)
            try:
                self._jobs.set_step(handle_id, "copying disks")
                frozen = frozen_copies(dom, source, xml, [d for d, _ in disks], new_stamp())
                copies = frozen or [source.storageVolLookupByPath(d.path) for d, _ in disks]
                try:
                    for (disk, pool), copy in zip(disks, copies, strict=True):
                        created.append(create_volume(target, pool, disk.volume, disk))
                        stream_volume(copy, source, created[-1], target,
                                      self._jobs.counter(handle_id, sum(d.allocation for d, _ in disks)))
                finally:
                    for copy in frozen or []:
                        delete_quietly(copy)
                self._jobs.set_step(handle_id, "start")
                mapped = map_domain_xml(self._landed(xml, disks), request.mappings, request.resources)
                target.defineXML(mapped).create()
            except (libvirt.libvirtError, MoveFailed) as exc:
                for vol in created:
                    delete_quietly(vol)
                dom.create()  # not started there: back up at home
                why = exc if isinstance(exc, MoveFailed) else _reason(exc)
                raise MoveFailed(f"{request.workload} did not start on site {request.target.site}, restarted on "
                                 f"site {request.source.site}: {why}") from None
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            self._drop_sources(request, disks)
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"cold move of {request.workload} failed: {_reason(exc)}") from None
        done, total = self._jobs.sent(handle_id)
        return Progress(Phase.COMPLETED, bytes_done=done, bytes_total=total,
                        message=f"running on site {request.target.site}")


    def _replica(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        """Start the copy already defined on the target; the source stays defined, stopped."""
        replica = self._domain(request.target, request.workload)
        if replica is None:
            raise MoveFailed(f"no replica of {request.workload} is defined on site {request.target.site}")
        try:
            _stop(dom)
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"restart of {request.workload} from its replica failed: {_reason(exc)}") from None
        started = self.restart(request.workload, request.target)
        return Progress(Phase.COMPLETED, message=f"running on site {request.target.site} (from its replica: "
                                                 f"{started.message})")

    def _completed(self, request: MoveRequest) -> Progress:
        """The target keeps the finished job's statistics: what was sent and the guest's downtime."""
        message = f"running on site {request.target.site}"
        try:
            dom = self._domain(request.target, request.workload)
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED) if dom is not None else {}
        except (DrorchError, libvirt.libvirtError):
            stats = {}
        if "downtime" in stats:
            message += f" (downtime {stats['downtime']} ms)"
        return Progress(Phase.COMPLETED, bytes_done=stats.get("data_processed"),
                        bytes_total=stats.get("data_total"), message=message)

    def progress(self, handle: Handle) -> Progress:
        req = handle.request
        if handle.data.get("already_there"):
            return Progress(Phase.COMPLETED, message=f"already running on site {req.target.site}")
        fut = self._jobs.future(handle.id)
        if fut is not None and fut.done():
            exc = fut.exception()
            if exc is not None:
                return Progress(Phase.FAILED, message=str(exc))
            return fut.result()
        if fut is not None and req.strategy is not Strategy.LIVE:  # its job reports how it ends
            done, total = self._jobs.sent(handle.id)
            return Progress(Phase.RUNNING, step=self._jobs.step(handle.id) or f"{req.strategy} move",
                            bytes_done=done, bytes_total=total)
        try:
            return self._observed(req, ours=fut is not None)
        except (DrorchError, libvirt.libvirtError) as exc:
            if fut is not None:  # our migrate call will report how it ends
                return Progress(Phase.RUNNING, step="waiting for libvirt")
            return Progress(Phase.FAILED, message=str(exc))

    def _observed(self, req: MoveRequest, ours: bool) -> Progress:
        """Progress as both sites show it: the source's migration job, or where the VM now runs."""
        dom = self._domain(req.source, req.workload)
        stats = dom.jobStats() if dom is not None and dom.isActive() else {}
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
            return Progress(
                Phase.RUNNING,
                step="migrating memory",
                bytes_done=stats.get("data_processed"),
                bytes_total=stats.get("data_total"),
            )
        if self._running_on(req.target, req.workload):
            return self._completed(req)
        if ours:
            return Progress(Phase.RUNNING, step="starting migration")
        return Progress(Phase.FAILED, message=f"no migration of {req.workload} is under way (interrupted?)")

    def close(self) -> None:
        super().close()
        for conn in self._conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self._conns.clear()
