"""VM addresses on libvirt networks: what each guest holds (its network's DHCP reservation or lease), the subnets
each network has, and the reservations that give a guest its mapped address on the target (virNetworkUpdate).

What drorch reserved for a guest is written into the guest's own definition (domain metadata), so the site that
holds the VM also holds that fact: when the VM leaves, exactly those reservations go, and an operator's own stay.
"""

from __future__ import annotations

import ipaddress
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from drorch.errors import MoveFailed
from drorch.model.playbook import Mappings
from drorch.plan.inventory import Nic, Subnet

# libvirt keeps one metadata element per namespace: what drorch reserved, and what a shipped copy's original had
NS = "urn:drorch:addresses"
SHIPPED_NS = "urn:drorch:shipped"
LINK_PAUSE_S = 0.5  # a guest sees its link down for this long before it comes back, and asks DHCP again


@dataclass(frozen=True)
class Reservation:
    network: str
    mac: str
    ip: str

    def xml(self) -> str:
        return f"<host mac='{self.mac}' ip='{self.ip}'/>"


def interfaces(domain_xml: str) -> list[tuple[str, str]]:
    """(network, MAC) of each of the guest's interfaces on a libvirt network."""
    root = ET.fromstring(domain_xml)
    found = []
    for iface in root.findall("./devices/interface[@type='network']"):
        source, mac = iface.find("source"), iface.find("mac")
        if source is not None and mac is not None and source.get("network") and mac.get("address"):
            found.append((source.get("network", ""), mac.get("address", "").lower()))
    return found


def network_subnets(name: str, network_xml: str) -> list[Subnet]:
    """The subnets a libvirt network routes, its own address as the gateway."""
    found = []
    for ip in ET.fromstring(network_xml).findall("ip"):
        address, prefix, mask = ip.get("address"), ip.get("prefix"), ip.get("netmask")
        if not address:
            continue
        try:
            net = ipaddress.ip_interface(f"{address}/{prefix or mask or 24}").network
        except ValueError:
            continue
        found.append(Subnet(name, str(net), address))
    return found


def reservations(network_xml: str) -> dict[str, str]:
    """MAC -> address of each DHCP host reservation of the network."""
    return {h.get("mac", "").lower(): h.get("ip", "") for h in ET.fromstring(network_xml).findall("ip/dhcp/host")
            if h.get("mac") and h.get("ip")}


class NetworkView:
    """What a host's libvirt networks say of guests' addresses, read once per network."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn
        self._seen: dict[str, tuple[dict[str, str], dict[str, list[str]], list[Subnet]]] = {}

    def _network(self, name: str) -> tuple[dict[str, str], dict[str, list[str]], list[Subnet]]:
        if name not in self._seen:
            try:
                net = self.conn.networkLookupByName(name)
                xml = net.XMLDesc(0)
            except libvirt.libvirtError:
                self._seen[name] = ({}, {}, [])
                return self._seen[name]
            leases: dict[str, list[str]] = {}
            try:
                for lease in net.DHCPLeases() if net.isActive() else []:
                    leases.setdefault(str(lease.get("mac", "")).lower(), []).append(str(lease.get("ipaddr")))
            except libvirt.libvirtError:
                pass  # a network without DHCP, or a driver that keeps no leases: reservations alone tell
            self._seen[name] = (reservations(xml), leases, network_subnets(name, xml))
        return self._seen[name]

    def nics(self, domain_xml: str, dom: libvirt.virDomain | None = None) -> tuple[Nic, ...]:
        """Each interface's address: its reservation, else its leases, else what the guest agent says the guest
        set itself. A guest drorch re-addresses keeps the address it has (by a reservation, or its `reip`
        command, wherever it lands), so any address found counts as its own."""
        found = []
        configured: dict[str, tuple[str, ...]] | None = None
        for network, mac in interfaces(domain_xml):
            reserved, leases, _ = self._network(network)
            addresses = (reserved[mac],) if mac in reserved else tuple(sorted(leases.get(mac, [])))
            copy = None if addresses or (dom is not None and dom.isActive()) else shipped(domain_xml).get(mac)
            if copy is not None:  # a copy shipped for a disaster, which says what its original had
                found.append(copy)
                continue
            if addresses or dom is None or AGENT_CHANNEL not in domain_xml:
                found.append(Nic(network, addresses, bool(addresses), mac, dhcp=bool(addresses)))
                continue
            if configured is None:
                configured = _agent_addresses(dom)
            addresses = configured.get(mac, ())
            found.append(Nic(network, addresses, bool(addresses), mac))
        return tuple(found)

    def subnets(self) -> tuple[Subnet, ...]:
        names = sorted({*self.conn.listNetworks(), *self.conn.listDefinedNetworks()})
        return tuple(s for name in names for s in self._network(name)[2])


AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _agent_addresses(dom: libvirt.virDomain) -> dict[str, tuple[str, ...]]:
    """MAC -> the global addresses the guest agent reports; none when the agent does not answer."""
    try:
        said = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT) if dom.isActive() else {}
    except libvirt.libvirtError:
        return {}
    found: dict[str, tuple[str, ...]] = {}
    for iface in (said or {}).values():
        addresses = [ipaddress.ip_address(a["addr"]) for a in iface.get("addrs") or [] if a.get("addr")]
        kept = tuple(str(a) for a in addresses if not (a.is_loopback or a.is_link_local))
        if iface.get("hwaddr"):
            found[str(iface["hwaddr"]).lower()] = kept
    return found


def wanted(nics: tuple[Nic, ...], mappings: Mappings) -> list[Reservation]:
    """The reservations that give each DHCP interface its mapped address on the target's mapped network."""
    return [Reservation(mappings.network(nic.network), nic.mac or "", mappings.address(a))
            for nic in nics if nic.dhcp and nic.mac for a in nic.addresses if ipaddress.ip_address(a).version == 4]


