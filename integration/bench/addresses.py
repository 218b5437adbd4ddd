"""What re-addressing and the DNS cutover add to a failover, per workload, beside the move itself, on the lab.
Prints figures; asserts nothing.

Four containers with static addresses on site a's app-net (10.231.31.0/24), each serving HTTP, move by redeploy to
site b's app-net-dr (10.231.32.0/24) and back, each round, through drorch's engine in-process with a playbook that
maps their addresses, connects to each (`check`) and points its A record at it (`dns`, on a Knot server on
loopback). From the run's steps: each move's time (its mapped address is part of the create body it sends) and the
names step's time per workload. Beside them, the bare calls an operator's script would make per workload: a TCP
connect to the new address, then an RFC 2136 update signed with the same key and a query reading it back
(dnspython); and a DHCP reservation added to and removed from a libvirt network (virNetworkUpdate), what a VM on
DHCP costs on top. Then the lab's VM on DHCP (ip-vm) and its VM that sets its own address (ip-vm-static, with its
agent) move live between site a's app-net (10.231.41.0/24) and site b's app-net-dr (10.231.42.0/24): bare first
(the migration drorch asks libvirt for, its networks mapped, nothing re-addressed: the guest keeps an address that
is wrong there), then by drorch, each way per round.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/addresses.py [--rounds N]
(the lab must be up: integration/lab up)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.tsigkeyring
import dns.update
import docker
import libvirt

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.drivers import close_drivers, make_drivers  # noqa: E402
from drorch.drivers.libvirt._domain_xml import map_domain_xml  # noqa: E402
from drorch.drivers.libvirt._migration import migrate_params  # noqa: E402
from drorch.drivers.libvirt._vm_addresses import LINK_PAUSE_S  # noqa: E402
from drorch.drivers.libvirt._vm_moves import LibvirtMoves  # noqa: E402
from drorch.engine import _step_actions  # noqa: E402
from drorch.engine.runner import Engine  # noqa: E402
from drorch.model.playbook import Mappings, Playbook, WorkloadKind  # noqa: E402
from drorch.model.playbook_file import load_playbook  # noqa: E402
from drorch.model.records import Operation, RunState, StepKind  # noqa: E402
from drorch.reach import host_endpoint  # noqa: E402
from drorch.store.rows import Step  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402
from integration import estate, lab_addresses, lab_base, labctl  # noqa: E402
from integration.bench.failover import check  # noqa: E402
from integration.dns_server import KEY, ZONE, DnsServer, knot  # noqa: E402

COUNT = 4
PORT = 8080
NAMES = [f"ipbench-{i}" for i in range(1, COUNT + 1)]
SERVE = f"httpd -p {PORT} -h /tmp; {lab_base.COUNTER_SCRIPT}"


def address(i: int, site: str) -> str:
    return f"10.231.{31 if site == 'a' else 32}.{40 + i}"


def containers(client: docker.DockerClient, make: bool) -> None:
    for name in NAMES:
        for old in client.containers.list(all=True, filters={"name": f"^{name}$"}):
            old.remove(force=True)
    for i, name in enumerate(NAMES, 1) if make else ():
        client.containers.create(lab_base.IMAGE, ["/bin/sh", "-c", SERVE], name=name, network="app-net",
                                 labels={"drorch.lab": "1"})
        client.api.disconnect_container_from_network(name, "app-net")
        client.api.connect_container_to_network(name, "app-net", ipv4_address=address(i, "a"))
        client.containers.get(name).start()


def playbook(tmp: Path, server: DnsServer) -> Path:
    head = (REPO / "playbooks" / "lab.yaml").read_text().split("# Site b names things differently")[0]
    workloads = "".join(f"  - {{name: {n}, kind: container, strategy: redeploy, check: {{port: {PORT}}}}}\n"
                        for n in NAMES)
    path = tmp / "addresses.yaml"
    path.write_text(head + "mappings:\n  networks: {app-net: app-net-dr}\n  addresses: {10.231.31.0/24: {to: "
                    f"10.231.32.0/24}}}}\nworkloads:\n{workloads}dns: "
                    f"{json.dumps(server.settings(records={n: ['A'] for n in NAMES}))}\n")
    return path


def bare(server: DnsServer, site: str) -> float:
    """Seconds per workload for what a script would do: connect, update the record, read it back."""
    keyring = dns.tsigkeyring.from_text({KEY: server.secret_file.read_text().strip()})
    start = time.perf_counter()
    for i, name in enumerate(NAMES, 1):
        socket.create_connection((address(i, site), PORT), timeout=5).close()
        update = dns.update.UpdateMessage(ZONE, keyring=keyring, keyalgorithm="hmac-sha256")
        update.replace(name, 30, "A", address(i, site))
        check(dns.query.tcp(update, server.address, port=server.port, timeout=5).rcode() == 0, "bare update")
        query = dns.message.make_query(f"{name}.{ZONE}", "A")
        check(bool(dns.query.tcp(query, server.address, port=server.port, timeout=5).answer), "bare read")
    return (time.perf_counter() - start) / COUNT


def reservation_s(rounds: int) -> float:
    """Seconds to add a DHCP reservation to site b's app network and remove it again, as drorch does per VM."""
    conn = libvirt.open(labctl.SITES["b"].libvirt_uri)
    net = conn.networkLookupByName(lab_addresses.LIBVIRT_NETWORKS["b"][0])
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    host = "<host mac='52:54:00:e7:29:ff' ip='10.231.42.250'/>"
    times = []
    try:
        for _ in range(rounds * 5):
            start = time.perf_counter()
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                       host, flags)
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                       host, flags)
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return statistics.median(times)


