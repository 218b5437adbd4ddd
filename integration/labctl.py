"""The two-site lab: site A (primary) and site B (secondary) on one machine.

Each site has its own libvirtd (QEMU driver) in a private mount and UTS namespace, so libvirt sees two
hosts, and its own dockerd and Podman service (lab_podman) with CRIU. The lab builds a tiny guest (Debian
kernel + busybox initramfs printing a counter on the serial console) and a busybox container image
printing a counter, then runs one VM, two Docker containers and two Podman containers on site A. Every
daemon is recorded by pid and stopped by that pid only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import docker
import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages
from integration import lab_pki, lab_podman
from integration.lab_base import (
    CONTAINER_MEMORY,
    COUNTER_SCRIPT,
    CRIU_BIN,
    IMAGE,
    LAB,
    OUTSIDE,
    PKI,
    SITES,
    VM_NAME,
    Site,
    image_tar,
    log,
    outside,
    read_pid,
    run,
    stop_pid,
    wait_for,
)

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions anyway

GUEST = LAB / "guest"
VM_DISK = f"{VM_NAME}.qcow2"  # in site a's pool; a move takes it along
CHECKPOINT_CONTAINER = "lab-counter"
REDEPLOY_CONTAINER = "lab-redeploy"
CONTAINERS = (CHECKPOINT_CONTAINER, REDEPLOY_CONTAINER)
SERIAL_LOG = f"/var/log/libvirt/qemu/{VM_NAME}.serial"
# Folders that each site's libvirtd sees privately: (path inside the namespace, folder under the site).
PRIVATE = (
    ("/run/libvirt", "run"),
    ("/var/lib/libvirt", "lib"),
    ("/var/log/libvirt", "log"),
    ("/var/cache/libvirt", "cache"),
    ("/etc/libvirt", "etc"),
)


DAEMONS = ("virtlogd", "libvirtd", "dockerd", lab_podman.DAEMON)
# What drorch must never see: each site's Docker data root (checkpoints, volumes), Podman storage and libvirt's.
HIDDEN = ("docker/data", lab_podman.ROOT, "pool", "lib")


# --- guest and image ---------------------------------------------------------------------------------------


# Loaded in this order by the guest's /init: the Debian kernel builds virtio-blk as modules.
GUEST_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
                 "virtio_blk")
# Counts once a second on the serial console and keeps the count on its disk (/dev/vda, when it has one),
# where it starts from at boot: a disk that did not travel shows as a counter that starts from 1 again.
GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
for m in MODULES; do insmod /lib/modules/$m.ko 2>/dev/null; done
for t in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
i=0
if [ -b /dev/vda ]; then i=$(head -c 32 /dev/vda | tr -dc 0-9); i=${i:-0}; echo "disk $i" > /dev/ttyS0; fi
while true; do
  i=$((i+1)); echo "count $i" > /dev/ttyS0
  [ -b /dev/vda ] && printf '%-31s\\n' "$i" | dd of=/dev/vda bs=32 count=1 conv=notrunc,fsync 2>/dev/null
  sleep 1
done
""".replace("MODULES", " ".join(GUEST_MODULES))
DISK_MIB = 16


def build_guest() -> None:
    """Debian kernel plus a busybox initramfs (with the virtio-blk modules) running GUEST_INIT."""
    kernel, initrd, modules = GUEST / "vmlinuz", GUEST / "initrd-disk.gz", GUEST / "modules"
    if kernel.exists() and initrd.exists():
        return
    GUEST.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if not kernel.exists() or not modules.is_dir():
            log("fetching a Debian kernel for the guest")
            deps = run(["apt-cache", "depends", "linux-image-amd64"]).stdout
            pkg = next(
                line.split(":", 1)[1].strip()
                for line in deps.splitlines()
                if line.strip().startswith("Depends:") and "linux-image-" in line
            )
            run(["apt-get", "download", pkg], cwd=t)
            deb = next(t.glob("linux-image-*.deb"))
            run(["dpkg-deb", "-x", str(deb), str(t / "x")])
            shutil.copy(next((t / "x" / "boot").glob("vmlinuz-*")), kernel)
            modules.mkdir(exist_ok=True)
            for name in GUEST_MODULES:
                shutil.copy(next((t / "x" / "lib" / "modules").rglob(f"{name}.ko")), modules / f"{name}.ko")
        root = t / "initramfs"
        for d in ("bin", "proc", "sys", "dev", "lib"):
            (root / d).mkdir(parents=True)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        shutil.copytree(modules, root / "lib" / "modules")
        (root / "init").write_text(GUEST_INIT)
        (root / "init").chmod(0o755)
        files = subprocess.run(
            ["find", "."], cwd=root, check=True, capture_output=True
        ).stdout
        cpio = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files, check=True, capture_output=True
        ).stdout
        subprocess.run(["gzip", "-9"], input=cpio, check=True, stdout=initrd.open("wb"))
    log(f"guest ready in {GUEST}")


