"""The lab's application networks: each site's on a subnet of its own, so that a workload that moves changes
its address (and on its way home gets its own back). The bridges live on this machine only."""

from __future__ import annotations

import docker
import docker.types
import libvirt

from integration.lab_base import SITES, Site, log
from integration.lab_libvirt import domain_xml, with_agent

APP_NETWORKS = {"a": ("app-net", "10.231.31.0/24"), "b": ("app-net-dr", "10.231.32.0/24")}


def gateway(subnet: str) -> str:
    return subnet.rsplit(".", 1)[0] + ".1"


def ensure_docker(site: Site) -> None:
    name, subnet = APP_NETWORKS[site.name]
    client = docker.DockerClient(base_url=site.docker_url)
    try:
        if not client.networks.list(names=[name]):
            log(f"creating Docker network {name} ({subnet}) on site {site.name}")
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet,
                                                                               gateway=gateway(subnet))])
            client.networks.create(name, driver="bridge", ipam=ipam,
                                   options={"com.docker.network.bridge.name": f"drl{site.name}app0"})
    finally:
        client.close()


def remove_docker(client: docker.DockerClient) -> None:
    for net in client.networks.list(names=[n for n, _ in APP_NETWORKS.values()]):
        log(f"removing Docker network {net.name}")
        net.remove()


# libvirt runs dnsmasq for these: a guest takes its address by DHCP, from the range or from a reservation.
LIBVIRT_NETWORKS = {"a": ("app-net", "10.231.41.0/24"), "b": ("app-net-dr", "10.231.42.0/24")}
IP_VM = "ip-vm"
IP_VM_MAC = "52:54:00:e7:29:0a"


def ensure_libvirt(site: Site) -> None:
    conn = libvirt.open(site.libvirt_uri)
    try:
        _ensure_network(conn, site)
    finally:
        conn.close()


def _ensure_network(conn: libvirt.virConnect, site: Site) -> None:
    name, subnet = LIBVIRT_NETWORKS[site.name]
    if name not in conn.listNetworks() + conn.listDefinedNetworks():
        log(f"defining libvirt network {name} ({subnet}, DHCP) on site {site.name}")
        base = subnet.rsplit(".", 1)[0]
        conn.networkDefineXML(f"""<network><name>{name}</name><bridge name='drl{site.name}app1' stp='off'/>
  <ip address='{base}.1' prefix='24'><dhcp><range start='{base}.100' end='{base}.199'/></dhcp></ip>
</network>""")
    net = conn.networkLookupByName(name)
    if not net.isActive():
        net.create()


STATIC_VM = "ip-vm-static"
STATIC_VM_MAC = "52:54:00:e7:29:0b"
STATIC_HOME = "10.231.41.20"


def ip_vm_xml(name: str = IP_VM, mac: str = IP_VM_MAC, fixed: str | None = None) -> str:
    """A guest with no disk and one NIC on site a's app-net, serving on 8080: it takes its address by DHCP, or
    with `fixed` sets that one itself and runs the QEMU guest agent on its virtio-serial channel."""
    xml = domain_xml(name)
    start, end = xml.index("    <disk "), xml.index("</disk>\n") + len("</disk>\n")
    xml = xml[:start] + xml[end:]
    xml = xml.replace(f"<source network='{SITES['a'].network}'/>",
                      f"<mac address='{mac}'/><source network='{LIBVIRT_NETWORKS['a'][0]}'/>")
    if fixed is None:
        return xml.replace("quiet panic=-1", "quiet panic=-1 lab.net=dhcp")
    return with_agent(xml.replace("quiet panic=-1", f"quiet panic=-1 lab.net={fixed}/24"))
