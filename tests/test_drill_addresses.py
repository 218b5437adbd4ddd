"""A drill's clones at drill addresses over the fake drivers: each static address mapped by the drill rules onto the
drill subnet, the drill network carrying that subnet, and the clone connected to there (real sockets on loopback)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from drorch.drivers.base import DrillNet
from drorch.drivers.fake import FakeCloud
from drorch.engine.live_run import StepEvent
from drorch.engine.runner import Engine
from drorch.model.address_rules import AddressMove, AddressRule
from drorch.model.playbook import WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import Action, RunState, StepKind, StepState
from drorch.plan.drill_addresses import clone_addresses, drill_moves, drill_net
from drorch.plan.inventory import Nic
from drorch.recovery.shipping import protect
from drorch.store.rows import Step
from drorch.store.sql_store import Store
from tests.support.addresses import estate
from tests.support.cli import drorch
from tests.support.shop import fake_drivers, uri

DRILL_RULES = "drill:\n  addresses: {127.0.32.0/24: {to: 127.0.62.0/24}}\n"


@pytest.fixture
def drill_port() -> Iterator[int]:
    """A port that answers at web's drill address."""
    with socket.socket() as s:
        s.bind(("127.0.62.10", 0))
        s.listen()
        yield s.getsockname()[1]


def drilled(store: Store, cloud: FakeCloud, port: int, timeout: str = "5") -> tuple[list[Step], dict[str, object]]:
    """The drill's steps, and what site b had while its clones were up: each clone's NICs and the drill
    network's subnets."""
    pb = parse_playbook(estate(port).replace("timeout_s: 5", f"timeout_s: {timeout}") + DRILL_RULES, "pb.yaml")
    assert all(p.complete for p in protect(pb, fake_drivers(cloud), store).points)
    b = cloud.sites[uri(pb, WorkloadKind.CONTAINER, "b")]
    seen: dict[str, object] = {}

    def watch(ev: StepEvent) -> None:
        if ev.step.kind == StepKind.TEARDOWN and ev.step.state is StepState.RUNNING:
            seen.update({n: w.nics for n, w in b.workloads.items() if "-drill-" in n})
            seen["subnets"] = dict(b.drill_subnets)

    run = Engine(store, fake_drivers(cloud), watch).drill(pb, "pb.yaml")
    seen["state"] = run.state
    return store.steps(run.id or 0), seen


def test_each_clone_answers_at_its_drill_address_on_a_drill_network_of_the_drill_subnet(
        store: Store, app_cloud: FakeCloud, drill_port: int) -> None:
    steps, seen = drilled(store, app_cloud, drill_port)
    assert seen == {
        "web-drill-1": (Nic("drorch-drill-1", ("127.0.62.10",), True),),
        "db-drill-1": (Nic("drorch-drill-1", ("127.0.62.50",), True),),  # its exact address at b, mapped
        "cache-drill-1": (Nic("drorch-drill-1", (), False),),  # dynamic: any address the drill network gives
        "subnets": {"drorch-drill-1": (("127.0.62.0/24", "127.0.62.1"),)},
        "state": RunState.SUCCEEDED}
    web = next(s for s in steps if s.workload == "web")
    assert json.loads(web.detail or "{}")["checks"][1] == {
        "check": "address", "ok": True, "fatal": False, "said": f"answers on 127.0.62.10:{drill_port}"}
    assert [AddressMove(**m).line() for m in json.loads(web.detail or "{}")["drill_addresses"]] == [
        "app-net-dr: 127.0.32.10 -> 127.0.62.10 (rule 127.0.32.0/24)"]


def test_a_clone_that_does_not_answer_at_its_drill_address_fails_its_step(
        store: Store, app_cloud: FakeCloud) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.62.10", 0))
        port = s.getsockname()[1]
    steps, seen = drilled(store, app_cloud, port, timeout="0.5")
    web = next(s for s in steps if s.workload == "web")
    assert web.state is StepState.FAILED and seen["state"] is RunState.PARTIAL
    assert web.error is not None and web.error.startswith(
        f"address: nothing answers on 127.0.62.10:{port} after 0.5 s: Connection refused")


def test_validate_names_a_drill_subnet_that_a_site_has_already(
        capsys: pytest.CaptureFixture[str], fake_cli: None, app_cloud: FakeCloud, tmp_path: Path) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text(estate() + DRILL_RULES.replace("127.0.62.0/24", "127.0.30.0/23"))
    code, _, err = drorch(capsys, "validate", str(path))
    assert code == 1
    assert err.replace(f"{path}", "pb.yaml").splitlines() == [
        "pb.yaml:16:30: drill subnet 127.0.30.0/23 overlaps 127.0.31.0/24 of network app-net on site a host a1"]
    path.write_text(estate() + DRILL_RULES)
    assert drorch(capsys, "validate", str(path))[0] == 0


