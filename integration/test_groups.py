"""Consistency groups on the lab: a VM (guest agent, ext4 data disk) and two containers fed one sequence by one
writer (`integration.seq_writer`). A group's point is one instant of all three, a quiesced VM's filesystem comes
back clean, and no member is ever left frozen, even when drorch is killed between the freeze and the thaw.
Run under `integration/lab isolate`: drorch sees the sites through their APIs only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import docker
import libvirt
import pytest
import yaml

from integration import lab_base, lab_group, labctl, seq_writer
from integration.lab_vm import vm_playbook
from integration.support.lab_views import REPO, Drorch, drorch_process, wait_until

DB, SEQ = lab_group.DB, lab_group.SEQ


@pytest.fixture
def group_lab(lab: None) -> Iterator[None]:
    lab_group.create()
    yield
    lab_group.remove()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Path]:
    """The writer running against the group on site a; stopped by its file, else by its pid."""
    folder = tmp_path / "writer"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "integration.seq_writer", "run", str(folder)], cwd=REPO)
    try:
        wait_until(lambda: (folder / "written").exists() and int((folder / "written").read_text()) >= 3,
                   "the writer's first transactions", 60)
        yield folder
    finally:
        (folder / "stop").touch()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def restarted_on_b(run_drorch: Drorch, book: Path, point: str | None = None, degraded: bool = False
                   ) -> dict[str, int]:
    """A disaster restart of the three on site b; the last number each holds there. `degraded`: a checkpoint
    that does not restore may be redeployed on the point's volumes, with exit 5. (In the lab a checkpoint of a
    container with a named volume does not restore on the other site, with or without groups: CRIU's restore fails
    with "type NOTIFY errno 0"; drorch redeploys it on the point's copy of its volume and says so.)"""
    res = run_drorch("failover", "--disaster", "--confirm-primary-down", *(["--point", point] if point else []),
                     str(book))
    assert res.returncode in ((0, 5) if degraded else (0,)), res.stdout + res.stderr
    wait_until(lambda: "\nlast " in lab_group.serial("b"), f"{DB} booting on site b", 90)
    last = boot_line("last")  # none at all when the point holds none of its writes
    assert not last or seq_writer.whole(last), f"the VM's last record is not whole: {last!r}"
    return {DB: int(last.split()[0]) if last else 0,
            **{name: max(lab_group.container_seq("b", name), default=0) for name in SEQ}}


def boot_line(what: str) -> str:
    """What the VM said at its boot on site b: `fs` (dumpe2fs of its data disk) or `last` (its last record)."""
    return next(line for line in lab_group.serial("b").splitlines() if line.startswith(f"{what} "))[len(what) + 1:]


def kept(run_drorch: Drorch, book: Path) -> list[dict[str, object]]:
    res = run_drorch("protect", "status", "--points", "--json", str(book))
    assert res.returncode == 0, res.stdout + res.stderr
    return [p for row in json.loads(res.stdout) for p in row["kept"]]