def _update(net: libvirt.virNetwork, command: int, host: str) -> None:
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE if net.isActive() else 0
    if net.isPersistent():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host, flags)


def reserve(conn: libvirt.virConnect, want: Reservation) -> None:
    """Make the network give `want.ip` to `want.mac`. One found there already is taken as drorch's own (a move
    done again after an interruption finds what it reserved before): it goes when the guest leaves."""
    try:
        net = conn.networkLookupByName(want.network)
        held = _claimable(net, want)
        if held.get(want.mac) == want.ip:
            return
        if want.mac in held:
            _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, Reservation("", want.mac, held[want.mac]).xml())
        _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, want.xml())
    except libvirt.libvirtError as exc:
        raise MoveFailed(f"network {want.network} did not take the reservation of {want.ip} for {want.mac}: "
                         f"{exc.get_error_message() or exc}") from None


def _claimable(net: libvirt.virNetwork, want: Reservation) -> dict[str, str]:
    """The network's reservations; MoveFailed when it reserves `want.ip` for another MAC."""
    held = reservations(net.XMLDesc(0))
    other = next((mac for mac, ip in held.items() if ip == want.ip and mac != want.mac), None)
    if other is not None:
        raise MoveFailed(f"network {want.network} already reserves {want.ip} for {other}")
    return held


def claimable(conn: libvirt.virConnect, wants: list[Reservation]) -> None:
    """MoveFailed when a network would refuse one of the reservations: checked before the guest is touched."""
    try:
        for want in wants:
            _claimable(conn.networkLookupByName(want.network), want)
    except libvirt.libvirtError as exc:
        raise MoveFailed(f"the target's networks cannot be read: {exc.get_error_message() or exc}") from None


def release(conn: libvirt.virConnect, held: Reservation) -> bool:
    """Remove a reservation drorch made, if it is still as drorch made it; whether one went."""
    try:
        net = conn.networkLookupByName(held.network)
        if reservations(net.XMLDesc(0)).get(held.mac) != held.ip:
            return False
        _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, held.xml())
        return True
    except libvirt.libvirtError:
        return False  # the network is gone, and the reservation with it


# In a domain's record: drorch's reservations where it is defined, those at the site it left that are still to be
# removed there, and whether a guest that landed live is still to ask DHCP again.
MADE, HOME, RENEW = "reservation", "home", "renew"


def recorded(domain_xml: str, tag: str = MADE) -> list[Reservation]:
    """The reservations the domain's metadata says drorch made for it where it is defined (MADE), or at the site
    it left, which are still to be removed there (HOME)."""
    root = ET.fromstring(domain_xml)
    found = []
    for el in root.findall(f"./metadata/{{{NS}}}addresses/{{{NS}}}{tag}"):
        network, mac, ip = el.get("network"), el.get("mac"), el.get("ip")
        if network and mac and ip:
            found.append(Reservation(network, mac, ip))
    return found


def with_record(domain_xml: str, made: list[Reservation], home: list[Reservation] | None = None,
                renew: bool = False) -> str:
    """The definition with its metadata naming `made` as drorch's reservations, `home` as those it made at the
    site the guest left, and whether the guest is still to ask DHCP again (none of these: the element goes)."""
    if not made and not home and not renew and not recorded(domain_xml):
        return domain_xml
    root, el = _fresh(domain_xml, NS, "addresses")
    for tag, listed in ((MADE, made), (HOME, home or [])):
        for r in listed:
            ET.SubElement(el, f"{{{NS}}}{tag}", network=r.network, mac=r.mac, ip=r.ip)
    if renew:
        ET.SubElement(el, f"{{{NS}}}{RENEW}")
    return ET.tostring(root, encoding="unicode")


