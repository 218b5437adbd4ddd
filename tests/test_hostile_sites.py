"""Hostile answers from a site, through the real container driver against a stand-in Docker Engine API on
loopback: names with control characters are printed escaped in every text output, an endless JSON answer is
cut off at its bound, an answer of the wrong shape is a host that did not answer usefully. Also the exit codes
of commands whose sites do not answer."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drorch.drivers.http_limits import MAX_JSON_BYTES
from tests.support.cli import drorch
from tests.support.standin_docker import Behaviour, standin_docker
from tests.support.standin_lxd import LxdBehaviour, standin_lxd

REPO = Path(__file__).resolve().parents[1]

HOSTILE_NAMES = ["esc\x1b[2Jclear", "cr\rover", "bs\x08\x08back", "nl\nfake row", "rlo\u202egnp.exe", "bell\x07"]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u202a-\u202e]")


def playbook(tmp_path: Path, a: str, b: str, key: str = "docker", kind: str = "container, strategy: redeploy"
             ) -> Path:
    path = tmp_path / "standin.yaml"
    path.write_text(f"""\
name: standin
primary: a
secondary: b
sites:
  a: {{hosts: [{{name: a1, {key}: "{a}"}}], answer_timeout_s: 20}}
  b: {{hosts: [{{name: b1, {key}: "{b}", capacity: {{vcpus: 64, memory_mib: 65536}}}}], answer_timeout_s: 20}}
workloads:
  - {{match: "*", kind: {kind}}}
""")
    return path


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DRORCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DRORCH_DB_URL", raising=False)
    yield


@pytest.mark.usefixtures("state")
@pytest.mark.parametrize("command", ["status", "inventory", "plan"])
def test_names_from_a_site_are_printed_escaped(command: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    hostile = Behaviour(containers=HOSTILE_NAMES, networks=["net\x1b]0;title\x07"])
    with standin_docker(hostile) as a, standin_docker(Behaviour()) as b:
        code, out, err = drorch(capsys, command, str(playbook(tmp_path, a, b)))
    assert code == 0, err
    assert not CONTROL.search(out + err), repr(out)
    for name in HOSTILE_NAMES:
        shown = name.encode("unicode_escape").decode().replace("\\u202e", "\\u202e")
        rows = [ln for ln in out.splitlines() if shown in ln]
        assert len(rows) == 1, (shown, out)  # one row per workload: no injected line
    if command == "inventory":
        assert r"net\x1b]0;title\x07" in out


@pytest.mark.usefixtures("state")
def test_an_endless_json_answer_is_cut_at_its_bound(tmp_path: Path) -> None:
    endless = Behaviour(endless=True)
    with standin_docker(endless) as a, standin_docker(Behaviour()) as b:
        pb = playbook(tmp_path, a, b)
        began = time.monotonic()
        res = subprocess.run([sys.executable, "-c", LIMITED_1GIB, "inventory", str(pb)], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        took = time.monotonic() - began
    assert res.returncode == 1, res.stderr[-500:]
    assert f"site a: Docker at {a}: its answer to /v1.41/containers/json passed {MAX_JSON_BYTES >> 20} MiB of " \
           "JSON: not read on" in res.stdout
    assert endless.streamed_bytes < 4 * MAX_JSON_BYTES and took < 60, (endless.streamed_bytes, took)


CLI = "import sys\nfrom drorch.cli import main\nmain(sys.argv[1:])\n"
LIMITED_1GIB = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from drorch.cli import main
main(sys.argv[1:])
"""


