"""Continuous protection on the lab, storage hidden: tiered retention over a compressed clock (tiers of seconds)
whose dropped VM increments are merged on site b through its libvirt, every kept point booting its data; a merge
killed half way leaving every kept point whole; and ships slower than their interval never doubled, the skips
counted in the metrics.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import libvirt
import pytest

from drorch.model.records import utcnow
from drorch.model.retention import RetentionTier, kept
from drorch.store.sql_store import Store
from integration import lab_base, lab_libvirt, labctl
from integration.lab_vm import vm_playbook, volumes
from integration.support.lab_views import LAB_PLAYBOOK, Drorch, drorch_process, free_port, scrape, wait_until
from integration.support.vm_guest import fill, listed_volumes, mark, marks_at_boot

VM = lab_base.VM_NAME
DISK = lab_libvirt.VM_DISK


def kept_on_b(run_drorch: Drorch, playbook: Path) -> dict[str, dict[str, object]]:
    """The points `protect status --points` lists on site b, by name, each as it says it."""
    res = run_drorch("protect", "status", "--points", "--json", str(playbook))
    (row,) = [r for r in json.loads(res.stdout) if r["site"] == "b" and not r["history"]]
    return {p["name"]: p for p in row["kept"]}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=None)


def drilled_marks(run_drorch: Drorch, playbook: Path, recorded: object) -> list[int]:
    """The marks that a drill of the point recorded at `recorded` boots with."""
    drill = run_drorch("drill", "--point", str(recorded), str(playbook))
    assert drill.returncode == 0, drill.stdout + drill.stderr
    clone = re.search(r"(lab-vm-drill-\d+)", drill.stdout)
    assert clone is not None, drill.stdout
    return marks_at_boot("b", clone.group(1))


@pytest.mark.usefixtures("fresh_lab")
def test_tiers_keep_their_choice_and_every_kept_vm_point_boots(run_drorch: Drorch, tmp_path: Path) -> None:
    """Every point for 4 s, then the newest of each 8 s for 20 s: after each ship, site b keeps exactly the
    points the tiers choose from every point taken (older ones gone), and no volume that none of them reads; the
    increments dropped between kept points are merged; each kept point then boots with the marks written before
    it."""
    tiers = [{"for_s": 4}, {"every_s": 8, "for_s": 20}]
    playbook = vm_playbook(tmp_path, "live", checked=True,
                           protect={"keep": 1, "full_every": 50, "retention": tiers})
    taken: dict[str, tuple[datetime, str, int]] = {}  # name -> its instant, when it was recorded, the marks at it
    merged = 0
    for k in range(1, 9):
        mark("a", k)
        res = run_drorch("protect", "ship", str(playbook), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        (point,) = json.loads(res.stdout)
        taken[point["name"]] = (at(point["cut_at"]), point["taken_at"], k)
        merged += int(m.group(1)) if (m := re.search(r"(\d+) kept points merged", point["detail"])) else 0
        chosen = kept([(n, t[0]) for n, t in taken.items()], at(point["cut_at"]), 1,
                      [RetentionTier.model_validate(t) for t in tiers])
        held = kept_on_b(run_drorch, playbook)
        assert set(held) == chosen and all(p["whole"] for p in held.values()), (sorted(held), sorted(chosen))
        assert set(volumes("b")) == listed_volumes(run_drorch, playbook)["b"]  # nothing that no kept point reads
        time.sleep(1.5)
    print(f"\n{len(taken)} points taken, {len(held)} kept: {sorted(held)}; {merged} merges on site b")
    assert merged >= 1 and len(held) < len(taken)
    for name in sorted(held):
        _instant, recorded, marks = taken[name]
        assert drilled_marks(run_drorch, playbook, recorded) == list(range(1, marks + 1)), name


def helper_up() -> bool:
    conn = libvirt.open(labctl.SITES["b"].libvirt_uri)
    try:
        return any(d.name().startswith("drorch-merge-") for d in conn.listAllDomains())
    finally:
        conn.close()


@pytest.mark.usefixtures("fresh_lab")
def test_a_merge_killed_half_way_leaves_every_kept_point_whole(run_drorch: Drorch, state_dir: Path,
                                                              tmp_path: Path) -> None:
    """A third point of 8 MiB of changes, its merge over the dropped second point slowed to 1 MiB/s: drorch is
    killed while the helper domain commits, and the helper dies with it. The third point was recorded before its
    merge began; it and the point kept before both boot; the next ship clears what the merge left and every kept
    point boots."""
    playbook = vm_playbook(tmp_path, "live", checked=True, protect={"keep": 1, "full_every": 50, "merge_mib_s": 1})
    for k in (1, 2):
        mark("a", k)
        assert run_drorch("protect", "ship", str(playbook)).returncode == 0
    before = kept_on_b(run_drorch, playbook)
    fill("a", 8, 8)
    mark("a", 3)
    with drorch_process(state_dir, "protect", "ship", str(playbook)) as proc:
        wait_until(helper_up, "the merge's helper domain on site b", 60)
        time.sleep(2)  # well into the commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    wait_until(lambda: not helper_up(), "site b's libvirt destroying the helper of the killed process", 15)
    killed = kept_on_b(run_drorch, playbook)
    assert set(before) < set(killed) and len(killed) == 2, sorted(killed)  # recorded, then killed thinning
    assert all(p["whole"] for p in killed.values())
    for point, marks in zip(sorted(killed), ([1, 2], [1, 2, 3]), strict=True):
        assert drilled_marks(run_drorch, playbook, killed[point]["taken_at"]) == marks, point

    mark("a", 4)
    fast = vm_playbook(tmp_path, "live", checked=True, protect={"keep": 2, "full_every": 50})
    res = run_drorch("protect", "ship", str(fast), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not helper_up() and not [v for v in volumes("b") if "drorch-merge" in v]
    held = kept_on_b(run_drorch, fast)
    assert len(held) == 2 and all(p["whole"] for p in held.values())
    assert set(volumes("b")) == listed_volumes(run_drorch, fast)["b"]  # what the killed merge made is gone
    for point, marks in zip(sorted(held), ([1, 2, 3], [1, 2, 3, 4]), strict=True):
        assert drilled_marks(run_drorch, fast, held[point]["taken_at"]) == marks, point


@pytest.mark.usefixtures("fresh_lab")
def test_a_slowed_target_never_doubles_a_ship_and_holds_up_no_other(run_drorch: Drorch, state_dir: Path,
                                                                     tmp_path: Path) -> None:
    """The daemon protects the lab every 2 s; site b's dockerd is held still for 8 s, so the Docker containers'
    ships take longer than their interval: they are not begun again while they run (no two points of one workload
    were shipped at once), the skips are counted in the metrics, and the VM goes on shipping meanwhile."""
    playbook = tmp_path / "continuous.yaml"
    playbook.write_text(LAB_PLAYBOOK.read_text() + "\nprotect: {interval_s: 2, keep: 1000}\n"
                        "schedules:\n  - {job: protect, every_s: 2}\n")
    port = free_port()
    with drorch_process(state_dir, "daemon", "run", str(playbook), "--lease-s", "3", "--listen",
                        f"127.0.0.1:{port}") as daemon:
        def shipped(kind: str, name: str) -> list[datetime]:
            """The instants of the workload's points, read from the store (not through the sites: one is held)."""
            if not (state_dir / "drorch.db").exists():
                return []
            points = Store(f"sqlite:///{state_dir / 'drorch.db'}").points("lab")
            return [p.instant for p in points if (p.kind, p.workload) == (kind, name) and p.complete]

        wait_until(lambda: bool(shipped("container", labctl.CHECKPOINT_CONTAINER)), "a first point of lab-counter",
                   90)
        vm_points: set[datetime] = set()
        with labctl.held_still("b", "dockerd"):
            began = utcnow().replace(tzinfo=None)
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                vm_points |= {p for p in shipped("vm", VM) if p > began}
                time.sleep(1)
        wait_until(lambda: max(shipped("container", labctl.CHECKPOINT_CONTAINER)) > began, "lab-counter shipped "
                   "again once site b answers", 60)
        skipped = {s[0]["workload"]: s[1] for s in scrape(f"http://127.0.0.1:{port}")["drorch_protect_skipped_total"]}
        res = run_drorch("protect", "status", "--points", "--json", str(playbook))
        ships: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
        for row in json.loads(res.stdout):
            ships[(row["kind"], row["workload"])] = [(at(p["cut_at"]), at(p["taken_at"])) for p in row["kept"]]
        daemon.send_signal(signal.SIGTERM)
        _out, log = daemon.communicate(timeout=120)
    print(f"\nwhile site b's dockerd was held still for 8 s: {len(vm_points)} VM points; ships skipped: {skipped}")
    assert daemon.returncode == 0, log
    assert len(vm_points) >= 2  # the VM's ships went on
    assert skipped.get(labctl.CHECKPOINT_CONTAINER, 0) >= 1
    for (kind, name), spans in ships.items():  # from its cut to its record: never two of one workload at once
        spans.sort()
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), (kind, name, spans)
