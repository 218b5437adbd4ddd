"""Podman sites on the real lab: a rootful Podman service per site, with the CRIU of integration/setup.sh."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from drorch.store.sql_store import Store
from integration import lab_base, lab_podman, labctl
from integration.lab_base import VOLUME_COUNTER
from integration.support.lab_views import REPO, Drorch, container_counts, podman_counts, wait_until

PLAYBOOK = REPO / "playbooks" / "lab-podman.yaml"
COUNTER, REDEPLOY = lab_podman.CHECKPOINT_CONTAINER, lab_podman.REDEPLOY_CONTAINER
A, B = labctl.SITES["a"], labctl.SITES["b"]


def on(name: str) -> list[str]:
    """The sites whose Podman runs the container."""
    return [s.name for s in labctl.SITES.values() if lab_podman.running(s, name)]


def consecutive(counts: list[int]) -> bool:
    return counts == list(range(counts[0], counts[0] + len(counts)))


def playbook(tmp_path: Path, a: dict[str, str], b: dict[str, str], workloads: list[dict[str, str]],
             **extra: object) -> Path:
    """A playbook over one container host per site, given by its endpoint key and URI."""
    path = tmp_path / "podman-mixed.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mixed", "primary": "a", "secondary": "b",
        "sites": {"a": {"hosts": [{"name": "a9", **a}]},
                  "b": {"hosts": [{"name": "b9", **b, "capacity": {"vcpus": 4, "memory_mib": 2048}}]}},
        "workloads": [{"kind": "container", **w} for w in workloads], **extra}))
    return path


@pytest.mark.usefixtures("fresh_containers")
def test_checkpoint_move_continues_the_process_and_comes_back(run_drorch: Drorch, state_dir: Path) -> None:
    wait_until(lambda: podman_counts("a", COUNTER)[-1] >= 5, "lab-pod-counter past 4")
    since = time.time()  # logs are asked from its whole second: the lines of the second before count too
    res = run_drorch("failover", str(PLAYBOOK))
    assert res.returncode == 0, res.stdout + res.stderr
    assert (on(COUNTER), on(REDEPLOY)) == (["b"], ["b"])
    # The checkpointed process went on counting on site b; the redeployed one started again from 1.
    wait_until(lambda: len(podman_counts("b", COUNTER, since)) >= 3, "lab-pod-counter on site b")
    on_b = podman_counts("b", COUNTER, since)
    assert on_b[0] > 3 and consecutive(on_b)
    wait_until(lambda: len(podman_counts("b", REDEPLOY)) >= 1, "lab-pod-redeploy on site b")
    assert podman_counts("b", REDEPLOY)[0] == 1
    steps = Store(f"sqlite:///{state_dir / 'drorch.db'}").steps(1)
    assert [(s.workload, s.strategy, s.state, s.outcome) for s in steps] == [
        (COUNTER, "checkpoint", "succeeded", "running on site b (restored from checkpoint)"),
        (REDEPLOY, "redeploy", "succeeded", "running on site b")]
    assert steps[0].bytes_done and steps[0].bytes_done > 0  # the exported checkpoint, relayed by drorch

    last_b, since = podman_counts("b", COUNTER)[-1], time.time()
    back = run_drorch("failback", str(PLAYBOOK), "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    assert json.loads(back.stdout)["state"] == "succeeded"
    assert (on(COUNTER), on(REDEPLOY)) == (["a"], ["a"])
    wait_until(lambda: len(podman_counts("a", COUNTER, since)) >= 2, "lab-pod-counter back on site a")
    assert podman_counts("a", COUNTER, since)[-1] > last_b and consecutive(podman_counts("a", COUNTER, since))


@pytest.mark.usefixtures("fresh_containers")
def test_disaster_restart_from_the_shipped_checkpoint_image(run_drorch: Drorch) -> None:
    shipped = run_drorch("protect", "ship", str(PLAYBOOK), "--json")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    rows = {r["workload"]: r["detail"] for r in json.loads(shipped.stdout)}
    assert "checkpoint localhost/drorch-checkpoint/lab-pod-counter:drorch-" in rows[COUNTER]
    wait_until(lambda: podman_counts("a", COUNTER)[-1] >= 6, "lab-pod-counter past 5")
    at_ship = podman_counts("a", COUNTER)[-1]
    assert (on(COUNTER), on(REDEPLOY)) == (["a"], ["a"])  # protect moves nothing

    labctl.cmd_lose(argparse.Namespace(site="a"))
    since = time.time()
    try:
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", str(PLAYBOOK))
        assert res.returncode == 0, res.stdout + res.stderr
        assert (on(COUNTER), on(REDEPLOY)) == (["b"], ["b"])
        wait_until(lambda: len(podman_counts("b", COUNTER, since)) >= 1, "lab-pod-counter on site b")
        assert 1 < podman_counts("b", COUNTER, since)[0] <= at_ship + 1  # from the recovery point, not from 1
        assert podman_counts("b", REDEPLOY)[0] == 1  # the stopped copy, started from its image
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))


@pytest.mark.usefixtures("fresh_containers")
def test_drill_restores_a_clone_from_the_checkpoint_image_and_leaves_nothing(run_drorch: Drorch) -> None:
    assert run_drorch("protect", "ship", str(PLAYBOOK)).returncode == 0
    before = podman_counts("a", COUNTER)[-1]
    res = run_drorch("drill", str(PLAYBOOK), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["state"] == "succeeded" and doc["passed"] is True, doc
    said = json.dumps(doc)
    assert f"{COUNTER}-drill-1 restored on site b from checkpoint localhost/drorch-checkpoint/{COUNTER}:" in said
    assert lab_podman.containers(B) == []  # every clone removed; the recovery points' copies stay stopped
    assert on(COUNTER) == ["a"] and consecutive([n for n in podman_counts("a", COUNTER) if n >= before])


@pytest.mark.usefixtures("fresh_containers")
def test_docker_site_a_to_podman_site_b_redeploys_and_says_why(run_drorch: Drorch, tmp_path: Path) -> None:
    path = playbook(tmp_path, {"docker": A.docker_url}, {"podman": lab_podman.url(B)},
                    [{"name": labctl.CHECKPOINT_CONTAINER, "strategy": "checkpoint"},
                     {"name": labctl.REDEPLOY_CONTAINER, "strategy": "redeploy"}])
    checked = run_drorch("validate", str(path))
    assert checked.returncode == 0, checked.stderr
    assert ("warning: container lab-counter: a Docker checkpoint from host a9 cannot be restored by Podman on site b "
            "host b9: the move falls back to a redeploy") in checked.stderr
    try:
        res = run_drorch("failover", str(path))
        assert res.returncode == 5, res.stdout + res.stderr  # done, but not as asked
        assert "a Docker checkpoint cannot be restored by Podman on site b" in res.stdout + res.stderr
        assert on(labctl.CHECKPOINT_CONTAINER) == ["b"] and on(labctl.REDEPLOY_CONTAINER) == ["b"]
        with pytest.raises(Exception, match="No such container"):
            container_counts("a", labctl.CHECKPOINT_CONTAINER)  # gone from site a's Docker
        wait_until(lambda: len(podman_counts("b", labctl.CHECKPOINT_CONTAINER)) >= 1, "lab-counter on Podman b")
        assert podman_counts("b", labctl.CHECKPOINT_CONTAINER)[0] == 1  # redeployed: a new process
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))  # the lab's Docker containers back on site a's Docker


@pytest.mark.usefixtures("lab")
def test_validate_names_an_endpoint_of_the_other_engine(run_drorch: Drorch, tmp_path: Path) -> None:
    path = playbook(tmp_path, {"podman": A.docker_url}, {"docker": lab_podman.url(B)},
                    [{"name": COUNTER, "strategy": "checkpoint"}])
    res = run_drorch("validate", str(path))
    assert res.returncode == 1
    assert f"site a host a9: unix://{A.docker_sock} answers as a Docker daemon: list it under docker:, not podman:" \
        in res.stderr
    assert f"site b host b9: {lab_podman.url(B)} answers as a Podman service: list it under podman:, not docker:" \
        in res.stderr


@pytest.mark.usefixtures("fresh_containers")
def test_named_volumes_travel_between_podman_sites(run_drorch: Drorch, tmp_path: Path) -> None:
    names = {"vol-pod-counter": "checkpoint", "vol-pod-redeploy": "redeploy"}
    api = lab_podman.client(A)
    try:
        for name in names:
            made = api.create_container(lab_podman.IMAGE, ["/bin/sh", "-c", VOLUME_COUNTER], name=name,
                                        host_config=api.create_host_config(network_mode="none",
                                                                           binds=[f"{name}-data:/data"]))
            api.start(made["Id"])
    finally:
        api.close()
    for name in names:
        wait_until(lambda n=name: len(podman_counts("a", n)) >= 5, f"{name} counting")
    path = playbook(tmp_path, {"podman": lab_podman.url(A)}, {"podman": lab_podman.url(B)},
                    [{"name": n, "strategy": strategy} for n, strategy in names.items()])
    try:
        since = time.time()
        res = run_drorch("failover", str(path))
        assert res.returncode == 0, res.stdout + res.stderr
        for name in names:
            wait_until(lambda n=name: len(podman_counts("b", n, since)) >= 2, f"{name} counting on b")
        # Both go on from the number in their volume: the checkpoint carried it, the redeploy copied it over.
        # (Lines from the second before the move count too: past 3, as 5 were printed before it.)
        assert all(podman_counts("b", n, since)[0] > 3 for n in names), {n: podman_counts("b", n, since) for n in names}
        assert consecutive(podman_counts("b", "vol-pod-counter", since))
        b = lab_podman.client(B)
        try:
            assert {v["Name"] for v in b.volumes()["Volumes"] or []} >= {f"{n}-data" for n in names}
            assert not b.containers(all=True, filters={"label": "drorch.transfer"})  # no helper left
        finally:
            b.close()
    finally:
        for site in labctl.SITES.values():
            for name in names:
                lab_podman.remove(site, name)
            lab_podman.remove_volumes(site, [f"{n}-data" for n in names])


def podman_volume_files(site: lab_base.Site, volume: str) -> dict[str, bytes]:
    """A Podman volume's files, read through a container that mounts it, created for that and never started."""
    api = lab_podman.client(site)
    try:
        reader = api.create_container(lab_podman.IMAGE, ["true"], host_config=api.create_host_config(
            network_mode="none", binds=[f"{volume}:/data:ro"]))
        try:
            stream, _ = api.get_archive(reader["Id"], "/data/")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                return {m.name.rpartition("/")[2]: tar.extractfile(m).read()  # type: ignore[union-attr]
                        for m in tar.getmembers() if m.isfile()}
        finally:
            api.remove_container(reader["Id"], force=True)
    finally:
        api.close()


