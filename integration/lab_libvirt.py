"""The lab's libvirt: one libvirtd (QEMU driver) per site in a private mount and UTS namespace, so libvirt
sees two hosts, each with its own network and storage pool under the names its site uses; and the lab's
VMs: a tiny guest (Debian kernel + busybox initramfs) counting on its serial console and on its disk.
"""

from __future__ import annotations

import hashlib
import lzma
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import libvirt

from integration import lab_pki
from integration.lab_base import LAB, PKI, SITES, VM_NAME, Site, log, outside, read_pid, run, wait_for

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions anyway

GUEST = LAB / "guest"
VM_DISK = f"{VM_NAME}.qcow2"  # in site a's pool; a move takes it along
SERIAL_LOG = f"/var/log/libvirt/qemu/{VM_NAME}.serial"
# Folders that each site's libvirtd sees privately: (path inside the namespace, folder under the site).
PRIVATE = (
    ("/run/libvirt", "run"),
    ("/var/lib/libvirt", "lib"),
    ("/var/log/libvirt", "log"),
    ("/var/cache/libvirt", "cache"),
    ("/etc/libvirt", "etc"),
)


# --- guest -------------------------------------------------------------------------------------------------


# Loaded in this order by the guest's /init: the Debian kernel builds virtio-blk as modules.
GUEST_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
                 "virtio_blk", "failover", "net_failover", "virtio_net", "virtio_console",
                 "crc16", "crc32c_generic", "mbcache", "jbd2", "ext4")  # ext4 for a data disk (lab.data=ext4)
KERNEL = "vmlinux"  # uncompressed, see uncompressed()
INITRD = "initrd-net.gz"
AGENT_INITRD = "initrd-agent.gz"  # the same with Debian's QEMU guest agent, for a guest that sets its own address
AGENT_PORT = "org.qemu.guest_agent.0"
# On a network with DHCP the guest takes its address with busybox's udhcpc (asking again whenever its link comes
# back up, as NetworkManager would), says it on the console ("address A") and serves HTTP on port 8080.
DHCP_EVENT = """#!/bin/busybox sh
case "$1" in
  deconfig) ip addr flush dev "$interface";;
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface"
               echo "address $ip" > /dev/ttyS0;;
esac
"""
# Counts once a second on the serial console and keeps the count on its disk (/dev/vda, when it has one),
# where it starts from at boot: a disk that did not travel shows as a counter that starts from 1 again.
# At boot it also prints the marks found on its disk ("found mark K", at K MiB). Its second serial port
# (a pty, which libvirt's console API reaches) takes commands: "mark K" writes mark K at K MiB of its disk,
# "fill DEV MIB COUNT" writes COUNT MiB of random bytes at MIB MiB of /dev/DEV; each says when it is done.
# With lab.data=ext4 its disk holds an ext4 filesystem instead: at boot it says what dumpe2fs finds ("fs ..."),
# mounts it at /data and says the last line of /data/seq ("last ..."); it counts on its console only.
GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in MODULES; do insmod /lib/modules/$m.ko 2>/dev/null; done
for t in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] || continue
  mkdir -p /dev/virtio-ports; ln -sf "/dev/${p##*/}" "/dev/virtio-ports/$(cat "$p/name")"
