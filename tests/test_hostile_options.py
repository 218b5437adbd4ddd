"""Hostile numbers and options: run ids past 64 bits, infinite or tiny intervals, empty or impossible cron
expressions, ids with control characters, playbook values at numeric extremes, duplicate keys, dependency
chains and cycles far longer than Python's recursion, and schedules that fall due while `schedule add` runs.
Each ends with its exact exit code and one clear line."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from drorch.cli.daemon_commands import _OneLine
from drorch.model.playbook import Playbook
from drorch.model.playbook_file import reference_problems
from tests.support.cli import drorch
from tests.support.shop import PLAYBOOK

pytestmark = pytest.mark.usefixtures("fake_cli")

RUN_ID_COMMANDS = ["history", "report", "resume", "abort", "approve", "commit", "rollback"]


@pytest.mark.parametrize("command", RUN_ID_COMMANDS)
@pytest.mark.parametrize("run_id", [str(1 << 63), "99999999999999999999", "0", "-1"])
def test_run_ids_outside_the_stores_range(command: str, run_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = drorch(capsys, command, "--", run_id)
    assert code == 2 and out == "", err
    assert re.search(rf"Error: Invalid value for '(RUN_ID|run_id)': {re.escape(run_id)} is not in the range "
                     r"1<=x<=9223372036854775807\.", err), err


def test_a_history_limit_outside_its_range(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = drorch(capsys, "history", "--limit", "99999999999999999999")
    assert code == 2 and "Invalid value for '--limit': 99999999999999999999 is not in the range 1<=x<=100000" in err


@pytest.mark.parametrize("every, said", [
    ("inf", "--every: Input should be a finite number"),
    ("nan", "--every: Input should be a finite number"),
    ("1e308", "--every: Input should be less than or equal to 31622400"),
    ("1e20", "--every: Input should be less than or equal to 31622400"),
    ("1e-300", "--every: Input should be greater than or equal to 1"),
    ("-1", "--every: Input should be greater than or equal to 1"),
])
def test_schedule_intervals_outside_their_range(every: str, said: str, playbook_file: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = drorch(capsys, "schedule", "add", str(playbook_file), "--job", "protect", "--every", every)
    assert (code, out, err) == (2, "", f"drorch: error: {said}\n")


@pytest.mark.parametrize("cron, said", [
    ("", "Wrong number of fields; got 0, expected 5"),
    ("99 99 * * *", "Error validating expression '99': the last value (99) is higher than the maximum value"),
    ("* * * *", "Wrong number of fields; got 4, expected 5"),
])
def test_cron_expressions_that_cannot_run(cron: str, said: str, playbook_file: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = drorch(capsys, "schedule", "add", str(playbook_file), "--job", "protect", "--cron", cron)
    assert code == 2 and out == "" and err.startswith("drorch: error: --cron: not a cron expression") and said in err


def test_schedule_ids_with_control_characters(playbook_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = drorch(capsys, "schedule", "add", str(playbook_file), "--job", "protect", "--every", "60",
                            "--id", "evil\x1b[2J\nid")
    assert code == 2 and out == "" and "\x1b" not in err
    assert r"Invalid value for '--id': 'evil\x1b[2J\nid' is not an id" in err


@pytest.mark.parametrize("option", [["status", "{pb}", "--watch", "--interval"], ["daemon", "run", "--lease-s"],
                                    ["drill", "{pb}", "--hold-s"]])
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e308"])
def test_second_options_outside_their_range(option: list[str], value: str, playbook_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(pb=playbook_file) for a in option]
    code, out, err = drorch(capsys, *args, value)
    assert code == 2 and out == "", err
    assert f"Invalid value for '{args[-1]}': {float(value)} is not a number of seconds from" in err


@pytest.mark.parametrize("edit, field, said", [
    (("name: shop", "name: !!int xyz"), None, "'xyz' is not a valid int"),
    (("name: shop", "name: " + "9" * 5000), None, "is not a valid int: Exceeds the limit (4300 digits)"),
    (("  a: {hosts", "  a: {overcommit: {cpu: .inf}, hosts"), "sites.a.overcommit.cpu",
     "Input should be a finite number"),
    (("  a: {hosts", "  a: {overcommit: {memory: 1e308}, hosts"), "sites.a.overcommit.memory",
     "Input should be less than or equal to 1000"),
    (("  a: {hosts", "  a: {answer_timeout_s: .inf, hosts"), "sites.a.answer_timeout_s",
     "Input should be a finite number"),
    (("  a: {hosts", "  a: {answer_timeout_s: 1e308, hosts"), "sites.a.answer_timeout_s",
     "Input should be less than or equal to 3600"),
    (("workloads:", "schedules: [{job: protect, cron: '99 99 * * *'}]\nworkloads:"), "schedules.0.cron",
     "not a cron expression"),
    (("workloads:", "schedules: [{job: protect, every_s: .inf}]\nworkloads:"), "schedules.0.every_s",
     "Input should be a finite number"),
    (("workloads:", "mappings: {ports: {-443: 99999999}}\nworkloads:"), "mappings.ports.-443.[key]",
     "Input should be greater than or equal to 1"),
    (("workloads:", "tiers: {default: {priority: 1e400}}\nworkloads:"), "tiers.default.priority", None),
    (("workloads:", "version: 99999999999999999999\nworkloads:"), "version", "less than or equal to 1"),
])
def test_numeric_extremes_are_located(edit: tuple[str, str], field: str | None, said: str | None, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "extreme.yaml"
    path.write_text(PLAYBOOK.replace(*edit, 1))
    for command in ("validate", "plan"):
        code, _, err = drorch(capsys, command, str(path))
        assert code in (1, 2) and "internal error" not in err and "Traceback" not in err, err
        lines = err.splitlines()
        assert lines and all(re.match(rf"{re.escape(str(path))}:\d+:\d+: ", ln) for ln in lines), err
        if field is not None:
            assert any(f": {field}: " in ln for ln in lines), err
        if said is not None:
            assert said in err


def test_a_duplicate_key_is_an_error_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second `workloads:` would silently drop the first list."""
    path = tmp_path / "twice.yaml"
    path.write_text(PLAYBOOK + "workloads:\n  - {name: other, kind: vm}\n")
    line = PLAYBOOK.count("\n") + 1
    first = PLAYBOOK.splitlines().index("workloads:") + 1
    code, _, err = drorch(capsys, "plan", str(path))
    assert (code, err) == (2, f"{path}:{line}:1: key 'workloads' is given twice (first at {path}:{first}:1): "
                              "YAML would keep only the last\n")


