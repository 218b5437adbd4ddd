"""Hostile and broken input through the loader and the CLI: every rejection is one located line and an
exit code, never a traceback, a hang or a crash of the interpreter.

The fuzz cases (hypothesis) run FUZZ_EXAMPLES mutations per example playbook and as many random
documents, saved snapshots and damaged stores; docs/limits.md quotes the total.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drorch import input_limits
from drorch.drivers.fake import FakeCloud
from drorch.errors import InputError
from drorch.model.playbook import Playbook
from drorch.model.playbook_file import load_playbook
from drorch.reach import snapshot
from tests.support.cli import drorch, run_limited
from tests.support.shop import PLAYBOOK, fake_drivers

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"shop.yaml": PLAYBOOK, **{p.name: p.read_text() for p in sorted((REPO / "playbooks").glob("*.yaml"))}}
FUZZ_EXAMPLES = 150
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

pytestmark = pytest.mark.usefixtures("fake_cli")


def bomb(levels: int = 9, indent: str = "") -> str:
    """Billion laughs: nine lines, 9**9 strings once every alias is expanded."""
    lines = [f'{indent}l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{indent}l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "bomb": bomb(),
    "bomb under an unknown key": PLAYBOOK + "x-junk:\n" + bomb(indent="  "),
    "bomb in labels": PLAYBOOK.replace("  - {name: db, kind: vm, strategy: live}",
                                       "  - name: db\n    kind: vm\n    labels:\n" + bomb(indent="      ")),
    "nested flow": "[" * 100_000 + "\n",
    "nested blocks": "".join(" " * i + "- \n" for i in range(2_000)),
    "recursive alias": "a: &a\n  b: *a\n",
    "binary": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_playbooks_are_refused_with_a_location_and_exit_2(tmp_path: Path, name: str) -> None:
    content = HOSTILE[name]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = run_limited("validate", str(path))
    assert res.returncode == 2, (res.returncode, res.stderr[-500:])
    (line,) = res.stderr.splitlines()
    assert re.match(rf"{re.escape(str(path))}(:\d+:\d+)?: ", line), line
    assert len(line) < 200 and "\\x" not in line  # the file's bytes are not echoed


def test_binary_input_names_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: x\n\xff\xfe")
    with pytest.raises(InputError, match=r"bin\.yaml: not UTF-8 text \(byte 8\)"):
        load_playbook(path)


def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # nobody writes to it: a read would block for ever
    cases = {fifo: "a named pipe", tmp_path: "a directory", Path("/dev/zero"): "a device"}
    for path, kind in cases.items():
        code, _, err = drorch(capsys, "validate", str(path))
        assert code == 2 and err.strip() == f"{path}: not a regular file ({kind})"
    code, _, err = drorch(capsys, "validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and err.strip() == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"


def test_a_playbook_past_the_size_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.yaml"
    with path.open("w") as f:
        f.write(PLAYBOOK)
        f.write("# " + "x" * input_limits.MAX_BYTES + "\n")
    code, _, err = drorch(capsys, "validate", str(path))
    assert code == 2 and err.strip() == f"{path}:1:1: larger than the limit of {input_limits.MAX_BYTES >> 20} MiB"


def test_the_limits_leave_room_for_a_large_estate(tmp_path: Path) -> None:
    """10,000 workloads in one playbook stay well inside every limit."""
    sys.path.insert(0, str(REPO / "integration" / "bench"))
    from planner import playbook_text  # type: ignore[import-not-found]

    path = tmp_path / "estate.yaml"
    path.write_text(playbook_text(10_000))
    assert len(load_playbook(path).workloads) == 10_000


# --- fuzzing -------------------------------------------------------------------------------------------------

def assert_located(code: int, err: str, path: Path) -> None:
    """Exit 0, or 1 (problems) or 2 (unusable): every line of the answer is a problem located in the file."""
    assert code in (0, 1, 2), err
    assert "internal error" not in err and "Traceback" not in err, err
    if code:
        lines = [ln for ln in err.splitlines() if ln]
        assert lines, "a rejection says why"
        for line in lines:
            assert line.startswith(f"{path}:"), line


@pytest.fixture
def saved_snapshot(tmp_path: Path, cloud: FakeCloud, playbook: Playbook) -> Path:
    path = tmp_path / "inventory.json"
    path.write_text(snapshot(playbook, fake_drivers(cloud)).to_json())
    return path


def mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply edits (position, length to drop, what to insert), positions taken modulo the text's length."""
    for pos, drop, insert in edits:
        at = pos % (len(text) + 1)
        text = text[:at] + insert + text[at + drop:]
    return text


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 12),
                           st.sampled_from(["", ":", "- ", "\n", "  ", "{", "}", "[", "]", "&a ", "*a", "'", '"',
                                            "!!python/object:os.system", "-1", "1e999", "~", "null", "\t", "%",
                                            "? ", "|", ">", "#", ",", "\x00", "\u202e", "9" * 30])
                           | st.text(max_size=6)), min_size=1, max_size=6)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
