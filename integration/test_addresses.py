"""Addresses and names at the DR site, on the lab: a container with a static address on site a's app-net
(10.231.31.0/24) lands on site b's app-net-dr (10.231.32.0/24) with the mapped address, answers there, and its
record on a real authoritative server (Knot, on loopback) follows it; it comes home with exactly its own."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import docker
import libvirt
import pytest
import yaml

from integration import lab_addresses, lab_base, lab_lxd, labctl
from integration.conftest import DRORCH, LAB_PLAYBOOK, REPO, Drorch, wait_until
from integration.dns_server import LOCKED, DnsServer, knot

APP, COUNTER = "ipapp", "ipcount"
PORT = 8080
HOME, AWAY = "10.231.31.10", "10.231.32.10"
COUNTER_HOME, COUNTER_AWAY = "10.231.31.11", "10.231.32.11"
# busybox's httpd serves on every address of the container; the counter goes on beside it. This machine's kernel
# cannot show CRIU a TCP socket (no inet_diag), so a container that listens moves by redeploy here; the counter
# alone moves by checkpoint, onto its mapped address.
SERVE = f"httpd -p {PORT} -h /tmp; {lab_base.COUNTER_SCRIPT}"


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with knot(tmp_path_factory.mktemp("knot")) as server:
        yield server


@contextlib.contextmanager
def client(site: str) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=labctl.SITES[site].docker_url)
    try:
        yield c
    finally:
        c.close()


def remove_ours() -> None:
    for site in ("a", "b"):
        with client(site) as c:
            for name in (APP, COUNTER):
                for old in c.containers.list(all=True, filters={"name": f"^{name}"}):
                    old.remove(force=True)


@pytest.fixture
def ipapp(lab: None) -> Iterator[None]:
    """ipapp (serving) at 10.231.31.10 and ipcount (counting) at .11 on site a's app-net; gone afterwards."""
    remove_ours()
    with client("a") as c:
        for name, address, command in ((APP, HOME, SERVE), (COUNTER, COUNTER_HOME, lab_base.COUNTER_SCRIPT)):
            c.containers.create(lab_base.IMAGE, ["/bin/sh", "-c", command], name=name, network="app-net",
                                mem_limit=lab_base.CONTAINER_MEMORY, labels={"drorch.lab": "1"})
            c.api.disconnect_container_from_network(name, "app-net")
            c.api.connect_container_to_network(name, "app-net", ipv4_address=address)
            c.containers.get(name).start()
    wait_until(lambda: answers(HOME), f"{APP} on {HOME}:{PORT}")
    wait_until(lambda: max(counts("a"), default=0) >= 3, f"{COUNTER}'s counter")
    yield
    remove_ours()


def counts(site: str) -> list[int]:
    with client(site) as c:
        return [int(n) for n in re.findall(r"^count (\d+)", c.containers.get(COUNTER).logs().decode(), re.M)]


def inside(site: str) -> str:
    """The IPv4 address ipcount's own network stack has."""
    with client(site) as c:
        out = c.containers.get(COUNTER).exec_run(["ip", "-4", "-o", "addr", "show", "eth0"]).output.decode()
    return out.split(" inet ")[1].split("/")[0]


def answers(address: str, port: int = PORT) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def static_address(site: str, name: str = APP) -> str | None:
    """A container's static address on the site, as its daemon keeps it; None when it does not run there."""
    with client(site) as c:
        found = c.containers.list(filters={"name": f"^{name}$"})
        if not found:
            return None
        nets = found[0].attrs["NetworkSettings"]["Networks"]
        return next(iter(n["IPAMConfig"]["IPv4Address"] for n in nets.values() if n.get("IPAMConfig")), None)


def playbook(tmp_path: Path, server: DnsServer, zone: str = "lab.example.", **dns_more: object) -> Path:
    head = LAB_PLAYBOOK.read_text().split("# Site b names things differently")[0]
    dns = json.dumps(server.settings(zone, records={APP: ["A"]}, **dns_more))
    path = tmp_path / "addresses.yaml"
    path.write_text(head + f"""mappings:
  networks: {{app-net: app-net-dr}}
  addresses:
    10.231.31.0/24: {{to: 10.231.32.0/24, gateway: 10.231.32.1}}
workloads:
  - {{name: {APP}, kind: container, strategy: redeploy, check: {{port: {PORT}, timeout_s: 30}}}}
  - {{name: {COUNTER}, kind: container, strategy: checkpoint}}
dns: {dns}
""")
    return path


