"""Containers move between sites that share nothing with drorch: only the daemons' APIs carry their state.

The test process runs under `integration/lab isolate`, so neither site's Docker data root is visible
here: a checkpoint or a volume that did not travel through the Engine API shows as a counter that
restarts from 1.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from integration import lab_podman, labctl
from integration.lab_base import VOLUME_COUNTER
from integration.support.lab_views import LAB_PLAYBOOK, Drorch, container_counts, wait_until

# A process with an established TCP connection: CRIU refuses to dump it without --tcp-established.
TCP_COUNTER = ('sleep 100000 | nc -l -p 7 >/dev/null & sleep 0.3; sleep 100000 | nc 127.0.0.1 7 & '
               'i=0; while true; do i=$((i+1)); echo "count $i"; sleep 1; done')
NAMES = ("vol-counter", "vol-redeploy", "tcp-counter", "bind-counter", "vol-points")


def clients() -> dict[str, docker.DockerClient]:
    return {s: docker.DockerClient(base_url=site.docker_url) for s, site in labctl.SITES.items()}


def remove_all(cs: dict[str, docker.DockerClient]) -> None:
    for c in cs.values():
        for name in NAMES:
            for found in c.containers.list(all=True, filters={"name": f"^{name}(.drorch-point)?$"}):
                found.remove(force=True)
            for vol in c.volumes.list(filters={"name": f"{name}-data"}):
                vol.remove(force=True)


@pytest.fixture
def sites(fresh_containers: None) -> Iterator[dict[str, docker.DockerClient]]:
    cs = clients()
    remove_all(cs)
    yield cs
    remove_all(cs)
    for c in cs.values():
        c.close()


def playbook(tmp_path: Path, workloads: list[dict[str, object]], **extra: object) -> Path:
    pb = yaml.safe_load(LAB_PLAYBOOK.read_text())
    pb["workloads"] = workloads
    pb.update(extra)
    path = tmp_path / "pb.yaml"
    path.write_text(yaml.safe_dump(pb))
    return path


def start(c: docker.DockerClient, name: str, script: str, **kw: object) -> None:
    """Create and start, never pull: the lab's image is local, and nothing may reach out to a registry."""
    c.containers.create(labctl.IMAGE, ["/bin/sh", "-c", script], name=name, network_mode="none",
                        mem_limit=labctl.CONTAINER_MEMORY, **kw).start()


@pytest.mark.usefixtures("fresh_containers")
def test_drorch_sees_no_site_data() -> None:
    """The shortcut is impossible: each daemon reports its data root, and from here it is empty."""
    assert labctl.isolated(), "the tests must run under integration/lab isolate"
    for site in labctl.SITES.values():
        c = docker.DockerClient(base_url=site.docker_url)
        try:
            root = Path(c.info()["DockerRootDir"])
            if site.name == "a":
                assert c.containers.list(), "site a runs the lab's containers, so its data root is not empty"
        finally:
            c.close()
        assert root == site.root / "docker" / "data"
        assert not any(root.iterdir()), f"site {site.name}'s data root is visible to the tests"
        assert not any((site.root / "pool").iterdir())
        api = lab_podman.client(site)
        try:
            graph = Path(api.get(f"{api.base_url}/v4.0.0/libpod/info").json()["store"]["graphRoot"])
        finally:
            api.close()
        assert graph == site.root / lab_podman.ROOT
        assert not any(graph.iterdir()), f"site {site.name}'s Podman storage is visible to the tests"


