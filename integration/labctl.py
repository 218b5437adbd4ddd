"""The two-site lab: site A (primary) and site B (secondary) on one machine.

Each site has its own libvirtd (lab_libvirt: a private mount and UTS namespace, so libvirt sees two hosts),
its own dockerd (here) and Podman service (lab_podman), both with CRIU. The lab runs one VM counting on
its serial console, and two Docker and two Podman containers of a busybox image printing a counter, on
site A. Every daemon is recorded by pid and stopped by that pid only; this file holds the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages
from integration import lab_addresses, lab_etcd, lab_libvirt, lab_lxd, lab_partition, lab_pki, lab_podman
from integration.lab_base import (
    CONTAINER_MEMORY,
    COUNTER_SCRIPT,
    CRIU_BIN,
    IMAGE,
    LAB,
    OUTSIDE,
    PKI,
    SITES,
    Site,
    image_tar,
    log,
    outside,
    read_pid,
    stop_pid,
    wait_for,
)

CHECKPOINT_CONTAINER = "lab-counter"
REDEPLOY_CONTAINER = "lab-redeploy"
CONTAINERS = (CHECKPOINT_CONTAINER, REDEPLOY_CONTAINER)
DAEMONS = ("virtlogd", "libvirtd", "dockerd", lab_podman.DAEMON, lab_lxd.DAEMON)
# What drorch must never see: each site's Docker data root (checkpoints, volumes), Podman storage, libvirt's and
# LXD's (drorch reaches LXD over HTTPS, pinning the certificate the lab copies out of LXD_DIR).
HIDDEN = ("docker/data", lab_podman.ROOT, "pool", "lib", lab_lxd.DIR)


# --- daemons -----------------------------------------------------------------------------------------------


def start_docker(site: Site) -> None:
    if read_pid(site.pidfile("dockerd")):
        return
    for sub in ("docker/data", "docker/exec"):
        (site.root / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=f"{CRIU_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
    log(f"starting dockerd on site {site.name}")
    with (site.root / "dockerd.log").open("ab") as out:
        subprocess.Popen(
            [
                *outside(), "dockerd", "--experimental",
                "-H", site.docker_url,
                "--data-root", str(site.root / "docker" / "data"),
                "--exec-root", str(site.root / "docker" / "exec"),
                "--pidfile", str(site.pidfile("dockerd")),
                "--bridge", "none", "--iptables=false", "--ip-masq=false",
                *(["-H", site.docker_tls_url, "--tlsverify", f"--tlscacert={PKI / lab_pki.CA}",
                   f"--tlscert={PKI / lab_pki.SERVER}", f"--tlskey={PKI / lab_pki.SERVER_KEY}"]
                  if site.tls_docker_port else []),
            ],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    wait_for(lambda: docker.DockerClient(base_url=site.docker_url).ping(), f"dockerd on site {site.name}")


# --- workloads ---------------------------------------------------------------------------------------------


def ensure_workloads(force: bool = False, vms: int = 1, containers_only: bool = False) -> None:
    """The VMs and the Docker and Podman containers on site A, unless they already run somewhere in the lab.
    With force, they are made new; with containers_only too, only the containers are, and the VMs stay where
    they are (a test that touches no VM need not wait for one to boot)."""
    a = SITES["a"]
    conns = {s.name: libvirt.open(s.libvirt_uri) for s in SITES.values()}
    clients = {s.name: docker.DockerClient(base_url=s.docker_url) for s in SITES.values()}
    try:
        if force and not containers_only:
            lab_libvirt.remove_all_vms(conns, False)
        for vm in lab_libvirt.vm_names(vms):  # first: the VMs boot while the containers are made
            lab_libvirt.ensure_vm(conns, vm)
        if force:
            remove_containers(clients)
            for site in SITES.values():
                lab_podman.remove_all(site, images=False)
                lab_lxd.remove_all(site)
        lab_podman.ensure_workloads(a)
        lab_lxd.ensure_workloads(a)
        ca = clients["a"]
        if not ca.images.list(name=IMAGE):
            log(f"importing {IMAGE} on site a")
            repo, tag = IMAGE.split(":")
            ca.api.import_image_from_data(
                image_tar(), repository=repo, tag=tag, changes=["CMD " + json.dumps(["/bin/sh", "-c", COUNTER_SCRIPT])]
            )
        for name in CONTAINERS:
            if not any(c.containers.list(filters={"name": f"^{name}$"}) for c in clients.values()):
                for client in clients.values():  # stopped copies left by an earlier lab
                    for stale in client.containers.list(all=True, filters={"name": f"^{name}$"}):
                        stale.remove(force=True)
                log(f"starting container {name} on site a")
                ca.containers.run(IMAGE, name=name, detach=True, network_mode="none", mem_limit=CONTAINER_MEMORY,
                                  labels={"drorch.lab": "1"})
        for vm in lab_libvirt.vm_names(vms):
            wait_for(lambda vm=vm: "count " in a.serial_log(vm).read_text(errors="replace"), f"{vm} counter")
    finally:
        for c in conns.values():
            c.close()
        for d in clients.values():
            d.close()


def remove_containers(clients: dict[str, docker.DockerClient], everything: bool = False) -> None:
    """The lab's Docker containers and image, or with everything=True whatever runs on the lab's dockerds (they
    are all ours)."""
    for name, client in clients.items():
        # Everything made from the lab's image goes with it: the lab's containers, and those of tests and moves.
        for c in client.containers.list(all=True, filters={} if everything else {"ancestor": IMAGE}):
            log(f"removing container {c.name} from site {name}")
            c.remove(force=True)
        for img in client.images.list(name=IMAGE):
            client.images.remove(img.id, force=True)


# --- commands ----------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> None:
    LAB.mkdir(parents=True, exist_ok=True)
    if not (CRIU_BIN / "criu").exists():
        raise SystemExit("[lab] CRIU is not installed: run integration/setup.sh first")
    lab_libvirt.build_guest()
    lab_pki.ensure(PKI)
    lab_partition.ensure()
    lab_etcd.up()
    for site in SITES.values():
        lab_libvirt.start_libvirt(site)
        start_docker(site)
        lab_addresses.ensure_docker(site)
        lab_podman.start(site)
        lab_lxd.start(site)
        lab_lxd.ensure_app_network(site)
        lab_libvirt.ensure_site_names(site)
        lab_addresses.ensure_libvirt(site)
    ensure_workloads(force=args.reset, vms=getattr(args, "vms", 1),
                     containers_only=getattr(args, "containers_only", False))
    log("up")


def cmd_reset(args: argparse.Namespace) -> None:
    args.reset = True
    cmd_up(args)


def cmd_down(_: argparse.Namespace) -> None:
    conns, clients = {}, {}
    for site in SITES.values():
        if read_pid(site.pidfile("libvirtd")):
            conns[site.name] = libvirt.open(site.libvirt_uri)
        if read_pid(site.pidfile("dockerd")):
            clients[site.name] = docker.DockerClient(base_url=site.docker_url)
    lab_libvirt.remove_all_vms(conns, True)
    remove_containers(clients, True)
    for client in clients.values():
        lab_addresses.remove_docker(client)
    for conn in conns.values():
        lab_libvirt.remove_site_names(conn)
    for site in SITES.values():
        lab_podman.remove_all(site, images=True)
        lab_podman.stop(site)
        lab_lxd.remove_all(site)
        lab_lxd.stop(site)
        for daemon in ("dockerd", "libvirtd", "virtlogd"):
            stop_pid(site.pidfile(daemon), f"{daemon} of site {site.name}")
    lab_etcd.down()
    lab_partition.down()
    log("down")


def cmd_stop(args: argparse.Namespace) -> None:
    """Stop one daemon of one site: how tests make a site unreachable."""
    site = SITES[args.site]
    stop_pid(site.pidfile(args.daemon), f"{args.daemon} of site {site.name}")
    if args.daemon == "dockerd":
        release_mounts(site.root / "docker")


def release_mounts(root: Path) -> None:
    """Unmount what a dockerd stopped mid-transfer left mounted under its data root (the root file system of
    a container whose archive it was serving), as the machine's reboot would: the daemon started again could
    not remove that container otherwise ("device or resource busy")."""
    pid = os.environ.get(OUTSIDE) or "self"
    points = [line.split()[4] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
    for point in reversed([p for p in points if p.startswith(f"{root}/")]):
        log(f"unmounting {point}, left by a stopped dockerd")
        subprocess.run([*outside(), "umount", "-l", point], check=False, capture_output=True)


def remove_extra_vms() -> None:
    """The VMs that `lab up --vms N` started past the lab's own, from both sites."""
    conns = {s.name: libvirt.open(s.libvirt_uri) for s in SITES.values()}
    try:
        lab_libvirt.remove_vms(conns, keep=1)
    finally:
        for c in conns.values():
            c.close()


