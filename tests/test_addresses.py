"""Addresses across subnets over the fake drivers: rules and their inverse, the plan's before -> after, what
`validate` finds, and runs that connect to each workload at its new address (real sockets on loopback)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drorch.drivers.containers.docker_config import clone_config, container_nics, drill_config, network_subnets
from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.engine.names_step import answers
from drorch.engine.runner import Engine
from drorch.errors import MoveFailed, NamesFailed, PlaybookError
from drorch.model.address_rules import AddressCheck, map_address
from drorch.model.playbook import Mappings, WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import RunState, StepKind, StepState
from drorch.plan.inventory import HostFacts, Nic, Subnet
from drorch.store.sql_store import Store
from tests.support.addresses import estate, nic
from tests.support.cli import drorch
from tests.support.shop import PLAYBOOK, fake_drivers, move, uri


@pytest.fixture
def listening() -> Iterator[int]:
    """A port that answers on web's address on either site."""
    socks = []
    port = 0
    for address in ("127.0.32.10", "127.0.31.10"):
        s = socket.socket()
        s.bind((address, port))
        port = s.getsockname()[1]
        s.listen()
        socks.append(s)
    yield port
    for s in socks:
        s.close()


def addresses_of(cloud: FakeCloud, site: str) -> dict[str, tuple[str, ...]]:
    found = cloud.sites[f"fake://{site}1/docker"].workloads
    return {name: tuple(a for n in w.nics for a in n.addresses) for name, w in sorted(found.items())}


# --- rules ------------------------------------------------------------------------------------------------