@pytest.mark.usefixtures("state")
def test_an_answer_of_the_wrong_shape_is_a_host_that_did_not_answer(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with standin_docker(Behaviour(garbled=True)) as a, standin_docker(Behaviour()) as b:
        pb = playbook(tmp_path, a, b)
        code, out, err = drorch(capsys, "inventory", str(pb))
        assert code == 1 and "internal error" not in err, err
        assert f"container: site a: Docker at {a}: answers what the Engine API never does (AttributeError" in out
        code, out, err = drorch(capsys, "status", str(pb))
        assert (code, out) == (1, "")  # no workload found: nothing to show but why
        assert err == f"drorch: site a: Docker at {a}: answers what the Engine API never does (AttributeError: " \
                      "'int' object has no attribute 'get')\n"


@pytest.mark.usefixtures("state")
def test_two_sites_naming_one_endpoint_are_each_named_in_their_errors(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with standin_docker(Behaviour(garbled=True)) as both:
        code, out, _ = drorch(capsys, "inventory", str(playbook(tmp_path, both, both)))
    assert code == 1
    assert f"  container: site a: Docker at {both}: answers" in out
    assert f"  container: site b: Docker at {both}: answers" in out


@pytest.mark.usefixtures("state")
def test_podman_hosts_are_called_podman(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = playbook(tmp_path, "tcp://127.0.0.1:1", "tcp://127.0.0.1:1")
    text = pb.read_text()
    pb.write_text(text.replace('docker: "tcp://127.0.0.1:1"}], answer', 'podman: "tcp://127.0.0.1:1"}], answer', 1))
    code, out, _ = drorch(capsys, "inventory", str(pb))
    assert code == 1
    assert "  container: site a: Podman at tcp://127.0.0.1:1 refused the connection\n" in out
    assert "  container: site b: Docker at tcp://127.0.0.1:1 refused the connection\n" in out


@pytest.mark.usefixtures("state")
def test_nothing_answers_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inventory, status, plan and validate exit 1 when a host does not answer; readiness never checked is not
    ready (1)."""
    pb = playbook(tmp_path, "tcp://127.0.0.1:1", "tcp://127.0.0.1:1")
    pb.write_text(pb.read_text() + "  - {name: web, kind: container}\n")
    for command in ("inventory", "status", "plan", "validate"):
        code, out, err = drorch(capsys, command, str(pb))
        assert code == 1 and "internal error" not in err, (command, err)
        if command == "plan":
            assert re.search(r"^  1 default +web +container +default +blocked ", out, re.M), out
            assert err == "drorch: 1 of 1 workloads cannot move now: a site they need did not answer\n"
    code, _, err = drorch(capsys, "readiness", str(pb))
    assert (code, err) == (1, "drorch: error: standin was never checked, so it is not known to be ready: drorch "
                              "readiness --check, or a readiness schedule\n")


@pytest.mark.usefixtures("state")
@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_an_endless_answer_is_cut_at_its_bound_whatever_its_type(content_type: str | None, tmp_path: Path) -> None:
    endless = Behaviour(endless=True, content_type=content_type)
    with standin_docker(endless) as a, standin_docker(Behaviour()) as b:
        res = subprocess.run([sys.executable, "-c", LIMITED_1GIB, "inventory", str(playbook(tmp_path, a, b))],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 1 and "internal error" not in res.stderr, res.stderr[-500:]
    assert f"site a: Docker at {a}: its answer to /v1.41/containers/json passed {MAX_JSON_BYTES >> 20} MiB" \
        in res.stdout
    assert endless.streamed_bytes < 4 * MAX_JSON_BYTES, endless.streamed_bytes


@pytest.mark.usefixtures("state")
def test_an_answer_nested_two_million_deep_is_a_host_that_did_not_answer(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with standin_docker(Behaviour(deep=True)) as a, standin_docker(Behaviour()) as b:
        code, out, err = drorch(capsys, "inventory", str(playbook(tmp_path, a, b)))
    assert code == 1 and "internal error" not in err, err
    assert f"container: site a: Docker at {a}: answers what the Engine API never does (RecursionError" in out


@pytest.mark.usefixtures("state")
def test_a_redirect_is_never_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = Behaviour(containers=["elsewhere"])
    with standin_docker(other) as elsewhere:
        port = elsewhere.rsplit(":", 1)[1]
        lured = Behaviour(redirect=f"http://127.0.0.1:{port}")
        with standin_docker(lured) as a, standin_docker(Behaviour()) as b:
            code, out, err = drorch(capsys, "inventory", str(playbook(tmp_path, a, b)))
    assert code == 1 and "internal error" not in err and "elsewhere" not in out, out
    # The site's questions go at once: whichever is answered first with the redirect is the one said.
    assert re.search(rf"site a: Docker at {re.escape(a)}: answered (/\S+) with a redirect to "
                     rf"'http://127\.0\.0\.1:{port}\1', which drorch does not follow", out), out
    assert not other.requests  # the redirect led nowhere


DISASTER = """\
name: silent
primary: a
secondary: b
sites:
  a: {{hosts: [{{name: a1, {a}}}], answer_timeout_s: 5}}
  b: {{hosts: [{{name: b1, {b}, capacity: {{vcpus: 64, memory_mib: 65536}}}}], answer_timeout_s: 5}}
workloads:
  - {{name: web, kind: {kind}, strategy: {strategy}}}
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("state")
@pytest.mark.parametrize("kind", ["container", "vm"])
@pytest.mark.parametrize("secondary", ["silent", "answering with no point"])
def test_a_disaster_failover_never_takes_a_silent_primary_for_a_fenced_one(
        kind: str, secondary: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Site a's only host is a closed port; site b is one too, or answers holding no point (a stand-in Docker, or
    libvirt's own test driver): refused before any run, naming the silent host."""
    closed = f"127.0.0.1:{closed_port()}"
    silent = {"container": f'docker: "tcp://{closed}"', "vm": f'libvirt: "qemu+tcp://{closed}/system"'}
    with standin_docker(Behaviour()) as standin:
        answering = {"container": f'docker: "{standin}"', "vm": 'libvirt: "test:///default"'}
        path = tmp_path / "silent.yaml"
        path.write_text(DISASTER.format(a=silent[kind], b=(silent if secondary == "silent" else answering)[kind],
                                        kind=kind, strategy="redeploy" if kind == "container" else "live"))
        code, out, err = drorch(capsys, "failover", "--disaster", str(path))
    assert code == 1 and out == "", (out, err)
    (line,) = err.splitlines()
    assert line.startswith("drorch: error: site a cannot be fenced: host a1 (") and "does not answer" in line, line
    assert "--confirm-primary-down" in line
    assert drorch(capsys, "history", "--json")[1].strip() == "[]"  # refused before any run or step


@pytest.mark.usefixtures("state")
def test_a_create_that_never_answers_is_given_up_at_the_sites_bound_and_an_abort_answers_at_once(
        tmp_path: Path) -> None:
    source, target = Behaviour(containers=["web"]), Behaviour(hang_create=True)
    with standin_docker(source) as a, standin_docker(target) as b:
        path = tmp_path / "hang.yaml"
        path.write_text(DISASTER.format(a=f'docker: "{a}"', b=f'docker: "{b}"', kind="container",
                                        strategy="redeploy"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        began = time.monotonic()
        move = subprocess.Popen([sys.executable, "-c", CLI, "failover", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        while not any(r.startswith("POST") and "/containers/create" in r for r in target.requests):
            assert time.monotonic() - began < 30 and move.poll() is None, move.communicate()
            time.sleep(0.1)
        asked = time.monotonic()
        abort = subprocess.run([sys.executable, "-c", CLI, "abort", "1"], capture_output=True, text=True,
                               env=env, timeout=60)
        answered = time.monotonic() - asked
        out, err = move.communicate(timeout=60)
        took = time.monotonic() - began
    assert abort.returncode == 0 and abort.stdout == "run 1 aborted\n", abort.stderr
    assert answered < 10, answered  # the site's 5 s bound, not the client's default of minutes
    assert took < 20 and move.returncode == 1, (took, out, err)
    progress = [ln for ln in out.splitlines() if ln.startswith("[1/1]")]
    assert len(progress) == len(set(progress)) and all(not ln.endswith(": ") for ln in progress), progress




@pytest.mark.usefixtures("state")
@pytest.mark.parametrize("metadata", [[1, 2], "text", None, {"environment": [1]}])
@pytest.mark.parametrize("command", ["status", "inventory", "validate"])
def test_an_lxd_description_that_is_not_an_object_is_a_host_that_did_not_answer(
        metadata: object, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with standin_lxd(LxdBehaviour(metadata=metadata), tmp_path) as a:
        code, out, err = drorch(capsys, command, str(playbook(tmp_path, a, a, "lxd", "lxd")))
    assert code == 1 and "internal error" not in err and "Traceback" not in err, err
    assert f"site a: LXD at {a} does not answer as LXD (GET /1.0 is not a server's description)" in out + err


@pytest.mark.usefixtures("state")
def test_an_endless_lxd_answer_without_a_type_is_cut_at_its_bound(tmp_path: Path) -> None:
    endless = LxdBehaviour(endless=True)
    with standin_lxd(endless, tmp_path) as a:
        pb = playbook(tmp_path, a, a, "lxd", "lxd")
        res = subprocess.run([sys.executable, "-c", LIMITED_1GIB, "inventory", str(pb)], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 1 and "internal error" not in res.stderr, res.stderr[-500:]
    assert f"site a: LXD at {a} does not answer as LXD (its answer to /1.0 passed {MAX_JSON_BYTES >> 20} MiB" \
        in res.stdout
    assert endless.streamed_bytes < 4 * MAX_JSON_BYTES, endless.streamed_bytes


@pytest.mark.usefixtures("state")
def test_names_in_the_html_report_and_the_metrics_carry_no_raw_control_character(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A name from a site, once in the store: NUL, ESC and BEL are shown escaped, and a literal backslash is
    doubled so that the text `\\x1b` is not taken for an ESC."""
    from prometheus_client.parser import text_string_to_metric_families

    from drorch.model.records import RunState, StepState
    from drorch.store.rows import RecoveryPoint, Run, Step
    from drorch.store.sql_store import Store

    name = "n\x00ul\x1besc\x07bel-\\x1b-text"
    store = Store()
    store.add_run(Run(operation="failover", playbook="standin", playbook_path="p", source_site="a", target_site="b",
                      state=RunState.SUCCEEDED, pid=1, host="h"),
                  [Step(run_id=0, seq=1, workload=name, kind="container", strategy="redeploy", source_site="a",
                        target_site="b", action="move", state=StepState.SUCCEEDED, outcome=f"moved {name}")])
    store.add_points([RecoveryPoint(playbook="standin", workload=name, kind="container", site="b")])
    page = tmp_path / "report.html"
    assert drorch(capsys, "report", "1", "--html", str(page))[0] == 0
    shown = r"n\x00ul\x1besc\x07bel-\\x1b-text"
    assert shown in page.read_text() and not CONTROL.search(page.read_text().replace("\n", ""))
    code, out, _ = drorch(capsys, "metrics", str(playbook(tmp_path, "tcp://127.0.0.1:1", "tcp://127.0.0.1:1")))
    assert code == 0 and not CONTROL.search(out.replace("\n", "")), repr(out)
    workloads = {s.labels["workload"] for f in text_string_to_metric_families(out) for s in f.samples
                 if "workload" in s.labels}
    assert workloads == {shown}


@pytest.mark.usefixtures("state")
def test_sizes_a_site_reports_past_any_machine_are_refused_when_read(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """10^30 vCPUs: the host is one that did not answer usefully, so the snapshot `inventory --json` writes is one
    that `plan --inventory` takes."""
    with standin_docker(Behaviour(containers=["web"], nano_cpus=10**39)) as a, standin_docker(Behaviour()) as b:
        pb = playbook(tmp_path, a, b)
        code, out, err = drorch(capsys, "inventory", "--json", str(pb))
    assert code == 1 and "internal error" not in err, err
    (a1,) = [h for h in json.loads(out)["hosts"] if h["host"] == "a1"]
    assert a1["workloads"] == [] and a1["errors"]["container"] == \
        "site a host a1: reports 1e+30 vCPUs for web, outside 0 to 1,000,000: not used"
    saved = tmp_path / "snapshot.json"
    saved.write_text(out)
    code, _, err = drorch(capsys, "plan", str(pb), "--inventory", str(saved))
    assert code in (0, 1) and "is not an inventory snapshot" not in err, err