def operate(store: Store, pb: Playbook, pb_path: Path, kind: WorkloadKind, src: str, dst: str) -> list[Step]:
    """One run of the engine in this process, which must succeed; its steps."""
    drivers = make_drivers({kind})
    try:
        operation = Operation.FAILOVER if src == pb.primary else Operation.FAILBACK
        run = Engine(store, drivers).operate(pb, str(pb_path), operation, src, dst)
    finally:
        close_drivers(drivers)
    steps = store.steps(run.id or 0)
    check(run.state is RunState.SUCCEEDED, f"run {run.id} ended {run.state}: {[s.error for s in steps if s.error]}")
    return steps


def took(step: Step) -> float:
    return (step.ended_at - step.started_at).total_seconds() if step.ended_at and step.started_at else 0.0


def vm_playbook(tmp: Path, vm: str, more: str) -> Path:
    head = (REPO / "playbooks" / "lab.yaml").read_text().split("# Site b names things differently")[0]
    path = tmp / f"{vm}.yaml"
    path.write_text(head + "mappings:\n  networks: {app-net: app-net-dr}\n  addresses: {10.231.41.0/24: {to: "
                    f"10.231.42.0/24}}}}\nworkloads:\n  - {{name: {vm}, kind: vm, strategy: live{more}}}\n")
    return path


def bare_migration(pb_path: Path, vm: str, src: str, dst: str) -> float:
    """Seconds for the live migration drorch asks libvirt for, its networks mapped and nothing more."""
    pb = load_playbook(pb_path)
    m = pb.mappings if src == pb.primary else pb.mappings.inverse()
    target = host_endpoint(pb, dst, f"{dst}1", WorkloadKind.VM)
    source = libvirt.open(labctl.SITES[src].libvirt_uri)
    try:
        dom = source.lookupByName(vm)
        params, flags = migrate_params(target)
        xml = map_domain_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), Mappings(networks=m.networks), None)
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = xml
        start = time.perf_counter()
        dom.migrateToURI3(labctl.SITES[dst].libvirt_uri, params, flags)
        return time.perf_counter() - start
    finally:
        source.close()


