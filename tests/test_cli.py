"""The CLI end to end over the real SQLite store and the fake drivers: output, JSON and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drorch import cli, drivers
from drorch.cli import site_commands
from drorch.cli.progress import RichReporter
from drorch.drivers.fake import FakeCloud
from drorch.engine.live_run import StepEvent
from drorch.engine.runner import Engine
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import RunState
from drorch.store.sql_store import Store
from tests.support.cli import drorch
from tests.support.runs import Crash, crash_at, held_by, interrupted
from tests.support.shop import KINDS, fake_drivers, site_of, uri

pytestmark = pytest.mark.usefixtures("fake_cli")


def test_a_failover_runs_the_pre_flight_first_and_stops_as_validate_says_before_anything_moves(
        capsys: pytest.CaptureFixture[str], playbook_file: Path, playbook: Playbook, cloud: FakeCloud,
        store: Store) -> None:
    cloud.unfit["cache"] = "container cache: bind mount of /srv has no counterpart on site b"
    code, _, said = drorch(capsys, "validate", str(playbook_file))
    line = f"{playbook_file}:9:5: container cache: bind mount of /srv has no counterpart on site b"
    assert code == 1 and line in said
    code, out, err = drorch(capsys, "failover", str(playbook_file))
    assert code == 1 and line in err and "run 1" not in out, (out, err)
    assert store.runs() == [] and site_of(cloud, playbook, WorkloadKind.CONTAINER, "cache") == ["a"]


def test_failover_prints_progress_and_exits_0(capsys: pytest.CaptureFixture[str], playbook_file: Path) -> None:
    code, out, err = drorch(capsys, "failover", str(playbook_file))
    assert code == 0, err
    assert "run 1: failover shop, site a -> site b, 3 steps" in out
    assert "[1/3] vm db: live started" in out
    assert "[3/3] container web: done in" in out and "running on site b" in out
    assert re.fullmatch(r"run 1 succeeded in \d+\.\d s", out.strip().splitlines()[-1])
    assert err == ""


def test_status_and_history(capsys: pytest.CaptureFixture[str], playbook_file: Path) -> None:
    drorch(capsys, "failover", str(playbook_file))
    code, out, _ = drorch(capsys, "status", str(playbook_file), "--json")
    assert code == 0
    doc = json.loads(out)
    assert {r["workload"]: r["running_on"] for r in doc["workloads"]} == {"db": ["b"], "cache": ["b"], "web": ["b"]}
    assert doc["runs"] == []  # the failover ended
    code, out, _ = drorch(capsys, "history", "--json")
    runs = json.loads(out)
    assert code == 0 and [(r["id"], r["state"]) for r in runs] == [(1, "succeeded")]
    code, out, _ = drorch(capsys, "history", "1")
    assert code == 0 and "live       succeeded" in out
    code, out, _ = drorch(capsys, "status", str(playbook_file))
    assert "vm        db                       running on site b" in out


def test_failover_json_is_the_run_with_its_steps(capsys: pytest.CaptureFixture[str], playbook_file: Path) -> None:
    code, out, _ = drorch(capsys, "failover", str(playbook_file), "--json")
    report = json.loads(out)
    assert code == 0 and report["state"] == "succeeded"
    assert [s["workload"] for s in report["steps"]] == ["db", "cache", "web"]


def cut_off(cloud: FakeCloud, playbook: Playbook, site: str) -> None:
    """Every endpoint of a site stops answering."""
    for w in playbook.workloads:
        cloud.sites[uri(playbook, w.kind, site)].reachable = False


def test_unreachable_target_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], playbook_file: Path, cloud: FakeCloud, playbook: Playbook
) -> None:
    cut_off(cloud, playbook, "b")
    code, _, err = drorch(capsys, "failover", str(playbook_file))
    assert code == 1
    assert err.splitlines() == [
        "drorch: run 1 failed: vm db: site b: fake://b1/libvirt does not answer (and 2 more: drorch history 1)"]


def test_status_of_a_site_that_does_not_answer_is_unknown_and_exits_1(
    capsys: pytest.CaptureFixture[str], playbook_file: Path, cloud: FakeCloud, playbook: Playbook
) -> None:
    cut_off(cloud, playbook, "a")
    code, out, _ = drorch(capsys, "status", str(playbook_file))
    assert code == 1
    assert "vm        db                       state unknown (site a unreachable)" in out
    assert "running" not in out
    code, out, _ = drorch(capsys, "status", str(playbook_file), "--json")
    assert code == 1 and {r["state"] for r in json.loads(out)["workloads"]} == {"unknown"}


def test_partial_run_exits_3(capsys: pytest.CaptureFixture[str], playbook_file: Path, cloud: FakeCloud) -> None:
    cloud.fail["web"] = "web did not start on site b"
    code, _, err = drorch(capsys, "failover", str(playbook_file))
    assert code == 3 and err.strip() == "drorch: run 1 partial: container web: web did not start on site b"


def test_degraded_run_exits_5_with_each_warning(capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                                 cloud: FakeCloud, playbook: Playbook) -> None:
    cloud.sites[uri(playbook, WorkloadKind.CONTAINER, "b")].checkpoints = False
    code, out, err = drorch(capsys, "failover", str(playbook_file))
    assert code == 5
    assert re.search(r"run 1 succeeded with warnings in \d+\.\d s", out)
    assert "done in" in out and "(warning: redeployed from its image: checkpoints do not work here)" in out
    assert err.strip().splitlines() == ["drorch: warning: container cache: redeployed from its image: checkpoints "
                                        "do not work here"]
    code, out, _ = drorch(capsys, "history", "1", "--json")
    doc = json.loads(out)
    assert doc["state"] == "succeeded with warnings"
    assert [s["warning"] for s in doc["steps"]] == [None, "redeployed from its image: checkpoints do not work here",
                                                    None]


def test_held_workload_exits_4(capsys: pytest.CaptureFixture[str], playbook_file: Path, store: Store) -> None:
    held_by(store, os.getpid())
    code, _, err = drorch(capsys, "failover", str(playbook_file))
    assert code == 4
    assert len(err.splitlines()) == 1 and "is held by run 1" in err
    assert [r.state for r in store.runs()] == [RunState.RUNNING]


def test_malformed_playbook_exits_2_naming_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprimary: a\nsecondary: b\nsites: {a: {hosts: [{name: h}]}, b: {hosts: [{name: h}]}}\n"
                   "workloads:\n  - name: v\n    kind: vmm\n")
    code, out, err = drorch(capsys, "failover", str(bad))
    assert code == 2 and out == ""
    assert err == f"{bad}:7:11: workloads.0.kind: Input should be 'vm', 'container' or 'lxd'\n"
    assert "Traceback" not in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = drorch(capsys, "failover")
    assert code == 2 and "Missing argument" in err


def test_unknown_run_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = drorch(capsys, "history", "99")
    assert code == 2 and err.startswith("drorch: error: no run 99 in sqlite:///")


def test_internal_error_is_one_line_unless_debug(
    capsys: pytest.CaptureFixture[str], playbook_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_kinds: object) -> None:
        raise RuntimeError("wires crossed")

    monkeypatch.setattr(drivers, "make_drivers", boom)
    code, _, err = drorch(capsys, "failover", str(playbook_file))
    assert code == 1
    assert err == "drorch: internal error: RuntimeError('wires crossed') (run with --debug for the traceback)\n"
    with pytest.raises(RuntimeError, match="wires crossed"):
        cli.main(["--debug", "failover", str(playbook_file)])


def test_resume_report_and_status_of_an_interrupted_run(capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                                        store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    with pytest.raises(Crash):
        Engine(store, fake_drivers(cloud), report=crash_at(2), poll_seconds=0).operate(
            playbook, str(playbook_file), "failover", "a", "b")
    interrupted(store, 1)
    code, out, _ = drorch(capsys, "status", str(playbook_file))
    assert code == 0 and "run 1 failover: interrupted (drorch resume or drorch abort)" in out
    code, out, err = drorch(capsys, "resume", "1")
    assert code == 0 and "run 1 succeeded" in out, err
    assert "[2/3] container cache: checkpoint started" in out and "[1/3]" not in out  # db was done already
    code, out, _ = drorch(capsys, "report", "1")
    assert code == 0 and out.startswith("run 1: failover (planned) of shop, site a -> site b: succeeded")
    assert "RTO achieved" in out
    code, out, err = drorch(capsys, "resume", "1")
    assert code == 2 and err == "drorch: error: run 1 succeeded: nothing to resume\n"
    code, _, err = drorch(capsys, "abort", "1")
    assert code == 2 and err == "drorch: error: run 1 already ended: succeeded\n"


def test_commit_window_commands(capsys: pytest.CaptureFixture[str], playbook_file: Path, cloud: FakeCloud,
                                playbook: Playbook) -> None:
    playbook_file.write_text(playbook_file.read_text() + "commit: {window_s: 600, default: rollback}\n")
    code, out, _ = drorch(capsys, "failover", str(playbook_file))
    assert code == 0 and "run 1 is pending commit until" in out and "drorch commit 1 or drorch rollback 1" in out
    code, out, _ = drorch(capsys, "settle")
    assert code == 0 and out == ""  # the window is still open
    code, out, _ = drorch(capsys, "rollback", "1")
    assert code == 1 and site_of(cloud, playbook, WorkloadKind.VM, "db") == ["a"]
    code, _, err = drorch(capsys, "commit", "1")
    assert code == 2 and err == "drorch: error: run 1 is rolled_back, not pending commit\n"
    drorch(capsys, "failover", str(playbook_file))
    code, out, _ = drorch(capsys, "commit", "2")
    assert code == 0 and out == "run 2 committed: succeeded\n"


def test_disaster_cli_refuses_without_fencing(capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                              cloud: FakeCloud, playbook: Playbook) -> None:
    code, out, _ = drorch(capsys, "protect", "ship", str(playbook_file))
    assert code == 0 and out.count("copy on site b at count 42") == 3
    for kind in KINDS:
        cloud.sites[uri(playbook, kind, "a")].reachable = False
    code, _, err = drorch(capsys, "failover", "--disaster", str(playbook_file))
    assert code == 1 and len(err.splitlines()) == 1 and "--confirm-primary-down" in err
    code, _, err = drorch(capsys, "failover", "--confirm-primary-down", str(playbook_file))
    assert code == 2 and "goes with --disaster" in err
    code, out, err = drorch(capsys, "failover", "--disaster", "--confirm-primary-down", str(playbook_file))
    assert code == 0, err


def test_approve_without_a_waiting_step(capsys: pytest.CaptureFixture[str], playbook_file: Path) -> None:
    drorch(capsys, "failover", str(playbook_file))
    code, _, err = drorch(capsys, "approve", "1")
    assert code == 2 and err == "drorch: error: run 1 is not waiting for an approval\n"


def test_status_watch_refreshes_until_interrupted(capsys: pytest.CaptureFixture[str], playbook_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(site_commands.time, "sleep", sleep)
    code, out, _ = drorch(capsys, "status", str(playbook_file), "--watch", "--interval", "0.5", "--json")
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and ticks == [0.5, 0.5] and len(docs) == 2
    assert {r["workload"]: r["running_on"] for r in docs[0]["workloads"]} == {"db": ["a"], "cache": ["a"], "web": ["a"]}


def test_report_json(capsys: pytest.CaptureFixture[str], playbook_file: Path) -> None:
    drorch(capsys, "failover", str(playbook_file))
    code, out, _ = drorch(capsys, "report", "1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["state"] == "succeeded" and doc["rto_s"] >= doc["steps"][-1]["duration_s"]


def test_rich_reporter_draws_bars_and_prints_each_change(store: Store, cloud: FakeCloud, playbook: Playbook) -> None:
    import io

    from rich.console import Console

    screen = io.StringIO()
    reporter = RichReporter(Console(file=screen, force_terminal=False, width=200))
    drawn: list[int] = []
    show = reporter.__call__

    def spy(ev: StepEvent) -> None:
        show(ev)
        drawn.append(len(reporter._tasks))

    Engine(store, fake_drivers(cloud), report=spy, poll_seconds=0).operate(playbook, "shop.yaml", "failover", "a", "b")
    reporter.close()
    out = screen.getvalue()
    assert "run 1: failover shop, site a -> site b, 3 steps" in out
    assert "[1/3] vm db: done in" in out and "[3/3] container web: done in" in out
    assert max(drawn) == 1 and drawn[-1] == 0  # a bar while a move runs, gone when it ends


def test_the_script_exits_with_the_commands_code_and_all_its_output(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "drorch"
    env = {**os.environ, "DRORCH_STATE_DIR": str(tmp_path / "state")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=60)

    assert run("schema").returncode == 0 and json.loads(run("schema").stdout)["title"] == "Playbook"
    missing = run("history", "9")
    assert missing.returncode == 2 and missing.stderr.startswith("drorch: error: no run 9 in sqlite:///")
    assert run("history", "nine").returncode == 2


def test_progress_lines_say_each_thing_once_and_never_an_empty_one(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from drorch.cli import progress
    from drorch.drivers.base import Phase, Progress
    from drorch.model.records import StepState
    from drorch.store.rows import Run, Step

    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    run = Run(id=1, operation="failover", playbook="p", playbook_path="p", source_site="a", target_site="b",
              state=RunState.RUNNING, pid=1, host="h")
    fence = Step(id=1, run_id=1, seq=1, workload="site a", kind="fence", strategy="-", source_site="a",
                 target_site="b", state=StepState.RUNNING)
    move = Step(id=2, run_id=1, seq=2, workload="web", kind="container", strategy="redeploy", source_site="a",
                target_site="b", action="move", request="{}", state=StepState.RUNNING)
    report = progress.LineReporter()
    report(StepEvent(run, fence, 2))
    report(StepEvent(run, move, 2))
    for step in ["", "create", "create", "create", "", "start", "start"]:  # polled once a second
        report(StepEvent(run, move, 2, Progress(Phase.RUNNING, step=step)))
    out = capsys.readouterr().out.splitlines()
    assert out == ["run 1: failover p, site a -> site b, 2 steps", "[1/2] fence site a: started",
                   "[2/2] container web: redeploy started", "[2/2] container web: create",
                   "[2/2] container web: start"]
