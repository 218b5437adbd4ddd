"""Addresses and names at the DR site, on the lab: a container with a static address on site a's app-net
(10.231.31.0/24) lands on site b's app-net-dr (10.231.32.0/24) with the mapped address, answers there, and its
record on a real authoritative server (Knot, on loopback) follows it; it comes home with exactly its own."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.dns_server import LOCKED, DnsServer
from integration.estate import (
    APP,
    AWAY,
    COUNTER,
    COUNTER_AWAY,
    COUNTER_HOME,
    HOME,
    PORT,
    answers,
    client,
    remove_containers,
    start_containers,
    static_address,
)
from integration.support.lab_views import DRORCH, LAB_PLAYBOOK, REPO, Drorch, drorch_env, wait_until


@pytest.fixture
def ipapp(lab: None) -> Iterator[None]:
    """ipapp (serving) at 10.231.31.10 and ipcount (counting) at .11 on site a's app-net; gone afterwards."""
    start_containers()
    wait_until(lambda: max(counts("a"), default=0) >= 3, f"{COUNTER}'s counter")
    yield
    remove_containers()


def counts(site: str) -> list[int]:
    with client(site) as c:
        return [int(n) for n in re.findall(r"^count (\d+)", c.containers.get(COUNTER).logs().decode(), re.M)]


def inside(site: str) -> str:
    """The IPv4 address ipcount's own network stack has."""
    with client(site) as c:
        out = c.containers.get(COUNTER).exec_run(["ip", "-4", "-o", "addr", "show", "eth0"]).output.decode()
    return out.split(" inet ")[1].split("/")[0]


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
    killed = subprocess.run([str(DRORCH), "failover", str(pb)], capture_output=True, text=True,
                            env=drorch_env(state_dir, boundary), cwd=REPO, timeout=300)
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