@contextlib.contextmanager
def timed(owner: object, name: str, into: list[float]) -> Iterator[None]:
    """Each call of `owner.name` (drorch's own function, in this process) timed into `into`."""
    real = getattr(owner, name)

    def timing(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    setattr(owner, name, timing)
    try:
        yield
    finally:
        setattr(owner, name, real)


def vm_moves(tmp: Path, store: Store, rounds: int, vm: str, more: str) -> tuple[float, float, float]:
    """Median seconds of the bare migrations, of drorch's moves of the VM (started on site a) and of the
    re-addressing inside them (the DHCP guest's settling: reservations made and removed while its link is down;
    the other's `reip` through its agent), each way per round; bare and drorch in turn, so that both see the
    same machine."""
    estate.remove_vms()
    if vm == estate.DHCP_VM:
        estate.start_dhcp_vm()
    else:
        estate.start_static_vm()
    pb_path = vm_playbook(tmp, vm, more)
    pb = load_playbook(pb_path)
    bare: list[float] = []
    moved: list[float] = []
    readdressing: list[float] = []
    per_move: list[float] = []
    try:
        with timed(LibvirtMoves, "settle", readdressing), timed(_step_actions, "readdress_inside", readdressing):
            for _ in range(rounds):
                bare += [bare_migration(pb_path, vm, "a", "b"), bare_migration(pb_path, vm, "b", "a")]
                for src, dst in (("a", "b"), ("b", "a")):
                    calls = len(readdressing)
                    moved += [took(s) for s in operate(store, pb, pb_path, WorkloadKind.VM, src, dst)
                              if s.workload == vm]
                    per_move.append(sum(readdressing[calls:]))
    finally:
        estate.remove_vms()
    return statistics.median(bare), statistics.median(moved), statistics.median(per_move)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    a = docker.DockerClient(base_url=labctl.SITES["a"].docker_url)
    b = docker.DockerClient(base_url=labctl.SITES["b"].docker_url)
    moves: list[float] = []
    names: list[float] = []
    scripts: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, knot(Path(tmp) / "knot") as server:
        vm_store = Store(f"sqlite:///{Path(tmp) / 'vm.db'}")
        vms = {"on DHCP (link down, reservation made here and removed at home, link up)":
               vm_moves(Path(tmp), vm_store, rounds, estate.DHCP_VM, ""),
               "setting its own address (reip through its agent once it landed)":
               vm_moves(Path(tmp), vm_store, rounds, estate.STATIC_VM,
                        f", reip: {{run: {json.dumps(['/bin/sh', '-c', estate.REIP])}}}")}
        containers(b, make=False)
        containers(a, make=True)
        pb_path = playbook(Path(tmp), server)
        pb = load_playbook(pb_path)
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            for _ in range(rounds):
                for src, dst in (("a", "b"), ("b", "a")):
                    for s in operate(store, pb, pb_path, WorkloadKind.CONTAINER, src, dst):
                        if s.kind == StepKind.NAMES:
                            names.append(took(s) / COUNT)
                        else:
                            moves.append(took(s))
                    scripts.append(bare(server, dst))
        finally:
            containers(a, make=False)
            containers(b, make=False)
            a.close()
            b.close()
    print(f"addresses and names, {COUNT} containers with static addresses across subnets, {rounds} rounds each "
          "way (median, seconds per workload):")
    print(f"  the move itself (redeploy, its mapped address in the create body): {statistics.median(moves):.3f}")
    print(f"  drorch's names step (connect at the new address, A record updated and read back): "
          f"{statistics.median(names):.3f} (slowest {max(names):.3f})")
    print(f"  the same calls bare (socket connect, dnspython update and query):   {statistics.median(scripts):.3f}")
    print(f"  a VM on DHCP, its reservation added and removed (virNetworkUpdate): {reservation_s(rounds):.3f}")
    print(f"VMs moving live across subnets, {rounds} rounds each way (median, seconds; bare: the same migration, "
          "networks mapped, the guest not re-addressed):")
    for what, (bare_s, drorch_s, readdress_s) in vms.items():
        print(f"  a VM {what}: bare {bare_s:.3f}, drorch's move {drorch_s:.3f}, of which re-addressing "
              f"{readdress_s:.3f}")
    print(f"  (a DHCP guest's link is held down {LINK_PAUSE_S:.3f} s for its client to see it)")


if __name__ == "__main__":
    main()
