"""The libvirt driver's reach into the sites: one connection per URI, domains looked up, and which disks of
a guest must travel and where they land (the parts the driver's moves and recovery points share)."""

from __future__ import annotations

import contextlib
import threading
import time

import libvirt

from drorch.drivers.base import Endpoint, MoveRequest, WorkloadInfo
from drorch.drivers.libvirt._disk_transfer import Disk, delete_quietly, guest_disks, placement_problems, shared
from drorch.drivers.libvirt._domain_xml import domain_names, point_disks_at
from drorch.drivers.libvirt._vm_addresses import NetworkView
from drorch.errors import MoveFailed, SiteUnreachable
from drorch.model.playbook import WorkloadKind

# libvirt prints every error on stderr besides raising it; the exception is enough.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

COLD_SHUTDOWN_SECONDS = 30.0
# A site that stops answering mid-call (a partition: its packets dropped, nothing refused) is given up on after
# about KEEPALIVE_S * (KEEPALIVE_COUNT + 1) seconds: the call then fails instead of waiting for TCP to give up.
KEEPALIVE_S, KEEPALIVE_COUNT = 5, 3
_events = threading.Lock()
_events_run = False


def _event_loop() -> None:
    """libvirt's own event loop, once per process in a thread of its own: without it no keepalive is sent, and a
    call to a site cut off mid-way hangs."""
    global _events_run
    with _events:
        if _events_run:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_events, name="drorch-libvirt-events", daemon=True).start()
        _events_run = True


def _run_events() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def stop(dom: libvirt.virDomain, grace_seconds: float = COLD_SHUTDOWN_SECONDS) -> None:
    """Ask the guest to shut down; pull the plug when it has not within the grace period."""
    if not dom.isActive():
        return
    dom.shutdown()
    deadline = time.monotonic() + grace_seconds
    while dom.isActive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if dom.isActive():
        dom.destroy()


SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shut down by its guest",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated away",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed to start",
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "stopped by libvirtd",
}


# A domain paused by a migration is not where its guest runs: the target's end of an incoming migration (which
# holds part of the guest's memory until the migration ends, and is killed when it fails), or the source's once the
# guest runs on the target.
MIGRATION_PAUSES = {
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "paused by a migration that has not ended",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "paused: its guest runs on the target of a post-copy migration",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "paused by a post-copy migration that failed",
}


def domain_status(state: int, why: int) -> str:
    """What libvirt says of a domain that does not run, e.g. "shut off (destroyed)"; '' for one that runs."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        return f"shut off ({SHUTOFF_REASONS[why]})" if why in SHUTOFF_REASONS else "shut off"
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return "crashed"
    if state == libvirt.VIR_DOMAIN_PAUSED:
        return MIGRATION_PAUSES.get(why, "")
    return ""


def reason(exc: libvirt.libvirtError) -> str:
    return exc.get_error_message() or str(exc)


class LibvirtSites:
    """What the libvirt driver's parts share: one connection per URI, domains looked up, and the disks a move
    copies."""

    def __init__(self) -> None:
        self._conns: dict[str, libvirt.virConnect] = {}

    def conn(self, ep: Endpoint) -> libvirt.virConnect:
        conn = self._conns.get(ep.uri)
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
        _event_loop()
        try:
            conn = libvirt.open(ep.uri)
            conn.setKeepAlive(KEEPALIVE_S, KEEPALIVE_COUNT)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {ep.site}: libvirt at {ep.shown} does not answer: {reason(exc)}") from None
        self._conns[ep.uri] = conn
        return conn

    def domain(self, ep: Endpoint, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn(ep).lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise SiteUnreachable(f"site {ep.site}: libvirt at {ep.shown}: {reason(exc)}") from None

    @staticmethod
    def info(dom: libvirt.virDomain, ep: Endpoint, view: NetworkView) -> WorkloadInfo:
        state, max_kib, _mem, vcpus, _cpu = dom.info()
        xml = dom.XMLDesc(0)
        networks, pools = domain_names(xml)
        status = "" if state == libvirt.VIR_DOMAIN_RUNNING else domain_status(*dom.state())
        running = state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED) and not status
        return WorkloadInfo(
            name=dom.name(),
            kind=WorkloadKind.VM,
            site=ep.site,
            running=running,
            memory_mib=max_kib // 1024,
            vcpus=vcpus,
            host=ep.host,
            networks=networks,
            pools=pools,
            status=status,
            nics=view.nics(xml, dom),
        )

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        dom = self.domain(site, name)
        try:
            return None if dom is None else self.info(dom, site, NetworkView(self.conn(site)))
        except libvirt.libvirtError:
            return None  # it left while we looked

    def running_on(self, ep: Endpoint, name: str) -> bool:
        info = self.locate(name, ep)
        return info is not None and info.running

    def to_copy(self, xml: str, request: MoveRequest) -> list[tuple[Disk, str]]:
        """The guest's disks that must be copied, each with the pool it goes to on the target."""
        target = self.conn(request.target)
        return [(d, request.mappings.pool(d.pool)) for d in guest_disks(self.conn(request.source), xml)
                if not shared(target, d)]

    def check_room(self, request: MoveRequest, disks: list[tuple[Disk, str]]) -> None:
        """Pre-flight again at the start of the move itself: nothing is touched when a disk cannot land."""
        problems = placement_problems(self.conn(request.target), disks)
        if problems:
            raise MoveFailed(f"{request.workload} cannot move to site {request.target.site}: {'; '.join(problems)}; "
                             f"it still runs on site {request.source.site}")

    def landed(self, xml: str, disks: list[tuple[Disk, str]], name_of: dict[str, str] | None = None) -> str:
        """The definition with each copied disk on its volume in the target's pool."""
        return point_disks_at(xml, {d.key: (pool, (name_of or {}).get(d.key, d.volume)) for d, pool in disks})

    def drop_sources(self, request: MoveRequest, disks: list[tuple[Disk, str]]) -> None:
        """After a move the disks live on the target: the source's copies go, so nothing is left behind."""
        conn = self.conn(request.source)
        for disk, _ in disks:
            try:
                vol = conn.storagePoolLookupByName(disk.pool).storageVolLookupByName(disk.volume)
            except libvirt.libvirtError:
                continue
            delete_quietly(vol)

    def close(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self._conns.clear()
