"""The libvirt driver's moves: peer-to-peer live migration (with storage migration of the disks the target
does not see), cold moves (shut down, stream the disks, start there) and replica restarts, each run in a
background job and observed on both sites."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import libvirt

from drorch.drivers.background import Jobs
from drorch.drivers.base import Endpoint, Handle, MoveRequest, Phase, Progress
from drorch.drivers.libvirt._connections import LibvirtSites, reason, stop
from drorch.drivers.libvirt._disk_transfer import create_volume, delete_quietly, stream_volume
from drorch.drivers.libvirt._domain_xml import map_domain_xml
from drorch.drivers.libvirt._migration import Watchdog, migrate_params
from drorch.drivers.libvirt._vm_addresses import (
    HOME,
    NetworkView,
    Reservation,
    claimable,
    recorded,
    release,
    renew,
    renew_pending,
    reserve,
    settled,
    wanted,
    with_record,
)
from drorch.drivers.libvirt._vm_points import new_stamp
from drorch.drivers.libvirt._vm_ship import frozen_copies
from drorch.errors import DrorchError, MoveFailed
from drorch.model.playbook import Strategy

REMNANT_WAIT_S = 60.0  # how long a move waits for the target to clear what a failed migration left there


class LibvirtMoves:
    """The driver's moves, each in a background job of `jobs`; a replica move ends by the driver's `restart`."""

    def __init__(self, sites: LibvirtSites, jobs: Jobs, restart: Callable[[str, Endpoint], Progress]) -> None:
        self._sites = sites
        self._jobs = jobs
        self._restart = restart

    def begin(self, handle: Handle) -> None:
        request = handle.request
        name, src, dst = request.workload, request.source, request.target
        dom = self._sites.domain(src, name)
        # A cold or replica move interrupted after the shutdown goes on from the stopped source.
        stopped_ok = request.strategy is not Strategy.LIVE
        if dom is None or not (dom.isActive() or stopped_ok):
            raise MoveFailed(f"VM {name} is running neither on site {src.site} nor on site {dst.site}")
        self._sites.conn(dst)  # an unreachable target fails here, before the VM is touched
        if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            handle.data["joined"] = True  # a migration started earlier is still under way
            return
        moves = {Strategy.LIVE: lambda: self._migrate(dom, request),
                 Strategy.COLD: lambda: self._cold(dom, request, handle.id),
                 Strategy.REPLICA: lambda: self._replica(dom, request)}
        self._jobs.submit(handle.id, moves[request.strategy])

    def _await_remnant(self, request: MoveRequest) -> None:
        """A migration that failed leaves its paused end on the target until that libvirtd clears it: at once, or
        when it starts again after it died. A new move waits for it to go rather than take it for the guest."""
        deadline = time.monotonic() + REMNANT_WAIT_S
        while True:
            dom = self._sites.domain(request.target, request.workload)
            try:
                if dom is None or dom.state() != [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION]:
                    return
            except libvirt.libvirtError:
                return  # it went while we looked
            if time.monotonic() > deadline:
                raise MoveFailed(f"site {request.target.site} still holds the paused end of an earlier migration of "
                                 f"{request.workload} after {REMNANT_WAIT_S:.0f} s; it still runs on site "
                                 f"{request.source.site}")
            time.sleep(0.5)

    def _migrate(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        self._await_remnant(request)
        params, flags = migrate_params(request.target, request.controls)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        disks = self._sites.to_copy(xml, request)
        self._sites.check_room(request, disks)
        created: list[libvirt.virStorageVol] = []
        target = self._sites.conn(request.target)
        wants = self._wanted(request, xml)
        claimable(target, wants)  # made once it has landed, while its link is down (settle)

        def undo() -> None:  # nothing half-made stays on the target
            for vol in created:
                delete_quietly(vol)

        try:
            for disk, pool in disks:  # storage migration writes into volumes that exist already
                created.append(create_volume(target, pool, disk.volume, disk))
        except libvirt.libvirtError as exc:
            undo()
            raise MoveFailed(f"the disks of {request.workload} cannot be created on site {request.target.site}: "
                             f"{reason(exc)}; it still runs on site {request.source.site}") from None
        if disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [d.dev for d, _ in disks]
        # a live guest keeps its size
        mapped = with_record(map_domain_xml(self._sites.landed(xml, disks), request.mappings, None), wants,
                             recorded(xml), renew=bool(wants))
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
            undo()
            why = f"aborted, {watch.aborted}" if watch is not None and watch.aborted else "failed"
            raise MoveFailed(f"live migration of {request.workload} {why}: {reason(exc)}; it still runs on "
                             f"site {request.source.site}") from None
        finally:
            if watch is not None:
                watch.stop.set()
        self._sites.drop_sources(request, disks)
        self.settle(request)
        return self._completed(request)

    def _wanted(self, request: MoveRequest, xml: str) -> list[Reservation]:
        """Reservations on the target's networks that give each of the guest's DHCP addresses its mapped one."""
        return wanted(NetworkView(self._sites.conn(request.source)).nics(xml), request.mappings)

    def settle(self, request: MoveRequest) -> None:
        """The guest landed: a live one gets its reservations here and loses drorch's at home while its link is
        down, then asks DHCP again on its new network; a cold one only loses those at home. Done by the process
        that moved it, and again by one that finds it landed after that process died: the landed definition says
        what is left to do, and no longer once it is done."""
        landed = self._sites.domain(request.target, request.workload)
        if landed is None or not landed.isActive():
            return
        xml = landed.XMLDesc(0)
        again, home = renew_pending(xml), recorded(xml, HOME)

        def release_home() -> None:
            source = self._sites.conn(request.source)
            for r in home:
                release(source, r)

        def switch_reservations() -> None:
            target = self._sites.conn(request.target)
            for r in recorded(xml):
                try:
                    reserve(target, r)
                except MoveFailed as exc:
                    raise MoveFailed(f"{request.workload} runs on site {request.target.site}, but {exc}") from None
            release_home()

        if again:
            renew(landed, switch_reservations)
        elif home:
            release_home()
        if again or home:
            settled(landed)

    def cancel(self, handle: Handle) -> None:
        dom = self._sites.domain(handle.request.source, handle.request.workload)
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                dom.abortJob()

    def _cold(self, dom: libvirt.virDomain, request: MoveRequest, handle_id: str) -> Progress:
        """Shut down, stream the disks into the target's pools, define there with the mapped configuration and
        size, start there."""
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        source, target = self._sites.conn(request.source), self._sites.conn(request.target)
        created: list[libvirt.virStorageVol] = []
        try:
            disks = self._sites.to_copy(xml, request)
            self._sites.check_room(request, disks)
            wants = self._wanted(request, xml)
            claimable(target, wants)
            self._jobs.set_step(handle_id, "shutdown")
            stop(dom)
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
                for r in wants:  # before it boots and asks
                    reserve(target, r)
                mapped = map_domain_xml(self._sites.landed(xml, disks), request.mappings, request.resources)
                target.defineXML(with_record(mapped, wants, recorded(xml))).create()
            except (libvirt.libvirtError, MoveFailed) as exc:
                for vol in created:
                    delete_quietly(vol)
                for r in wants:
                    release(target, r)
                dom.create()  # not started there: back up at home
                why = exc if isinstance(exc, MoveFailed) else reason(exc)
                raise MoveFailed(f"{request.workload} did not start on site {request.target.site}, restarted on "
                                 f"site {request.source.site}: {why}") from None
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            self._sites.drop_sources(request, disks)
            self.settle(request)
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"cold move of {request.workload} failed: {reason(exc)}") from None
        done, total = self._jobs.sent(handle_id)
        return Progress(Phase.COMPLETED, bytes_done=done, bytes_total=total,
                        message=f"running on site {request.target.site}")

    def _replica(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        """Start the copy already defined on the target; the source stays defined, stopped."""
        replica = self._sites.domain(request.target, request.workload)
        if replica is None:
            raise MoveFailed(f"no replica of {request.workload} is defined on site {request.target.site}")
        try:
            stop(dom)
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"restart of {request.workload} from its replica failed: {reason(exc)}") from None
        started = self._restart(request.workload, request.target)
        return Progress(Phase.COMPLETED, message=f"running on site {request.target.site} (from its replica: "
                                                 f"{started.message})")

    def _completed(self, request: MoveRequest) -> Progress:
        """The target keeps the finished job's statistics: what was sent and the guest's downtime."""
        message = f"running on site {request.target.site}"
        try:
            dom = self._sites.domain(request.target, request.workload)
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED) if dom is not None else {}
        except (DrorchError, libvirt.libvirtError):
            stats = {}
        if "downtime" in stats:
            message += f" (downtime {stats['downtime']} ms)"
        return Progress(Phase.COMPLETED, bytes_done=stats.get("data_processed"),
                        bytes_total=stats.get("data_total"), message=message)

    def follow(self, handle: Handle) -> Progress | None:
        req = handle.request
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

    def _observed(self, req: MoveRequest, ours: bool) -> Progress | None:
        """Progress as both sites show it: the source's migration job, or where the VM now runs; None when
        neither shows a migration of ours."""
        dom = self._sites.domain(req.source, req.workload)
        stats = dom.jobStats() if dom is not None and dom.isActive() else {}
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
            return Progress(
                Phase.RUNNING,
                step="migrating memory",
                bytes_done=stats.get("data_processed"),
                bytes_total=stats.get("data_total"),
            )
        if self._sites.running_on(req.target, req.workload):
            if ours:  # our migrate call ends the move, once the guest is settled there
                return Progress(Phase.RUNNING, step="settling on the target")
            self.settle(req)  # a migration a process that died started: what it would have done once landed
            return self._completed(req)
        return Progress(Phase.RUNNING, step="starting migration") if ours else None
