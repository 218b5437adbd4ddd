"""The lab's LXD: one daemon per site (Debian's lxd), each with its own LXD_DIR and mount namespace.

Each daemon has a `dir` storage pool named `default`, no network of its own, and listens on its site's loopback
address (port 18443) for drorch and for the other site, which pulls instances from it. It trusts the lab's client
certificate; its own certificate is copied next to the lab's PKI, since drorch pins it and never sees LXD_DIR.
LXD would fetch its instance-type list from the internet at start: its proxy is a closed loopback port, so
nothing leaves the machine. Stateful moves need CRIU on the daemon's PATH; the lab's daemons run without it
(see docs/lab.md), so a stateful move falls back to a copy here. The system container counts on its root file
system: `/var/counter` holds the count, read back at start.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pylxd

from integration import lab_pki
from integration.lab_base import PKI, SITES, Site, image_tar, log, outside, read_pid, stop_pid, wait_for

DAEMON = "lxd"
DIR = "lxd"  # LXD_DIR under the site's folder: hidden from drorch like the other daemons' data
PORT = 18443
CONTAINER = "lab-sys"
IMAGE = "drorch-lab/system-net"
COUNTER = "/var/counter"
# Each site's managed bridge, on a subnet of its own: LXD's dnsmasq gives a NIC its ipv4.address.
APP_NETWORKS = {"a": ("app-net", "10.231.51.1/24"), "b": ("app-net-dr", "10.231.52.1/24")}
# On a network, the container takes its address by DHCP (busybox's udhcpc) and serves HTTP on port 8080.
DHCP_EVENT = """#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface";;
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface";;
esac
"""
INIT = f"""#!/bin/sh
if [ -d /sys/class/net/eth0 ]; then
  ip link set lo up; ip link set eth0 up
  udhcpc -i eth0 -s /bin/dhcp-event -b >/dev/null 2>&1
  mkdir -p /tmp; httpd -p 8080 -h /tmp
fi
i=$(cat {COUNTER} 2>/dev/null || echo 0)
trap 'exit 0' TERM PWR
while true; do i=$((i+1)); echo $i > {COUNTER}.new && mv {COUNTER}.new {COUNTER}; sleep 1 & wait $!; done
"""  # waiting on the sleep lets LXD's stop signal end it at once, not after the second under way


def lxd_dir(site: Site) -> Path:
    return site.root / DIR


def socket_url(site: Site) -> str:
    return f"unix://{lxd_dir(site) / 'unix.socket'}"


def https_url(site: Site) -> str:
    return f"https://{site.address}:{PORT}"


def server_cert(site: Site) -> Path:
    """The daemon's certificate, where drorch may read it (PKI is not hidden)."""
    return PKI / f"lxd-{site.name}.crt"


def local(site: Site) -> pylxd.Client:
    """The daemon through its unix socket: only where LXD_DIR is seen, to set the daemon up."""
    return pylxd.Client(endpoint=str(lxd_dir(site) / "unix.socket"))


def client(site: Site) -> pylxd.Client:
    """The daemon over HTTPS as drorch reaches it, so that tests isolated from LXD_DIR reach it too."""
    session = pylxd.client.get_session_for_url(https_url(site), verify=str(server_cert(site)),
                                               cert=(str(PKI / lab_pki.CLIENT), str(PKI / lab_pki.CLIENT_KEY)))
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the pinned certificate
    return pylxd.Client(endpoint=https_url(site), session=session)


def _env(site: Site) -> dict[str, str]:
    closed = "http://127.0.0.1:9"
    return {**os.environ, "LXD_DIR": str(lxd_dir(site)), "HTTPS_PROXY": closed, "HTTP_PROXY": closed,
            "NO_PROXY": ",".join(s.address for s in SITES.values())}


def start(site: Site) -> None:
    """The site's LXD, started. The lab's LXDs share this machine's network stack, and one starting has been seen
    to take away another's bridge (site a's took site b's app-net-dr): a running LXD whose application bridge
    went is restarted, which makes it again."""
    if read_pid(site.pidfile(DAEMON)):
        return
    _start(site)
    for other in SITES.values():
        bridge = APP_NETWORKS[other.name][0]
        if other is site or not read_pid(other.pidfile(DAEMON)) or Path(f"/sys/class/net/{bridge}").exists():
            continue
        if bridge in [n.name for n in client(other).networks.all()]:
            log(f"LXD of site {other.name} lost its bridge {bridge}: restarting it")
            stop(other)
            _start(other)


def _start(site: Site) -> None:
    lxd_dir(site).mkdir(parents=True, exist_ok=True)
    log(f"starting LXD on site {site.name}")
    with (site.root / "lxd.log").open("ab") as out:
        proc = subprocess.Popen(
            [*outside(), "unshare", "-m", "--propagation", "private", "lxd", "--group", "root",
             "--logfile", str(site.root / "lxd-daemon.log")],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=_env(site), start_new_session=True)
    site.pidfile(DAEMON).write_text(f"{proc.pid}\n")  # nsenter and unshare exec: this is the daemon's pid
    sock = lxd_dir(site) / "unix.socket"
    # Isolated from LXD_DIR (a test restarting the daemon), the daemon is reached as drorch reaches it; its
    # settings live in its own database, made when `lab up` first started it.
    wait_for(lambda: (local(site) if sock.exists() else client(site)).host_info, f"LXD on site {site.name}", 60)
    if sock.exists():
        _configure(site)


