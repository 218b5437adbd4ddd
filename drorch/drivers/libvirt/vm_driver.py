"""libvirt driver: VMs move between sites by peer-to-peer live migration, or cold, or from a replica
(`_vm_moves`), and come back from recovery points (`_vm_ship`, `_vm_recovery`).

Disks that the target does not already see (shared storage) travel with the guest: by libvirt's
storage migration in a live move, streamed through libvirt's volume API otherwise (`_disk_transfer`).
Everything reaches the sites through the connections of `_connections.LibvirtSites`; the driver is made of
those parts, as the container and LXD drivers are of theirs.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET

import libvirt

from drorch.drivers.background import ThreadedDriver
from drorch.drivers.base import (
    Cut,
    DrillNet,
    Endpoint,
    Frozen,
    Handle,
    HostFacts,
    MoveRequest,
    Phase,
    Progress,
    Retention,
    WorkloadInfo,
)
from drorch.drivers.libvirt._connections import LibvirtSites, reason
from drorch.drivers.libvirt._disk_transfer import placement_problems
from drorch.drivers.libvirt._domain_xml import drill_domain_xml
from drorch.drivers.libvirt._drill_domains import clone_mac, isolated_network, overlays, remove_clone, remove_network
from drorch.drivers.libvirt._guest_agent import guest_exec
from drorch.drivers.libvirt._vm_addresses import NetworkView, Reservation, reserve, shipped_reservations, with_record
from drorch.drivers.libvirt._vm_moves import LibvirtMoves
from drorch.drivers.libvirt._vm_points import new_stamp
from drorch.drivers.libvirt._vm_recovery import clone_overlays, leftovers, started_on_overlays, whole_points
from drorch.drivers.libvirt._vm_ship import Shipper, VmCut
from drorch.errors import MoveFailed, SiteUnreachable
from drorch.model.playbook import WorkloadKind
from drorch.model.records import DRILL_CLONE


class LibvirtDriver(ThreadedDriver):
    kind = WorkloadKind.VM

    def __init__(self) -> None:
        super().__init__()
        self._sites = LibvirtSites()
        self._moves = LibvirtMoves(self._sites, self._jobs, self.restart)
        self._lock = threading.Lock()  # a drill's network made once, however many clones join it at once

    def _begin_move(self, handle: Handle) -> None:
        self._moves.begin(handle)

    def _follow_move(self, handle: Handle) -> Progress | None:
        return self._moves.follow(handle)

    def settle(self, request: MoveRequest) -> None:
        self._moves.settle(request)

    def cancel(self, handle: Handle) -> None:
        self._moves.cancel(handle)

    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        return self._sites.locate(name, site)

    def close(self) -> None:
        super().close()
        self._sites.close()

    def host_facts(self, site: Endpoint, brief: bool = False) -> HostFacts:
        conn = self._sites.conn(site)
        try:
            _model, memory_mib, cpus, *_ = conn.getInfo()
            networks = sorted({*conn.listNetworks(), *conn.listDefinedNetworks()})
            pools = sorted({*conn.listStoragePools(), *conn.listDefinedStoragePools()})
            subnets = NetworkView(conn).subnets()  # quick to ask, and a run's plan checks addresses against them
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {reason(exc)}") from None
        return HostFacts(vcpus=cpus, memory_mib=memory_mib, networks=tuple(networks), pools=tuple(pools),
                         subnets=subnets)

    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        try:
            conn = self._sites.conn(site)
            domains = [d for d in conn.listAllDomains()
                       if not (DRILL_CLONE.fullmatch(d.name()) and not d.isPersistent())]  # drill clones
            view = NetworkView(conn)
            return sorted((self._sites.info(d, site, view) for d in domains), key=lambda w: w.name)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {reason(exc)}") from None

    def run_inside(self, name: str, site: Endpoint, argv: list[str], env: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        dom = self._sites.domain(site, name)
        if dom is None:
            raise MoveFailed(f"VM {name} is not on site {site.site}")
        return guest_exec(dom, argv, env, timeout_s)

    def preflight(self, request: MoveRequest) -> list[str]:
        """libvirt's own comparison of the guest's CPU model against the target host's hypervisor."""
        dom = self._sites.domain(request.source, request.workload)
        if dom is None:
            return []
        xml = dom.XMLDesc(0)
        root = ET.fromstring(xml)
        problems = self._disk_problems(xml, request)
        cpu, os_type = root.find("cpu"), root.find("os/type")
        if cpu is None or cpu.find("model") is None or os_type is None:
            return problems
        try:
            result = self._sites.conn(request.target).compareHypervisorCPU(
                None, os_type.get("arch"), os_type.get("machine"), root.get("type"),
                ET.tostring(cpu, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            return [*problems, f"VM {request.workload}: site {request.target.site} cannot run its CPU: {reason(exc)}"]
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            model = cpu.findtext("model")
            problems.append(f"VM {request.workload}: the CPU of site {request.target.site} host "
                            f"{request.target.host} cannot run its CPU model {model}")
        return problems

    def _disk_problems(self, xml: str, request: MoveRequest) -> list[str]:
        """Each disk the target does not already see must fit, in a format it takes, in its mapped pool there."""
        where = f"VM {request.workload}: site {request.target.site} host {request.target.host}"
        try:
            todo = self._sites.to_copy(xml, request)
            problems = placement_problems(self._sites.conn(request.target), todo)
        except (MoveFailed, libvirt.libvirtError) as exc:
            return [f"VM {request.workload}: {exc}"]
        return [f"{where}: {p}" for p in problems]

    def fence(self, name: str, site: Endpoint) -> bool:
        dom = self._sites.domain(site, name)
        try:
            if dom is None or not dom.isActive():
                return False
            dom.destroy()
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {reason(exc)}") from None
        return True

    def start(self, name: str, site: Endpoint) -> str:
        dom = self._sites.domain(site, name)
        if dom is None:
            raise MoveFailed(f"site {site.site} holds no VM {name} to start")
        try:
            if dom.isActive():
                return f"already running on site {site.site}"
            dom.create()
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"VM {name} did not start on site {site.site}: {reason(exc)}") from None
        return f"started on site {site.site} on its disks as they were"

    def restart(self, name: str, site: Endpoint, point: str | None = None) -> Progress:
        """The shipped definition started with its disks on overlays over the point's chains: the point stays."""
        dom = self._sites.domain(site, name)
        if dom is None:
            raise MoveFailed(f"site {site.site} holds no definition of VM {name} to start from")
        try:
            if dom.isActive():
                return Progress(Phase.COMPLETED, message=f"already running on site {site.site}")
            conn = self._sites.conn(site)
            xml, which = started_on_overlays(conn, dom, point, f"VM {name}")
            made = shipped_reservations(xml)
            for r in made:  # before it boots and asks DHCP for an address
                reserve(conn, r)
            if which or made:
                dom = conn.defineXML(with_record(xml, made))
            dom.create()
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"VM {name} did not start on site {site.site}: {reason(exc)}") from None
        except MoveFailed as exc:
            raise MoveFailed(f"VM {name} did not start on site {site.site}: {exc}") from None
        if not which:
            return Progress(Phase.COMPLETED, message=f"started on site {site.site} from its shipped definition")
        return Progress(Phase.COMPLETED, message=f"started on site {site.site} from {which}, on new overlays: the "
                                                 "point is unchanged")

    def cut(self, request: MoveRequest, retention: Retention, held: bool) -> Cut:
        """The point's instant: a backup job of the running guest's disks begun (an increment since the previous
        point's checkpoint when one can be built, else full copies), with the next checkpoint; `send` streams each
        disk into the mapped pool as a volume of its own, defines the mapped definition (not started) over the new
        point's chains and removes the volumes no kept point reads."""
        name = request.workload
        dom = self._sites.domain(request.source, name)
        if dom is None:
            raise MoveFailed(f"VM {name} is not on site {request.source.site}")
        there = self._sites.domain(request.target, name)
        source, target = self._sites.conn(request.source), self._sites.conn(request.target)
        try:
            if there is not None and there.isActive():
                raise MoveFailed(f"VM {name} runs on site {request.target.site}: not shipped over it")
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            shipper = Shipper(dom, source, target, self._sites.to_copy(xml, request), new_stamp(), retention)
            return VmCut(shipper, xml, request)
        except (libvirt.libvirtError, MoveFailed) as exc:
            why = exc if isinstance(exc, MoveFailed) else reason(exc)
            raise MoveFailed(f"shipping VM {name} to site {request.target.site} failed: {why}") from None

    def freeze(self, name: str, site: Endpoint, quiesce: bool) -> Frozen:
        """With `quiesce`, the guest's filesystems flushed and frozen by its agent (its fsfreeze hooks run);
        otherwise its vCPUs paused."""
        dom = self._sites.domain(site, name)
        if dom is None or not dom.isActive():
            raise MoveFailed(f"VM {name} does not run on site {site.site}")
        try:
            if quiesce:
                dom.fsFreeze(None, 0)
                return Frozen.FILESYSTEMS
            if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                dom.suspend()
            return Frozen.PAUSED
        except libvirt.libvirtError as exc:
            what = "its guest agent could not freeze its filesystems" if quiesce else "its vCPUs could not be paused"
            raise MoveFailed(f"VM {name}: {what}: {reason(exc)}") from None

    def thaw(self, name: str, site: Endpoint, how: Frozen) -> bool:
        dom = self._sites.domain(site, name)
        if dom is None or not dom.isActive():
            return False
        try:
            if how is Frozen.FILESYSTEMS:
                return bool(dom.fsThaw(None, 0))
            state, why = dom.state()
            if state == libvirt.VIR_DOMAIN_PAUSED and why == libvirt.VIR_DOMAIN_PAUSED_USER:
                dom.resume()
                return True
            return False
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"VM {name} could not be released: {reason(exc)}") from None

    def clone(self, name: str, clone: str, site: Endpoint, net: DrillNet, point: str | None = None,
              addresses: tuple[str, ...] = ()) -> str:
        """A transient domain from the shipped definition; its disks on overlays over the point's chains, which
        the drill removes after. A drill address of IPv4 is its DHCP reservation on the drill network; the
        guest that sets its own is re-addressed from inside by the drill."""
        copy = self._sites.domain(site, name)
        if copy is None:
            raise MoveFailed(f"site {site.site} holds no definition of VM {name} to clone")
        if self._sites.running_on(site, clone):
            return f"{clone} already up on site {site.site}"
        conn = self._sites.conn(site)
        mac, reserved = None, ""
        try:
            xml = copy.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            disks, stamp = clone_overlays(conn, clone, xml, point, f"VM {name}")
            if not disks:
                disks = overlays(conn, clone, xml)  # disks the site shares with the source: overlays over them
            if ET.fromstring(xml).find("./devices/interface") is not None:
                with self._lock:
                    isolated_network(conn, net)
                    v4 = next((a for a in addresses if ":" not in a), None)
                    if v4 is not None:
                        mac = clone_mac(clone)
                        reserve(conn, Reservation(net.name, mac, v4))
                        reserved = f", {v4} reserved for it"
            conn.createXML(drill_domain_xml(xml, clone, net.name, disks, mac), 0)
        except (libvirt.libvirtError, MoveFailed) as exc:
            why = exc if isinstance(exc, MoveFailed) else reason(exc)
            raise MoveFailed(f"clone {clone} of VM {name} did not start on site {site.site}: {why}") from None
        on = f", {len(disks)} disks on overlays" if disks else ""
        return f"{clone} booted on site {site.site} from {stamp or 'the shipped definition'}{on}{reserved}"

    def held_points(self, name: str, site: Endpoint) -> list[str] | None:
        dom = self._sites.domain(site, name)
        if dom is None:
            return None
        try:
            return whole_points(self._sites.conn(site), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {reason(exc)}") from None

    def leftovers(self, name: str, site: Endpoint) -> list[str]:
        try:
            return [what for what, _ in leftovers(self._sites.conn(site), self._sites.domain(site, name))]
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {reason(exc)}") from None

    def remove_leftovers(self, name: str, site: Endpoint) -> list[str]:
        try:
            found = leftovers(self._sites.conn(site), self._sites.domain(site, name))
            for _, remove in reversed(found):  # the disks before their definition
                remove()
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: libvirt at {site.shown}: {reason(exc)}") from None
        return [what for what, _ in found]

    def discard(self, clone: str, site: Endpoint) -> list[str]:
        try:
            return remove_clone(self._sites.conn(site), self._sites.domain(site, clone), clone)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: removing {clone}: {reason(exc)}") from None

    def drop_network(self, network: str, site: Endpoint) -> bool:
        try:
            return remove_network(self._sites.conn(site), network)
        except libvirt.libvirtError as exc:
            raise SiteUnreachable(f"site {site.site}: removing network {network}: {reason(exc)}") from None
