"""LXD sites on the real lab: an LXD per site, reached by drorch over HTTPS only (LXD_DIR is hidden from it).

The system container counts on its root file system (/var/counter), so a copy move, a restart from a snapshot and
a drill each show by the count where the file system they run on came from.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import docker
import pytest
import yaml

from drorch.errors import ExitCode
from drorch.store.sql_store import Store
from integration import lab_lxd, labctl
from integration.support.lab_views import DRORCH, REPO, Drorch, container_counts, lxd_count, wait_until

PLAYBOOK = REPO / "playbooks" / "lab-lxd.yaml"
NAME = lab_lxd.CONTAINER
A, B = labctl.SITES["a"], labctl.SITES["b"]


def on() -> list[str]:
    """The sites whose LXD runs the system container."""
    return [s.name for s in labctl.SITES.values() if lab_lxd.status(s, NAME) == "Running"]


def count(site: str) -> int:
    return lxd_count(site)


def past(site: str, n: int) -> None:
    wait_until(lambda: count(site) > n, f"{NAME}'s counter on site {site} past {n}")


def with_strategy(tmp_path: Path, strategy: str) -> Path:
    doc = yaml.safe_load(PLAYBOOK.read_text())
    doc["workloads"][0]["strategy"] = strategy
    path = tmp_path / f"lab-lxd-{strategy}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.usefixtures("fresh_containers")
def test_copy_move_goes_on_from_the_file_system_and_comes_back(run_drorch: Drorch, state_dir: Path) -> None:
    past("a", 3)
    res = run_drorch("failover", str(PLAYBOOK))
    assert res.returncode == 0, res.stdout + res.stderr
    assert on() == ["b"]
    at_b = count("b")
    assert at_b > 3  # its count went on from what its file system held, not from 1
    past("b", at_b)
    steps = Store(f"sqlite:///{state_dir / 'drorch.db'}").steps(1)
    assert [(s.workload, s.strategy, s.state, s.outcome) for s in steps] == [
        (NAME, "copy", "succeeded", "running on site b (copied stopped)")]
    assert lab_lxd.status(A, NAME) == "Stopped"  # kept stopped at home: the way back refreshes it

    last_b = count("b")
    back = run_drorch("failback", str(PLAYBOOK), "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    assert json.loads(back.stdout)["state"] == "succeeded"
    assert on() == ["a"] and count("a") >= last_b


@pytest.mark.usefixtures("fresh_containers")
def test_a_relayed_point_and_move_cross_through_drorch(run_drorch: Drorch, state_dir: Path, tmp_path: Path) -> None:
    """Site b's LXD marked lxd_relay: no server pulls from the other; drorch carries the migration's channels."""
    doc = yaml.safe_load(PLAYBOOK.read_text())
    doc["sites"]["b"]["hosts"][0]["lxd_relay"] = True
    path = tmp_path / "lab-lxd-relay.yaml"
    path.write_text(yaml.safe_dump(doc))
    shipped = run_drorch("protect", "ship", str(path), "--json")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert len(lab_lxd.client(B).instances.get(NAME).snapshots.all()) == 1
    past("a", 3)
    res = run_drorch("failover", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert on() == ["b"] and count("b") > 3  # went on from its file system, refreshed over the relay
    step = Store(f"sqlite:///{state_dir / 'drorch.db'}").steps(1)[0]
    assert (step.bytes_done or 0) > 0  # what crossed was counted by drorch, which carried it
    back = run_drorch("failback", str(path))
    assert back.returncode == 0, back.stdout + back.stderr
    assert on() == ["a"]


@pytest.mark.usefixtures("fresh_containers")
def test_a_stateful_move_that_lxd_cannot_make_is_a_copy_and_says_so(run_drorch: Drorch, tmp_path: Path) -> None:
    """The lab's LXDs run without CRIU on their PATH: LXD refuses the live migration, and drorch copies."""
    past("a", 2)
    res = run_drorch("failover", str(with_strategy(tmp_path, "stateful")), "--json")
    assert res.returncode == ExitCode.WARNINGS, res.stdout + res.stderr
    assert on() == ["b"] and count("b") > 2
    said = json.dumps(json.loads(res.stdout))
    assert "its live state could not move" in said and "copied instead" in said


