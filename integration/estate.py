"""The workloads the address tests move, one of each kind a site runs, each on its site's application network:
what starts them on site a, what removes them from both sites, and what each site shows of their addresses.

Site a's subnets are 10.231.31/41/51.0/24 (Docker, libvirt, LXD), site b's 10.231.32/42/52.0/24."""

from __future__ import annotations

import contextlib
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import docker
import libvirt

from integration import lab_addresses, lab_base, lab_lxd, labctl
from integration.support.lab_views import wait_until

PORT = 8080
APP, COUNTER = "ipapp", "ipcount"
HOME, AWAY = "10.231.31.10", "10.231.32.10"
COUNTER_HOME, COUNTER_AWAY = "10.231.31.11", "10.231.32.11"
# busybox's httpd serves on every address of the container; the counter goes on beside it. This machine's kernel
# cannot show CRIU a TCP socket (no inet_diag), so a container that listens moves by redeploy here; the counter
# alone moves by checkpoint, onto its mapped address.
SERVE = f"httpd -p {PORT} -h /tmp; {lab_base.COUNTER_SCRIPT}"
IP_LXD = "ip-lxd"
LXD_HOME, LXD_AWAY = "10.231.51.10", "10.231.52.10"
DHCP_VM, STATIC_VM = lab_addresses.IP_VM, lab_addresses.STATIC_VM
STATIC_HOME, STATIC_AWAY = lab_addresses.STATIC_HOME, "10.231.42.20"
# what the static guest runs through its agent to take another address (the playbook's `reip`)
REIP = ('ip addr flush dev eth0 && ip addr add "$DRORCH_NEW_ADDRESS/$DRORCH_PREFIX" dev eth0 && '
        'echo "address $DRORCH_NEW_ADDRESS" > /dev/ttyS0 && echo "now $DRORCH_NEW_ADDRESS via $DRORCH_GATEWAY"')


def answers(address: str, port: int = PORT) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


# --- containers --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def client(site: str) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=labctl.SITES[site].docker_url)
    try:
        yield c
    finally:
        c.close()


def remove_containers() -> None:
    for site in ("a", "b"):
        with client(site) as c:
            for name in (APP, COUNTER):
                for old in c.containers.list(all=True, filters={"name": f"^{name}"}):
                    old.remove(force=True)


def start_containers(names: tuple[str, ...] = (APP, COUNTER)) -> None:
    """ipapp (serving) at 10.231.31.10 and ipcount (counting) at .11 on site a's app-net."""
    remove_containers()
    wanted = {APP: (HOME, SERVE), COUNTER: (COUNTER_HOME, lab_base.COUNTER_SCRIPT)}
    with client("a") as c:
        for name in names:
            address, command = wanted[name]
            c.containers.create(lab_base.IMAGE, ["/bin/sh", "-c", command], name=name, network="app-net",
                                mem_limit=lab_base.CONTAINER_MEMORY, labels={"drorch.lab": "1"})
            c.api.disconnect_container_from_network(name, "app-net")
            c.api.connect_container_to_network(name, "app-net", ipv4_address=address)
            c.containers.get(name).start()
    if APP in names:
        wait_until(lambda: answers(HOME), f"{APP} on {HOME}:{PORT}")


def static_address(site: str, name: str = APP) -> str | None:
    """A container's static address on the site, as its daemon keeps it; None when it does not run there."""
    with client(site) as c:
        found = c.containers.list(filters={"name": f"^{name}$"})
        if not found:
            return None
        nets = found[0].attrs["NetworkSettings"]["Networks"]
        return next(iter(n["IPAMConfig"]["IPv4Address"] for n in nets.values() if n.get("IPAMConfig")), None)


# --- VMs: on DHCP, and setting their own address ------------------------------------------------------------


def conn(site: str) -> libvirt.virConnect:
    return libvirt.open(labctl.SITES[site].libvirt_uri)