# --- daemons -----------------------------------------------------------------------------------------------


def write_libvirt_config(site: Site) -> None:
    etc = site.root / "etc"
    if not (etc / "libvirtd.conf").exists():
        shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True)
        # No autostarted NAT network: the lab sends nothing to private ranges.
        shutil.rmtree(etc / "qemu" / "networks" / "autostart", ignore_errors=True)
    host_uuid = site.root / "host-uuid"
    if not host_uuid.exists():
        host_uuid.write_text(str(uuid.uuid4()))
    tls = (
        f'listen_tls = 1\ntls_port = "{site.tls_libvirt_port}"\nauth_tls = "none"\n'
        f'key_file = "{PKI / lab_pki.SERVER_KEY}"\ncert_file = "{PKI / lab_pki.SERVER}"\n'
        f'ca_file = "{PKI / lab_pki.CA}"\n'
        if site.tls_libvirt_port else "listen_tls = 0\n")
    (etc / "libvirtd.conf").write_text(
        tls +
        "listen_tcp = 1\n"
        f'tcp_port = "{site.libvirt_port}"\n'
        f'listen_addr = "{site.address}"\n'
        'auth_tcp = "none"\n'
        f'host_uuid = "{host_uuid.read_text().strip()}"\n'
    )
    lo, hi = site.migration_ports
    (etc / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
        'security_driver = "none"\n'
        f"migration_port_min = {lo}\nmigration_port_max = {hi}\n"
        # Migration streams in and out of either site may be encrypted (migration: {tls: true}).
        f'migrate_tls_x509_cert_dir = "{PKI}"\nmigrate_tls_x509_verify = 1\n'
    )


def namespace_prefix(site: Site) -> list[str] | None:
    """nsenter into the site's namespace while one of its processes lives, else None."""
    for daemon in ("virtlogd", "libvirtd"):
        pid = read_pid(site.pidfile(daemon))
        if pid is not None:
            return ["nsenter", "-t", str(pid), "-m", "-u"]
    return None


def start_libvirt(site: Site) -> None:
    if read_pid(site.pidfile("libvirtd")) and read_pid(site.pidfile("virtlogd")):
        return
    for _, sub in PRIVATE:
        (site.root / sub).mkdir(parents=True, exist_ok=True)
    (site.root / "log" / "qemu").mkdir(exist_ok=True)
    for target, _ in PRIVATE:
        Path(target).mkdir(parents=True, exist_ok=True)
    write_libvirt_config(site)
    steps = []
    if not read_pid(site.pidfile("virtlogd")):
        steps.append(f"virtlogd -d -p {site.pidfile('virtlogd')}")
    if not read_pid(site.pidfile("libvirtd")):
        steps.append(f"libvirtd -d --listen -p {site.pidfile('libvirtd')}")
    script = " && ".join(steps)
    prefix = namespace_prefix(site)
    if prefix is None:  # a new namespace: what an earlier one left in its run folder is stale
        shutil.rmtree(site.root / "run", ignore_errors=True)
        (site.root / "run").mkdir()
        mounts = " && ".join(f"mount --bind {site.root / sub} {target}" for target, sub in PRIVATE)
        script = f"{mounts} && hostname drorch-site-{site.name} && {script}"
        prefix = [*outside(), "unshare", "-m", "-u", "--propagation", "private"]
    log(f"starting libvirt on site {site.name}")
    run([*prefix, "sh", "-ec", script])
    wait_for(lambda: libvirt.open(site.libvirt_uri).close() == 0, f"libvirtd on site {site.name}", 20)


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


def vm_names(count: int) -> list[str]:
    """The lab's VMs: lab-vm, then lab-vm-2, lab-vm-3... when more are asked for (`lab up --vms N`)."""
    return [VM_NAME, *(f"{VM_NAME}-{i}" for i in range(2, count + 1))]