@contextlib.contextmanager
def held_still(site_name: str, daemon: str) -> Iterator[None]:
    """One daemon of a site stopped (SIGSTOP, by its recorded pid) and let go again: a site that answers late."""
    pid = read_pid(SITES[site_name].pidfile(daemon))
    if pid is None:
        raise SystemExit(f"[lab] {daemon} of site {site_name} does not run")
    log(f"holding {daemon} of site {site_name} still (pid {pid})")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        log(f"{daemon} of site {site_name} goes on")


def cmd_lose(args: argparse.Namespace) -> None:
    """Site lost: its daemons stop (dockerd takes its containers down), its guests die with them, and so does
    the etcd member beside it."""
    site = SITES[args.site]
    lab_etcd.stop(site.name)
    lab_podman.lose(site)
    lab_lxd.stop(site)
    for daemon in ("dockerd", "libvirtd"):
        stop_pid(site.pidfile(daemon), f"{daemon} of site {site.name}")
    for pidfile in (site.root / "run" / "qemu").glob("*.pid"):
        if pidfile.name != "driver.pid":
            stop_pid(pidfile, f"guest {pidfile.stem} of site {site.name}")


def cmd_start(args: argparse.Namespace) -> None:
    site = SITES[args.site]
    if args.daemon == "dockerd":
        start_docker(site)
    elif args.daemon == lab_podman.DAEMON:
        lab_podman.start(site)
    elif args.daemon == lab_lxd.DAEMON:
        lab_lxd.start(site)
    else:
        lab_libvirt.start_libvirt(site)