def ship(run_drorch: Drorch, book: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    res = run_drorch("protect", "ship", str(book))
    assert res.returncode == code, res.stdout + res.stderr
    return res


def test_separate_points_are_three_instants(group_lab: None, writer: Path, run_drorch: Drorch,
                                            tmp_path: Path) -> None:
    """Today's ships, one workload after another, crash-consistent: the members come back from different
    instants, and the VM's filesystem needs its journal replayed."""
    book = lab_group.playbook(tmp_path, grouped=False)
    ship(run_drorch, book)
    (writer / "stop").touch()
    assert {p["consistency"] for p in kept(run_drorch, book)} == {"crash"}
    last = restarted_on_b(run_drorch, book, degraded=True)
    print(f"\nseparate ships, last number of each member after a restart: {last}")
    assert len(set(last.values())) > 1, last
    assert "needs_recovery" in boot_line("fs"), boot_line("fs")


def test_a_group_point_is_one_instant_and_a_point_in_time_takes_one_cut(group_lab: None, writer: Path,
                                                                       run_drorch: Drorch, tmp_path: Path) -> None:
    book = lab_group.playbook(tmp_path, grouped=True, writer=writer)
    for _ in range(2):
        res = ship(run_drorch, book)
        assert "application-consistent, cut app@" in res.stdout, res.stdout
        time.sleep(1.0)  # the writer writes on between the cuts
    (writer / "stop").touch()
    cuts = [int(n) for n in (writer / "cuts").read_text().split()]
    assert len(cuts) == 2 and cuts[0] < cuts[1], cuts
    points = kept(run_drorch, book)
    by_cut: dict[str, list[dict[str, object]]] = {}
    for p in points:
        by_cut.setdefault(str(p["cut"]), []).append(p)
        frozen_at = datetime.fromisoformat(str(p["frozen_at"]))
        window = timedelta(milliseconds=float(p["freeze_ms"]))  # type: ignore[arg-type]  # JSON's number
        assert frozen_at <= datetime.fromisoformat(str(p["cut_at"])) <= frozen_at + window, p
        assert p["consistency"] == "application", p
    assert len(by_cut) == 2 and all(len(members) == 3 for members in by_cut.values()), by_cut
    first, second = sorted(by_cut)  # <group>@<time>
    print(f"\ngroup cuts {first} and {second}: the writer had written {cuts[0]} and {cuts[1]}; frozen "
          f"{by_cut[first][0]['freeze_ms']:.0f} and {by_cut[second][0]['freeze_ms']:.0f} ms")
    instants = {c: min(datetime.fromisoformat(str(p["cut_at"])) for p in by_cut[c]) for c in by_cut}
    between = instants[first] + (instants[second] - instants[first]) / 2
    last = restarted_on_b(run_drorch, book, between.isoformat(), degraded=True)
    print(f"a restart from the first cut, last number of each member: {last}")
    assert seq_writer.whole(boot_line("last"))
    assert set(last.values()) == {cuts[0]}, (last, cuts)
    fs = boot_line("fs")
    assert "state: clean" in fs and "needs_recovery" not in fs, fs  # no journal replay at mount


def test_a_group_member_killed_between_freeze_and_thaw_is_released_by_the_next_command(
        group_lab: None, run_drorch: Drorch, tmp_path: Path, state_dir: Path) -> None:
    client = docker.DockerClient(base_url=labctl.SITES["a"].docker_url)
    conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
    try:
        big = client.containers.get(SEQ[1])  # its volume copied in place at the cut: a freeze long enough to see
        assert big.exec_run(["sh", "-c", "dd if=/dev/urandom of=/data/bulk bs=1M count=48"]).exit_code == 0
        dom = conn.lookupByName(DB)
        book = lab_group.playbook(tmp_path, grouped=True, max_freeze_ms=60000)
        with drorch_process(state_dir, "protect", "ship", str(book)) as proc:
            wait_until(lambda: freeze_status(dom) == "frozen" and all(paused(client, n) for n in SEQ),
                       "the group frozen", 120)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert freeze_status(dom) == "frozen" and all(paused(client, n) for n in SEQ)  # left by the killed process
        res = run_drorch("protect", "status", str(book))
        assert f"vm {DB} on site a: released" in res.stderr, res.stdout + res.stderr
        assert freeze_status(dom) == "thawed"  # ...and released by the next command that touches it
        assert not any(paused(client, n) for n in SEQ)
        ship(run_drorch, book)  # and a ship after it works, leaving nothing frozen
        assert freeze_status(dom) == "thawed"
    finally:
        conn.close()
        client.close()


def paused(client: docker.DockerClient, name: str) -> bool:
    return bool(client.containers.get(name).attrs["State"]["Paused"])


def freeze_status(dom: libvirt.virDomain) -> str:
    return str(seq_writer.agent(dom, "guest-fsfreeze-status"))


@pytest.mark.usefixtures("fresh_lab")
def test_a_vm_without_a_guest_agent_gives_a_crash_consistent_point_said_with_exit_5(run_drorch: Drorch,
                                                                                   tmp_path: Path) -> None:
    doc = yaml.safe_load(vm_playbook(tmp_path, "live").read_text())
    doc["workloads"][0]["quiesce"] = True
    book = tmp_path / "quiesce.yaml"
    book.write_text(yaml.safe_dump(doc))
    res = ship(run_drorch, book, code=5)
    assert "crash-consistent" in res.stdout and "its filesystems could not be frozen" in res.stdout, res.stdout
    assert [p["consistency"] for p in kept(run_drorch, book)] == ["crash"]
    conn = libvirt.open(labctl.SITES["a"].libvirt_uri)
    try:
        assert conn.lookupByName(lab_base.VM_NAME).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        conn.close()