@pytest.mark.usefixtures("ipapp")
def test_a_container_moves_across_subnets_answers_at_its_mapped_address_and_comes_home_with_its_own(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path) -> None:
    pb = playbook(tmp_path, dns_server, lower_ttl_s=1, ttl=2)
    dns_server.point(APP, HOME, ttl=2)
    plan = run_drorch("plan", str(pb))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"    address app-net: {HOME} -> {AWAY} (rule 10.231.31.0/24)" in plan.stdout
    assert f"    address app-net: {COUNTER_HOME} -> {COUNTER_AWAY} (rule 10.231.31.0/24)" in plan.stdout
    checked = run_drorch("validate", str(pb))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    over = run_drorch("failover", str(pb), "--json")
    assert over.returncode == 0, over.stdout + over.stderr
    assert static_address("b") == AWAY and static_address("a") is None
    assert answers(AWAY)
    assert dns_server.read(f"{APP}.lab.example.") == [AWAY]
    assert static_address("b", COUNTER) == COUNTER_AWAY == inside("b")
    wait_until(lambda: len(counts("b")) >= 2, f"{COUNTER} counting on site b")
    assert counts("b")[0] > 3  # restored from its checkpoint, onto the mapped address: not started again
    steps = json.loads(run_drorch("history", "1", "--json").stdout)["steps"]
    lowered, names = (s for s in steps if s["kind"] == "names")
    assert (lowered["workload"], lowered["seq"]) == ("lower TTLs", 1)  # before anything moved
    assert lowered["outcome"] == (f"{APP}.lab.example. A TTL 2 -> 1; waited 2 s for caches to forget the old TTL")
    assert names["outcome"] == (f"{APP}: answers on {AWAY}:{PORT}; {APP}.lab.example. A {AWAY} (was {HOME})")
    assert dns_server.read_ttl(f"{APP}.lab.example.") == (2, [AWAY])  # the TTL of the playbook
    status = run_drorch("status", str(pb))
    assert f"dns {APP}.lab.example. A {AWAY}: points at site b, where {APP} runs" in status.stdout, status.stdout
    dns_server.point(APP, HOME, ttl=2)  # someone's script puts it back
    status = run_drorch("status", str(pb), "--json")
    assert json.loads(status.stdout)["records"] == [{
        "name": f"{APP}.lab.example.", "type": "A", "values": [HOME], "workload": APP, "points_at": "a",
        "runs_on": "b", "right": False}]
    assert (f"dns {APP}.lab.example. A {HOME}: WRONG: points at site a, and {APP} runs on site b"
            in run_drorch("status", str(pb)).stdout)

    back = run_drorch("failback", str(pb))
    assert back.returncode == 0, back.stdout + back.stderr
    assert static_address("a") == HOME and static_address("b") is None
    assert answers(HOME)
    assert dns_server.read(f"{APP}.lab.example.") == [HOME]
    assert static_address("a", COUNTER) == COUNTER_HOME == inside("a")


@pytest.mark.usefixtures("ipapp")
def test_a_disaster_restart_from_a_point_lands_on_the_mapped_address(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path) -> None:
    pb = playbook(tmp_path, dns_server)
    dns_server.point(APP, HOME)
    shipped = run_drorch("protect", "ship", str(pb))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    res = run_drorch("failover", "--disaster", str(pb))  # site a answers: the fence stops ipapp there
    assert res.returncode == 0, res.stdout + res.stderr
    assert static_address("b") == AWAY and static_address("a") is None
    assert answers(AWAY)
    assert dns_server.read(f"{APP}.lab.example.") == [AWAY]
    back = run_drorch("failback", str(pb))
    assert back.returncode == 0, back.stdout + back.stderr
    assert static_address("a") == HOME and answers(HOME)
    assert dns_server.read(f"{APP}.lab.example.") == [HOME]


@pytest.mark.usefixtures("ipapp")
def test_a_refused_dns_update_fails_its_step_with_the_servers_words_and_never_the_key(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path) -> None:
    pb = playbook(tmp_path, dns_server, zone=LOCKED)
    res = run_drorch("failover", str(pb))
    assert res.returncode == 3, res.stdout + res.stderr  # it moved, and its name does not follow
    assert static_address("b") == AWAY and answers(AWAY)
    steps = json.loads(run_drorch("history", "1", "--json").stdout)["steps"]
    names = next(s for s in steps if s["kind"] == "names")
    assert names["state"] == "failed"
    assert names["error"] == (f"{APP}: DNS server {dns_server.server} refused updating {APP}.{LOCKED} A: The peer "
                              "didn't know the key we used")
    secret = dns_server.secret_file.read_text().strip()
    assert secret not in res.stdout + res.stderr + json.dumps(steps)