def test_named_volumes_travel_with_checkpoint_and_redeploy(sites: dict[str, docker.DockerClient], tmp_path: Path,
                                                           run_drorch: Drorch) -> None:
    a, b = sites["a"], sites["b"]
    for name in ("vol-counter", "vol-redeploy"):
        start(a, name, VOLUME_COUNTER, volumes={f"{name}-data": {"bind": "/data", "mode": "rw"}})
    for name in ("vol-counter", "vol-redeploy"):
        wait_until(lambda n=name: max(container_counts("a", n), default=0) >= 4, f"{name} counting")
    pb = playbook(tmp_path, [{"name": "vol-counter", "kind": "container", "strategy": "checkpoint"},
                             {"name": "vol-redeploy", "kind": "container", "strategy": "redeploy"}])
    before = {n: max(container_counts("a", n)) for n in ("vol-counter", "vol-redeploy")}

    res = run_drorch("failover", str(pb))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning" not in res.stderr

    for name in ("vol-counter", "vol-redeploy"):
        wait_until(lambda n=name: len(container_counts("b", n)) >= 2, f"{name} counting on b")
    # The checkpointed process goes on where it stopped; the redeployed one starts afresh from its volume.
    restored = container_counts("b", "vol-counter")
    assert restored[0] >= before["vol-counter"], restored
    redeployed = container_counts("b", "vol-redeploy")
    assert redeployed[0] > before["vol-redeploy"] - 1 > 1, (before, redeployed)
    assert b.volumes.get("vol-counter-data") and b.volumes.get("vol-redeploy-data")
    # Nothing left behind: no container, volume or helper on a; no helper and no checkpoint on b.
    assert not a.containers.list(all=True, filters={"name": "vol-"})
    assert not a.volumes.list(filters={"name": "vol-"})
    helpers = {"label": "drorch.transfer"}
    assert not [c.name for s in sites.values() for c in s.containers.list(all=True, filters=helpers)]
    for name in ("vol-counter", "vol-redeploy"):
        assert b.api.get(b.api._url("/containers/{0}/checkpoints", name)).json() in ([], None)

    back = run_drorch("failback", str(pb))
    assert back.returncode == 0, back.stdout + back.stderr
    wait_until(lambda: len(container_counts("a", "vol-redeploy")) >= 2, "vol-redeploy counting on a")
    assert container_counts("a", "vol-redeploy")[0] > redeployed[-1] - 1


def test_a_checkpoint_that_cannot_be_taken_becomes_a_redeploy_with_warnings(
        sites: dict[str, docker.DockerClient], tmp_path: Path, run_drorch: Drorch) -> None:
    start(sites["a"], "tcp-counter", TCP_COUNTER)
    wait_until(lambda: max(container_counts("a", "tcp-counter"), default=0) >= 2, "tcp-counter counting")
    pb = playbook(tmp_path, [{"name": "tcp-counter", "kind": "container", "strategy": "checkpoint"}])

    res = run_drorch("failover", str(pb))
    assert res.returncode == 5, res.stdout + res.stderr
    assert "succeeded with warnings" in res.stdout
    assert re.search(r"warning: container tcp-counter: redeployed from .*the checkpoint failed", res.stderr), res.stderr
    wait_until(lambda: len(container_counts("b", "tcp-counter")) >= 1, "tcp-counter on b")
    assert container_counts("b", "tcp-counter")[0] == 1  # redeployed: its process started again
    history = json.loads(run_drorch("history", "1", "--json").stdout)
    assert history["state"] == "succeeded with warnings"
    assert "the checkpoint failed" in history["steps"][0]["warning"]


def test_a_bind_mount_needs_a_mapped_path(sites: dict[str, docker.DockerClient], tmp_path: Path,
                                          run_drorch: Drorch) -> None:
    """validate names it, and a failover runs the same pre-flight and stops before anything moves."""
    start(sites["a"], "bind-counter", labctl.COUNTER_SCRIPT, volumes={"/srv": {"bind": "/srv", "mode": "ro"}})
    workloads = [{"name": "bind-counter", "kind": "container", "strategy": "redeploy"}]
    unmapped = str(playbook(tmp_path, workloads))
    res = run_drorch("validate", unmapped)
    assert res.returncode == 1
    line = next(x for x in res.stderr.splitlines() if "bind mount of /srv has no counterpart on site b" in x)
    assert "container bind-counter: " in line and f"{unmapped}:" in line
    refused = run_drorch("failover", unmapped)
    assert refused.returncode == 1 and line in refused.stderr and "run 1" not in refused.stdout, refused.stderr
    assert sites["a"].containers.get("bind-counter").status == "running"
    assert sites["b"].containers.list(all=True, filters={"name": "^bind-counter$"}) == []
    mapped = yaml.safe_load(LAB_PLAYBOOK.read_text())["mappings"]
    ok = run_drorch("validate", str(playbook(tmp_path, workloads, mappings={**mapped, "paths": {"/srv": "/srv"}})))
    assert ok.returncode == 0, ok.stderr


