"""The lab's Podman: one rootful `podman system service` per site, beside that site's dockerd.

Each service has its own storage root, run root and containers.conf under the site's folder; they run
containers with Debian's runc, which calls the CRIU of integration/setup.sh (first on the service's PATH).
Containers have no network (`netns = "none"`), so nothing the lab runs reaches a private range.
The service is recorded by its pid and stopped by it; the containers it started are removed first, as
their conmon processes outlive it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import docker

from integration import lab_base
from integration.lab_base import CRIU_BIN, SITES, Site, log, outside, read_pid, stop_pid, wait_for

DAEMON = "podman"
ROOT = "podman/root"  # the service's storage: hidden from drorch like Docker's data root
CHECKPOINT_CONTAINER = "lab-pod-counter"
REDEPLOY_CONTAINER = "lab-pod-redeploy"
CONTAINERS = (CHECKPOINT_CONTAINER, REDEPLOY_CONTAINER)
IMAGE = f"docker.io/{lab_base.IMAGE}"  # Podman spells out the registry of a short name
API = "1.41"


def sock(site: Site) -> Path:
    return site.root / "podman.sock"


def url(site: Site) -> str:
    return f"unix://{sock(site)}"


def client(site: Site) -> docker.APIClient:
    return docker.APIClient(base_url=url(site), version=API)


def _limits() -> list[str]:
    """Podman asks for more open files and processes than a sandbox may grant; ask for what it can."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1 << 20 if nofile == resource.RLIM_INFINITY else min(nofile, 1 << 20)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


def write_config(site: Site) -> Path:
    runc = shutil.which("runc") or "/usr/sbin/runc"
    conf = site.root / "podman" / "containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "[containers]\n"
        'netns = "none"\n'
        f"default_ulimits = {json.dumps(_limits())}\n"
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        'runtime = "runc"\n'
        f'tmp_dir = "{site.root / "podman" / "tmp"}"\n'
        "[engine.runtimes]\n"
        f'runc = ["{runc}"]\n'
    )
    return conf


def start(site: Site) -> None:
    if read_pid(site.pidfile(DAEMON)):
        return
    for sub in (ROOT, "podman/run", "podman/tmp"):
        (site.root / sub).mkdir(parents=True, exist_ok=True)
    sock(site).unlink(missing_ok=True)
    env = dict(os.environ, CONTAINERS_CONF=str(write_config(site)),
               PATH=f"{CRIU_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
    log(f"starting the Podman service of site {site.name}")
    with (site.root / "podman.log").open("ab") as out:
        proc = subprocess.Popen(
            [*outside(), "podman", "--root", str(site.root / ROOT), "--runroot", str(site.root / "podman" / "run"),
             "--storage-driver", "overlay", "system", "service", "--time", "0", url(site)],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    site.pidfile(DAEMON).write_text(f"{proc.pid}\n")  # nsenter execs the service: this is its pid
    wait_for(lambda: client(site).ping(), f"Podman on site {site.name}", 30)


def remove_all(site: Site, images: bool) -> None:
    """Every container of the site's Podman (the lab's and what tests and moves made), and with images=True
    every image too (checkpoint images included)."""
    if not read_pid(site.pidfile(DAEMON)):
        return
    api = client(site)
    try:
        for c in api.containers(all=True):
            log(f"removing Podman container {c['Names'][0].lstrip('/')} from site {site.name}")
            api.remove_container(c["Id"], force=True, v=True)
        for img in api.images() if images else []:
            api.remove_image(img["Id"], force=True)
    finally:
        api.close()


def stop(site: Site) -> None:
    stop_pid(site.pidfile(DAEMON), f"Podman service of site {site.name}")


def lose(site: Site) -> None:
    """Site lost: its Podman containers die with it (they would outlive the service), then the service."""
    if read_pid(site.pidfile(DAEMON)):
        api = client(site)
        try:
            for c in api.containers():
                api.kill(c["Id"])
        finally:
            api.close()
    stop(site)


def ensure_workloads(site: Site) -> None:
    """The counting containers on this site's Podman, unless they run on some site's Podman already."""
    api = client(site)
    try:
        if not api.images(name=IMAGE):
            log(f"importing {IMAGE} into Podman on site {site.name}")
            imported = json.loads(api.import_image_from_data(lab_base.image_tar(), changes=[
                "CMD " + json.dumps(["/bin/sh", "-c", lab_base.COUNTER_SCRIPT])]))
            repo, _, tag = IMAGE.rpartition(":")
            api.tag(imported["id"], repo, tag)  # Podman 4 names an import by its own rule, not the one asked
        for name in CONTAINERS:
            if any(running(s, name) for s in SITES.values()):
                continue
            for s in SITES.values():  # stopped copies left by an earlier lab
                remove(s, name)
            log(f"starting Podman container {name} on site {site.name}")
            made = api.create_container(IMAGE, name=name, labels={"drorch.lab": "1"},
                                        host_config=api.create_host_config(network_mode="none",
                                                                           mem_limit=lab_base.CONTAINER_MEMORY))
            api.start(made["Id"])
    finally:
        api.close()


def _inspect(site: Site, name: str) -> dict[str, object] | None:
    if not read_pid(site.pidfile(DAEMON)):
        return None
    api = client(site)
    try:
        return api.inspect_container(name)  # type: ignore[no-any-return]
    except docker.errors.NotFound:
        return None
    finally:
        api.close()


def running(site: Site, name: str) -> bool:
    found = _inspect(site, name)
    return bool(found and found["State"]["Running"])  # type: ignore[index]


def remove(site: Site, name: str) -> None:
    if _inspect(site, name) is not None:
        api = client(site)
        try:
            api.remove_container(name, force=True, v=True)
        finally:
            api.close()


def remove_volumes(site: Site, names: list[str]) -> None:
    api = client(site)
    try:
        for vol in api.volumes()["Volumes"] or []:
            if vol["Name"] in names:
                api.remove_volume(vol["Name"], force=True)
    finally:
        api.close()


def containers(site: Site) -> list[str]:
    """Names of the containers running on the site's Podman."""
    api = client(site)
    try:
        return sorted(c["Names"][0].lstrip("/") for c in api.containers())
    finally:
        api.close()
