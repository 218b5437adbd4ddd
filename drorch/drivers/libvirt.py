"""libvirt driver: VMs move between sites by peer-to-peer live migration."""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from drorch.drivers.base import Endpoint, Handle, HostFacts, MoveRequest, Phase, Progress, Shipped, WorkloadInfo
from drorch.drivers.jobs import ThreadedDriver
from drorch.errors import DrorchError, MoveFailed, SiteUnreachable
from drorch.playbook import Mappings, MigrationControls, Resources, Strategy, WorkloadKind
from drorch.records import DRILL_CLONE

# libvirt prints every error on stderr besides raising it; the exception is enough.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

COLD_SHUTDOWN_SECONDS = 30.0
MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def migrate_params(target: Endpoint, controls: MigrationControls | None = None) -> tuple[dict[str, Any], int]:
    """Parameters and flags of a live migration: where the stream goes, and the playbook's limits."""
    params: dict[str, Any] = {}
    flags = MIGRATE_FLAGS
    if target.migration_address:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{target.migration_address}"
    if controls is not None:
        if controls.bandwidth_mib_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = controls.bandwidth_mib_s
        if controls.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if controls.post_copy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return params, flags


class _Watchdog(threading.Thread):
    """Enforces a migration's limits from outside the blocking migrate call: sets the maximum downtime
    once the job runs, switches to post-copy after the first pass, and aborts the job (the guest stays
    on its source) when it runs past its completion timeout or stops making progress."""

    def __init__(self, dom: libvirt.virDomain, controls: MigrationControls, memory_kib: int) -> None:
        super().__init__(name=f"drorch-watch-{dom.name()}", daemon=True)
        self.dom, self.controls = dom, controls
        gib = max(memory_kib / (1 << 20), 1 / 1024)
        self.timeout = controls.timeout_s_per_gib * gib if controls.timeout_s_per_gib else None
        self.stop = threading.Event()
        self.aborted = ""

    def run(self) -> None:
        started = time.monotonic()
        best, best_at, tuned, post = None, started, False, False
        while not self.stop.wait(0.25):
            try:
                stats = self.dom.jobStats()
            except libvirt.libvirtError:
                continue
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                continue
            now = time.monotonic()
            with contextlib.suppress(libvirt.libvirtError):
                if not tuned and self.controls.max_downtime_ms:
                    self.dom.migrateSetMaxDowntime(self.controls.max_downtime_ms)
                tuned = True
                if self.controls.post_copy and not post and stats.get("memory_iteration", 0) >= 1:
                    self.dom.migrateStartPostCopy()
                    post = True
            remaining = stats.get("data_remaining")
            if remaining is not None and (best is None or remaining < best):
                best, best_at = remaining, now
            if self.timeout is not None and now - started > self.timeout:
                self._abort(f"not done within {self.timeout:.0f} s")
            elif self.controls.no_progress_timeout_s and now - best_at > self.controls.no_progress_timeout_s:
                self._abort(f"no progress for {self.controls.no_progress_timeout_s:g} s")

    def _abort(self, why: str) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.dom.abortJob()
            self.aborted = why
        self.stop.set()