@given(st.integers(8, 30), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_a_subnet_rule_keeps_the_host_part_and_its_inverse_gives_back_every_address(
        prefix: int, src: int, dst: int, host: int) -> None:
    source = ipaddress.ip_network((src, prefix), strict=False)
    target = ipaddress.ip_network((dst, prefix), strict=False)
    if source.overlaps(target):
        return
    m = Mappings(addresses={str(source): {"to": str(target)}})
    address = str(source.network_address + host % source.num_addresses)
    there = m.address(address)
    assert ipaddress.ip_address(there) in target
    assert int(ipaddress.ip_address(there)) - int(target.network_address) == host % source.num_addresses
    assert m.inverse().address(there) == address


def test_ipv6_rules_and_the_most_specific_rule_wins() -> None:
    rules = Mappings(addresses={"fd31::/64": {"to": "fd32::/64"}, "10.0.0.0/8": {"to": "11.0.0.0/8"},
                                "10.31.0.5/32": {"to": "11.99.0.1/32"}}).addresses
    assert map_address(rules, "fd31::10") == ("fd32::10", "fd31::/64")
    assert map_address(rules, "10.31.0.5") == ("11.99.0.1", "10.31.0.5/32")
    assert map_address(rules, "10.31.0.6") == ("11.31.0.6", "10.0.0.0/8")
    assert map_address(rules, "192.0.2.1") is None


@pytest.mark.parametrize(("rules", "said"), [
    ("{10.31.0.0/24: {to: 10.32.0.0/24}, 10.31.0.0/16: {to: 10.40.0.0/16}}",
     "10.31.0.0/16: overlaps the rule for 10.31.0.0/24: an address in both would be ambiguous"),
    ("{10.31.0.0/24: {to: 10.32.0.0/24}, 10.33.0.0/24: {to: 10.32.0.0/24}}",
     "10.33.0.0/24: its target 10.32.0.0/24 overlaps that of the rule for 10.31.0.0/24: the way home would be "
     "ambiguous"),
    ("{10.31.0.0/24: {to: 10.32.0.0/25}}", "10.32.0.0/25 is smaller than 10.31.0.0/24"),
    ("{10.31.0.0/24: {to: 'fd32::/120'}}", "maps IPv4 onto IPv6"),
    ("{10.31.0.1/24: {to: 10.32.0.0/24}}", "'10.31.0.1/24' is not a subnet"),
    ("{10.31.0.0/24: {to: 10.32.0.0/24, gateway: 10.33.0.1}}", "gateway 10.33.0.1 is outside 10.32.0.0/24"),
    ("{10.31.0.0/24: {to: 10.32.0.0/24, dns: ['fd00::53']}}", "dns fd00::53 is not an IPv4 address"),
])
def test_bad_rules_are_refused_where_they_are_written(rules: str, said: str) -> None:
    text = estate().replace("{127.0.31.0/24: {to: 127.0.32.0/24, gateway: 127.0.32.1, dns: [127.0.32.53]}}", "")
    text = text.replace("  addresses:\n    127.0.31.0/24: {to: 127.0.32.0/24, gateway: 127.0.32.1, dns: [127.0.32.53]}",
                        f"  addresses: {rules}")
    with pytest.raises(PlaybookError) as err:
        parse_playbook(text, "pb.yaml")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("pb.yaml:9:") and said in err.value.problems[0]


def test_an_exact_address_must_be_an_address() -> None:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(estate().replace("b: 127.0.32.50", "b: 127.0.32.500"), "pb.yaml")
    assert err.value.problems == ["pb.yaml:13:83: workloads.1.address.b.0: Value error, '127.0.32.500' is not an "
                                  "IPv4 or IPv6 address"]


# --- the Docker engine's part -----------------------------------------------------------------------------


def _inspect(ipam: dict[str, str] | None) -> dict[str, object]:
    return {"Config": {"Image": "app:1"}, "HostConfig": {"NetworkMode": "app-net"},
            "NetworkSettings": {"Networks": {"app-net": {"IPAMConfig": ipam, "IPAddress": "10.31.0.10",
                                                         "MacAddress": "02:42:0a:1f:00:0a"}}}}


def test_a_container_keeps_its_static_address_mapped_and_a_dynamic_one_is_left_to_the_target() -> None:
    m = Mappings(networks={"app-net": "app-net-dr"}, addresses={"10.31.0.0/24": {"to": "10.32.0.0/24"},
                                                                "fd31::/64": {"to": "fd32::/64"}})
    static = _inspect({"IPv4Address": "10.31.0.10", "IPv6Address": "fd31::10"})
    assert clone_config(static, m)["NetworkingConfig"] == {
        "EndpointsConfig": {"app-net-dr": {"IPAMConfig": {"IPv4Address": "10.32.0.10", "IPv6Address": "fd32::10"}}}}
    assert "NetworkingConfig" not in clone_config(_inspect(None), m)
    assert "NetworkingConfig" not in drill_config(static, "web-drill-1", "drorch-drill-1")
    assert drill_config(static, "web-drill-1", "drorch-drill-1", ("10.62.0.10", "fd62::10"))["NetworkingConfig"] == {
        "EndpointsConfig": {"drorch-drill-1": {"IPAMConfig": {"IPv4Address": "10.62.0.10", "IPv6Address": "fd62::10"}}}}
    assert container_nics(static) == (Nic("app-net", ("10.31.0.10", "fd31::10"), True, "02:42:0a:1f:00:0a"),)
    assert container_nics(_inspect(None)) == (Nic("app-net", ("10.31.0.10",), False, "02:42:0a:1f:00:0a"),)
    listed = [{"Name": "app-net", "IPAM": {"Config": [{"Subnet": "10.31.0.0/24", "Gateway": "10.31.0.1"}]}},
              {"Name": "none", "IPAM": {"Config": None}}]
    assert network_subnets(listed) == (Subnet("app-net", "10.31.0.0/24", "10.31.0.1"),)


# --- plan and validate ------------------------------------------------------------------------------------


def test_the_plan_shows_each_address_before_and_after(
        capsys: pytest.CaptureFixture[str], fake_cli: None, app_cloud: FakeCloud, tmp_path: Path) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text(estate())
    code, out, err = drorch(capsys, "plan", str(path))
    assert (code, err) == (0, "")
    assert "    address app-net: 127.0.31.10 -> 127.0.32.10 (rule 127.0.31.0/24)\n" in out
    assert "    address app-net: 127.0.31.7 -> 127.0.32.50 (exact)\n" in out
    assert "    address app-net: 127.0.31.99 -> dynamic\n" in out
    code, out, _ = drorch(capsys, "plan", str(path), "--json")
    items = {i["workload"]: i for i in json.loads(out)["items"]}
    assert items["web"]["addresses"] == [{"network": "app-net", "before": "127.0.31.10", "after": "127.0.32.10",
                                          "static": True, "rule": "127.0.31.0/24"}]
    assert items["cache"]["addresses"][0]["after"] is None and not items["cache"]["addresses"][0]["static"]
    code, out, _ = drorch(capsys, "validate", str(path))
    assert code == 0, out


@pytest.mark.parametrize(("change", "said"), [
    (("to: 127.0.32.0/24, gateway: 127.0.32.1, dns: [127.0.32.53]", "to: 127.0.33.0/24"),
     "pb.yaml:10:20: container web: 127.0.33.10 (from 127.0.31.10) is not in any subnet of network app-net-dr on "
     "site b host b1 (127.0.32.0/24)"),
    (("b: 127.0.32.50", "b: 127.0.32.10"), "pb.yaml:13:64: container db: 127.0.32.10 on app-net-dr is also given "
                                          "to web"),
    (("b: 127.0.32.50", "b: 127.0.32.77"), "pb.yaml:13:64: container db: 127.0.32.77 is already in use on site b "
                                          "by other"),
    (("  addresses:\n    127.0.31.0/24: {to: 127.0.32.0/24, gateway: 127.0.32.1, dns: [127.0.32.53]}\n", ""),
     "pb.yaml:10:5: container web: its static address 127.0.31.10 on app-net is not in any subnet of network "
     "app-net-dr on site b host b1 (127.0.32.0/24), and no address rule maps it"),
    (("address: {a: 127.0.31.7, b: 127.0.32.50}", "address: {b: 127.0.32.50}"),
     "pb.yaml:13:64: container db: would come home as 127.0.31.50, not 127.0.31.7, when it fails back: give its "
     "address for site a too"),
])
def test_validate_names_each_address_a_workload_could_not_have(
        capsys: pytest.CaptureFixture[str], fake_cli: None, app_cloud: FakeCloud, tmp_path: Path,
        change: tuple[str, str], said: str) -> None:
    app_cloud.sites["fake://b1/docker"].workloads["other"] = FakeWorkload(
        WorkloadKind.CONTAINER, networks=("app-net-dr",), nics=nic("127.0.32.77", network="app-net-dr"))
    path = tmp_path / "pb.yaml"
    path.write_text(estate().replace(*change))
    code, _, err = drorch(capsys, "validate", str(path))
    assert code == 1
    assert err.replace(f"{path}", "pb.yaml").splitlines() == [said]


def test_a_hosts_docker_and_libvirt_networks_of_one_name_keep_their_own_subnets(
        capsys: pytest.CaptureFixture[str], fake_cli: None, cloud: FakeCloud, tmp_path: Path) -> None:
    """app-net-dr is a Docker network and a libvirt network on b1, each with its subnet: each workload's mapped
    address is checked against its own kind's, before and after the move."""
    text = PLAYBOOK.split("workloads:")[0] + """\
mappings:
  networks: {app-net: app-net-dr}
  addresses: {127.0.31.0/24: {to: 127.0.32.0/24}, 127.0.41.0/24: {to: 127.0.42.0/24}}
workloads:
  - {name: web, kind: container, strategy: redeploy}
  - {name: vm1, kind: vm, strategy: cold}
"""
    path = tmp_path / "pb.yaml"
    path.write_text(text)
    pb = parse_playbook(text, "pb.yaml")
    cloud.sites.clear()
    for kind, name, third in ((WorkloadKind.CONTAINER, "web", 3), (WorkloadKind.VM, "vm1", 4)):
        for site, net, last in (("a", "app-net", 1), ("b", "app-net-dr", 2)):
            subnet = Subnet(net, f"127.0.{third}{last}.0/24", None)
            cloud.sites[uri(pb, kind, site)] = FakeSite(facts=HostFacts(
                vcpus=8, memory_mib=8192, networks=(net,), checkpoints=True, subnets=(subnet,)))
        cloud.sites[uri(pb, kind, "a")].workloads[name] = FakeWorkload(kind, networks=("app-net",),
                                                                      nics=nic(f"127.0.{third}1.10"))
    path.write_text(text.replace("strategy: cold}", "strategy: cold, address: {a: 127.0.41.10, b: 127.0.32.20}}"))
    code, _, err = drorch(capsys, "validate", str(path))  # the Docker network's subnet is no place for a VM
    assert code == 1
    assert err.replace(f"{path}", "pb.yaml").splitlines() == [
        "pb.yaml:12:52: vm vm1: 127.0.32.20 (from 127.0.41.10) is not in any subnet of network app-net-dr on site b "
        "host b1 (127.0.42.0/24)"]
    path.write_text(text)
    for command in ("validate", "failover"):
        code, out, err = drorch(capsys, command, str(path))
        assert code == 0, out + err
    assert addresses_of(cloud, "b") == {"web": ("127.0.32.10",)}


# --- runs -------------------------------------------------------------------------------------------------


def test_a_failover_and_its_failback_give_each_workload_its_mapped_address_then_exactly_its_own(
        store: Store, app_cloud: FakeCloud, listening: int) -> None:
    pb = parse_playbook(estate(listening), "pb.yaml")
    engine = Engine(store, fake_drivers(app_cloud), poll_seconds=0)
    home = addresses_of(app_cloud, "a")
    run = move(engine, pb, "a", "b")
    assert run.state is RunState.SUCCEEDED, [s.error for s in store.steps(run.id or 0)]
    assert addresses_of(app_cloud, "b") == {"cache": (), "db": ("127.0.32.50",), "web": ("127.0.32.10",)}
    names = [s for s in store.steps(run.id or 0) if s.kind == StepKind.NAMES]
    assert [(s.workload, s.state, s.outcome) for s in names] == [
        ("wave default names", StepState.SUCCEEDED, f"web: answers on 127.0.32.10:{listening}")]
    back = move(engine, pb, "b", "a", "failback")
    assert back.state is RunState.SUCCEEDED
    assert {k: v for k, v in addresses_of(app_cloud, "a").items() if k != "cache"} == {
        k: v for k, v in home.items() if k != "cache"}
    assert [s.outcome for s in store.steps(back.id or 0) if s.kind == StepKind.NAMES] == [
        f"web: answers on 127.0.31.10:{listening}"]


def test_a_workload_that_does_not_answer_at_its_new_address_fails_the_names_step(
        store: Store, app_cloud: FakeCloud) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.32.10", 0))
        port = s.getsockname()[1]
    pb = parse_playbook(estate(port).replace("timeout_s: 5", "timeout_s: 0.5"), "pb.yaml")
    run = move(Engine(store, fake_drivers(app_cloud), poll_seconds=0), pb, "a", "b")
    assert run.state is RunState.PARTIAL  # it moved, and is not reachable where it went
    step = next(s for s in store.steps(run.id or 0) if s.kind == StepKind.NAMES)
    assert step.state is StepState.FAILED
    assert step.error is not None and step.error.startswith(
        f"web: nothing answers on 127.0.32.10:{port} after 0.5 s: Connection refused")


def test_answers_says_where_it_connected_and_why_it_could_not() -> None:
    with pytest.raises(NamesFailed, match="it has no address to connect to port 80 on"):
        answers([], AddressCheck(port=80))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert answers(["127.0.0.1"], AddressCheck(port=port, timeout_s=2)) == f"answers on 127.0.0.1:{port}"


# --- libvirt's part (its in-memory test driver) -----------------------------------------------------------


def test_reservations_are_made_once_kept_in_the_guests_definition_and_only_drorchs_go() -> None:
    import libvirt

    from drorch.drivers.libvirt._vm_addresses import (
        HOME,
        NetworkView,
        Reservation,
        claimable,
        recorded,
        release,
        renew_pending,
        reservations,
        reserve,
        settled,
        wanted,
        with_record,
    )

    conn = libvirt.open("test:///default")
    net = conn.networkLookupByName("default")
    assert NetworkView(conn).subnets() == (Subnet("default", "192.168.122.0/24", "192.168.122.1"),)
    mine, theirs = Reservation("default", "52:54:00:00:00:01", "192.168.122.50"), \
        Reservation("default", "52:54:00:00:00:02", "192.168.122.60")
    reserve(conn, theirs)  # the operator's own
    reserve(conn, mine)
    reserve(conn, mine)  # again, after an interruption: found, not doubled
    assert reservations(net.XMLDesc(0)) == {theirs.mac: theirs.ip, mine.mac: mine.ip}
    taken = "network default already reserves 192.168.122.60 for 52:54:00:00:00:02"
    with pytest.raises(MoveFailed, match=re.escape(taken)):
        reserve(conn, Reservation("default", mine.mac, theirs.ip))
    guest = ("<domain><name>g</name><devices><interface type='network'><mac address='52:54:00:00:00:01'/>"
             "<source network='default'/></interface></devices></domain>")
    noted = with_record(guest, [mine])
    assert recorded(noted) == [mine] and with_record(guest, []) == guest
    assert recorded(with_record(noted, [])) == []
    m = Mappings(addresses={"192.168.122.0/24": {"to": "10.9.0.0/24"}}, networks={"default": "dr"})
    assert NetworkView(conn).nics(guest) == (Nic("default", (mine.ip,), True, mine.mac, dhcp=True),)
    assert wanted(NetworkView(conn).nics(guest), m) == [Reservation("dr", mine.mac, "10.9.0.50")]
    assert release(conn, mine) and not release(conn, mine)
    assert reservations(net.XMLDesc(0)) == {theirs.mac: theirs.ip}
    # A guest's reservations are made once it has landed; what would refuse them refuses before it moves.
    with pytest.raises(MoveFailed, match=re.escape(taken)):
        claimable(conn, [mine, Reservation("default", "52:54:00:00:00:03", theirs.ip)])
    claimable(conn, [mine])
    assert reservations(net.XMLDesc(0)) == {theirs.mac: theirs.ip}  # checking makes nothing
    # A landed guest's definition also names what is still to be removed at the site it left, until it is.
    left = Reservation("default", mine.mac, "192.168.122.7")
    landed = conn.defineXML(with_record(guest.replace("<domain><name>g</name>", "<domain type='test'><name>landed"
                                                      "</name><memory>65536</memory><os><type>hvm</type></os>"),
                                        [mine], [left], renew=True))
    said = landed.XMLDesc(0)
    assert (recorded(said), recorded(said, HOME), renew_pending(said)) == ([mine], [left], True)
    settled(landed)
    said = landed.XMLDesc(0)
    assert (recorded(said), recorded(said, HOME), renew_pending(said)) == ([mine], [], False)


def test_an_lxd_nic_keeps_its_fixed_address_mapped_and_lxd_networks_show_their_subnets() -> None:
    from drorch.drivers.lxd._lxd_config import network_subnets as lxd_subnets
    from drorch.drivers.lxd._lxd_config import nics, target_body

    inst = {"name": "c1", "devices": {
        "eth0": {"type": "nic", "network": "app-net", "ipv4.address": "10.31.0.20", "ipv6.address": "fd31::20"},
        "eth1": {"type": "nic", "network": "other"}, "root": {"type": "disk", "path": "/", "pool": "default"}}}
    m = Mappings(networks={"app-net": "app-net-dr"}, addresses={"10.31.0.0/24": {"to": "10.32.0.0/24"},
                                                                "fd31::/64": {"to": "fd32::/64"}})
    assert target_body(inst, m)["devices"]["eth0"] == {
        "type": "nic", "network": "app-net-dr", "ipv4.address": "10.32.0.20", "ipv6.address": "fd32::20"}
    assert target_body(inst, m.inverse())["devices"]["eth0"]["ipv4.address"] == "10.31.0.20"  # home: unchanged
    assert nics(inst["devices"]) == (Nic("app-net", ("10.31.0.20", "fd31::20"), True), Nic("other", (), False))
    assert lxd_subnets([{"name": "app-net", "config": {"ipv4.address": "10.31.0.1/24", "ipv6.address": "none"}},
                        {"name": "auto", "config": {"ipv4.address": "auto"}}]) == (
        Subnet("app-net", "10.31.0.0/24", "10.31.0.1"),)


# --- a VM whose guest sets its own address ----------------------------------------------------------------

GUEST = """\
name: shop
primary: a
secondary: b
sites:
  a: {hosts: [{name: a1, libvirt: "fake://a1/libvirt"}]}
  b: {hosts: [{name: b1, libvirt: "fake://b1/libvirt"}]}
mappings:
  networks: {app-net: app-net-dr}
  addresses: {10.31.0.0/24: {to: 10.32.0.0/24, dns: [10.32.0.53]}}
workloads:
  - {name: db, kind: vm, strategy: live, reip: {run: [/usr/local/bin/reip, eth0]}}
"""


@pytest.fixture
def guest_cloud(cloud: FakeCloud) -> FakeCloud:
    cloud.sites.clear()
    for site, subnet in (("a", Subnet("app-net", "10.31.0.0/24", "10.31.0.1")),
                         ("b", Subnet("app-net-dr", "10.32.0.0/24", "10.32.0.254"))):
        cloud.sites[f"fake://{site}1/libvirt"] = FakeSite(facts=HostFacts(
            vcpus=8, memory_mib=8192, networks=(subnet.network,), subnets=(subnet,)))
    cloud.sites["fake://a1/libvirt"].workloads["db"] = FakeWorkload(
        WorkloadKind.VM, networks=("app-net",), nics=(Nic("app-net", ("10.31.0.5",), True, "52:54:00:00:00:05"),))
    return cloud


def test_a_static_guest_is_told_its_new_address_through_its_agent_and_its_old_one_on_the_way_back(
        store: Store, guest_cloud: FakeCloud) -> None:
    pb = parse_playbook(GUEST, "pb.yaml")
    engine = Engine(store, fake_drivers(guest_cloud), poll_seconds=0)
    run = move(engine, pb, "a", "b")
    assert run.state is RunState.SUCCEEDED
    assert guest_cloud.inside == [("db", ["/usr/local/bin/reip", "eth0"], {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "DRORCH_OLD_ADDRESS": "10.31.0.5",
        "DRORCH_NEW_ADDRESS": "10.32.0.5", "DRORCH_PREFIX": "24",
        "DRORCH_GATEWAY": "10.32.0.254", "DRORCH_DNS": "10.32.0.53", "DRORCH_NETWORK": "app-net-dr"})]
    step = store.steps(run.id or 0)[0]
    assert step.outcome == "running on site b; re-addressed 10.31.0.5 -> 10.32.0.5 inside the guest (exit 0)"
    back = engine.rollback(pb, run)
    assert back.state is RunState.ROLLED_BACK
    assert guest_cloud.inside[-1][2]["DRORCH_NEW_ADDRESS"] == "10.31.0.5"
    assert guest_cloud.inside[-1][2]["DRORCH_GATEWAY"] == "10.31.0.1"  # the home network's own


def test_a_reip_command_that_fails_fails_its_step_with_its_exit_code_and_output(
        store: Store, guest_cloud: FakeCloud) -> None:
    guest_cloud.exits["db"] = (2, "ip: RTNETLINK answers: File exists")
    run = move(Engine(store, fake_drivers(guest_cloud), poll_seconds=0), parse_playbook(GUEST, "pb.yaml"), "a", "b")
    assert run.state is RunState.FAILED
    assert store.steps(run.id or 0)[0].error == (
        "db runs on site b, but its reip command /usr/local/bin/reip exited 2 re-addressing 10.31.0.5 -> 10.32.0.5: "
        "ip: RTNETLINK answers: File exists")


def test_the_records_a_site_wants_name_each_address_of_their_family_or_the_site_for_a_cname() -> None:
    from drorch.model.dns_names import Dns, Wanted, server_address, wanted

    dns = Dns(servers=["127.0.0.1:5353", "[::1]:53", "::1"], zone="lab.example.",
              records={"web": ["A", "AAAA", "CNAME"]})
    assert wanted(dns, "web", "b", ["10.32.0.10", "fd32::10"]) == [
        Wanted("web", "A", ("10.32.0.10",)), Wanted("web", "AAAA", ("fd32::10",)),
        Wanted("web", "CNAME", ("web.b.lab.example.",))]
    assert wanted(dns, "db", "b", ["10.32.0.10"]) == []
    assert dns.drill_records("web", ["10.62.0.10"]) == [Wanted("web", "A", ("10.62.0.10",)), Wanted("web", "AAAA", ())]
    with pytest.raises(ValueError, match="drill_zone must not be the zone itself"):
        Dns(servers=["127.0.0.1"], zone="lab.example.", drill_zone="LAB.example", records={"web": ["A"]})
    assert [server_address(s) for s in dns.servers] == [("127.0.0.1", 5353), ("::1", 53), ("::1", 53)]
    with pytest.raises(ValueError, match="port 70000 is outside"):
        server_address("127.0.0.1:70000")


@pytest.mark.parametrize(("change", "said"), [
    (("address: {a: 127.0.31.7,", "address: {c: 127.0.31.7,"),
     "pb.yaml:13:68: address for site 'c', which sites does not define"),
    (("{name: cache, kind: container, strategy: redeploy}",
      "{name: cache, kind: container, strategy: redeploy, reip: {run: [x]}}"),
     "reip runs inside a VM's guest: a container takes its mapped address from its engine"),
    (("workloads:", "dns: {servers: [127.0.0.1], zone: lab.example., records: {nosuch: [A]}}\nworkloads:"),
     "a record for 'nosuch', which no workload entry selects"),
])
def test_addresses_and_records_must_name_what_the_playbook_has(change: tuple[str, str], said: str) -> None:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(estate().replace(*change), "pb.yaml")
    assert len(err.value.problems) == 1 and said in err.value.problems[0], err.value.problems


def test_a_shipped_copy_says_what_its_original_had_beside_what_drorch_reserved_and_libvirt_keeps_both() -> None:
    import libvirt

    from drorch.drivers.libvirt._vm_addresses import (
        NetworkView,
        Reservation,
        recorded,
        shipped,
        shipped_reservations,
        with_record,
        with_shipped,
    )

    conn = libvirt.open("test:///default")
    m = Mappings(addresses={"10.31.0.0/24": {"to": "10.32.0.0/24"}}, networks={"app-net": "app-net-dr"})
    nics = (Nic("app-net", ("10.31.0.8",), True, "52:54:00:00:00:08", dhcp=True),
            Nic("app-net", ("10.31.0.9",), True, "52:54:00:00:00:09"), Nic("other", (), False, "52:54:00:00:00:0a"))
    guest = ("<domain type='test'><name>copy</name><memory>1024</memory><os><type>hvm</type></os><devices>"
             "<interface type='network'><mac address='52:54:00:00:00:08'/><source network='default'/></interface>"
             "</devices></domain>")
    xml = with_shipped(guest, nics, m)
    made = shipped_reservations(xml)
    assert made == [Reservation("app-net-dr", "52:54:00:00:00:08", "10.32.0.8")]  # DHCP ones only
    dom = conn.defineXML(with_record(xml, made))
    kept = dom.XMLDesc(0)  # one metadata element per namespace: both survive
    assert recorded(kept) == made
    assert shipped(kept) == {"52:54:00:00:00:08": nics[0], "52:54:00:00:00:09": nics[1]}
    assert NetworkView(conn).nics(kept, dom) == (nics[0],)  # a copy that never ran: what its original had
    dom.undefine()