MOVE_BOUNDARIES = 6  # ipapp, ipcount and the names step, each recorded before and after it acts


@pytest.mark.usefixtures("ipapp")
@pytest.mark.parametrize("boundary", range(1, MOVE_BOUNDARIES + 2))
def test_killed_at_a_step_boundary_then_resumed_leaves_no_address_or_record_wrong(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path, state_dir: Path, boundary: int) -> None:
    """SIGKILL at the Nth transition of a failover, then `resume`: each container once, on site b, at its mapped
    address, answering, and its record naming it. One boundary past the last, the run completes untouched."""
    pb = playbook(tmp_path, dns_server)
    dns_server.point(APP, HOME)  # where it pointed before the failover
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir), "DRORCH_TEST_KILL_AT": str(boundary)}
    env.pop("DRORCH_DB_URL", None)
    killed = subprocess.run([str(DRORCH), "failover", str(pb)], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=300)
    if boundary > MOVE_BOUNDARIES:
        assert killed.returncode == 0, killed.stdout + killed.stderr
    else:
        assert killed.returncode == -9, killed.stdout + killed.stderr
        res = run_drorch("resume", "1")
        assert res.returncode == 0, res.stdout + res.stderr
    assert (static_address("a"), static_address("a", COUNTER)) == (None, None)
    assert (static_address("b"), static_address("b", COUNTER)) == (AWAY, COUNTER_AWAY)
    assert answers(AWAY)
    assert dns_server.read(f"{APP}.lab.example.") == [AWAY]


# --- VMs: on DHCP, and setting their own address ----------------------------------------------------------

VM_RULE = "10.231.41.0/24: {to: 10.231.42.0/24, gateway: 10.231.42.1}"
REIP = ('ip addr flush dev eth0 && ip addr add "$DRORCH_NEW_ADDRESS/$DRORCH_PREFIX" dev eth0 && '
        'echo "address $DRORCH_NEW_ADDRESS" > /dev/ttyS0 && echo "now $DRORCH_NEW_ADDRESS via $DRORCH_GATEWAY"')
CHECKED = "check: {port: 8080, timeout_s: 60}"
DHCP_ENTRY = f"  - {{name: {lab_addresses.IP_VM}, kind: vm, strategy: live, {CHECKED}}}\n"
STATIC_ENTRY = (f"  - {{name: {lab_addresses.STATIC_VM}, kind: vm, strategy: live, {CHECKED}, "
                f"reip: {{run: [/bin/sh, -c, {json.dumps(REIP)}]}}}}\n")


def conn(site: str) -> libvirt.virConnect:
    return libvirt.open(labctl.SITES[site].libvirt_uri)


def remove_ip_vm() -> None:
    """The test VMs gone from both sites, and any reservation of their MACs with them (a test may stop halfway)."""
    for site in ("a", "b"):
        c = conn(site)
        try:
            for dom in c.listAllDomains():
                if dom.name() in (lab_addresses.IP_VM, lab_addresses.STATIC_VM):
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
        for vm in (lab_addresses.IP_VM, lab_addresses.STATIC_VM):
            labctl.SITES[site].serial_log(vm).unlink(missing_ok=True)


def vm_address(site: str, vm: str = lab_addresses.IP_VM) -> str | None:
    """The address the guest last took on that site, as it says on its console."""
    log = labctl.SITES[site].serial_log(vm)
    found = re.findall(r"^address (\S+)", log.read_text(errors="replace"), re.M) if log.exists() else []
    return found[-1] if found else None


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


def vm_playbook(tmp_path: Path, server: DnsServer, workloads: str, vms: tuple[str, ...]) -> Path:
    """The lab's sites with the VM rule, these workloads, and an A record for each of `vms`."""
    book = yaml.safe_load(LAB_PLAYBOOK.read_text())
    book["sites"]["a"]["hosts"][0]["capacity"] = {"vcpus": 8, "memory_mib": 4096}  # the lab's VMs and these
    book["mappings"] = yaml.safe_load(f"{{networks: {{app-net: app-net-dr}}, addresses: {{{VM_RULE}}}}}")
    book["workloads"] = yaml.safe_load(workloads)
    book["dns"] = server.settings(records={vm: ["A"] for vm in vms})
    path = tmp_path / "vms.yaml"
    path.write_text(yaml.safe_dump(book))
    return path