@FUZZ
@given(edits=EDITS)
def test_mutated_example_playbooks(example: str, edits: list[tuple[int, int, str]], tmp_path: Path,
                                   saved_snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mutated.yaml"
    path.write_text(mutate(EXAMPLES[example], edits))
    for command in ("validate", "plan"):
        code, _, err = drorch(capsys, command, str(path), "--inventory", str(saved_snapshot))
        assert_located(code, err.replace(f"{path}: ok", ""), path)


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=40)


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["name", "primary", "secondary", "sites", "workloads", "mappings",
                                            "waves", "protect", "drill", "schedules", "x"]), YAML_VALUES,
                           max_size=8))
def test_random_documents(doc: dict[str, object], tmp_path: Path, saved_snapshot: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _, err = drorch(capsys, "validate", str(path), "--inventory", str(saved_snapshot))
    assert_located(code, err, path)


@FUZZ
@given(edits=EDITS)
def test_mutated_snapshots(edits: list[tuple[int, int, str]], tmp_path: Path, saved_snapshot: Path,
                           playbook_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mutated.json"
    path.write_text(mutate(saved_snapshot.read_text(), edits))
    code, _, err = drorch(capsys, "plan", str(playbook_file), "--inventory", str(path))
    assert code in (0, 1, 2) and "internal error" not in err and "Traceback" not in err, err
    if code == 2:
        assert err.strip() == err.strip().splitlines()[0] and str(path) in err


def test_a_snapshot_nested_past_any_use(tmp_path: Path, playbook_file: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"hosts": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = drorch(capsys, "plan", str(playbook_file), "--inventory", str(path))
    assert code == 2 and err.startswith(f"drorch: error: {path} is not an inventory snapshot"), err


@pytest.fixture(scope="module")
def made_store(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real store, made by another command: what each example damages a copy of."""
    state = tmp_path_factory.mktemp("made")
    subprocess.run([sys.executable, "-c", "from drorch.store.sql_store import Store; Store()"], check=True,
                   env={**os.environ, "DRORCH_STATE_DIR": str(state), "PYTHONPATH": str(REPO)})
    return (state / "drorch.db").read_bytes()


@settings(max_examples=FUZZ_EXAMPLES // 5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(0, 1 << 16), st.binary(min_size=1, max_size=64)), min_size=1,
                       max_size=8))
def test_damaged_stores_are_named_and_left_alone(damage: list[tuple[int, bytes]], made_store: bytes, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    state = Path(tempfile.mkdtemp(dir=tmp_path))  # a path of its own: no connection of an earlier example
    monkeypatch.setenv("DRORCH_STATE_DIR", str(state))
    db = state / "drorch.db"
    # A real store made by another command earlier (this process checks a store once), then damaged.
    data = bytearray(made_store)
    for pos, chunk in damage:
        at = pos % len(data)
        data[at:at + len(chunk)] = chunk
    db.write_bytes(bytes(data))
    for leftover in state.glob("drorch.db-*"):
        leftover.unlink()
    code, _, err = drorch(capsys, "history")
    assert code in (0, 2) and "internal error" not in err, err
    if code == 2:
        assert err.startswith("drorch: error: state store ") and str(db) in err
        assert db.read_bytes() == bytes(data)  # refused, not repaired or overwritten


def test_another_programs_database_is_refused_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    state = tmp_path / "foreign"
    state.mkdir()
    db = state / "drorch.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    db.chmod(0o644)
    before = db.read_bytes()
    monkeypatch.setenv("DRORCH_STATE_DIR", str(state))
    code, _, err = drorch(capsys, "history")
    assert code == 2 and f"state store {db} is another program's database (tables invoices)" in err
    assert db.read_bytes() == before and db.stat().st_mode & 0o777 == 0o644


def test_the_store_is_private(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "fresh"
    monkeypatch.setenv("DRORCH_STATE_DIR", str(state))
    assert drorch(capsys, "history")[0] == 0
    assert not list(state.iterdir())  # reading the history never makes a store
    assert drorch(capsys, "daemon", "status")[0] == 0
    assert state.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in state.iterdir()}["drorch.db"] == 0o600

