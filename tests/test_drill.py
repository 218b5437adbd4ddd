"""DR drills over fake drivers and the real SQLite store: clones in isolation, checks, RTO and RPO, a teardown
that always runs, and the clean-up of drills whose process died."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path

import pytest

import drorch.drivers as drivers_module
from drorch import jobs
from drorch.daemon.scheduler import Daemon
from drorch.daemon.shutdown import stopping
from drorch.drivers.fake import FakeCloud
from drorch.engine.live_run import StepEvent
from drorch.engine.runner import Engine
from drorch.errors import WorkloadBusy
from drorch.model import run_report as reports
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import EXIT_CODES, Action, Mode, Operation, RunState, StepKind, StepState
from drorch.plan.planner import plan
from drorch.reach import snapshot
from drorch.recovery.shipping import protect
from drorch.store.rows import Run, Step
from drorch.store.sql_store import Store
from tests.support.cli import drorch
from tests.support.shop import KINDS, PLAYBOOK, fake_drivers, uri

CLONE_CHECK = ("import os; e = os.environ; assert e['DRORCH_CLONE'] == 'db-drill-' + e['DRORCH_RUN_ID'] "
               "and e['DRORCH_MODE'] == 'drill'")
NETWORKED = PLAYBOOK.replace("{name: db, kind: vm, strategy: live}",
                             "{name: db, kind: vm, strategy: live, hooks: {after: [{run: [\"false\"]}, "
                             f"{{run: [{sys.executable}, -c, \"{CLONE_CHECK}\"], drill: true}}]}}}}")


def b_site(cloud: FakeCloud, pb: Playbook, kind: WorkloadKind) -> dict[str, tuple[bool, int, tuple[str, ...]]]:
    return {n: (w.running, w.counter, w.networks) for n, w in cloud.sites[uri(pb, kind, "b")].workloads.items()}


def protected(cloud: FakeCloud, pb: Playbook, store: Store) -> None:
    cloud.sites[uri(pb, WorkloadKind.VM, "a")].workloads["db"].networks = ("prod-net",)
    points = protect(pb, fake_drivers(cloud), store).points
    assert all(p.complete for p in points)


@pytest.fixture
def pb() -> Playbook:
    return parse_playbook(NETWORKED, "shop.yaml")


def test_a_drill_clones_checks_times_and_tears_down(cloud: FakeCloud, store: Store, pb: Playbook) -> None:
    protected(cloud, pb, store)
    copies = {k: b_site(cloud, pb, k) for k in KINDS}
    a_before = {k: {n: (w.running, w.counter) for n, w in cloud.sites[uri(pb, k, "a")].workloads.items()}
                for k in KINDS}
    seen: dict[str, dict[str, tuple[bool, int, tuple[str, ...]]]] = {}
    planned: list[list[str]] = []

    def watch(ev: StepEvent) -> None:
        if ev.step.kind == StepKind.TEARDOWN and ev.step.state is StepState.RUNNING:  # every clone is up now
            seen.update({str(k): b_site(cloud, pb, k) for k in KINDS})
            planned.append([i.workload for i in plan(pb, snapshot(pb, fake_drivers(cloud)), "a", "b").items])

    run = Engine(store, fake_drivers(cloud), watch).drill(pb, "shop.yaml")

    assert run.state is RunState.SUCCEEDED and run.operation == Operation.DRILL and run.mode == Mode.DRILL
    assert seen["vm"]["db-drill-1"] == (True, 42, ("drorch-drill-1",))  # on the drill's network only
    assert seen["container"]["cache-drill-1"] == (True, 42, ())  # no network at all: its own namespace
    assert seen["container"]["web-drill-1"][0]
    assert sorted(planned[0]) == ["cache", "db", "web"]  # clones are nobody's workloads
    assert {k: b_site(cloud, pb, k) for k in KINDS} == copies  # nothing of the drill is left
    assert not cloud.sites[uri(pb, WorkloadKind.VM, "b")].networks
    assert {k: {n: (w.running, w.counter) for n, w in cloud.sites[uri(pb, k, "a")].workloads.items()}
            for k in KINDS} == a_before  # production untouched
    doc = reports.timeline(run, store.steps(run.id or 0))
    assert doc["passed"] and set(doc["workload_rto_s"]) == {"vm/db", "container/cache", "container/web"}
    assert all(v >= 0 for v in doc["workload_rpo_s"].values()) and len(doc["workload_rpo_s"]) == 3
    db = next(r for r in doc["steps"] if r["workload"] == "db")
    assert [c["ok"] for c in db["checks"]] == [True, True]  # running, and its drill check; `false` is none
    assert db["clone"] == "db-drill-1" and db["checks"][0] == {"check": "running on site b", "ok": True,
                                                               "fatal": False, "said": ""}
    assert store.run_locks(run.id or 0) == []


def test_a_failing_clone_or_missing_point_fails_the_drill_and_still_tears_down(
        cloud: FakeCloud, store: Store, pb: Playbook) -> None:
    protected(cloud, pb, store)
    del cloud.sites[uri(pb, WorkloadKind.CONTAINER, "b")].workloads["web"]  # never shipped
    cloud.fail["cache-drill-1"] = "CRIU restore failed"
    run = Engine(store, fake_drivers(cloud)).drill(pb, "shop.yaml")
    steps = {s.workload: s for s in store.steps(run.id or 0)}
    assert run.state is RunState.PARTIAL
    assert steps["cache"].state is StepState.FAILED and "CRIU restore failed" in (steps["cache"].error or "")
    assert steps["web"].state is StepState.FAILED and "protect it first" in (steps["web"].error or "")
    assert steps["db"].state is StepState.SUCCEEDED and steps["drill clones"].state is StepState.SUCCEEDED
    assert "db-drill-1" not in b_site(cloud, pb, WorkloadKind.VM)
    assert not reports.timeline(run, store.steps(run.id or 0))["passed"]


def test_a_drill_none_of_whose_clones_came_up_failed(cloud: FakeCloud, store: Store, pb: Playbook) -> None:
    """However cleanly it was torn down: exit 1, not partial (3)."""
    protected(cloud, pb, store)
    for name in ("db", "cache", "web"):
        cloud.fail[f"{name}-drill-1"] = "cannot start"
    run = Engine(store, fake_drivers(cloud)).drill(pb, "shop.yaml")
    steps = store.steps(run.id or 0)
    assert run.state is RunState.FAILED and EXIT_CODES[run.state] == 1
    assert [s.state for s in steps] == [StepState.FAILED] * 3 + [StepState.SUCCEEDED]  # the teardown worked


def test_a_failing_drill_check_fails_its_clone(cloud: FakeCloud, store: Store, pb: Playbook) -> None:
    failing = NETWORKED.replace("drill: true}", "drill: true}, {tcp: '127.0.0.1:9', timeout: 0.2, drill: true}")
    pb = parse_playbook(failing, "shop.yaml")
    protected(cloud, pb, store)
    run = Engine(store, fake_drivers(cloud)).drill(pb, "shop.yaml")
    db = next(s for s in store.steps(run.id or 0) if s.workload == "db")
    assert db.state is StepState.FAILED and (db.error or "").startswith("tcp 127.0.0.1:9:")
    checks = json.loads(db.detail or "{}")["checks"]
    assert [c["ok"] for c in checks] == [True, True, False]
    assert run.state is RunState.PARTIAL


def test_a_stopped_drill_cancels_what_has_not_begun_and_tears_down(cloud: FakeCloud, store: Store,
                                                                    pb: Playbook) -> None:
    protected(cloud, pb, store)
    stop = threading.Event()

    def stop_after_first(ev: StepEvent) -> None:
        if ev.step.state is StepState.SUCCEEDED:
            stop.set()

    run = Engine(store, fake_drivers(cloud), stop_after_first, stop=stop).drill(pb, "shop.yaml", hold_s=60)
    states = [s.state for s in store.steps(run.id or 0)]
    assert run.state is RunState.ABORTED and StepState.CANCELLED in states
    assert states[-1] is StepState.SUCCEEDED  # the teardown ran
    assert not any("-drill-" in n for k in KINDS for n in b_site(cloud, pb, k))


def dead_drill(cloud: FakeCloud, store: Store, pb: Playbook, path: str) -> Run:
    """What a drill killed after its clones came up leaves: a running run of a dead pid, and the clones."""
    drivers = fake_drivers(cloud)
    seen: list[Run] = []
    stop = threading.Event()

    def grab(ev: StepEvent) -> None:
        seen.append(ev.run)
        if ev.step.kind == StepKind.TEARDOWN:
            raise KeyboardInterrupt  # the process dies before its teardown
    with pytest.raises(KeyboardInterrupt):
        Engine(store, drivers, grab, stop=stop).drill(pb, path)
    run = store.run(seen[0].id or 0)
    run.pid = 2**22 + 1  # beyond pid_max: no such process
    store.save(run)
    assert "db-drill-1" in b_site(cloud, pb, WorkloadKind.VM)
    return run


def test_a_dead_drill_is_torn_down_by_the_next_one(cloud: FakeCloud, store: Store, pb: Playbook,
                                                   tmp_path: Path) -> None:
    protected(cloud, pb, store)
    path = tmp_path / "shop.yaml"
    path.write_text(NETWORKED)
    first = dead_drill(cloud, store, pb, str(path))
    second = Engine(store, fake_drivers(cloud)).drill(pb, str(path))
    old = store.run(first.id or 0)
    assert old.state is RunState.FAILED and "interrupted" in (old.error or "")
    assert second.state is RunState.SUCCEEDED
    assert not any("-drill-" in n for k in KINDS for n in b_site(cloud, pb, k))
    assert [s.state for s in store.steps(first.id or 0)][-1] is StepState.SUCCEEDED


class Died(BaseException):
    """Stands for the process dying: nothing it would write after that moment is written."""


@pytest.mark.parametrize("n", range(1, 10))
def test_a_drill_that_dies_at_any_transition_is_torn_down_by_the_next(cloud: FakeCloud, store: Store, pb: Playbook,
                                                                      tmp_path: Path, n: int) -> None:
    """Its n-th transition is its last (one past the last, it ends untouched): the next drill tears down what
    it left, and nothing of either drill stays on the secondary."""
    protected(cloud, pb, store)
    path = tmp_path / "shop.yaml"
    path.write_text(NETWORKED)
    seen = [0]

    def die(_ev: StepEvent) -> None:
        seen[0] += 1
        if seen[0] >= n:
            raise Died

    if n <= 8:  # 3 clones and the teardown, 2 transitions each
        with pytest.raises(Died):
            Engine(store, fake_drivers(cloud), die).drill(pb, str(path))
        first = store.run(1)
        assert first.state is RunState.RUNNING
        first.pid = 2**22 + 1  # beyond pid_max: no such process
        store.save(first)
    else:
        assert Engine(store, fake_drivers(cloud), die).drill(pb, str(path)).state is RunState.SUCCEEDED
    second = Engine(store, fake_drivers(cloud)).drill(pb, str(path))
    assert second.state is RunState.SUCCEEDED
    assert store.run(1).state is (RunState.FAILED if n <= 8 else RunState.SUCCEEDED)
    assert [s.state for s in store.steps(1)][-1] is StepState.SUCCEEDED  # its teardown, done by the second
    assert not any("-drill-" in n for k in KINDS for n in b_site(cloud, pb, k))
    assert all(not site.networks for site in cloud.sites.values())


def test_a_live_drill_holds_its_playbook(cloud: FakeCloud, store: Store, pb: Playbook) -> None:
    protected(cloud, pb, store)
    run = store.add_run(Run(operation=Operation.DRILL, playbook="shop", playbook_path="shop.yaml", source_site="a",
                            target_site="b", state=RunState.RUNNING, pid=os.getpid(), host=os.uname().nodename),
                        [Step(run_id=0, seq=1, kind=StepKind.TEARDOWN, workload="drill clones", strategy="-",
                              source_site="a", target_site="b")])
    store.take_locks(["drill/shop"], run.id, os.getpid(), os.uname().nodename)
    with pytest.raises(WorkloadBusy, match="drill/shop is held by run 1"):
        Engine(store, fake_drivers(cloud)).drill(pb, "shop.yaml")


def test_a_daemon_that_takes_the_lead_cleans_up_dead_drills(cloud: FakeCloud, store: Store, pb: Playbook,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drivers_module, "make_drivers", lambda _kinds: fake_drivers(cloud))
    protected(cloud, pb, store)
    path = tmp_path / "shop.yaml"
    path.write_text(NETWORKED)
    run = dead_drill(cloud, store, pb, str(path))
    daemon = Daemon(store, [], lease_s=1)
    daemon.tick()
    daemon.stop()
    assert store.run(run.id or 0).state is RunState.FAILED
    assert not any("-drill-" in n for k in KINDS for n in b_site(cloud, pb, k))


def test_the_drill_job_and_command(cloud: FakeCloud, store: Store, pb: Playbook, tmp_path: Path, fake_cli: None,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(drivers_module, "make_drivers", lambda _kinds: fake_drivers(cloud))
    protected(cloud, pb, store)
    path = tmp_path / "shop.yaml"
    path.write_text(NETWORKED)
    stopping.clear()  # as a daemon starting does
    jobs.drill(str(path))
    assert store.run(1).state is RunState.SUCCEEDED
    code, out, _err = drorch(capsys, "drill", str(path))
    assert code == 0 and "run 2: drill (drill) of shop, site a -> site b: succeeded" in out
    assert "check passed: running on site b" in out and "RPO of the recovery points used: container/cache" in out
    code, out, _err = drorch(capsys, "drill", str(path), "--json")
    assert code == 0 and json.loads(out)["passed"] is True
    page = tmp_path / "drill.html"
    code, out, _err = drorch(capsys, "report", "3", "--html", str(page))
    html = page.read_text()
    assert code == 0 and html.startswith("<!DOCTYPE html>") and "<svg" in html and "<rect" in html
    assert html.count('class="pass">pass<') == 4 and '<span class="pass">succeeded</span>' in html
    assert "src=" not in html and "href=" not in html  # self-contained
    del cloud.sites[uri(pb, WorkloadKind.CONTAINER, "b")].workloads["web"]
    code, _out, _err = drorch(capsys, "drill", str(path))
    assert code == 3  # partial: one clone could not be made


def test_a_drill_with_nothing_to_clone_fails_saying_why(capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                                        fake_cli: None) -> None:
    code, out, _ = drorch(capsys, "drill", str(playbook_file))
    assert code == 1 and "RTO achieved: -" in out
    assert "failed (nothing could be drilled (db: site b holds no copy of it to start from: protect it first" in out


def test_when_everything_runs_on_the_secondary_a_drill_tests_the_way_back(
        capsys: pytest.CaptureFixture[str], playbook_file: Path, playbook: Playbook, cloud: FakeCloud, store: Store,
        fake_cli: None) -> None:
    assert drorch(capsys, "failover", str(playbook_file))[0] == 0
    code, out, _ = drorch(capsys, "drill", str(playbook_file))  # no point on site a yet: nothing to drill
    assert code == 1 and "site b -> site a: failed (nothing could be drilled (db: site a holds no copy" in out
    assert drorch(capsys, "protect", "ship", "--failback", str(playbook_file))[0] == 0
    code, out, _ = drorch(capsys, "drill", str(playbook_file))
    assert code == 0, out
    run = store.runs(1)[0]
    assert (run.operation, run.source_site, run.target_site, run.state) == (
        Operation.DRILL, "b", "a", RunState.SUCCEEDED)
    cloned = [s for s in store.steps(run.id or 0) if s.action == Action.DRILL]
    assert len(cloned) == 3 and all(s.state is StepState.SUCCEEDED and s.target_site == "a" for s in cloned)
    assert re.search(r"RTO achieved: \d+\.\d s", out)
    assert all(w.running for k in KINDS for w in cloud.sites[uri(playbook, k, "b")].workloads.values())
    assert not [n for k in KINDS for n in cloud.sites[uri(playbook, k, "a")].workloads if "-drill-" in n]