done
port=/dev/virtio-ports/AGENT_PORT
[ -e $port ] && qemu-ga -m virtio-serial -p $port -d -f /tmp/qemu-ga.pid -t /tmp
net=""; data=""
for w in $(cat /proc/cmdline); do
  case "$w" in lab.net=*) net=${w#lab.net=};; lab.data=*) data=${w#lab.data=};; esac
done
if [ -n "$data" ] && [ -b /dev/vda ]; then
  fs=$(dumpe2fs -h /dev/vda 2>/dev/null | grep -E '^Filesystem (state|features):' | tr -s ' ' | tr '\\n' ';')
  echo "fs $fs" > /dev/ttyS0
  mkdir -p /data && mount -t ext4 /dev/vda /data && echo "mounted /data" > /dev/ttyS0
  echo "last $(tail -n 1 /data/seq 2>/dev/null)" > /dev/ttyS0
fi
if [ -d /sys/class/net/eth0 ] && [ -n "$net" ]; then
  ip link set lo up; ip link set eth0 up
  httpd -p 8080 -h /tmp
fi
if [ -d /sys/class/net/eth0 ] && [ "$net" != dhcp ] && [ -n "$net" ]; then
  ip addr add "$net" dev eth0; echo "address ${net%/*}" > /dev/ttyS0
elif [ -d /sys/class/net/eth0 ] && [ "$net" = dhcp ]; then
  (up=1
   udhcpc -i eth0 -s /bin/dhcp-event -b -p /tmp/udhcpc.pid >/dev/null 2>&1
   while true; do
     read -r now < /sys/class/net/eth0/carrier
     if [ "$now" = 1 ] && [ "$up" = 0 ]; then
       read -r pid < /tmp/udhcpc.pid; kill "$pid" 2>/dev/null; sleep 0.1
       udhcpc -i eth0 -s /bin/dhcp-event -b -p /tmp/udhcpc.pid >/dev/null 2>&1
     fi
     up=$now; sleep 0.1
   done) &
fi
i=0; raw=""
[ -b /dev/vda ] && [ -z "$data" ] && raw=1
if [ -n "$raw" ]; then
  i=$(head -c 32 /dev/vda | tr -dc 0-9); i=${i:-0}; echo "disk $i" > /dev/ttyS0
  for k in 1 2 3 4 5 6 7 8 9; do
    m=$(dd if=/dev/vda bs=32 skip=$((k*32768)) count=1 2>/dev/null | tr -dc 'a-z0-9 ')
    case "$m" in mark*) echo "found $m" > /dev/ttyS0;; esac
  done
fi
if [ -c /dev/ttyS1 ]; then
  stty -F /dev/ttyS1 raw -echo 2>/dev/null
  while read -r cmd a b c; do
    case "$cmd" in
      mark) printf 'mark %-26s\\n' "$a" | dd of=/dev/vda bs=32 seek=$((a*32768)) count=1 conv=notrunc,fsync 2>/dev/null
            echo "marked $a" > /dev/ttyS0;;
      fill) dd if=/dev/urandom of=/dev/$a bs=1M seek=$b count=$c conv=notrunc,fsync 2>/dev/null
            echo "filled $a $b $c" > /dev/ttyS0;;
    esac
  done < /dev/ttyS1 &
fi
while true; do
  i=$((i+1)); echo "count $i" > /dev/ttyS0
  [ -n "$raw" ] && printf '%-31s\\n' "$i" | dd of=/dev/vda bs=32 count=1 conv=notrunc,fsync 2>/dev/null
  sleep 1