def disk_of(vm: str) -> str:
    return f"{vm}.qcow2"


def domain_xml(vm: str = VM_NAME) -> str:
    return f"""<domain type='qemu'>
  <name>{vm}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{GUEST / 'vmlinuz'}</kernel>
    <initrd>{GUEST / 'initrd-disk.gz'}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='{SITES["a"].pool}' volume='{disk_of(vm)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'><source network='{SITES["a"].network}'/><model type='virtio'/></interface>
    <serial type='file'><source path='/var/log/libvirt/qemu/{vm}.serial'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def remove_stale_bridge(site: Site) -> None:
    """A libvirtd killed with its network up (`lab lose`, a crash) leaves the bridge behind, and
    libvirt then refuses to create the network again."""
    if Path("/sys/class/net", site.bridge).exists():
        log(f"removing bridge {site.bridge} left by an earlier libvirtd of site {site.name}")
        subprocess.run(["ip", "link", "delete", site.bridge], check=True)


def ensure_site_names(site: Site) -> None:
    """The site's own network and storage pool: site b names them differently from site a."""
    conn = libvirt.open(site.libvirt_uri)
    try:
        if site.network not in conn.listNetworks() + conn.listDefinedNetworks():
            log(f"defining network {site.network} on site {site.name}")
            conn.networkDefineXML(
                f"<network><name>{site.network}</name><bridge name='{site.bridge}' stp='off'/></network>")
        net = conn.networkLookupByName(site.network)
        if not net.isActive():
            remove_stale_bridge(site)
            net.create()
        if site.pool not in conn.listStoragePools() + conn.listDefinedStoragePools():
            log(f"defining storage pool {site.pool} on site {site.name}")
            (site.root / "pool").mkdir(exist_ok=True)
            conn.storagePoolDefineXML(f"<pool type='dir'><name>{site.pool}</name><target><path>"
                                      f"{site.root / 'pool'}</path></target></pool>")
        pool = conn.storagePoolLookupByName(site.pool)
        if not pool.isActive():
            pool.create()
    finally:
        conn.close()


def remove_site_names(conn: libvirt.virConnect) -> None:
    for net in conn.listAllNetworks():
        if net.isActive():
            net.destroy()
        net.undefine()
    for pool in conn.listAllStoragePools():
        if pool.isActive():
            pool.destroy()
        pool.undefine()


def ensure_workloads(force: bool = False, vms: int = 1) -> None:
    """The VMs and the Docker and Podman containers on site A, unless they already run somewhere in the lab."""
    a = SITES["a"]
    conns = {s.name: libvirt.open(s.libvirt_uri) for s in SITES.values()}
    clients = {s.name: docker.DockerClient(base_url=s.docker_url) for s in SITES.values()}
    try:
        if force:
            remove_workloads(conns, clients)
            for site in SITES.values():
                lab_podman.remove_all(site, images=False)
        lab_podman.ensure_workloads(a)
        for vm in vm_names(vms):
            ensure_vm(conns, vm)
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
        for vm in vm_names(vms):
            wait_for(lambda vm=vm: "count " in a.serial_log(vm).read_text(errors="replace"), f"{vm} counter")
    finally:
        for c in conns.values():
            c.close()
        for d in clients.values():
            d.close()


def ensure_vm(conns: dict[str, libvirt.virConnect], vm: str) -> None:
    """A lab VM running somewhere: started where it is defined, else defined on site a with a new disk."""
    if any(_running(c, vm) for c in conns.values()):
        return
    home = next((c for c in conns.values() if vm in c.listDefinedDomains()), conns["a"])
    log(f"starting {vm} on {home.getHostname()}")
    if home is conns["a"]:
        ensure_disk(home, disk_of(vm))
        if vm not in home.listDefinedDomains():
            home.defineXML(domain_xml(vm))
    home.lookupByName(vm).create()


def remove_vms(conns: dict[str, libvirt.virConnect], keep: int) -> None:
    """The VMs past the first `keep` that `lab up --vms N` started, and their disks."""
    extra = set(vm_names(64)[keep:])
    for conn in conns.values():
        for dom in conn.listAllDomains():
            if dom.name() in extra:
                log(f"removing VM {dom.name()}")
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
        remove_disks(conn, tuple(disk_of(vm) for vm in extra))
    for site in SITES.values():
        for vm in extra:
            site.serial_log(vm).unlink(missing_ok=True)


