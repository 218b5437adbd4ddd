"""The daemon over the real SQLite store: the lease, scheduled jobs in the store, and the schedule commands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import drorch.drivers as drivers_module
from drorch.daemon.scheduler import Daemon, next_runs
from drorch.drivers.fake import FakeCloud
from drorch.model.records import SCHEDULER_LEASE, naive, utcnow
from drorch.store.sql_store import Store
from drorch.web.listener import Listen
from tests.support.cli import drorch
from tests.support.shop import PLAYBOOK, fake_drivers

UNIT = Path(__file__).resolve().parent.parent / "drorch" / "systemd" / "drorch-daemon.service"
SCHEDULED = PLAYBOOK + "protect: {interval_s: 1, keep: 2}\nschedules:\n  - {job: protect, every_s: 1}\n"


def test_one_holder_of_the_lease_until_it_expires_or_is_let_go(store: Store) -> None:
    ttl = timedelta(seconds=0.3)
    assert store.lease(SCHEDULER_LEASE, "a:1", ttl) and not store.lease(SCHEDULER_LEASE, "b:2", ttl)
    assert store.lease(SCHEDULER_LEASE, "a:1", ttl)  # renewed
    time.sleep(0.4)
    assert store.lease(SCHEDULER_LEASE, "b:2", ttl) and not store.lease(SCHEDULER_LEASE, "a:1", ttl)  # a stopped
    store.release_lease(SCHEDULER_LEASE, "b:2")
    assert store.lease(SCHEDULER_LEASE, "a:1", ttl)


@pytest.fixture
def scheduled(tmp_path: Path, cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(drivers_module, "make_drivers", lambda _kinds: fake_drivers(cloud))
    path = tmp_path / "shop.yaml"
    path.write_text(SCHEDULED)
    return path


def test_the_leader_runs_the_playbooks_schedules_and_a_follower_takes_over(store: Store, scheduled: Path) -> None:
    first, second = Daemon(store, [scheduled], lease_s=1), Daemon(store, [scheduled], lease_s=1)
    second.identity = "other:2"
    first.tick()
    second.tick()
    assert first.sched is not None and second.sched is None
    assert [i for i, _n, _t in next_runs(store)] == ["shop:protect:0"]
    deadline = time.monotonic() + 10
    while len(store.points("shop")) < 6 and time.monotonic() < deadline:  # two rounds of three workloads
        time.sleep(0.1)
    assert {p.workload for p in store.points("shop")} == {"db", "cache", "web"}
    first.stop()
    second.tick()
    assert second.sched is not None  # the lease was let go: taken at once
    roles = {d.identity: (d.leader, d.stopped) for d in store.daemons()}
    assert roles[first.identity] == (False, True) and roles["other:2"] == (True, False)
    second.stop()
    assert [i for i, _n, _t in next_runs(store)] == ["shop:protect:0"]  # kept in the store for the next start


def test_a_broken_playbook_of_a_folder_is_skipped_with_one_logged_error(
    store: Store, scheduled: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bomb = scheduled.parent / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)))
    daemon = Daemon(store, sorted(scheduled.parent.glob("*.yaml")), lease_s=1)
    with caplog.at_level("INFO", logger="drorch.daemon"):
        daemon.tick()
    try:
        assert [i for i, _n, _t in next_runs(store)] == ["shop:protect:0"]
        skipped = [json.loads(r.message) for r in caplog.records if "skipped" in r.message]
        assert len(skipped) == 1 and skipped[0]["playbook"] == str(bomb)
        assert skipped[0]["error"].startswith(f"{bomb}:") and "expands to more than" in skipped[0]["error"]
    finally:
        daemon.stop()


def test_schedule_commands(capsys: pytest.CaptureFixture[str], scheduled: Path, store: Store,
                           fake_cli: None) -> None:
    code, out, _ = drorch(capsys, "schedule", "add", str(scheduled), "--job", "protect", "--every", "30",
                          "--id", "nightly")
    assert code == 0 and out.startswith("schedule nightly: protect shop.yaml, interval[0:00:30]")
    code, _, err = drorch(capsys, "schedule", "add", str(scheduled), "--job", "settle")
    assert code == 2 and "give --every SECONDS or --cron EXPRESSION" in err
    code, out, _ = drorch(capsys, "schedule", "add", str(scheduled), "--job", "settle", "--cron", "*/5 * * * *")
    assert code == 0
    code, out, _ = drorch(capsys, "schedule", "list", "--json")
    assert sorted(j["name"] for j in json.loads(out)) == ["protect shop.yaml", "settle shop.yaml"]
    code, out, _ = drorch(capsys, "schedule", "remove", "nightly")
    assert code == 0 and out == "schedule nightly removed\n"
    code, _, err = drorch(capsys, "schedule", "remove", "nightly")
    assert code == 2 and err == "drorch: error: no schedule nightly\n"
    code, out, _ = drorch(capsys, "daemon", "status", "--json")
    assert code == 0 and [j["name"] for j in json.loads(out)["jobs"]] == ["settle shop.yaml"]


def test_protect_status_shows_each_rpo(capsys: pytest.CaptureFixture[str], scheduled: Path, store: Store,
                                       fake_cli: None) -> None:
    code, _, err = drorch(capsys, "protect", "status", str(scheduled))
    assert code == 1 and "no recovery points of shop yet" in err
    code, out, _ = drorch(capsys, "protect", "ship", str(scheduled))
    assert code == 0 and out.count("copy on site b at count 42") == 3
    code, out, _ = drorch(capsys, "protect", "status", str(scheduled))
    assert code == 0 and ("vm        db                       site b: ok    newest 0 s ago (full, 128.0 MiB sent, "
                          "chain of 1) (target 2 s), 1 kept") in out
    assert re.search(r"^shop: RPO 0 s, from its oldest newest point \((vm|container) \w+ on site b\), target 2 s$", out,
                     re.M), out
    store.ship_skipped("shop", [("vm", "db")], "its ship begun 1.0 s ago still runs")
    time.sleep(2.1)
    code, out, _ = drorch(capsys, "protect", "status", str(scheduled), "--json")
    assert code == 1 and all(r["stale"] for r in json.loads(out))
    assert {r["workload"]: r["skipped"] for r in json.loads(out)} == {"db": 1, "cache": 0, "web": 0}
    code, out, _ = drorch(capsys, "protect", "status", str(scheduled))
    assert re.search(r"^vm +db .*, 1 kept; 1 ships not begun as the last still ran \(the last at [-\d]+ [:\d]+ UTC\)$",
                     out, re.M), out


def test_the_systemd_unit_runs_the_daemon_and_stops_it_gently() -> None:
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    assert unit["Service"]["ExecStart"].split()[1:3] == ["daemon", "run"]
    assert unit["Service"]["KillSignal"] == "SIGTERM" and int(unit["Service"]["TimeoutStopSec"]) >= 60
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    service = unit["Service"]
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["ProtectHome"] == "yes"
    assert service["StateDirectory"] == "drorch" and service["StateDirectoryMode"] == "0700"  # the one writable place
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed here")
def test_systemd_accepts_the_unit_and_rates_it_hardened(tmp_path: Path) -> None:
    """`systemd-analyze verify` with ExecStart pointing at this checkout's drorch; the exposure score of
    `systemd-analyze security` (0 best, 10 worst) is printed, and must say the unit is hardened."""
    installed = Path(sys.executable).parent / "drorch"  # this virtualenv's
    text = UNIT.read_text().replace("ExecStart=/opt/drorch/bin/drorch", f"ExecStart={installed}")
    unit = tmp_path / "drorch-daemon.service"
    unit.write_text(text)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                              text=True)
    score = re.search(r"Overall exposure level for drorch-daemon.service: ([\d.]+)", security.stdout)
    assert score is not None, security.stdout[-500:] + security.stderr
    print(f"systemd exposure score of drorch-daemon.service: {score.group(1)}")
    assert float(score.group(1)) < 4.0  # systemd calls 0-4 "OK"


def test_a_daemon_whose_heartbeat_is_older_than_its_lease_is_shown_gone(capsys: pytest.CaptureFixture[str],
                                                                         store: Store) -> None:
    """A leader killed with SIGKILL never says it stopped: beside the daemon that took over it is gone."""
    store.heartbeat("old:1", True, lease_s=15)
    store.heartbeat("new:2", True, lease_s=15)
    (old,) = [d for d in store.daemons() if d.identity == "old:1"]
    old.heartbeat_at -= timedelta(seconds=19)
    store.save(old)
    code, out, _ = drorch(capsys, "daemon", "status")
    assert code == 0
    assert re.search(r"daemon old:1 +gone +heartbeat 19 s ago \(older than its 15 s lease: killed or cut off\)", out)
    assert re.search(r"daemon new:2 +leader +heartbeat 0 s ago", out)
    code, out, _ = drorch(capsys, "daemon", "status", "--json")
    assert {d["daemon"]: d["role"] for d in json.loads(out)["daemons"]} == {"old:1": "gone", "new:2": "leader"}


def test_a_standby_serves_too_and_says_it_is_standby(store: Store, scheduled: Path) -> None:
    leader = Daemon(store, [scheduled], lease_s=5, listen=Listen("127.0.0.1", 0))
    standby = Daemon(store, [scheduled], lease_s=5, listen=Listen("127.0.0.1", 0))
    standby.identity = "other:2"
    leader.tick()
    standby.tick()
    assert leader.web is not None and standby.web is not None
    standby.web.start()
    try:
        base = f"http://127.0.0.1:{standby.web.port}"
        with urllib.request.urlopen(f"{base}/status.json", timeout=10) as res:
            roles = {d["daemon"]: d["role"] for d in json.load(res)["daemons"]}
        assert roles == {leader.identity: "leader", "other:2": "standby"}
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as res:
            served = {(s.name, s.labels.get("daemon")): s.value
                      for f in text_string_to_metric_families(res.read().decode()) for s in f.samples}
        assert served[("drorch_daemon_leader", "other:2")] == 0.0
        assert served[("drorch_daemon_leader", leader.identity)] == 1.0
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as res:  # the leader's lease is current
            assert res.read() == b"ready\n"
    finally:
        standby.stop()
        leader.stop()


def test_a_leader_outlives_a_store_locked_past_its_wait_and_leads_again(tmp_path: Path) -> None:
    """Another process holds the SQLite store exclusively past the wait every write has (30 s, cut to 2 s here) and
    past the daemon's lease: the daemon stays up, answers /healthz throughout, says the store is unavailable, and
    leads again once it is free."""
    import os
    import signal
    import socket
    import sqlite3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DRORCH_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(UNIT.parents[2])}
    env.pop("DRORCH_DB_URL", None)
    main = ("import sys\nfrom drorch.store import connect\nconnect.BUSY_TIMEOUT_MS = 2000\n"
            "from drorch.cli import main\nmain(sys.argv[1:])")
    daemon = subprocess.Popen([sys.executable, "-c", main,
                               "daemon", "run", "--lease-s", "3", "--listen", f"127.0.0.1:{port}"],
                              stderr=subprocess.PIPE, text=True, env=env)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(daemon.stderr or []), daemon=True)
    reader.start()
    events = lambda: [json.loads(line)["event"] for line in list(log) if line.startswith("{")]  # noqa: E731
    try:
        _wait(lambda: "leading: scheduler started" in events(), 20)
        store = Store(f"sqlite:///{tmp_path / 'state' / 'drorch.db'}")
        lock = sqlite3.connect(tmp_path / "state" / "drorch.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        held_until = time.monotonic() + 6
        while time.monotonic() < held_until:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as res:
                assert res.status == 200
            assert daemon.poll() is None, daemon.communicate()
            time.sleep(1)
        lock.execute("COMMIT")
        lock.close()
        freed = time.monotonic()
        _wait(lambda: any(d.leader and (naive(utcnow()) - naive(d.heartbeat_at)).total_seconds() < 3
                          for d in store.daemons()), 40)
        assert daemon.poll() is None
        print(f"led again {time.monotonic() - freed:.1f} s after the store was freed")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        reader.join(10)
    said = events()
    assert "state store unavailable" in said and said[-1] == "stopped", said
    assert said.count("leading: scheduler started") == 2, said  # it stopped leading while it could not renew
    assert daemon.returncode == 0, log[-20:]


def _wait(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
