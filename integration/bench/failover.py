"""drorch against the bare operations it orchestrates, on the lab. Prints figures; asserts nothing.

Each round moves the lab VM and the checkpointed container back and forth, alternating drorch and
the bare operation so that both see the same machine state and both directions:
drorch a->b, bare b->a, bare a->b, drorch b->a. Two pairs are measured:
- commands: `drorch failover|failback` against `virsh migrate` and the hand-run docker sequence
  (checkpoint, create, `docker cp` of the checkpoint between helper containers, start from checkpoint),
  each as the processes an operator would run;
- in-process: drorch's engine against the same libvirt / Docker API calls made directly, which
  leaves out the interpreter's start-up and shows what the orchestration itself costs.
Recovery points are measured by points.py.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/failover.py [--rounds N]
(the lab must be up: integration/lab up; `isolate` hides the sites' data, so both sides share nothing)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import libvirt
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.drivers import close_drivers, make_drivers  # noqa: E402
from drorch.drivers.base import Endpoint  # noqa: E402
from drorch.drivers.libvirt._migration import MIGRATE_FLAGS, migrate_params  # noqa: E402
from drorch.engine.runner import Engine  # noqa: E402
from drorch.model.playbook import WorkloadKind  # noqa: E402
from drorch.model.playbook_file import load_playbook  # noqa: E402
from drorch.model.records import Operation, RunState  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402
from integration import lab_base, lab_libvirt, labctl  # noqa: E402

DRORCH = REPO / ".venv" / "bin" / "drorch"
LAB_PLAYBOOK = REPO / "playbooks" / "lab.yaml"
VM, CTR = lab_base.VM_NAME, labctl.CHECKPOINT_CONTAINER
OTHER = {"a": "b", "b": "a"}
Mover = Callable[[str, str], None]  # (source site, target site)


def sub_playbook(tmp: Path, kind: str) -> Path:
    """The lab playbook's one workload of a kind, with site b reached the way the bare calls reach it (plain
    TCP and the Docker socket, not TLS), so that both sides pay for the same transport."""
    pb = yaml.safe_load(LAB_PLAYBOOK.read_text())
    pb["workloads"] = [w for w in pb["workloads"] if w["kind"] == kind and w.get("strategy") != "redeploy"]
    for w in pb["workloads"]:
        w.pop("migration", None)
    (b1,) = pb["sites"]["b"]["hosts"]
    b1.pop("tls", None)
    b1.update(libvirt=labctl.SITES["b"].libvirt_uri, docker=labctl.SITES["b"].docker_url)
    path = tmp / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(pb))
    return path


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench: {what}")


def drorch_command(playbook: Path, state: Path) -> Mover:
    def move(src: str, _dst: str) -> None:
        op = "failover" if src == "a" else "failback"
        res = subprocess.run([str(DRORCH), op, str(playbook)], capture_output=True, text=True,
                             env={"DRORCH_STATE_DIR": str(state), "PATH": "/usr/bin:/bin"})
        check(res.returncode == 0, f"drorch {op} failed: {res.stderr.strip()}")
    return move


def drorch_engine(playbook: Path, state: Path, kind: WorkloadKind) -> Mover:
    pb = load_playbook(playbook)
    store = Store(f"sqlite:///{state / 'engine.db'}")

    def move(src: str, dst: str) -> None:
        drivers = make_drivers({kind})
        try:
            operation = Operation.FAILOVER if src == pb.primary else Operation.FAILBACK
            run = Engine(store, drivers).operate(pb, str(playbook), operation, src, dst)
        finally:
            close_drivers(drivers)
        check(run.state is RunState.SUCCEEDED, f"engine run {run.id} ended {run.state}")
    return move


def mapped_xml(xml: str, src: str, dst: str) -> str:
    """The guest's definition with site src's network and pool names replaced by site dst's, as an operator
    would edit it."""
    s, d = labctl.SITES[src], labctl.SITES[dst]
    return xml.replace(f"network='{s.network}'", f"network='{d.network}'").replace(
        f"pool='{s.pool}'", f"pool='{d.pool}'")


def virsh(uri: str, *args: str) -> str:
    return subprocess.run(["virsh", "-q", "-c", uri, *args], check=True, capture_output=True, text=True).stdout


def virsh_migrate(src: str, dst: str) -> None:
    """dumpxml, edit the names, create the disk's volume on the target, migrate with that XML copying the
    disk, remove the source's volume: what the mapping and a non-shared disk take by hand."""
    s, d = labctl.SITES[src], labctl.SITES[dst]
    xml = virsh(s.libvirt_uri, "dumpxml", "--migratable", VM)
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(mapped_xml(xml, src, dst))
        f.flush()
        virsh(d.libvirt_uri, "vol-create-as", d.pool, lab_libvirt.VM_DISK, f"{lab_libvirt.DISK_MIB}M", "--format",
              "qcow2")
        virsh(s.libvirt_uri, "migrate", "--live", "--p2p", "--persistent", "--undefinesource", "--copy-storage-all",
              "--migrate-disks", "vda", "--xml", f.name, "--persistent-xml", f.name, VM, d.libvirt_uri,
              f"tcp://{d.address}")
        virsh(s.libvirt_uri, "vol-delete", "--pool", s.pool, lab_libvirt.VM_DISK)