def ensure_disk(conn: libvirt.virConnect, disk: str = VM_DISK) -> None:
    """A VM's empty qcow2 disk in site a's pool, made through libvirt's storage API."""
    pool = conn.storagePoolLookupByName(SITES["a"].pool)
    pool.refresh(0)
    if disk not in pool.listVolumes():
        pool.createXML(f"<volume><name>{disk}</name><capacity unit='MiB'>{DISK_MIB}</capacity>"
                       "<target><format type='qcow2'/></target></volume>", 0)


def remove_disks(conn: libvirt.virConnect, prefixes: tuple[str, ...] = (VM_NAME,)) -> None:
    """The VMs' disks, their copies and recovery points, wherever a move or a protection left them."""
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        pool.refresh(0)
        for vol in pool.listAllVolumes():
            if vol.name().startswith(prefixes):
                vol.delete(0)


def _running(conn: libvirt.virConnect, name: str) -> bool:
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def remove_workloads(
    conns: dict[str, libvirt.virConnect], clients: dict[str, docker.DockerClient], everything: bool = False
) -> None:
    """The lab's workloads, or with everything=True whatever runs on the lab's daemons (they are all ours)."""
    for name, conn in conns.items():
        for dom in conn.listAllDomains():
            if not everything and not dom.name().startswith(VM_NAME):
                continue
            log(f"removing VM {dom.name()} from site {name}")
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        remove_disks(conn)
    for name, client in clients.items():
        # Everything made from the lab's image goes with it: the lab's containers, and those of tests and moves.
        for c in client.containers.list(all=True, filters={} if everything else {"ancestor": IMAGE}):
            log(f"removing container {c.name} from site {name}")
            c.remove(force=True)
        for site in SITES.values():
            if site.name == name:
                for serial in site.serial_log().parent.glob(f"{VM_NAME}*.serial"):
                    serial.unlink()
        for img in client.images.list(name=IMAGE):
            client.images.remove(img.id, force=True)


# --- commands ----------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> None:
    LAB.mkdir(parents=True, exist_ok=True)
    if not (CRIU_BIN / "criu").exists():
        raise SystemExit("[lab] CRIU is not installed: run integration/setup.sh first")
    build_guest()
    lab_pki.ensure(PKI)
    for site in SITES.values():
        start_libvirt(site)
        start_docker(site)
        lab_podman.start(site)
        ensure_site_names(site)
    ensure_workloads(force=args.reset, vms=getattr(args, "vms", 1))
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
    remove_workloads(conns, clients, everything=True)
    for conn in conns.values():
        remove_site_names(conn)
    for site in SITES.values():
        lab_podman.remove_all(site, images=True)
        lab_podman.stop(site)
        for daemon in ("dockerd", "libvirtd", "virtlogd"):
            stop_pid(site.pidfile(daemon), f"{daemon} of site {site.name}")
    log("down")


def cmd_stop(args: argparse.Namespace) -> None:
    """Stop one daemon of one site: how tests make a site unreachable."""
    site = SITES[args.site]
    stop_pid(site.pidfile(args.daemon), f"{args.daemon} of site {site.name}")


def cmd_lose(args: argparse.Namespace) -> None:
    """Site lost: its daemons stop (dockerd takes its containers down) and its guests die with them."""
    site = SITES[args.site]
    lab_podman.lose(site)
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
    else:
        start_libvirt(site)


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
            info["vms"] = sorted(d.name() for d in conn.listAllDomains() if d.isActive())
            conn.close()
        if read_pid(site.pidfile("dockerd")):
            client = docker.DockerClient(base_url=site.docker_url)
            info["containers"] = sorted(c.name for c in client.containers.list())
            client.close()
        if read_pid(site.pidfile(lab_podman.DAEMON)):
            info["podman_containers"] = lab_podman.containers(site)
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
        sp.add_argument("daemon", choices=["libvirtd", "dockerd", lab_podman.DAEMON])
        sp.set_defaults(func=func)
    lose = sub.add_parser("lose", help="lose a site: its daemons stop and its guests die")
    lose.add_argument("site", choices=sorted(SITES))
    lose.set_defaults(func=cmd_lose)
    iso = sub.add_parser("isolate", help="run a command that sees the sites only through their APIs")
    iso.add_argument("command", nargs=argparse.REMAINDER)
    iso.set_defaults(func=cmd_isolate)
    args = p.parse_args(argv)
    return args.func(args)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