def renew_pending(domain_xml: str) -> bool:
    return ET.fromstring(domain_xml).find(f"./metadata/{{{NS}}}addresses/{{{NS}}}{RENEW}") is not None


def settled(dom: libvirt.virDomain) -> None:
    """The domain's record without what was left to do once it landed: it is done."""
    el = ET.Element("addresses")  # libvirt puts it, and what it holds, in the namespace
    for r in recorded(dom.XMLDesc(0)):
        ET.SubElement(el, MADE, network=r.network, mac=r.mac, ip=r.ip)
    flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0) | (
        libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0)
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ET.tostring(el, encoding="unicode"), "drorch", NS, flags)


def _fresh(domain_xml: str, ns: str, tag: str) -> tuple[ET.Element, ET.Element]:
    """The definition's root and a new, empty element `tag` of namespace `ns` in its metadata, in place of any
    old one."""
    root = ET.fromstring(domain_xml)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    for old in metadata.findall(f"{{{ns}}}{tag}"):
        metadata.remove(old)
    ET.register_namespace("drorch", NS)
    ET.register_namespace("drorchshipped", SHIPPED_NS)
    return root, ET.SubElement(metadata, f"{{{ns}}}{tag}")


def renew(dom: libvirt.virDomain, meanwhile: Callable[[], object] | None = None) -> None:
    """Take the guest's links down and up again: a guest's DHCP client (NetworkManager, systemd-networkd, the lab's
    udhcpc) asks again on a new link, and so learns its address on the network it now is on. While they are down,
    `meanwhile` runs (the reservations it will ask for, made then: libvirt restarts the network's dnsmasq for each,
    which during a migration would hold the migration up); they come up again whatever it raised."""
    root = ET.fromstring(dom.XMLDesc(0))
    ifaces = root.findall("./devices/interface[@type='network']")

    def link(state: str) -> None:
        for iface in ifaces:
            el = iface.find("link")
            if el is None:
                el = ET.SubElement(iface, "link")
            el.set("state", state)
            dom.updateDeviceFlags(ET.tostring(iface, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE)

    link("down")
    try:
        started = time.monotonic()
        if meanwhile is not None:
            meanwhile()
        time.sleep(max(0.0, LINK_PAUSE_S - (time.monotonic() - started)))
    finally:
        link("up")


def with_shipped(domain_xml: str, nics: tuple[Nic, ...], mappings: Mappings) -> str:
    """A shipped copy's definition, saying in its metadata what its original's addresses were and what they
    become here: a restart from it in a disaster, when the original cannot be asked, reserves and re-addresses
    from this."""
    root, el = _fresh(domain_xml, SHIPPED_NS, "shipped")
    for nic in nics:
        for a in nic.addresses if nic.static and nic.mac else ():
            ET.SubElement(el, f"{{{SHIPPED_NS}}}nic", network=nic.network, mac=nic.mac or "", address=a,
                          to=mappings.address(a), to_network=mappings.network(nic.network),
                          dhcp="1" if nic.dhcp else "0")
    return ET.tostring(root, encoding="unicode")


def _shipped_entries(domain_xml: str) -> list[dict[str, str]]:
    root = ET.fromstring(domain_xml)
    return [dict(el.attrib) for el in root.findall(f"./metadata/{{{SHIPPED_NS}}}shipped/{{{SHIPPED_NS}}}nic")
            if el.get("mac") and el.get("address") and el.get("to") and el.get("network") and el.get("to_network")]


def shipped(domain_xml: str) -> dict[str, Nic]:
    """MAC -> the original's NIC (its network and address at home), as the shipped copy's metadata says."""
    found: dict[str, Nic] = {}
    for e in _shipped_entries(domain_xml):
        mac = e["mac"].lower()
        had = found.get(mac)
        found[mac] = Nic(e["network"], (*(had.addresses if had else ()), e["address"]), True, mac,
                         dhcp=e.get("dhcp") == "1")
    return found


def shipped_reservations(domain_xml: str) -> list[Reservation]:
    """What a restart of a shipped copy reserves on its networks before it starts: its DHCP NICs' mapped
    addresses."""
    return [Reservation(e["to_network"], e["mac"].lower(), e["to"]) for e in _shipped_entries(domain_xml)
            if e.get("dhcp") == "1" and ipaddress.ip_address(e["to"]).version == 4]