def _configure(site: Site) -> None:
    c = local(site)
    if "default" not in [p.name for p in c.storage_pools.all()]:
        c.storage_pools.create({"name": "default", "driver": "dir"})
    profile = c.profiles.get("default")
    if "root" not in profile.devices:
        profile.devices = {**profile.devices, "root": {"type": "disk", "path": "/", "pool": "default"}}
        profile.save()
    if c.host_info["config"].get("core.https_address") != f"{site.address}:{PORT}":
        c.api.patch(json={"config": {"core.https_address": f"{site.address}:{PORT}"}})
    cert = (PKI / lab_pki.CLIENT).read_text()
    trusted = [x.certificate.strip() for x in c.certificates.all()]
    if cert.strip() not in trusted:
        c.certificates.create("", cert.encode())
    server_cert(site).write_text(c.host_info["environment"]["certificate"])


def stop(site: Site) -> None:
    """`lxd shutdown` stops the instances and the daemon; the recorded pid is stopped if it did not."""
    if read_pid(site.pidfile(DAEMON)):
        subprocess.run([*outside(), "lxd", "shutdown", "--timeout", "30"], env=_env(site), check=False,
                       capture_output=True, timeout=60)
    stop_pid(site.pidfile(DAEMON), f"LXD of site {site.name}")


def remove_all(site: Site) -> None:
    """Every instance and every drill network of the site's LXD (all of them the lab's, or made by tests)."""
    if not read_pid(site.pidfile(DAEMON)):
        return
    c = client(site)
    for inst in c.instances.all():
        log(f"removing LXD instance {inst.name} from site {site.name}")
        if inst.status != "Stopped":
            inst.stop(force=True, wait=True)
        inst.delete(wait=True)
    for net in c.networks.all():
        if net.managed and net.name not in [n for n, _ in APP_NETWORKS.values()]:
            net.delete()


def ensure_app_network(site: Site) -> None:
    name, address = APP_NETWORKS[site.name]
    c = client(site)
    if name not in [n.name for n in c.networks.all()]:
        log(f"creating LXD network {name} ({address}, DHCP) on site {site.name}")
        c.networks.create(name, type="bridge", config={"ipv4.address": address, "ipv4.nat": "false",
                                                       "ipv4.firewall": "false", "ipv6.address": "none"})


def _image() -> tuple[bytes, bytes]:
    """(metadata, rootfs) tarballs of the lab's system image: busybox with an init that counts on disk."""
    meta = io.BytesIO()
    with tarfile.open(fileobj=meta, mode="w:gz") as tar:
        body = json.dumps({"architecture": "x86_64", "creation_date": int(time.time()),
                           "properties": {"description": "drorch lab system container", "os": "busybox"}}).encode()
        info = tarfile.TarInfo("metadata.yaml")  # JSON is YAML
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w:gz") as out, tarfile.open(fileobj=io.BytesIO(image_tar())) as base:
        for member in base.getmembers():
            out.addfile(member, base.extractfile(member) if member.isfile() else None)
        for d in ("sbin", "var"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            out.addfile(info)
        for path, text in (("sbin/init", INIT), ("bin/dhcp-event", DHCP_EVENT)):
            body = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(body), 0o755
            out.addfile(info, io.BytesIO(body))
    return meta.getvalue(), rootfs.getvalue()


def ensure_image(site: Site) -> None:
    c = client(site)
    if IMAGE in [a["name"] for a in c.api.images.aliases.get(params={"recursion": 1}).json()["metadata"]]:
        return
    log(f"importing LXD image {IMAGE} on site {site.name}")
    meta, rootfs = _image()
    image = c.images.create(rootfs, metadata=meta, public=False, wait=True)
    image.add_alias(IMAGE, "drorch lab system container")


def status(site: Site, name: str) -> str | None:
    if not read_pid(site.pidfile(DAEMON)):
        return None
    try:
        return str(client(site).instances.get(name).status)
    except pylxd.exceptions.NotFound:
        return None


def ensure_workloads(site: Site) -> None:
    """The counting system container on this site, unless it runs on some site's LXD already."""
    ensure_image(site)
    if any(status(s, CONTAINER) == "Running" for s in SITES.values()):
        return
    for s in SITES.values():  # stopped copies left by an earlier lab
        if status(s, CONTAINER) is not None:
            client(s).instances.get(CONTAINER).delete(wait=True)
    log(f"starting LXD system container {CONTAINER} on site {site.name}")
    inst = client(site).instances.create({"name": CONTAINER, "source": {"type": "image", "alias": IMAGE},
                                          "config": {"limits.memory": "128MiB", "user.drorch.lab": "1"}},
                                         wait=True)
    inst.start(wait=True)


def counter(site: Site, name: str = CONTAINER) -> int:
    """The count the instance keeps on its root file system, read through LXD's file API."""
    return int(client(site).instances.get(name).files.get(COUNTER).decode().strip() or 0)


def instances(site: Site) -> list[str]:
    """Names of the instances running on the site's LXD."""
    return sorted(i.name for i in client(site).instances.all() if i.status == "Running")