@pytest.mark.usefixtures("fresh_containers")
def test_points_are_snapshots_refreshed_on_b_and_a_disaster_restart_starts_from_one(run_drorch: Drorch) -> None:
    first = run_drorch("protect", "ship", str(PLAYBOOK), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    at_first = count("a")
    past("a", at_first + 2)
    second = run_drorch("protect", "ship", str(PLAYBOOK), "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    detail = json.loads(second.stdout)[0]["detail"]
    assert "refreshed" in detail and "2 kept" in detail, detail
    at_second = count("a")
    assert on() == ["a"] and lab_lxd.status(B, NAME) == "Stopped"  # protecting moves nothing
    points = [s.name.split("/")[-1] for s in lab_lxd.client(B).instances.get(NAME).snapshots.all()]
    assert len(points) == 2 and all(p.startswith("drorch-") for p in points)

    lab_lxd.stop(A)  # site a's LXD is lost, with the instance
    try:
        res = run_drorch("failover", "--disaster", "--confirm-primary-down", str(PLAYBOOK))
        assert res.returncode == 0, res.stdout + res.stderr
        assert lab_lxd.status(B, NAME) == "Running"
        started = count("b")
        assert at_first < started <= at_second + 2  # from the newest point, not from 1 nor from the first point
        after = [s.name.split("/")[-1] for s in lab_lxd.client(B).instances.get(NAME).snapshots.all()]
        assert after == points  # restoring a point left the snapshots as they were
    finally:
        lab_lxd.start(A)


@pytest.mark.usefixtures("fresh_containers")
def test_drill_starts_a_clone_of_a_point_and_leaves_nothing(run_drorch: Drorch) -> None:
    assert run_drorch("protect", "ship", str(PLAYBOOK)).returncode == 0
    res = run_drorch("drill", str(PLAYBOOK), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["state"] == "succeeded" and doc["passed"] is True, doc
    assert f"{NAME}-drill-" in json.dumps(doc)
    assert lab_lxd.instances(B) == []  # the clone is gone; the point copy stays stopped
    assert lab_lxd.status(B, NAME) == "Stopped" and on() == ["a"]


@pytest.mark.usefixtures("lab")
def test_validate_names_what_the_target_lacks_and_an_untrusted_client(run_drorch: Drorch, tmp_path: Path) -> None:
    doc = yaml.safe_load(PLAYBOOK.read_text())
    doc["mappings"] = {"profiles": {"default": "no-such-profile"}}
    path = tmp_path / "lab-lxd-unmapped.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = run_drorch("validate", str(path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'profile "no-such-profile" does not exist on site b host b3' in res.stdout + res.stderr

    def host_b(change: dict[str, object], said: str) -> None:
        doc = yaml.safe_load(PLAYBOOK.read_text())
        doc["sites"]["b"]["hosts"][0].update(change)
        path.write_text(yaml.safe_dump(doc))
        res = run_drorch("validate", str(path))
        assert res.returncode != 0 and said in res.stdout + res.stderr, res.stdout + res.stderr

    tls = yaml.safe_load(PLAYBOOK.read_text())["sites"]["b"]["hosts"][0]["lxd_tls"]
    host_b({"lxd_tls": {**tls, "cert": str(labctl.PKI / "server-cert.pem"), "key": str(labctl.PKI / "server-key.pem")}},
           "site b: LXD at https://127.0.0.2:18443: the server does not trust drorch's client certificate")
    host_b({"lxd_tls": {**tls, "server_cert": str(lab_lxd.server_cert(A))}},
           "site b: LXD at https://127.0.0.2:18443 answers with a certificate other than the one pinned")
    host_b({"lxd": B.docker_url}, f"site b: LXD at {B.docker_url} does not answer as LXD")


@pytest.mark.usefixtures("fresh_containers")
def test_a_drill_clone_has_its_nic_on_the_drill_bridge_only(state_dir: Path, tmp_path: Path) -> None:
    """An instance with a NIC on a bridge of its host (no address, as all of the lab's; both sites' LXDs share this
    machine's interfaces, so it serves both): its drill clone's one NIC is on a bridge made for the drill, removed
    with it."""
    bridge_out, name = "lsysbr0", "lab-sys-nic"
    subprocess.run(["ip", "link", "add", bridge_out, "type", "bridge"], check=True)
    clients = {s.name: lab_lxd.client(s) for s in labctl.SITES.values()}
    doc = yaml.safe_load(PLAYBOOK.read_text())
    doc["workloads"] = [{"name": name, "kind": "lxd"}]
    doc["drill"] = {"hold_s": 10}
    path = tmp_path / "lab-lxd-nic.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        nic = {"type": "nic", "nictype": "bridged", "parent": bridge_out}
        made = clients["a"].instances.create({"name": name, "source": {"type": "image", "alias": lab_lxd.IMAGE},
                                              "devices": {"eth0": nic}}, wait=True)
        made.start(wait=True)
        env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
        shipped = subprocess.run([str(DRORCH), "protect", "ship", str(path)], capture_output=True, text=True, env=env)
        assert shipped.returncode == 0, shipped.stdout + shipped.stderr
        drill = subprocess.Popen([str(DRORCH), "drill", str(path), "--json"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        clone = f"{name}-drill-"
        wait_until(lambda: any(i.name.startswith(clone) and i.status == "Running"
                               for i in clients["b"].instances.all()), "the drill's clone up on site b", 60)
        up = next(i for i in clients["b"].instances.all() if i.name.startswith(clone))
        bridge = up.expanded_devices["eth0"]["network"]
        assert bridge.startswith(("drorch-drill-", "drd")) and bridge != bridge_out
        assert [d for d in up.expanded_devices.values() if d.get("type") == "nic"] == [
            {"type": "nic", "network": bridge}]  # one NIC, on the drill's bridge only
        out, err = drill.communicate(timeout=120)
        assert drill.returncode == 0, out + err
        assert json.loads(out)["passed"] is True
        assert not clients["b"].networks.exists(bridge)  # the drill's bridge went with its clone
        assert not [i.name for i in clients["b"].instances.all() if i.name.startswith(clone)]
    finally:
        for c in clients.values():
            if c.instances.exists(name):
                inst = c.instances.get(name)
                if inst.status != "Stopped":
                    inst.stop(force=True, wait=True)
                inst.delete(wait=True)
        subprocess.run(["ip", "link", "del", bridge_out], check=False)


APP_IMAGE = "drorch-lab/system-app:1"  # what the system container lands as on site b's Docker


def landing_playbook(tmp_path: Path, mapped: bool = True) -> Path:
    """The LXD playbook with site b's Docker beside its LXD, and the system container landing there."""
    doc = yaml.safe_load(PLAYBOOK.read_text())
    docker_b = yaml.safe_load((REPO / "playbooks" / "lab.yaml").read_text())["sites"]["b"]["hosts"][0]
    doc["sites"]["b"]["hosts"].append({k: v for k, v in docker_b.items() if k in ("docker", "tls")} | {
        "name": "b1", "capacity": {"vcpus": 4, "memory_mib": 2048}})
    doc["workloads"] = [{"name": NAME, "kind": "lxd", "land_as": "container"}]
    key = str(lab_lxd.client(A).instances.get(NAME).config["volatile.base_image"])[:12]
    if mapped:
        doc["mappings"] = {"images": {key: APP_IMAGE}}
    path = tmp_path / "lab-lxd-landing.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.usefixtures("fresh_containers")
def test_it_lands_on_b_s_docker_as_a_container_and_comes_back_an_instance(run_drorch: Drorch, tmp_path: Path) -> None:
    """LXD site a -> Docker site b by redeploy: the container counts from 1 on the mapped image; its point is that
    image and config on b, which a drill starts; failing back starts the instance as it left, its count going on
    from its root file system."""
    client = docker.DockerClient(base_url=B.docker_url)
    try:
        unmapped = run_drorch("validate", str(landing_playbook(tmp_path, mapped=False)))
        assert unmapped.returncode == 1, unmapped.stdout + unmapped.stderr
        assert "which site b host b1 does not have: load it there, or map image" in unmapped.stdout + unmapped.stderr
        if not client.images.list(name=APP_IMAGE):  # no registry: the DR site's operator loads its images
            repo, tag = APP_IMAGE.split(":")
            client.api.import_image_from_data(labctl.image_tar(), repository=repo, tag=tag,
                                              changes=["CMD " + json.dumps(["/bin/sh", "-c", labctl.COUNTER_SCRIPT])])
        path = landing_playbook(tmp_path)
        assert run_drorch("validate", str(path)).returncode == 0

        shipped = run_drorch("protect", "ship", str(path), "--json")
        assert shipped.returncode == 0, shipped.stdout + shipped.stderr
        copy = client.containers.get(NAME)
        assert copy.status == "created" and copy.labels.get("drorch.point") == "1"
        assert copy.attrs["Config"]["Image"] == APP_IMAGE
        drill = run_drorch("drill", str(path), "--json")
        assert drill.returncode == 0, drill.stdout + drill.stderr
        assert json.loads(drill.stdout)["passed"] is True
        assert [c.name for c in client.containers.list(all=True) if c.name.startswith(f"{NAME}-drill-")] == []

        past("a", 3)
        res = run_drorch("failover", str(path), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert client.containers.get(NAME).status == "running"
        wait_until(lambda: len(container_counts("b", NAME)) >= 2, f"{NAME}'s count in its container on site b")
        assert container_counts("b", NAME)[0] == 1  # redeployed from the image
        assert lab_lxd.status(A, NAME) == "Stopped" and on() == []  # no LXD runs it; the instance waits at home
        left = count("a")

        back = run_drorch("failback", str(path), "--json")
        assert back.returncode == 0, back.stdout + back.stderr
        assert on() == ["a"]
        past("a", left)  # as it left: counting on from its root file system
        assert NAME not in [c.name for c in client.containers.list(all=True)]  # the point copy stays, set aside
        assert client.containers.get(f"{NAME}.drorch-point").labels.get("drorch.point") == "1"
    finally:
        for c in client.containers.list(all=True):
            if c.name == NAME or c.name.startswith(f"{NAME}."):
                c.remove(force=True)
        client.close()
