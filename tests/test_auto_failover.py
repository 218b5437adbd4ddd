"""Automatic failover: the settings `validate` refuses, each said where it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from drorch.errors import PlaybookError
from drorch.model.auto_failover import AutoFailover, OnLostQuorum
from drorch.model.playbook_file import parse_playbook
from drorch.model.takeover import Gate, Sighting, Watch, judge
from tests.support.cli import drorch
from tests.support.shop import AUTO_CLUSTER, PLAYBOOK, auto_failover_playbook


def playbook(fencing: bool = True, **settings: object) -> str:
    return auto_failover_playbook(["/usr/local/bin/fence", "--site"] if fencing else None, **settings)


def problems(text: str) -> list[str]:
    with pytest.raises(PlaybookError) as err:
        parse_playbook(text, "pb.yaml")
    return err.value.problems


def test_a_cluster_at_each_site_and_a_witness_with_a_fence_is_taken() -> None:
    pb = parse_playbook(playbook(), "pb.yaml")
    assert pb.auto_failover is not None and pb.auto_failover.on_lost_quorum is OnLostQuorum.STOP
    assert [m.site for m in pb.auto_failover.etcd.endpoints] == ["a", "b", "witness"]
    parse_playbook(playbook(fencing=False), "pb.yaml")  # the primary stops its own workloads on a lost quorum


@pytest.mark.parametrize(("settings", "fencing", "expected"), [
    ({"etcd": {"endpoints": AUTO_CLUSTER[:2]}}, True,
     "pb.yaml:6:5: 2 members cannot outvote the loss of a site: give three or more"),
    ({"etcd": {"endpoints": [{**m, "site": "a"} for m in AUTO_CLUSTER]}}, True,
     "a majority is lost with one place's members: a (3) of 3; at most 1 at any one place"),
    ({"etcd": {"endpoints": [*AUTO_CLUSTER, {"url": "https://etcd-b2:2379", "site": "b"}]}}, True,
     "a majority is lost with one place's members: b (2) of 4"),
    ({"etcd": {"endpoints": [*AUTO_CLUSTER[:2], {"url": "https://etcd-c:2379", "site": "b"}]}}, True,
     "no member at a third place"),
    ({"after_s": 5}, True, "after_s (5 s) is shorter than lease_s (6 s)"),
    ({"on_lost_quorum": "none"}, False, "nothing stops the primary before the secondary starts its workloads"),
])
def test_unsafe_settings_are_refused(settings: dict[str, object], fencing: bool, expected: str) -> None:
    found = problems(playbook(fencing, **settings))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(("member", "expected"), [
    ("https://etcd-a:2379", "say where member https://etcd-a:2379 runs: {url: https://etcd-a:2379, site:"),
    ({"url": "etcd-a:2379", "site": "a"}, "is not a member's client URL"),
])
def test_each_member_is_a_client_url_with_its_place(member: object, expected: str) -> None:
    found = problems(playbook(etcd={"endpoints": [member, *AUTO_CLUSTER[1:]]}))
    assert any(expected in p for p in found), found


def armed() -> AutoFailover:
    pb = parse_playbook(playbook(), "pb.yaml")
    assert pb.auto_failover is not None
    return pb.auto_failover  # after_s 20, acquire_after_s 10


T0 = datetime(2026, 12, 1, tzinfo=UTC)


def look(s: float, quorum: bool = True, holder: str | None = None, *answered: str) -> Sighting:
    return Sighting(T0 + timedelta(seconds=s), quorum, holder, frozenset(answered))


def test_a_lost_primary_is_taken_over_once_its_key_and_its_hosts_stayed_gone_long_enough() -> None:
    watch, settings = Watch(), armed()
    for s in range(0, 21):
        watch.saw(look(s))
        verdict = judge(watch, settings, T0 + timedelta(seconds=s), False, None)
        assert verdict.go is (s >= 20), (s, verdict.gates)
    assert judge(watch, settings, T0 + timedelta(seconds=12), False, None).waiting is Gate.PRIMARY_SILENT


@pytest.mark.parametrize(("looks", "waiting"), [
    ([look(s, True, "a") for s in range(30)], Gate.KEY_EXPIRED),  # the primary still renews its key
    ([look(s, False) for s in range(30)], Gate.KEY_EXPIRED),  # no majority: nothing known of the key
    ([look(s, True, None, "a1") for s in range(30)], Gate.PRIMARY_SILENT),  # its daemon died, its hosts answer
    ([*(look(s) for s in range(15)), look(15, True, None, "a1"), *(look(s) for s in range(16, 30))],
     Gate.PRIMARY_SILENT),  # back within after_s: the wait starts again
    ([*(look(s) for s in range(25)), look(25, False), *(look(s) for s in range(26, 30))],
     Gate.KEY_EXPIRED),  # the witness lost a moment: the key's wait starts again
])
def test_no_takeover_while_any_sign_of_the_primary_or_doubt_about_its_key(looks: list[Sighting],
                                                                          waiting: Gate) -> None:
    watch = Watch()
    for seen in looks:
        watch.saw(seen)
    assert judge(watch, armed(), looks[-1].at, False, None).waiting is waiting


def test_a_pause_and_the_window_hold_a_takeover_back() -> None:
    watch = Watch()
    for s in range(40):
        watch.saw(look(s))
    now = T0 + timedelta(seconds=40)
    assert judge(watch, armed(), now, True, None).waiting is Gate.NOT_PAUSED
    assert judge(watch, armed(), now, False, now - timedelta(hours=23)).waiting is Gate.WINDOW
    assert judge(watch, armed(), now, False, now - timedelta(hours=25)).go


def test_auto_failover_commands_pause_resume_approve_and_say_a_witness_that_does_not_answer(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRORCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DRORCH_DB_URL", raising=False)
    doc = yaml.safe_load(playbook())
    doc["auto_failover"]["etcd"] = {"endpoints": [{"url": f"http://127.0.0.1:{port}", "site": site}
                                                  for port, site in ((1, "a"), (2, "b"), (3, "witness"))],
                                    "timeout_s": 0.5}
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert drorch(capsys, "auto-failover", "pause", str(path))[1] == "automatic failover of shop paused\n"
    code, out, _ = drorch(capsys, "auto-failover", "status", str(path), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["paused"] is True and shown["turns"] == []
    assert shown["key"]["error"] == ("no majority of the etcd cluster answered (http://127.0.0.1:1: refused the "
                                     "connection; http://127.0.0.1:2: refused the connection; http://127.0.0.1:3: "
                                     "refused the connection)")
    assert drorch(capsys, "auto-failover", "resume", str(path))[1] == "automatic failover of shop armed\n"
    assert drorch(capsys, "auto-failover", "approve", str(path))[0] == 0
    code, out, _ = drorch(capsys, "auto-failover", "status", str(path))
    assert code == 0 and out.splitlines()[1] == "armed" and out.startswith("key: unknown (")
    plain = tmp_path / "plain.yaml"
    plain.write_text(PLAYBOOK)
    assert drorch(capsys, "auto-failover", "status", str(plain))[2].strip().endswith(
        "playbook shop has no auto_failover section")