def _chain(n: int, cycle: bool) -> Playbook:
    deps = [[f"w{(i + 1) % n}"] if cycle or i + 1 < n else [] for i in range(n)]
    return Playbook.model_validate({
        "name": "chain", "primary": "a", "secondary": "b",
        "sites": {"a": {"hosts": [{"name": "a1", "libvirt": "test:///a"}]},
                  "b": {"hosts": [{"name": "b1", "libvirt": "test:///b"}]}},
        "workloads": [{"name": f"w{i}", "kind": "vm", "depends_on": d} for i, d in enumerate(deps)]})


@pytest.mark.parametrize("cycle", [True, False])
def test_a_100000_workload_dependency_chain_or_cycle(cycle: bool) -> None:
    pb = _chain(100_000, cycle)
    began = time.perf_counter()
    problems = reference_problems(pb)
    took = time.perf_counter() - began
    print(f"dependency checks of a 100,000-workload {'cycle' if cycle else 'chain'}: {took:.2f} s")
    if not cycle:
        assert problems == []
        return
    ((loc, message),) = problems
    assert loc == ("workloads", 0, "depends_on")
    assert message == ("dependency cycle: w0 -> w1 -> w2 -> w3 -> w4 -> w5 -> ... (99,991 more) -> w99997 -> "
                       "w99998 -> w99999 -> w0")
    assert took < 10  # linear: the recursive walk this replaces died past 1,000; docs/limits.md quotes the figure


def test_a_1000_workload_cycle_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cycle.yaml"
    entries = "".join(f"  - {{name: w{i}, kind: vm, depends_on: [w{(i + 1) % 1500}]}}\n" for i in range(1500))
    path.write_text(PLAYBOOK.split("workloads:")[0] + "workloads:\n" + entries)
    code, _, err = drorch(capsys, "validate", str(path))
    assert code == 1 and re.fullmatch(rf"{re.escape(str(path))}:\d+:\d+: dependency cycle: w0 -> w1 -> .*"
                                      r"\(1,491 more\) -> w1497 -> w1498 -> w1499 -> w0\n", err), err