@pytest.fixture
def ip_vm(lab: None) -> Iterator[str]:
    """ip-vm on site a's app-net, its address taken by DHCP from the range; gone afterwards."""
    remove_ip_vm()
    yield start_dhcp_vm()
    remove_ip_vm()


def test_a_dhcp_vm_live_migrates_across_subnets_by_a_reservation_and_comes_home_with_its_own_address(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path, ip_vm: str) -> None:
    home = ip_vm
    away = "10.231.42." + home.rsplit(".", 1)[1]
    pb = vm_playbook(tmp_path, dns_server, DHCP_ENTRY, (lab_addresses.IP_VM,))
    plan = run_drorch("plan", str(pb))
    assert f"    address app-net: {home} -> {away} (rule 10.231.41.0/24)" in plan.stdout, plan.stdout + plan.stderr
    over = run_drorch("failover", str(pb))
    assert over.returncode == 0, over.stdout + over.stderr
    assert reserved("b") == {lab_addresses.IP_VM_MAC: away} and reserved("a") == {}
    assert vm_address("b") == away and answers(away)
    assert dns_server.read(f"{lab_addresses.IP_VM}.lab.example.") == [away]
    back = run_drorch("failback", str(pb))
    assert back.returncode == 0, back.stdout + back.stderr
    assert reserved("a") == {lab_addresses.IP_VM_MAC: home} and reserved("b") == {}  # b's went with the guest
    assert vm_address("a") == home and answers(home)
    assert dns_server.read(f"{lab_addresses.IP_VM}.lab.example.") == [home]



@pytest.fixture
def static_vm(lab: None) -> Iterator[None]:
    """ip-vm-static on site a's app-net at 10.231.41.20, set by the guest itself, with its agent; gone after."""
    remove_ip_vm()
    c = conn("a")
    try:
        c.defineXML(lab_addresses.ip_vm_xml(lab_addresses.STATIC_VM, lab_addresses.STATIC_VM_MAC,
                                            lab_addresses.STATIC_HOME)).create()
    finally:
        c.close()
    wait_until(lambda: answers(lab_addresses.STATIC_HOME), "ip-vm-static on 10.231.41.20:8080")
    yield
    remove_ip_vm()



@pytest.mark.usefixtures("static_vm")
def test_a_static_vm_is_readdressed_through_its_guest_agent_after_a_live_migration_and_on_its_way_home(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path) -> None:
    home, away, vm = lab_addresses.STATIC_HOME, "10.231.42.20", lab_addresses.STATIC_VM
    pb = vm_playbook(tmp_path, dns_server, STATIC_ENTRY, (vm,))
    plan = run_drorch("plan", str(pb))
    assert f"    address app-net: {home} -> {away} (rule 10.231.41.0/24)" in plan.stdout, plan.stdout + plan.stderr
    over = run_drorch("failover", str(pb))
    assert over.returncode == 0, over.stdout + over.stderr
    assert vm_address("b", vm) == away and answers(away)
    assert reserved("b") == {}  # it takes no address from DHCP: nothing reserved
    steps = json.loads(run_drorch("history", "1", "--json").stdout)["steps"]
    assert steps[0]["outcome"].endswith(f"re-addressed {home} -> {away} inside the guest (exit 0: now {away} via "
                                        "10.231.42.1)")
    assert dns_server.read(f"{vm}.lab.example.") == [away]
    back = run_drorch("failback", str(pb))
    assert back.returncode == 0, back.stdout + back.stderr
    assert vm_address("a", vm) == home and answers(home)
    assert dns_server.read(f"{vm}.lab.example.") == [home]