def test_a_recovery_point_holds_the_volumes_and_a_disaster_restart_finds_them(
        sites: dict[str, docker.DockerClient], tmp_path: Path, run_drorch: Drorch) -> None:
    start(sites["a"], "vol-redeploy", VOLUME_COUNTER, volumes={"vol-redeploy-data": {"bind": "/data", "mode": "rw"}})
    wait_until(lambda: max(container_counts("a", "vol-redeploy"), default=0) >= 4, "vol-redeploy counting")
    pb = playbook(tmp_path, [{"name": "vol-redeploy", "kind": "container", "strategy": "redeploy"}],
                  protect={"interval_s": 60})
    shipped = run_drorch("protect", "ship", str(pb), "--json")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "1 volume copied whole" in json.loads(shipped.stdout)[0]["detail"]
    at_ship = container_counts("a", "vol-redeploy")[-1]
    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", str(pb))
        assert res.returncode == 0, res.stdout + res.stderr
        wait_until(lambda: len(container_counts("b", "vol-redeploy")) >= 1, "vol-redeploy on b")
        # Started afresh from its image, counting on from the number its shipped volume held.
        assert 1 < container_counts("b", "vol-redeploy")[0] <= at_ship + 1
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


def volume_files(c: docker.DockerClient, name: str) -> dict[str, bytes]:
    """The files of a container's /data and their contents, read through the archive endpoint (which works on a
    stopped copy that never ran)."""
    stream, _ = c.containers.get(name).get_archive("/data")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return {m.name.removeprefix("data/"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def point_files(c: docker.DockerClient, volume: str) -> dict[str, bytes]:
    """A volume's files, read through a container that mounts it, created for that and never started."""
    reader = c.containers.create(labctl.IMAGE, ["true"], network_mode="none",
                                 volumes={volume: {"bind": "/data", "mode": "ro"}})
    try:
        return volume_files(c, reader.id)
    finally:
        reader.remove()


def test_each_kept_point_holds_its_own_volume_and_stays_as_shipped(
        sites: dict[str, docker.DockerClient], tmp_path: Path, run_drorch: Drorch) -> None:
    """Three points, the files changing between them (one deleted at the source): each point's volume holds
    exactly the source's files of its time; a drill from the middle point runs on its own copy, which goes with
    it; a disaster restart from the first point runs on that point's files and counter; every point is
    afterwards as it was shipped."""
    a, b = sites["a"], sites["b"]
    start(a, "vol-points", VOLUME_COUNTER, volumes={"vol-points-data": {"bind": "/data", "mode": "rw"}})
    source = a.containers.get("vol-points")
    pb = playbook(tmp_path, [{"name": "vol-points", "kind": "container", "strategy": "checkpoint"}],
                  protect={"interval_s": 60, "keep": 3})
    points = []
    for change in ("echo kept > /data/kept; echo doomed > /data/doomed", "rm /data/doomed; echo new > /data/new",
                   "rm /data/kept; echo newest > /data/newest"):
        assert source.exec_run(["sh", "-c", change]).exit_code == 0
        if len(points) == 2:  # what a ship killed while it copied leaves: a point no record names
            killed = "drorch-20261201T000000000000-killed"
            b.volumes.create(f"vol-points-data.{killed}",
                             labels={"drorch.point-of": "vol-points", "drorch.point-name": killed})
        shipped = run_drorch("protect", "ship", str(pb), "--json")
        assert shipped.returncode == 0, shipped.stdout + shipped.stderr
        points.append(json.loads(shipped.stdout)[0])
    assert "1 volume copied whole" in points[-1]["detail"]
    names = [p["name"] for p in points]
    files = {n: point_files(b, f"vol-points-data.{n}") for n in names}
    assert sorted(v.name for v in b.volumes.list()) == sorted(["vol-points-data.drorch-point",
                                                              *(f"vol-points-data.{n}" for n in names)])
    assert [sorted(files[n]) for n in names] == [["count", "doomed", "kept"], ["count", "kept", "new"],
                                                 ["count", "new", "newest"]]
    assert volume_files(b, "vol-points") == {}  # the point copy's own volume only says where it is mounted
    status = run_drorch("protect", "status", "--points", str(pb))
    assert status.returncode == 0 and "3 kept" in status.stdout and "NOT WHOLE" not in status.stdout, status.stdout

    drill = run_drorch("drill", "--point", points[1]["taken_at"], str(pb))
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert f"from checkpoint {names[1]}" in drill.stdout, drill.stdout
    assert "volume vol-points-data.drorch-point.vol-points-drill-" in drill.stdout  # its own copy, gone with it
    assert sorted(v.name for v in b.volumes.list()) == sorted(["vol-points-data.drorch-point",
                                                              *(f"vol-points-data.{n}" for n in names)])
    assert {n: point_files(b, f"vol-points-data.{n}") for n in names} == files

    # A disaster restart runs the workload on copies of the first point's volume; every point stays as shipped.
    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", "--point", points[0]["taken_at"],
                         str(pb))
        assert res.returncode == 0 and "on a copy of the point" in res.stdout, res.stdout + res.stderr
        assert names[0] in res.stdout, res.stdout
        wait_until(lambda: len(container_counts("b", "vol-points")) >= 2, "vol-points counting on b")
        at_first = int(files[names[0]]["count"])
        assert at_first <= container_counts("b", "vol-points")[0] <= at_first + 2  # the first point's process
        assert set(volume_files(b, "vol-points")) == {"count", "doomed", "kept"}
        assert {n: point_files(b, f"vol-points-data.{n}") for n in names} == files
        assert "vol-points-data" in {v.name for v in b.volumes.list()}
        status = run_drorch("protect", "status", "--points", str(pb))
        assert "3 kept" in status.stdout and "NOT WHOLE" not in status.stdout, status.stdout
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


@pytest.mark.usefixtures("fresh_containers")
def test_a_disaster_restart_from_an_older_checkpoint(tmp_path: Path, run_drorch: Drorch) -> None:
    """Two kept checkpoints of the lab's counter: `--point` at the first one's time restores that one."""
    name = labctl.CHECKPOINT_CONTAINER
    pb = playbook(tmp_path, [{"name": name, "kind": "container", "strategy": "checkpoint"}],
                  protect={"interval_s": 60, "keep": 3})
    first = run_drorch("protect", "ship", str(pb), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    at_first = container_counts("a", name)[-1]
    wait_until(lambda: container_counts("a", name)[-1] >= at_first + 6, f"{name} counting on")
    assert run_drorch("protect", "ship", str(pb)).returncode == 0
    labctl.cmd_lose(argparse.Namespace(site="a"))
    try:
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", "--point",
                         json.loads(first.stdout)[0]["taken_at"], str(pb))
        assert res.returncode == 0 and json.loads(first.stdout)[0]["name"] in res.stdout, res.stdout + res.stderr
        wait_until(lambda: len(container_counts("b", name)) >= 1, f"{name} counting on b")
        assert at_first <= container_counts("b", name)[0] <= at_first + 2  # from the first point, not the second
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))
