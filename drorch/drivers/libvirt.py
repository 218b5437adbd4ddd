"""libvirt driver: VMs move between sites by peer-to-peer live migration."""

from __future__ import annotations

import contextlib

import libvirt

from drorch.drivers.base import Endpoint, Handle, MoveRequest, Phase, Progress, WorkloadInfo
from drorch.drivers.jobs import ThreadedDriver
from drorch.errors import DrorchError, MoveFailed, SiteUnreachable
from drorch.playbook import WorkloadKind

# libvirt prints every error on stderr besides raising it; the exception is enough.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def migrate_params(target: Endpoint) -> dict[str, str]:
    """The migration stream goes to the target's migration address when the playbook gives one."""
    if target.migration_address:
        return {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{target.migration_address}"}
    return {}


def _reason(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


class LibvirtDriver(ThreadedDriver):
    kind = WorkloadKind.VM

    def __init__(self) -> None:
        self._conns: dict[str, libvirt.virConnect] = {}
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
            raise SiteUnreachable(f"site {ep.site}: libvirt at {ep.uri} does not answer: {_reason(exc)}") from None
        self._conns[ep.uri] = conn
        return conn

    def _domain(self, ep: Endpoint, name: str) -> libvirt.virDomain | None:
        try:
            return self._conn(ep).lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise SiteUnreachable(f"site {ep.site}: libvirt at {ep.uri}: {_reason(exc)}") from None

    @staticmethod
    def _info(dom: libvirt.virDomain, site: str) -> WorkloadInfo:
        state, max_kib, _mem, vcpus, _cpu = dom.info()
        return WorkloadInfo(
            name=dom.name(),
            kind=WorkloadKind.VM,
            site=site,
            running=state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED),
            memory_mib=max_kib // 1024,
            vcpus=vcpus,
        )

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        try:
            domains = self._conn(site).listAllDomains()
            return sorted((self._info(d, site.site) for d in domains), key=lambda w: w.name)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.uri}: {_reason(exc)}") from None

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        dom = self._domain(site, name)
        try:
            return None if dom is None else self._info(dom, site.site)
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
        if dom is None or not dom.isActive():
            raise MoveFailed(f"VM {name} is running neither on site {src.site} nor on site {dst.site}")
        self._conn(dst)  # an unreachable target fails here, before the VM is touched
        if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            handle.data["joined"] = True  # a migration started earlier is still under way
            return handle
        self._jobs.submit(handle.id, lambda: self._migrate(dom, request))
        return handle

    def _migrate(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        try:
            dom.migrateToURI3(request.target.uri, migrate_params(request.target), MIGRATE_FLAGS)
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"live migration of {request.workload} failed: {_reason(exc)}") from None
        return self._completed(request)

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