def domain_names(xml: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The networks a domain's interfaces use and the storage pools of its disks."""
    root = ET.fromstring(xml)
    networks = [s.get("network", "") for s in root.findall("./devices/interface[@type='network']/source")]
    pools = [s.get("pool", "") for s in root.findall("./devices/disk[@type='volume']/source")]
    return tuple(sorted(set(filter(None, networks)))), tuple(sorted(set(filter(None, pools))))


def map_domain_xml(xml: str, mappings: Mappings, resources: Resources | None) -> str:
    """The domain's definition for the target: mapped networks and pools, and a new size if given."""
    root = ET.fromstring(xml)
    changed = False
    for source in root.findall("./devices/interface[@type='network']/source"):
        name = source.get("network", "")
        if mappings.network(name) != name:
            source.set("network", mappings.network(name))
            changed = True
    for source in root.findall("./devices/disk[@type='volume']/source"):
        pool = source.get("pool", "")
        if mappings.pool(pool) != pool:
            source.set("pool", mappings.pool(pool))
            changed = True
    if resources is not None and resources.memory_mib:
        for tag in ("memory", "currentMemory"):
            el = root.find(tag)
            if el is not None:
                el.text, changed = str(resources.memory_mib * 1024), True
                el.set("unit", "KiB")
    if resources is not None and resources.vcpus:
        el = root.find("vcpu")
        if el is not None:
            el.text, changed = str(resources.vcpus), True
    return ET.tostring(root, encoding="unicode") if changed else xml


DRILL_NS = "urn:drorch:drill"


def drill_domain_xml(xml: str, clone: str, network: str, overlays: dict[str, str]) -> str:
    """A drill clone's definition: renamed, without UUID or MACs, every interface on the drill's network,
    file consoles in files of its own, and its writable disks on the copy-on-write `overlays` (by source)."""
    root = ET.fromstring(xml)
    name = root.find("name")
    original = name.text or "" if name is not None else ""
    if name is not None:
        name.text = clone
    for el in root.findall("uuid"):
        root.remove(el)
    for iface in root.findall("./devices/interface"):
        model = iface.find("model")
        for child in list(iface):
            iface.remove(child)
        iface.attrib = {"type": "network"}
        ET.SubElement(iface, "source", network=network)
        if model is not None:
            iface.append(model)
    for log in root.findall("./devices/*[@type='file']/source[@path]"):
        folder, _, base = log.get("path", "").rpartition("/")
        base = base.replace(original, clone) if original and original in base else f"{clone}.{base}"
        log.set("path", f"{folder}/{base}")
    for disk in root.findall("./devices/disk"):
        source = disk.find("source")
        key = _disk_source(disk)
        if source is None or key is None or key not in overlays:
            continue
        disk.set("type", "file")
        source.attrib = {"file": overlays[key]}
        driver = disk.find("driver")
        if driver is not None:
            driver.set("type", "qcow2")
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{DRILL_NS}}}clone", of=original)
    return ET.tostring(root, encoding="unicode")