def cmd_isolate(args: argparse.Namespace) -> int:
    """Run a command as drorch runs in production, on a third machine: in a private mount namespace where
    every site's data (Docker data roots, libvirt storage) is an empty read-only tmpfs. Only the daemons'
    APIs reach it. This process stays outside, so the lab can still start daemons where their data is."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("[lab] isolate: no command given")
    hide = " && ".join(f"mount -t tmpfs -o ro,size=1m,mode=0 drorch-hidden {site.root / sub}"
                       for site in SITES.values() for sub in HIDDEN if (site.root / sub).is_dir())
    env = {**os.environ, OUTSIDE: str(os.getpid())}
    script = f'{hide} && exec "$@"' if hide else 'exec "$@"'
    return subprocess.call(["unshare", "-m", "--propagation", "private", "sh", "-ec", script, "sh", *command],
                           env=env)


def isolated() -> bool:
    """Whether this process is isolated from the sites' data as `lab isolate` makes it."""
    return all(not any((site.root / sub).iterdir()) for site in SITES.values() for sub in HIDDEN
               if (site.root / sub).is_dir())


def status() -> dict[str, object]:
    out: dict[str, object] = {}
    for site in SITES.values():
        info: dict[str, object] = {
            "libvirt": site.libvirt_uri,
            "docker": site.docker_url,
            "podman": lab_podman.url(site),
            "daemons": {d: read_pid(site.pidfile(d)) for d in DAEMONS},
        }
        if read_pid(site.pidfile("libvirtd")):
            conn = libvirt.open(site.libvirt_uri)
            # Listed active in one call: a helper domain that ends meanwhile (a merge's) is never asked after it went.
            info["vms"] = sorted(d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
            conn.close()
        if read_pid(site.pidfile("dockerd")):
            client = docker.DockerClient(base_url=site.docker_url)
            info["containers"] = sorted(c.name for c in client.containers.list())
            client.close()
        if read_pid(site.pidfile(lab_podman.DAEMON)):
            info["podman_containers"] = lab_podman.containers(site)
        if read_pid(site.pidfile(lab_lxd.DAEMON)):
            info["lxd_instances"] = lab_lxd.instances(site)
        out[site.name] = info
    return out


def cmd_status(args: argparse.Namespace) -> None:
    st = status()
    if args.json:
        print(json.dumps(st, indent=2))
        return
    for name, info in st.items():
        assert isinstance(info, dict)
        daemons = ", ".join(f"{d}={'pid ' + str(p) if p else 'down'}" for d, p in info["daemons"].items())
        print(f"site {name}: {daemons}")
        print(f"  vms: {', '.join(info.get('vms', [])) or '-'}")
        print(f"  containers: {', '.join(info.get('containers', [])) or '-'}")
        print(f"  podman containers: {', '.join(info.get('podman_containers', [])) or '-'}")


def main(argv: list[str] | None = None) -> int | None:
    if os.geteuid() != 0:
        raise SystemExit("[lab] run as root")
    p = argparse.ArgumentParser(prog="integration/lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="install, start both sites and the lab workloads (idempotent)")
    up.add_argument("--reset", action="store_true", help="recreate the workloads on site A")
    up.add_argument("--vms", type=int, default=1, help="how many VMs run on site A (lab-vm, lab-vm-2, ...)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("reset", help="recreate the workloads fresh on site A").set_defaults(func=cmd_reset)
    sub.add_parser("down", help="remove the workloads and stop every lab daemon").set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="daemons and workloads per site")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    for name, func in (("stop", cmd_stop), ("start", cmd_start)):
        sp = sub.add_parser(name, help=f"{name} one daemon of one site")
        sp.add_argument("site", choices=sorted(SITES))
        sp.add_argument("daemon", choices=["libvirtd", "dockerd", lab_podman.DAEMON, lab_lxd.DAEMON])
        sp.set_defaults(func=func)
    lose = sub.add_parser("lose", help="lose a site: its daemons stop and its guests die")
    lose.add_argument("site", choices=sorted(SITES))
    lose.set_defaults(func=cmd_lose)
    cut = sub.add_parser("cut", help="cut every path between two places (site a, site b, the witness) on loopback")
    cut.add_argument("place", choices=sorted(lab_partition.PLACES))
    cut.add_argument("other", choices=sorted(lab_partition.PLACES))
    cut.set_defaults(func=lambda a: lab_partition.cut(a.place, a.other))
    sub.add_parser("heal", help="remove every cut").set_defaults(func=lambda _a: lab_partition.heal())
    iso = sub.add_parser("isolate", help="run a command that sees the sites only through their APIs")
    iso.add_argument("command", nargs=argparse.REMAINDER)
    iso.set_defaults(func=cmd_isolate)
    args = p.parse_args(argv)
    return args.func(args)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
