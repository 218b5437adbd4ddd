"""One playbook with every kind a site runs, each on a subnet that differs between the sites: a container with a
static address, an LXD instance with a fixed NIC address, a VM on DHCP and a VM that sets its own address. Through
failover, failback, a drill, a disaster restart from the points and failback again, every workload answers (TCP
from this machine) at the address it should have on the site it runs on, the lab's DNS server names that address,
and home is always exactly the original. Then the same run killed at every step boundary and resumed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drorch.model.records import Action, Operation, StepState
from drorch.store.sql_store import Store
from integration import lab_addresses
from integration.dns_server import DRILL_ZONE, DnsServer
from integration.estate import (
    APP,
    AWAY,
    DHCP_VM,
    HOME,
    IP_LXD,
    LXD_AWAY,
    LXD_HOME,
    PORT,
    REIP,
    STATIC_AWAY,
    STATIC_HOME,
    STATIC_VM,
    answers,
    away,
    lxd_nic,
    remove_containers,
    remove_lxd,
    remove_vms,
    reserved,
    start_containers,
    start_dhcp_vm,
    start_lxd,
    start_static_vm,
    static_address,
    vm_address,
    vm_runs,
)
from integration.support.lab_views import DRORCH, LAB_PLAYBOOK, REPO, Drorch, drorch_env, drorch_process, wait_until

RULES = {"10.231.31.0/24": {"to": "10.231.32.0/24", "gateway": "10.231.32.1"},
         "10.231.41.0/24": {"to": "10.231.42.0/24", "gateway": "10.231.42.1"},
         "10.231.51.0/24": {"to": "10.231.52.0/24"}}
# a drill's clones run beside the copies on b, on isolated networks of drill subnets that keep the host part
DRILL_RULES = {"10.231.32.0/24": {"to": "10.231.62.0/24"}, "10.231.42.0/24": {"to": "10.231.72.0/24"},
               "10.231.52.0/24": {"to": "10.231.82.0/24"}}
CHECK = {"port": PORT, "timeout_s": 60}


@pytest.fixture
def estate(lab: None) -> Iterator[str]:
    """The four workloads on site a; yields the address the DHCP guest took there. Gone from both sites after."""
    remove_vms()
    start_containers((APP,))
    start_lxd()
    dhcp_home = start_dhcp_vm()
    start_static_vm()
    yield dhcp_home
    remove_vms()
    remove_lxd()
    remove_containers()


def estate_playbook(tmp_path: Path, server: DnsServer) -> Path:
    """The lab's Docker and libvirt hosts and its LXD hosts in one playbook, the three rules, the four workloads,
    and an A record for each."""
    book = yaml.safe_load(LAB_PLAYBOOK.read_text())
    lxd = yaml.safe_load((REPO / "playbooks" / "lab-lxd.yaml").read_text())
    for site in ("a", "b"):
        book["sites"][site]["hosts"] += lxd["sites"][site]["hosts"]
    book["sites"]["a"]["hosts"][0]["capacity"] = {"vcpus": 8, "memory_mib": 4096}  # the lab's VMs and these
    book["mappings"] = {"networks": {"app-net": "app-net-dr"}, "addresses": RULES}
    book["drill"] = {"addresses": DRILL_RULES}
    book["workloads"] = [
        {"name": APP, "kind": "container", "strategy": "redeploy", "check": CHECK},
        {"name": IP_LXD, "kind": "lxd", "strategy": "copy", "check": CHECK},
        {"name": DHCP_VM, "kind": "vm", "strategy": "live", "check": CHECK},
        {"name": STATIC_VM, "kind": "vm", "strategy": "live", "check": CHECK,
         "reip": {"run": ["/bin/sh", "-c", REIP]}},
    ]
    book["dns"] = server.settings(records={w["name"]: ["A"] for w in book["workloads"]}, drill_zone=DRILL_ZONE)
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(book))
    return path


def placed(site: str) -> dict[str, str | None]:
    """Each workload that runs on the site, and the address it has there (as its daemon or its guest says)."""
    found: dict[str, str | None] = {}
    if (container := static_address(site)) is not None:
        found[APP] = container
    if (nic := lxd_nic(site)) is not None:
        found[IP_LXD] = nic.get("ipv4.address")
    for vm in (DHCP_VM, STATIC_VM):
        if vm_runs(site, vm):
            found[vm] = vm_address(site, vm)
    return found


def assert_at(site: str, wanted: dict[str, str], server: DnsServer) -> None:
    """Every workload runs on `site` alone, with its wanted address, answers there, and its record names it."""
    other = "b" if site == "a" else "a"
    assert placed(other) == {}, f"left on site {other}: {placed(other)}"
    assert placed(site) == wanted
    assert {w: answers(a) for w, a in wanted.items()} == dict.fromkeys(wanted, True)
    assert {w: server.read(f"{w}.lab.example.") for w in wanted} == {w: [a] for w, a in wanted.items()}


def homes(dhcp_home: str) -> dict[str, str]:
    return {APP: HOME, IP_LXD: LXD_HOME, DHCP_VM: dhcp_home, STATIC_VM: STATIC_HOME}


def aways(dhcp_home: str) -> dict[str, str]:
    return {APP: AWAY, IP_LXD: LXD_AWAY, DHCP_VM: away(dhcp_home), STATIC_VM: STATIC_AWAY}


def in_drill(address: str) -> str:
    """Where the drill rules put an address of site b: 10.231.32.10 -> 10.231.62.10."""
    _, _, third, last = address.split(".")
    return f"10.231.{int(third) + 30}.{last}"


def clones_up(state_dir: Path, count: int) -> bool:
    """Whether the newest run is a drill with `count` clone steps done."""
    store = Store(f"sqlite:///{state_dir / 'drorch.db'}")
    newest = max(store.runs(), key=lambda r: r.id or 0, default=None)
    if newest is None or newest.operation != Operation.DRILL:
        return False
    steps = store.steps(newest.id or 0)
    return sum(s.action == Action.DRILL and s.state is StepState.SUCCEEDED for s in steps) == count


def point_home(server: DnsServer, dhcp_home: str) -> None:
    """The records as they stood before drorch was ever run: each names its workload at home."""
    for workload, address in homes(dhcp_home).items():
        server.point(workload, address)


def ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_every_kind_answers_at_its_mapped_address_through_failover_drill_disaster_and_home_again(
        run_drorch: Drorch, dns_server: DnsServer, tmp_path: Path, state_dir: Path, estate: str) -> None:
    home, there = homes(estate), aways(estate)
    pb = estate_playbook(tmp_path, dns_server)
    point_home(dns_server, estate)
    ok(run_drorch("validate", str(pb)))
    plan = ok(run_drorch("plan", str(pb))).stdout
    for workload, address in home.items():
        rule = next(r for r in RULES if address.startswith(r.rsplit(".", 1)[0] + "."))
        assert f"    address app-net: {address} -> {there[workload]} (rule {rule})" in plan, plan

    ok(run_drorch("failover", str(pb)))
    assert_at("b", there, dns_server)
    assert reserved("b") == {lab_addresses.IP_VM_MAC: there[DHCP_VM]} and reserved("a") == {}
    steps = json.loads(run_drorch("history", "1", "--json").stdout)["steps"]
    static = next(s for s in steps if s["workload"] == STATIC_VM)
    assert static["outcome"].endswith(f"re-addressed {STATIC_HOME} -> {STATIC_AWAY} inside the guest (exit 0: "
                                      f"now {STATIC_AWAY} via 10.231.42.1)")
    ok(run_drorch("failback", str(pb)))
    assert_at("a", home, dns_server)
    assert reserved("a") == {lab_addresses.IP_VM_MAC: estate} and reserved("b") == {}  # b's went with the guest

    ok(run_drorch("protect", "ship", str(pb)))
    clones = {w: in_drill(a) for w, a in there.items()}
    with drorch_process(state_dir, "drill", str(pb), "--hold-s", "10", "--json") as proc:
        # only once the clones are up do their drill subnets have routes here: none goes off the machine
        wait_until(lambda: clones_up(state_dir, len(clones)), "the clones up and checked", timeout=240)
        assert {w: answers(a) for w, a in clones.items()} == dict.fromkeys(clones, True)
        assert {w: dns_server.read(f"{w}.{DRILL_ZONE}") for w in clones} == {w: [a] for w, a in clones.items()}
        assert_at("a", home, dns_server)  # a drill never touches what runs, nor its records
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    drill = json.loads(out)
    assert drill["state"] == "succeeded", drill
    said = {r["workload"]: [c["said"] for c in r["checks"] if c["check"] == "address"] for r in drill["steps"]
            if r["workload"] in clones}
    assert said == {w: [f"answers on {a}:{PORT}"] for w, a in clones.items()}
    assert {w: dns_server.read(f"{w}.{DRILL_ZONE}") for w in clones} == {w: [] for w in clones}  # torn down

    # Site a answers, so the disaster's fence stops everything there; the copies restart on b from their points,
    # where the DHCP guest's reservation and the static guest's new address come from what the copies say.
    ok(run_drorch("failover", "--disaster", str(pb)))
    assert_at("b", there, dns_server)
    assert reserved("b") == {lab_addresses.IP_VM_MAC: there[DHCP_VM]}
    ok(run_drorch("failback", str(pb)))
    assert_at("a", home, dns_server)
    assert reserved("b") == {}


def last_transition(store: Store, run_id: int) -> tuple[str, str]:
    """The step (by workload) whose state changed last, and that state: where the kill fell."""
    acted = [s for s in store.steps(run_id) if s.started_at is not None]
    step = max(acted, key=lambda s: max(t for t in (s.started_at, s.ended_at) if t is not None))
    return step.workload, str(step.state)


def killed_at_every_boundary(command: list[str], state_dir: Path) -> set[tuple[str, str]]:
    """`command` killed at its first step transition, then `resume` killed at its first transition and at its
    second in turn (the step it takes up recorded running, then done), until a resume completes. Each boundary of
    the run is where one of the processes died. Returns the (step, state) each kill fell on."""
    state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{state_dir / 'drorch.db'}")
    runs_before = len(store.runs())
    seen: set[tuple[str, str]] = set()
    kill_at, argv = 1, command
    for _ in range(60):
        res = subprocess.run([str(DRORCH), *argv], capture_output=True, text=True, cwd=REPO, timeout=300,
                             env=drorch_env(state_dir, kill_at))
        run_id = max(r.id or 0 for r in store.runs())
        if res.returncode == 0:
            assert len(store.runs()) == runs_before + 1
            return seen
        assert res.returncode == -9, res.stdout + res.stderr
        seen.add(last_transition(store, run_id))
        kill_at, argv = 3 - kill_at, ["resume", str(run_id)]
    raise AssertionError(f"still not done after 60 kills: {sorted(seen)}")


def test_killed_at_every_step_boundary_then_resumed_leaves_no_address_reservation_or_record_wrong(
        dns_server: DnsServer, tmp_path: Path, state_dir: Path, estate: str) -> None:
    """A failover and its failback, each killed at every boundary of its run and resumed: every workload once,
    at its right address, the DHCP reservations only where the guest runs, every record naming its workload."""
    pb = estate_playbook(tmp_path, dns_server)
    point_home(dns_server, estate)
    workloads = set(homes(estate))
    for command, site, wanted in ((["failover", str(pb)], "b", aways(estate)),
                                  (["failback", str(pb)], "a", homes(estate))):
        seen = killed_at_every_boundary(command, state_dir)
        assert {w for w, state in seen if state == "running"} >= workloads, seen  # before each move acted
        assert {w for w, state in seen if state == "succeeded"} >= workloads, seen  # and after it
        assert {state for w, state in seen if w not in workloads} >= {"running", "succeeded"}, seen  # the names
        assert_at(site, wanted, dns_server)
        other = "a" if site == "b" else "b"
        assert reserved(site) == {lab_addresses.IP_VM_MAC: wanted[DHCP_VM]} and reserved(other) == {}