done
""".replace("MODULES", " ".join(GUEST_MODULES)).replace("AGENT_PORT", AGENT_PORT)
DISK_MIB = 16
AGENT_BINARIES = ("/usr/sbin/dumpe2fs",)  # beside the agent: what the guest says of its data disk at boot


def with_agent(xml: str) -> str:
    """A lab domain booting the initramfs with the QEMU guest agent, on its virtio-serial channel."""
    agent = f"<channel type='unix'><target type='virtio' name='{AGENT_PORT}'/></channel>\n    "
    return xml.replace(INITRD, AGENT_INITRD).replace("<memballoon", agent + "<memballoon")


def build_guest() -> None:
    """Debian kernel plus two busybox initramfs (with the virtio and ext4 modules) running GUEST_INIT, one of them
    with the QEMU guest agent and dumpe2fs; made again when what goes into them changed."""
    kernel, modules = GUEST / KERNEL, GUEST / "modules"
    built = GUEST / "built"
    recipe = hashlib.sha256(f"{KERNEL}{GUEST_INIT}{DHCP_EVENT}{GUEST_MODULES}{AGENT_BINARIES}".encode()).hexdigest()
    if kernel.exists() and built.exists() and built.read_text() == recipe:
        return
    GUEST.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if not kernel.exists() or not all((modules / f"{m}.ko").exists() for m in GUEST_MODULES):
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
            if not kernel.exists():  # a running guest may use the one there
                kernel.write_bytes(uncompressed(next((t / "x" / "boot").glob("vmlinuz-*")).read_bytes()))
            modules.mkdir(exist_ok=True)
            for name in GUEST_MODULES:
                shutil.copy(next((t / "x" / "lib" / "modules").rglob(f"{name}.ko")), modules / f"{name}.ko")
        for name, agent in ((INITRD, False), (AGENT_INITRD, True)):
            _initramfs(t / name.removesuffix(".gz"), GUEST / name, modules, agent)
    built.write_text(recipe)
    log(f"guest ready in {GUEST}")


def uncompressed(bzimage: bytes) -> bytes:
    """The ELF kernel inside Debian's bzImage (an xz stream). QEMU boots it through its PVH entry, skipping the
    decompression that takes a TCG guest about 5 s of every boot."""
    start = bzimage.find(b"\xfd7zXZ\x00")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:]) if start >= 0 else b""
    if not elf.startswith(b"\x7fELF"):
        raise SystemExit("[lab] the Debian kernel holds no xz-compressed ELF image: cannot make the guest's kernel")
    return elf


def _initramfs(root: Path, initrd: Path, modules: Path, agent: bool) -> None:
    """The busybox initramfs running GUEST_INIT, with the QEMU guest agent when `agent`."""
    for d in ("bin", "proc", "sys", "dev", "lib", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    shutil.copytree(modules, root / "lib" / "modules")
    for path, text in (("init", GUEST_INIT), ("bin/dhcp-event", DHCP_EVENT)):
        (root / path).write_text(text)
        (root / path).chmod(0o755)
    if agent:
        add_agent(root, root.parent)
    files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files, check=True,
                          capture_output=True).stdout
    with initrd.open("wb") as out:
        subprocess.run(["gzip", "-9"], input=cpio, check=True, stdout=out)


def add_agent(root: Path, tmp: Path) -> None:
    """Debian's QEMU guest agent and e2fsprogs' dumpe2fs, with the libraries they link (those of this machine,
    which runs the same Debian)."""
    run(["apt-get", "download", "qemu-guest-agent"], cwd=tmp)
    run(["dpkg-deb", "-x", str(next(tmp.glob("qemu-guest-agent_*.deb"))), str(tmp / "qga")])
    for binary in (tmp / "qga" / "usr" / "sbin" / "qemu-ga", *map(Path, AGENT_BINARIES)):
        shutil.copy(binary, root / "bin" / binary.name)
        for line in run(["ldd", str(binary)]).stdout.splitlines():
            path = next((p for p in line.split() if p.startswith("/")), None)
            if path is not None:
                (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, root / path.lstrip("/"))


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


# --- networks, pools, VMs and disks ------------------------------------------------------------------------


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
    <kernel>{GUEST / KERNEL}</kernel>
    <initrd>{GUEST / INITRD}</initrd>
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
    <serial type='pty'><target port='1'/></serial>
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
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
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
                       "<target><format type='qcow2'/><compat>1.1</compat></target></volume>", 0)


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


def remove_all_vms(conns: dict[str, libvirt.virConnect], everything: bool = False) -> None:
    """The lab's VMs, their disks and serial logs, or with everything=True every domain (they are all ours)."""
    for name, conn in conns.items():
        for dom in conn.listAllDomains():
            if not everything and not dom.name().startswith(VM_NAME):
                continue
            log(f"removing VM {dom.name()} from site {name}")
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        remove_disks(conn)
    for site in SITES.values():
        for serial in site.serial_log().parent.glob(f"{VM_NAME}*.serial"):
            serial.unlink()