def _disk_source(disk: ET.Element) -> str | None:
    """A writable disk's source as `file` or `pool/volume`; None for CD-ROMs, read-only and network disks."""
    source = disk.find("source")
    if source is None or disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
        return None
    if disk.get("type") == "file":
        return source.get("file")
    if disk.get("type") == "volume":
        return f"{source.get('pool')}/{source.get('volume')}"
    return None


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

    def host_facts(self, site: Endpoint) -> HostFacts:
        conn = self._conn(site)
        try:
            _model, memory_mib, cpus, *_ = conn.getInfo()
            networks = sorted({*conn.listNetworks(), *conn.listDefinedNetworks()})
            pools = sorted({*conn.listStoragePools(), *conn.listDefinedStoragePools()})
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.uri}: {_reason(exc)}") from None
        return HostFacts(vcpus=cpus, memory_mib=memory_mib, networks=tuple(networks), pools=tuple(pools))

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        try:
            domains = [d for d in self._conn(site).listAllDomains()
                       if not (DRILL_CLONE.fullmatch(d.name()) and not d.isPersistent())]  # drill clones
            return sorted((self._info(d, site) for d in domains), key=lambda w: w.name)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.uri}: {_reason(exc)}") from None

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
        move = {Strategy.LIVE: self._migrate, Strategy.COLD: self._cold, Strategy.REPLICA: self._replica}
        self._jobs.submit(handle.id, lambda: move[request.strategy](dom, request))
        return handle

    def preflight(self, request: MoveRequest) -> list[str]:
        """libvirt's own comparison of the guest's CPU model against the target host's hypervisor."""
        dom = self._domain(request.source, request.workload)
        if dom is None:
            return []
        root = ET.fromstring(dom.XMLDesc(0))
        problems = self._disk_problems(root, request)
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

    def _disk_problems(self, root: ET.Element, request: MoveRequest) -> list[str]:
        """Every disk must already be on the target (shared storage, or a mapped pool): none is copied."""
        target = self._conn(request.target)
        problems = []
        for disk in root.findall("./devices/disk[@device='disk']"):
            source = disk.find("source")
            if source is None:
                continue
            try:
                if disk.get("type") == "volume":
                    pool = request.mappings.pool(source.get("pool", ""))
                    target.storagePoolLookupByName(pool).storageVolLookupByName(source.get("volume", ""))
                elif disk.get("type") == "file" and source.get("file"):
                    target.storageVolLookupByPath(source.get("file"))
            except libvirt.libvirtError:
                where = source.get("file") or f"{request.mappings.pool(source.get('pool', ''))}/{source.get('volume')}"
                problems.append(f"VM {request.workload}: disk {where} is not on site {request.target.site} host "
                                f"{request.target.host}: put it on shared storage or a mapped pool")
        return problems

    def _migrate(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        params, flags = migrate_params(request.target, request.controls)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        mapped = map_domain_xml(xml, request.mappings, None)  # a live guest keeps its size
        if mapped != xml:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = mapped
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = mapped
        watch = _Watchdog(dom, request.controls, dom.maxMemory()) if request.controls else None
        if watch is not None:
            watch.start()
        try:
            dom.migrateToURI3(request.target.uri, params, flags)
        except libvirt.libvirtError as exc:
            why = f"aborted, {watch.aborted}" if watch is not None and watch.aborted else "failed"
            raise MoveFailed(f"live migration of {request.workload} {why}: {_reason(exc)}; it still runs on "
                             f"site {request.source.site}") from None
        finally:
            if watch is not None:
                watch.stop.set()
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
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.uri}: {_reason(exc)}") from None
        return True

    def restart(self, name: str, site: Endpoint) -> Progress:
        dom = self._domain(site, name)
        if dom is None:
            raise MoveFailed(f"site {site.site} holds no definition of VM {name} to start from")
        try:
            if dom.isActive():
                return Progress(Phase.COMPLETED, message=f"already running on site {site.site}")
            dom.create()
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"VM {name} did not start on site {site.site}: {_reason(exc)}") from None
        return Progress(Phase.COMPLETED, message=f"started on site {site.site} from its shipped definition")

    def ship(self, request: MoveRequest, keep: int = 1) -> Shipped:
        """The mapped definition, defined (not started) on the target; disks are not copied."""
        name = request.workload
        dom = self._domain(request.source, name)
        if dom is None:
            raise MoveFailed(f"VM {name} is not on site {request.source.site}")
        there = self._domain(request.target, name)
        try:
            if there is not None and there.isActive():
                raise MoveFailed(f"VM {name} runs on site {request.target.site}: not shipped over it")
            xml = map_domain_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE),
                                 request.mappings, request.resources)
            self._conn(request.target).defineXML(xml)
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"shipping VM {name} to site {request.target.site} failed: {_reason(exc)}") from None
        return Shipped(f"definition on site {request.target.site}", len(xml.encode()), "definition")

    def clone(self, name: str, clone: str, site: Endpoint, network: str) -> str:
        """A transient domain from the shipped definition; its disks on overlays the drill removes after."""
        copy = self._domain(site, name)
        if copy is None:
            raise MoveFailed(f"site {site.site} holds no definition of VM {name} to clone")
        if self._running_on(site, clone):
            return f"{clone} already up on site {site.site}"
        conn = self._conn(site)
        try:
            xml = copy.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            overlays = self._overlays(conn, clone, ET.fromstring(xml))
            if ET.fromstring(xml).find("./devices/interface") is not None:
                self._isolated_network(conn, network)
            conn.createXML(drill_domain_xml(xml, clone, network, overlays), 0)
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"clone {clone} of VM {name} did not start on site {site.site}: {_reason(exc)}") from None
        disks = f", {len(overlays)} disks on overlays" if overlays else ""
        return f"{clone} booted on site {site.site} from the shipped definition{disks}"

    @staticmethod
    def _overlays(conn: libvirt.virConnect, clone: str, root: ET.Element) -> dict[str, str]:
        """A qcow2 overlay in the same pool for each writable disk: the drill never writes to the copy."""
        overlays = {}
        for i, disk in enumerate(root.findall("./devices/disk")):
            key = _disk_source(disk)
            if key is None:
                continue
            if disk.get("type") == "volume":
                pool_name, _, vol_name = key.partition("/")
                vol = conn.storagePoolLookupByName(pool_name).storageVolLookupByName(vol_name)
            else:
                vol = conn.storageVolLookupByPath(key)
            driver = disk.find("driver")
            fmt = driver.get("type", "raw") if driver is not None else "raw"
            overlay = vol.storagePoolLookupByVolume().createXML(
                f"<volume><name>{clone}-disk{i}.qcow2</name><capacity unit='bytes'>{vol.info()[1]}</capacity>"
                f"<target><format type='qcow2'/></target><backingStore><path>{vol.path()}</path>"
                f"<format type='{fmt}'/></backingStore></volume>", 0)
            overlays[key] = overlay.path()
        return overlays

    def _isolated_network(self, conn: libvirt.virConnect, network: str) -> None:
        """No forward mode and no address: clones reach each other and nothing else."""
        with self._lock:
            if network not in conn.listNetworks():
                conn.networkCreateXML(f"<network><name>{network}</name></network>")

    def discard(self, clone: str, site: Endpoint) -> list[str]:
        removed = []
        conn = self._conn(site)
        try:
            dom = self._domain(site, clone)
            if dom is not None:
                persistent = dom.isPersistent()  # a transient clone is gone once destroyed
                if dom.isActive():
                    dom.destroy()
                if persistent:
                    dom.undefine()
                removed.append(f"VM {clone}")
            for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                pool.refresh(0)
                for vol in pool.listAllVolumes():
                    if vol.name().startswith(f"{clone}-disk"):
                        vol.delete(0)
                        removed.append(f"volume {vol.name()}")
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: removing {clone}: {_reason(exc)}") from None
        return removed

    def drop_network(self, network: str, site: Endpoint) -> bool:
        conn = self._conn(site)
        try:
            net = conn.networkLookupByName(network)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                return False
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.uri}: {_reason(exc)}") from None
        try:
            persistent = net.isPersistent()
            if net.isActive():
                net.destroy()
            if persistent:
                net.undefine()
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: removing network {network}: {_reason(exc)}") from None
        return True

    def _cold(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        """Shut down, define on the target with the mapped configuration and size, start there."""
        xml = map_domain_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE),
                             request.mappings, request.resources)
        target = self._conn(request.target)
        try:
            _stop(dom)
            try:
                target.defineXML(xml).create()
            except libvirt.libvirtError as exc:
                dom.create()  # not started there: back up at home
                raise MoveFailed(f"{request.workload} did not start on site {request.target.site}, restarted on "
                                 f"site {request.source.site}: {_reason(exc)}") from None
            dom.undefine()
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"cold move of {request.workload} failed: {_reason(exc)}") from None
        return Progress(Phase.COMPLETED, message=f"running on site {request.target.site}")

    def _replica(self, dom: libvirt.virDomain, request: MoveRequest) -> Progress:
        """Start the copy already defined on the target; the source stays defined, stopped."""
        replica = self._domain(request.target, request.workload)
        if replica is None:
            raise MoveFailed(f"no replica of {request.workload} is defined on site {request.target.site}")
        try:
            _stop(dom)
            replica.create()
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"restart of {request.workload} from its replica failed: {_reason(exc)}") from None
        return Progress(Phase.COMPLETED, message=f"running on site {request.target.site} (from its replica)")

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
        if fut is not None and req.strategy is not Strategy.LIVE:
            return Progress(Phase.RUNNING, step=f"{req.strategy} move")  # its job reports how it ends
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