def step(workload: str, moves: list[dict[str, object]], host: str = "b1", kind: str = "container") -> Step:
    return Step(run_id=1, seq=1, kind=kind, workload=workload, strategy="redeploy", source_site="a",
                target_site="b", wave="default", action=Action.DRILL, to_host=host,
                detail=json.dumps({"drill_addresses": moves}))


def test_one_drill_network_carries_the_subnets_of_the_clones_that_join_it_and_one_of_each_family() -> None:
    rules = {"10.32.0.0/24": AddressRule(to="10.62.0.0/24"), "10.33.0.0/24": AddressRule(to="10.63.0.0/24"),
             "fd32::/64": AddressRule(to="fd62::/64", gateway="fd62::fe")}
    at_b = [AddressMove("app-net", "10.31.0.10", "10.32.0.10", True), AddressMove("app-net", "fd31::10", "fd32::10",
            True), AddressMove("app-net", "10.31.0.99", None, False)]
    web = step("web", drill_moves(at_b, rules))
    assert clone_addresses(web) == ("10.62.0.10", "fd62::10")
    other_host = step("db", drill_moves([AddressMove("x", "10.1.0.1", "10.33.0.7", True)], rules), host="b2")
    vm = step("vm1", drill_moves([AddressMove("x", "10.1.0.1", "10.33.0.7", True)], rules), kind="vm")
    assert drill_net("drorch-drill-1", web, [web, other_host, vm], rules).subnets == (
        ("10.62.0.0/24", "10.62.0.1"), ("fd62::/64", "fd62::fe"))
    db = step("db", drill_moves([AddressMove("x", "10.1.0.1", "10.33.0.7", True)], rules))
    with pytest.raises(ValueError, match=r"the drill network on host b1 would need two IPv4 subnets \(10.62.0.0/24, "
                                         r"10.63.0.0/24\): one drill network carries one of each"):
        drill_net("drorch-drill-1", web, [web, db], rules)
    unmapped = drill_moves([AddressMove("x", "10.1.0.1", "10.40.0.7", True)], rules)
    assert AddressMove(**unmapped[0]).line() == "x: 10.40.0.7 -> dynamic"


def test_a_vm_clone_s_drill_network_has_dhcp_and_its_reservation_under_a_mac_of_its_own() -> None:
    """Through libvirt's own test driver: the network as libvirt keeps it, and the clone's definition."""
    import xml.etree.ElementTree as ET

    import libvirt

    from drorch.drivers.libvirt._domain_xml import drill_domain_xml
    from drorch.drivers.libvirt._drill_domains import clone_mac, isolated_network, remove_network
    from drorch.drivers.libvirt._vm_addresses import Reservation, reservations, reserve

    conn = libvirt.open("test:///default")
    net = DrillNet("drorch-drill-7", (("10.72.0.0/24", "10.72.0.1"), ("fd72::/64", "fd72::1")))
    isolated_network(conn, net)
    isolated_network(conn, net)  # again, as a second clone of the drill would: one network
    mac = clone_mac("vm1-drill-7")
    assert mac == clone_mac("vm1-drill-7") != clone_mac("vm2-drill-7") and mac.startswith("52:54:00:")
    reserve(conn, Reservation(net.name, mac, "10.72.0.20"))
    root = ET.fromstring(conn.networkLookupByName(net.name).XMLDesc(0))
    assert root.find("forward") is None  # isolated: no route off it
    assert [(ip.get("address"), ip.get("prefix")) for ip in root.findall("ip")] == [("10.72.0.1", "24"),
                                                                                   ("fd72::1", "64")]
    assert [r.attrib for r in root.iter("range")] == [{"start": "10.72.0.128", "end": "10.72.0.254"}]
    assert reservations(conn.networkLookupByName(net.name).XMLDesc(0)) == {mac: "10.72.0.20"}
    assert remove_network(conn, net.name) and not remove_network(conn, net.name)
    guest = ("<domain type='test'><name>vm1</name><uuid>0b0e3f6e-9a59-4fd4-8f63-f64b2f6b2a11</uuid><devices>"
             "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='app-net-dr'/></interface>"
             "<interface type='network'><source network='other'/></interface></devices></domain>")
    clone = ET.fromstring(drill_domain_xml(guest, "vm1-drill-7", net.name, {}, mac))
    assert [([m.get("address") for m in i.iter("mac")], [s.get("network") for s in i.iter("source")])
            for i in clone.findall("devices/interface")] == [([mac], [net.name]), ([], [net.name])]