def remove_vms() -> None:
    """The test VMs gone from both sites, and any reservation of their MACs with them (a test may stop halfway)."""
    for site in ("a", "b"):
        c = conn(site)
        try:
            for dom in c.listAllDomains():
                if dom.name() in (DHCP_VM, STATIC_VM):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
            net = c.networkLookupByName(lab_addresses.LIBVIRT_NETWORKS[site][0])
            for mac, ip in reserved(site).items():
                if mac == lab_addresses.IP_VM_MAC:
                    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                               -1, f"<host mac='{mac}' ip='{ip}'/>",
                               libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
        finally:
            c.close()
        for vm in (DHCP_VM, STATIC_VM):
            labctl.SITES[site].serial_log(vm).unlink(missing_ok=True)


def vm_address(site: str, vm: str = DHCP_VM) -> str | None:
    """The address the guest last took on that site, as it says on its console."""
    log = labctl.SITES[site].serial_log(vm)
    found = re.findall(r"^address (\S+)", log.read_text(errors="replace"), re.M) if log.exists() else []
    return found[-1] if found else None


def vm_runs(site: str, vm: str) -> bool:
    c = conn(site)
    try:
        return any(d.name() == vm and d.isActive() for d in c.listAllDomains())
    finally:
        c.close()


def reserved(site: str) -> dict[str, str]:
    """MAC -> address of each DHCP reservation on the site's app network."""
    c = conn(site)
    try:
        xml = c.networkLookupByName(lab_addresses.LIBVIRT_NETWORKS[site][0]).XMLDesc(0)
    finally:
        c.close()
    return {h.get("mac", ""): h.get("ip", "") for h in ET.fromstring(xml).findall("ip/dhcp/host")}


def start_dhcp_vm() -> str:
    """ip-vm started on site a's app-net: the address it took by DHCP from the range."""
    c = conn("a")
    try:
        c.defineXML(lab_addresses.ip_vm_xml()).create()
    finally:
        c.close()
    wait_until(lambda: vm_address("a") is not None, "ip-vm's address on site a")
    return vm_address("a") or ""


def start_static_vm() -> None:
    """ip-vm-static on site a's app-net at 10.231.41.20, set by the guest itself, with its agent."""
    c = conn("a")
    try:
        c.defineXML(lab_addresses.ip_vm_xml(STATIC_VM, lab_addresses.STATIC_VM_MAC, STATIC_HOME)).create()
    finally:
        c.close()
    wait_until(lambda: answers(STATIC_HOME), f"{STATIC_VM} on {STATIC_HOME}:{PORT}")


def away(home: str) -> str:
    """Where the libvirt rule 10.231.41.0/24 -> 10.231.42.0/24 puts an address of site a."""
    return "10.231.42." + home.rsplit(".", 1)[1]


# --- an LXD instance with a fixed NIC address ---------------------------------------------------------------


def remove_lxd() -> None:
    for site in ("a", "b"):
        c = lab_lxd.client(labctl.SITES[site])
        for inst in c.instances.all():
            if inst.name.startswith(IP_LXD):  # and the stage a ship keeps beside its point copy
                if inst.status != "Stopped":
                    inst.stop(force=True, wait=True)
                inst.delete(wait=True)


def start_lxd() -> None:
    """ip-lxd on site a's LXD, its NIC on app-net fixed at 10.231.51.10 (LXD's DHCP gives it)."""
    remove_lxd()
    lab_lxd.ensure_image(labctl.SITES["a"])
    inst = lab_lxd.client(labctl.SITES["a"]).instances.create({
        "name": IP_LXD, "source": {"type": "image", "alias": lab_lxd.IMAGE},
        "config": {"limits.memory": "128MiB", "user.drorch.lab": "1"},
        "devices": {"eth0": {"type": "nic", "network": "app-net", "ipv4.address": LXD_HOME}}}, wait=True)
    inst.start(wait=True)
    wait_until(lambda: answers(LXD_HOME), f"{IP_LXD} on {LXD_HOME}:{PORT}")


def lxd_nic(site: str) -> dict[str, str] | None:
    c = lab_lxd.client(labctl.SITES[site])
    found = [i for i in c.instances.all() if i.name == IP_LXD and i.status == "Running"]
    return dict(found[0].devices["eth0"]) if found else None
