"""What the lab's parts share: its folders, the two sites, its container image, and how its daemons are
started and stopped (by recorded pid only)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from drorch.process import pid_alive

LAB = Path(os.environ.get("DRORCH_LAB_DIR", "/var/lib/drorch-lab"))
CRIU_BIN = LAB / "criu" / "bin"
IMAGE = "drorch-lab/counter:1"
VM_NAME = "lab-vm"
COUNTER_SCRIPT = 'trap "exit 0" TERM; i=0; while true; do i=$((i+1)); echo "count $i"; sleep 1; done'
CONTAINER_MEMORY = "256m"
PKI = LAB / "pki"  # site b serves libvirt, Docker and migration streams over TLS with these
OUTSIDE = "DRORCH_LAB_OUTSIDE"  # set by `lab isolate`: a pid in the mount namespace the daemons live in


@dataclass(frozen=True)
class Site:
    name: str
    address: str
    libvirt_port: int
    migration_ports: tuple[int, int]
    network: str  # the site's isolated libvirt network: no address, no DHCP, no route out
    bridge: str
    pool: str
    tls_libvirt_port: int | None = None  # besides plain TCP (for the lab's own tools), TLS on these
    tls_docker_port: int | None = None

    @property
    def root(self) -> Path:
        return LAB / self.name

    @property
    def libvirt_uri(self) -> str:
        return f"qemu+tcp://{self.address}:{self.libvirt_port}/system"

    @property
    def docker_sock(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_url(self) -> str:
        return f"unix://{self.docker_sock}"

    @property
    def libvirt_tls_uri(self) -> str:
        return f"qemu+tls://{self.address}:{self.tls_libvirt_port}/system?pkipath={PKI}"

    @property
    def docker_tls_url(self) -> str:
        return f"tcp://{self.address}:{self.tls_docker_port}"

    def pidfile(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def serial_log(self, vm: str = VM_NAME) -> Path:
        """A VM's serial console log as seen from outside the site's namespace."""
        return self.root / "log" / "qemu" / f"{vm}.serial"


SITES = {
    "a": Site("a", "127.0.0.1", 16601, (49200, 49215), "prod-net", "drlprod0", "prod-pool", tls_docker_port=2376),
    "b": Site("b", "127.0.0.2", 16602, (49300, 49315), "dr-net", "drldr0", "dr-pool", 16612, 2376),
}

def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


# --- pids --------------------------------------------------------------------------------------------------


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(path: Path, what: str, timeout: float = 20.0) -> None:
    pid = read_pid(path)
    if pid is None:
        path.unlink(missing_ok=True)
        return
    log(f"stopping {what} (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
    path.unlink(missing_ok=True)


def wait_for(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise SystemExit(f"[lab] timed out waiting for {what}: {last}")


def outside() -> list[str]:
    """A prefix that runs a command in the lab's own mount namespace, where the sites' data is, when this
    process is isolated from it: daemons started from an isolated test must still see their own files."""
    pid = os.environ.get(OUTSIDE)
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--"] if pid else []


def image_tar() -> bytes:
    """A root file system of busybox-static and its applet links, as docker import wants it."""
    applets = run(["/bin/busybox", "--list"]).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for name in applets:
            if name == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{name}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for d in ("tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
    return buf.getvalue()

# A counter kept in a named volume (at /data): a redeployed copy goes on from the volume's number.
VOLUME_COUNTER = ('i=$(cat /data/count 2>/dev/null || echo 0); while true; do i=$((i+1)); echo "count $i"; '
                  'echo $i > /data/count; sleep 1; done')