def api_migrate(src: str, dst: str) -> None:
    s, d = labctl.SITES[src], labctl.SITES[dst]
    conn, target = libvirt.open(s.libvirt_uri), libvirt.open(d.libvirt_uri)
    try:
        dom = conn.lookupByName(VM)
        xml = mapped_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), src, dst)
        target.storagePoolLookupByName(d.pool).createXML(
            f"<volume><name>{lab_libvirt.VM_DISK}</name><capacity unit='MiB'>{lab_libvirt.DISK_MIB}</capacity>"
            "<target><format type='qcow2'/></target></volume>", 0)
        params = {**migrate_params(Endpoint(dst, d.libvirt_uri, d.address))[0],
                  libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml, libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: xml,
                  libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}
        dom.migrateToURI3(d.libvirt_uri, params, MIGRATE_FLAGS | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
        conn.storagePoolLookupByName(s.pool).storageVolLookupByName(lab_libvirt.VM_DISK).delete(0)
    finally:
        conn.close()
        target.close()


def docker_cli(src: str, dst: str) -> None:
    """What an operator types: checkpoint, create, the checkpoint streamed out of one daemon and into the
    other by `docker cp` through helper containers that bind its folder, start from it, remove the original."""
    s, d = labctl.SITES[src].docker_url, labctl.SITES[dst].docker_url
    ck = f"hand-{time.monotonic_ns()}"

    def dk(host: str, *args: str) -> str:
        return subprocess.run(["docker", "-H", host, *args], check=True, capture_output=True, text=True).stdout.strip()

    src_id = dk(s, "inspect", "-f", "{{.Id}}", CTR)
    dk(s, "checkpoint", "create", CTR, ck)
    dst_id = dk(d, "create", "--name", CTR, "--network", "none", "--memory", labctl.CONTAINER_MEMORY,
                "--label", "drorch.lab=1", labctl.IMAGE)
    s_root, d_root = dk(s, "info", "-f", "{{.DockerRootDir}}"), dk(d, "info", "-f", "{{.DockerRootDir}}")
    out = dk(s, "create", "-v", f"{s_root}/containers/{src_id}/checkpoints/{ck}:/{ck}:ro", labctl.IMAGE)
    into = dk(d, "create", "-v", f"{d_root}/containers/{dst_id}/checkpoints:/checkpoints", labctl.IMAGE)
    subprocess.run(f"docker -H {s} cp {out}:/{ck} - | docker -H {d} cp - {into}:/checkpoints", shell=True,
                   check=True)
    dk(s, "rm", out)
    dk(d, "rm", into)
    dk(d, "start", "--checkpoint", ck, CTR)
    dk(d, "checkpoint", "rm", CTR, ck)
    dk(s, "rm", CTR)


def docker_api(src: str, dst: str) -> None:
    """The same through the Engine API: one archive stream from a helper on one daemon into a helper on the
    other, with no check of what arrived."""
    s = docker.APIClient(base_url=labctl.SITES[src].docker_url, version="auto")
    d = docker.APIClient(base_url=labctl.SITES[dst].docker_url, version="auto")
    ck = f"api-{time.monotonic_ns()}"
    try:
        orig = s.inspect_container(CTR)
        s._raise_for_status(s._post_json(s._url("/containers/{0}/checkpoints", orig["Id"]),
                                         data={"CheckpointID": ck, "Exit": True}))
        new = d.create_container(labctl.IMAGE, name=CTR, labels={"drorch.lab": "1"},
                                 host_config=d.create_host_config(network_mode="none",
                                                                  mem_limit=labctl.CONTAINER_MEMORY))
        s_root, d_root = s.info()["DockerRootDir"], d.info()["DockerRootDir"]
        out = s.create_container(labctl.IMAGE, host_config=s.create_host_config(
            binds=[f"{s_root}/containers/{orig['Id']}/checkpoints/{ck}:/{ck}:ro"]))["Id"]
        into = d.create_container(labctl.IMAGE, host_config=d.create_host_config(
            binds=[f"{d_root}/containers/{new['Id']}/checkpoints:/checkpoints"]))["Id"]
        d.put_archive(into, "/checkpoints", s.get_archive(out, f"/{ck}")[0])
        s.remove_container(out)
        d.remove_container(into)
        d._raise_for_status(d._post(d._url("/containers/{0}/start", new["Id"]), params={"checkpoint": ck}))
        d._raise_for_status(d._delete(d._url("/containers/{0}/checkpoints/{1}", new["Id"], ck)))
        s.remove_container(orig["Id"])
    finally:
        s.close()
        d.close()


Times = dict[str, dict[tuple[str, str], list[float]]]  # name -> (who, direction) -> seconds


def measure(rounds: int, pairs: dict[str, tuple[Mover, Mover]]) -> Times:
    """Every workload starts on site a and is back there after each round."""
    times: Times = {name: {} for name in pairs}
    for r in range(rounds):
        for name, (ours, bare) in pairs.items():
            site = "a"
            line = []
            for who, mover in (("drorch", ours), ("bare", bare), ("bare", bare), ("drorch", ours)):
                direction = f"{site}->{OTHER[site]}"
                start = time.perf_counter()
                mover(site, OTHER[site])
                took = time.perf_counter() - start
                times[name].setdefault((who, direction), []).append(took)
                line.append(f"{who} {direction} {took:.2f}")
                site = OTHER[site]
            print(f"round {r + 1}/{rounds} {name}: {', '.join(line)} s", flush=True)
    return times


def report(rounds: int, times: Times) -> None:
    """Medians per direction, and over both directions together: a TCG guest's migration takes one of two
    durations, so ten moves give a steadier median than five."""
    print(f"\nmedian seconds per move, {rounds} moves each way (ratio = drorch / bare):")
    for name, by in times.items():
        for direction in ("a->b", "b->a", "both"):
            ours, bare = (statistics.median(t for (w, d), ts in by.items() for t in ts
                                            if w == who and direction in (d, "both")) for who in ("drorch", "bare"))
            print(f"  {name:<34} {direction:<5} drorch {ours:6.2f}   bare {bare:6.2f}   ratio {ours / bare:5.2f}")
        if name.startswith("VM"):
            modes(name, by)


def modes(name: str, by: dict[tuple[str, str], list[float]]) -> None:
    """A TCG guest's migration here lasts about 2.0 s or about 2.9 s, for either tool, whichever direction:
    compare like with like, each sample put with the nearer end of the range."""
    everything = [t for ts in by.values() for t in ts]
    middle = (min(everything) + max(everything)) / 2
    for mode, inside in (("short", lambda t: t < middle), ("long", lambda t: t >= middle)):
        ours, bare = ([t for (w, _), ts in by.items() for t in ts if w == who and inside(t)]
                      for who in ("drorch", "bare"))
        if ours and bare:
            print(f"  {name:<34} {mode:<5} drorch {statistics.median(ours):6.2f}   bare "
                  f"{statistics.median(bare):6.2f}   ratio {statistics.median(ours) / statistics.median(bare):5.2f}"
                  f"   ({len(ours)} and {len(bare)} moves)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="", help="measure only the pairs whose name contains this")
    args = ap.parse_args()
    labctl.cmd_up(argparse.Namespace(reset=True))
    time.sleep(3)  # let the guest finish booting before the first migration
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        vm_pb, ctr_pb = sub_playbook(tmp, "vm"), sub_playbook(tmp, "container")
        pairs = {
            "VM live migration, commands": (drorch_command(vm_pb, tmp), virsh_migrate),
            "VM live migration, in-process": (drorch_engine(vm_pb, tmp, WorkloadKind.VM), api_migrate),
            "container checkpoint, commands": (drorch_command(ctr_pb, tmp), docker_cli),
            "container checkpoint, in-process": (drorch_engine(ctr_pb, tmp, WorkloadKind.CONTAINER), docker_api),
        }
        report(args.rounds, measure(args.rounds, {k: v for k, v in pairs.items() if args.only in k}))


if __name__ == "__main__":
    main()