@pytest.mark.usefixtures("static_vm")
def test_vms_restarted_from_their_points_in_a_disaster_take_their_mapped_addresses(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path) -> None:
    """Both guests shipped while site a runs them; a disaster restarts their copies on site b, where site a cannot
    be asked what they had: the DHCP guest's reservation and the static guest's new address come from what the
    shipped copies say."""
    dhcp_home = start_dhcp_vm()
    dhcp_away = "10.231.42." + dhcp_home.rsplit(".", 1)[1]
    pb = vm_playbook(tmp_path, dns_server, DHCP_ENTRY + STATIC_ENTRY,
                     (lab_addresses.IP_VM, lab_addresses.STATIC_VM))
    shipped = run_drorch("protect", "ship", str(pb))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    res = run_drorch("failover", "--disaster", str(pb))  # site a answers: the fence stops both there
    assert res.returncode == 0, res.stdout + res.stderr
    assert reserved("b") == {lab_addresses.IP_VM_MAC: dhcp_away}
    assert vm_address("b") == dhcp_away and answers(dhcp_away)
    assert vm_address("b", lab_addresses.STATIC_VM) == "10.231.42.20" and answers("10.231.42.20")
    assert dns_server.read(f"{lab_addresses.IP_VM}.lab.example.") == [dhcp_away]
    assert dns_server.read(f"{lab_addresses.STATIC_VM}.lab.example.") == ["10.231.42.20"]
    back = run_drorch("failback", str(pb))
    assert back.returncode == 0, back.stdout + back.stderr
    assert vm_address("a") == dhcp_home and answers(dhcp_home) and reserved("b") == {}
    assert vm_address("a", lab_addresses.STATIC_VM) == lab_addresses.STATIC_HOME
    assert answers(lab_addresses.STATIC_HOME)


# --- an LXD instance with a fixed NIC address ------------------------------------------------------------------

IP_LXD = "ip-lxd"
LXD_HOME, LXD_AWAY = "10.231.51.10", "10.231.52.10"


def remove_ip_lxd() -> None:
    for site in ("a", "b"):
        c = lab_lxd.client(labctl.SITES[site])
        for inst in c.instances.all():
            if inst.name == IP_LXD:
                if inst.status != "Stopped":
                    inst.stop(force=True, wait=True)
                inst.delete(wait=True)


@pytest.fixture
def ip_lxd(lab: None) -> Iterator[None]:
    """ip-lxd on site a's LXD, its NIC on app-net fixed at 10.231.51.10 (LXD's DHCP gives it); gone after."""
    remove_ip_lxd()
    lab_lxd.ensure_image(labctl.SITES["a"])
    inst = lab_lxd.client(labctl.SITES["a"]).instances.create({
        "name": IP_LXD, "source": {"type": "image", "alias": lab_lxd.IMAGE},
        "config": {"limits.memory": "128MiB", "user.drorch.lab": "1"},
        "devices": {"eth0": {"type": "nic", "network": "app-net", "ipv4.address": LXD_HOME}}}, wait=True)
    inst.start(wait=True)
    wait_until(lambda: answers(LXD_HOME), f"{IP_LXD} on {LXD_HOME}:{PORT}")
    yield
    remove_ip_lxd()


def lxd_nic(site: str) -> dict[str, str] | None:
    c = lab_lxd.client(labctl.SITES[site])
    found = [i for i in c.instances.all() if i.name == IP_LXD and i.status == "Running"]
    return dict(found[0].devices["eth0"]) if found else None


@pytest.mark.usefixtures("ip_lxd")
def test_an_lxd_instance_with_a_fixed_address_moves_across_subnets_and_comes_home_with_its_own(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path) -> None:
    pb = tmp_path / "lxd.yaml"
    lxd = yaml.safe_load((REPO / "playbooks" / "lab-lxd.yaml").read_text())
    lxd["mappings"] = {"networks": {"app-net": "app-net-dr"},
                       "addresses": {"10.231.51.0/24": {"to": "10.231.52.0/24"}}}
    lxd["workloads"] = [{"name": IP_LXD, "kind": "lxd", "strategy": "copy", "check": {"port": PORT, "timeout_s": 60}}]
    lxd["dns"] = dns_server.settings(records={IP_LXD: ["A"]})
    pb.write_text(yaml.safe_dump(lxd))
    plan = run_drorch("plan", str(pb))
    assert f"    address app-net: {LXD_HOME} -> {LXD_AWAY} (rule 10.231.51.0/24)" in plan.stdout, plan.stderr
    over = run_drorch("failover", str(pb))
    assert over.returncode == 0, over.stdout + over.stderr
    assert lxd_nic("b") == {"type": "nic", "network": "app-net-dr", "ipv4.address": LXD_AWAY}
    assert lxd_nic("a") is None
    assert answers(LXD_AWAY) and dns_server.read(f"{IP_LXD}.lab.example.") == [LXD_AWAY]
    back = run_drorch("failback", str(pb))
    assert back.returncode == 0, back.stdout + back.stderr
    assert lxd_nic("a") == {"type": "nic", "network": "app-net", "ipv4.address": LXD_HOME}
    assert answers(LXD_HOME) and dns_server.read(f"{IP_LXD}.lab.example.") == [LXD_HOME]