def test_a_schedule_due_while_another_is_added_is_neither_run_nor_moved(
        playbook_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`schedule add` and `remove` write the job table only: a due job stays due, for the daemon to run."""
    assert drorch(capsys, "schedule", "add", str(playbook_file), "--job", "protect", "--every", "1",
                  "--id", "due")[0] == 0
    code, out, _ = drorch(capsys, "schedule", "list", "--json")
    due_at = next(j["next_run"] for j in __import__("json").loads(out) if j["id"] == "due")
    time.sleep(1.5)
    for args in (["add", str(playbook_file), "--job", "readiness", "--every", "60", "--id", "other"],
                 ["remove", "other"]):
        code, out, err = drorch(capsys, "schedule", *args)
        assert code == 0 and err == "", err
    code, out, _ = drorch(capsys, "schedule", "list", "--json")
    assert [(j["id"], j["next_run"]) for j in __import__("json").loads(out)] == [("due", due_at)]


def test_log_lines_stay_one_line_with_names_escaped() -> None:
    import logging

    record = logging.LogRecord("apscheduler", logging.INFO, __file__, 1, 'Added job "protect \x1b[31mevil\nx.yaml"',
                               None, None)
    assert _OneLine("%(message)s").format(record) == r'Added job "protect \x1b[31mevil\nx.yaml"'


def _fifo(tmp_path: Path, name: str) -> Path:
    import os

    path = tmp_path / name
    os.mkfifo(path, 0o600)
    return path


@pytest.mark.parametrize("option, file, said", [
    ("--token-file", "/dev/zero", "token file /dev/zero: not a regular file (a device)"),
    ("--token-file", "fifo", "token file {fifo}: not a regular file (a named pipe)"),
    ("--token-file", "huge", "token file {huge}:1:1: larger than the limit of 64 KiB"),
    ("--tls-cert", "fifo", "TLS certificate {fifo}: not a regular file (a named pipe)"),
    ("--tls-key", "/dev/zero", "TLS key /dev/zero: not a regular file (a device)"),
])
def test_the_listeners_files_are_checked_before_they_are_read(option: str, file: str, said: str, tmp_path: Path,
                                                              store: object) -> None:
    """A FIFO would hang the daemon at its start and /dev/zero fill its memory: each is one line, at once."""
    from tests.support.cli import run_limited

    fifo, huge = _fifo(tmp_path, "fifo"), tmp_path / "huge"
    huge.write_text("t" * (1 << 20))
    huge.chmod(0o600)
    given = {"fifo": str(fifo), "huge": str(huge)}.get(file, file)
    small = tmp_path / "small.pem"
    small.write_text("-----BEGIN CERTIFICATE-----\n")
    pair = {"--tls-cert": ["--tls-key", str(small)], "--tls-key": ["--tls-cert", str(small)]}.get(option, [])
    began = time.monotonic()
    res = run_limited("daemon", "run", "--listen", "127.0.0.1:1", option, given, *pair, timeout=30)
    assert time.monotonic() - began < 20
    assert res.returncode == 2 and res.stderr == f"drorch: error: {said.format(fifo=fifo, huge=huge)}\n", res.stderr


@pytest.mark.parametrize("point", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("command", [["drill"], ["failover", "--disaster"]])
def test_a_point_in_time_past_the_calendars_ends(point: str, command: list[str], playbook_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = drorch(capsys, *command, str(playbook_file), "--point", point)
    assert code == 2 and out == "" and "internal error" not in err, err
    assert f"Invalid value for '--point': {point!r} is not a time drorch can use: in UTC it falls outside years 1 " \
           "to 9999" in err, err


def test_an_in_memory_store_is_refused_naming_why(playbook_file: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        monkeypatch.setenv("DRORCH_DB_URL", url)
        code, out, err = drorch(capsys, "schedule", "add", str(playbook_file), "--job", "protect", "--every", "60")
        assert code == 2 and out == "", err
        assert err == f"drorch: error: state store URL {url}: an in-memory database keeps nothing once the command " \
                      "ends, so no run, schedule or point would be recorded: name a file (sqlite:///state/drorch.db)\n"


def test_a_report_to_a_named_pipe_is_refused_at_once(playbook_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert drorch(capsys, "failover", str(playbook_file))[0] == 0
    fifo = _fifo(tmp_path, "report.html")
    code, out, err = drorch(capsys, "report", "1", "--html", str(fifo))
    assert (code, out) == (2, "") and err == f"drorch: error: {fifo}: not a regular file (a named pipe): write " \
                                             "the report to a file\n", err