def podman_volumes(site: lab_base.Site, prefix: str) -> list[str]:
    api = lab_podman.client(site)
    try:
        return sorted(v["Name"] for v in api.volumes()["Volumes"] or [] if v["Name"].startswith(prefix))
    finally:
        api.close()


@pytest.mark.usefixtures("fresh_containers")
def test_podman_points_keep_their_own_volumes_and_a_restart_leaves_them_as_shipped(
        run_drorch: Drorch, tmp_path: Path) -> None:
    """Two points of a checkpointed Podman container with a volume, a file replaced between them: a drill
    clones the newest on its own copy of the volume; a disaster restart from the older one restores its
    checkpoint image on a copy of its volume; both points are afterwards as shipped."""
    name, data = "vol-pod-points", "vol-pod-points-data"
    api = lab_podman.client(A)
    try:
        made = api.create_container(lab_podman.IMAGE, ["/bin/sh", "-c", VOLUME_COUNTER], name=name,
                                    host_config=api.create_host_config(network_mode="none", binds=[f"{data}:/data"]))
        api.start(made["Id"])
    finally:
        api.close()
    path = playbook(tmp_path, {"podman": lab_podman.url(A)}, {"podman": lab_podman.url(B)},
                    [{"name": name, "strategy": "checkpoint"}], protect={"interval_s": 60, "keep": 2})
    try:
        points = []
        for change in ("echo first > /data/mark", "rm /data/mark; echo second > /data/other"):
            api = lab_podman.client(A)
            try:
                api.exec_start(api.exec_create(name, ["sh", "-c", change]))
            finally:
                api.close()
            shipped = run_drorch("protect", "ship", str(path), "--json")
            assert shipped.returncode == 0, shipped.stdout + shipped.stderr
            points.append(json.loads(shipped.stdout)[0])
        names = [p["name"] for p in points]
        assert f"checkpoint localhost/drorch-checkpoint/{name}:{names[1]}" in points[1]["detail"]
        files = {n: podman_volume_files(B, f"{data}.{n}") for n in names}
        assert [sorted(files[n]) for n in names] == [["count", "mark"], ["count", "other"]]
        kept = sorted([f"{data}.drorch-point", *(f"{data}.{n}" for n in names)])
        assert podman_volumes(B, data) == kept

        drill = run_drorch("drill", str(path), "--json")
        assert drill.returncode == 0, drill.stdout + drill.stderr
        assert "from its image: checkpoint" in drill.stdout  # a restored image would share the volume's name
        assert podman_volumes(B, data) == kept and lab_podman.containers(B) == []

        labctl.cmd_lose(argparse.Namespace(site="a"))
        since = time.time()
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", "--point", points[0]["taken_at"],
                         str(path))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"restored on site b from checkpoint localhost/drorch-checkpoint/{name}:{names[0]}" in res.stdout
        wait_until(lambda: len(podman_counts("b", name, since)) >= 2, f"{name} counting on b")
        at_first = int(files[names[0]]["count"])
        # The first point's process: its checkpoint image is taken before its volume is copied, so the counter it
        # holds may be one behind the volume's.
        assert at_first - 1 <= podman_counts("b", name, since)[0] <= at_first + 2
        assert podman_volume_files(B, data) == {**files[names[0]], "count": podman_volume_files(B, data)["count"]}
        assert {n: podman_volume_files(B, f"{data}.{n}") for n in names} == files
        assert lab_podman.running(B, name) and not lab_podman.running(B, f"{name}.drorch-point")
        status = run_drorch("protect", "status", "--points", str(path))
        assert "2 kept" in status.stdout and "NOT WHOLE" not in status.stdout, status.stdout
    finally:
        labctl.cmd_up(argparse.Namespace(reset=True))
        for site in labctl.SITES.values():
            for c in (name, f"{name}.drorch-point"):
                lab_podman.remove(site, c)
            lab_podman.remove_volumes(site, podman_volumes(site, data))
