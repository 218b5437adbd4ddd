"""Automatic failover on the real lab: a daemon beside site a, two beside site b, the lab's three etcd members as
the quorum. Trouble short of a lost site fails nothing over; site a lost entirely is taken over by one daemon of
site b on its own, as an ordinary journaled run marked automatic, and its daemon killed halfway through the run
is replaced by the other, which finishes it once; site a cut from everyone stops its own workloads before b takes
them over, b's run taken up by another daemon at every step boundary. Where each workload runs is looked at every
second: never at both sites."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import libvirt
import pytest
import yaml

from drorch.model.records import RunState, StepState
from drorch.store.rows import Run
from drorch.store.sql_store import Store
from integration import lab_base, lab_etcd, lab_partition, lab_pki, labctl
from integration.lab_base import LAB, PKI
from integration.support.lab_views import (
    DRORCH,
    LAB_PLAYBOOK,
    REPO,
    container_counts,
    drorch_env,
    wait_until,
)

AFTER_S, ACQUIRE_AFTER_S, LEASE_S = 20, 10, 6
# How long a trouble is watched to show it fails nothing over: past when b would have taken over, had the gate
# that holds it back (the key, or a primary's silence) been taken for held.
SEEN_SILENT = AFTER_S + 5
NAMES = (lab_base.VM_NAME, *labctl.CONTAINERS)


def auto_playbook(path: Path, pki: Path) -> Path:
    """The lab's VM and containers, every host reached over TCP (what a cut between places can cut) with the
    client certificate in `pki`, protected every 3 s, with automatic failover over the lab's etcd cluster; site
    a's loss is total, so its fencing command has nothing left to do."""
    a, b = lab_base.SITES["a"], lab_base.SITES["b"]
    tls = {"ca": str(pki / lab_pki.CA), "cert": str(pki / lab_pki.CLIENT), "key": str(pki / lab_pki.CLIENT_KEY)}
    doc = yaml.safe_load(LAB_PLAYBOOK.read_text())
    doc["sites"] = {
        "a": {"answer_timeout_s": 3, "hosts": [{"name": "a1", "libvirt": a.libvirt_uri, "migration_address": a.address,
                                                 "docker": a.docker_tls_url, "tls": tls}]},
        "b": {"answer_timeout_s": 3, "hosts": [{
            "name": "b1", "libvirt": f"qemu+tls://{b.address}:{b.tls_libvirt_port}/system?pkipath={pki}",
            "migration_address": b.address, "docker": b.docker_tls_url, "tls": tls,
            "capacity": {"vcpus": 4, "memory_mib": 2048}}]}}
    doc["protect"] = {"interval_s": 3, "keep": 2}
    doc["schedules"] = [{"job": "protect", "every_s": 3}]
    doc["fencing"] = {"command": ["/bin/true"]}
    doc["auto_failover"] = {"etcd": {**lab_etcd.client_settings(), **tls, "timeout_s": 1},
                            "after_s": AFTER_S, "acquire_after_s": ACQUIRE_AFTER_S, "lease_s": LEASE_S}
    path.write_text(yaml.safe_dump(doc))
    return path


class Daemons:
    """drorch daemons beside the sites, each run as its place's own uid (so the lab can cut its paths), each
    with its place's copy of the playbook, sharing one store; their logs kept beside it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.sites: dict[str, str] = {}  # each daemon's site
        self.started = 0

    def start(self, name: str, site: str, kill_at: int | None = None) -> None:
        """With `kill_at`, the daemon kills itself at that step transition of an automatic run it runs."""
        place = lab_partition.as_place(site)
        env = {**place["env"], "DRORCH_STATE_DIR": str(self.state_dir)}
        if kill_at is not None:
            env["DRORCH_TEST_KILL_AT"] = str(kill_at)
        playbook = auto_playbook(lab_partition.home(site) / "auto.yaml", lab_partition.home(site) / "pki")
        os.chown(playbook, lab_partition.PLACES[site].uid, lab_partition.GROUP)
        self.started += 1
        with (self.state_dir / f"daemon-{name}-{self.started}.log").open("w") as log:
            self.procs[name] = subprocess.Popen(
                [str(DRORCH), "daemon", "run", str(playbook), "--lease-s", "3", "--site", site],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True,
                **{**place, "env": env})
        self.sites[name] = site

    def replaced(self, site: str, kill_at: int, until: Callable[[], bool], timeout: float) -> list[str]:
        """Each daemon of the site that dies replaced by a new one (which dies at `kill_at` too), until `until`
        holds: the daemons that died, in order."""
        died: list[str] = []
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"still not done after {timeout} s; died: {died}"
            for name, proc in list(self.procs.items()):
                if self.sites[name] == site and proc.poll() is not None and name not in died:
                    died.append(name)
                    self.start(f"{site}{len(self.procs) + 1}", site, kill_at)
            time.sleep(0.5)
        return died

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait(timeout=180)


class Placement:
    """Where each workload runs, looked at every second in a thread through each site's libvirt and Docker (as
    root, whom no cut cuts); every moment one ran at both sites kept. A site whose daemon does not answer a look
    (a flap, a loss) is not known then, and the next second looks again."""

    def __init__(self) -> None:
        self.both: list[tuple[float, set[str]]] = []
        self.looks = 0
        self.began = self.ended = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._look, daemon=True)

    @staticmethod
    def running(site: lab_base.Site) -> set[str] | None:
        try:
            conn = libvirt.open(site.libvirt_uri)
            try:
                vms = {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
            finally:
                conn.close()
            with contextlib.closing(docker.DockerClient(base_url=site.docker_url, timeout=5)) as client:
                containers = {str(c.name) for c in client.containers.list()}
        except (libvirt.libvirtError, docker.errors.DockerException, OSError):
            return None
        return (vms | containers) & set(NAMES)

    def _look(self) -> None:
        while not self.done.wait(1.0):
            seen = [self.running(site) for site in lab_base.SITES.values()]
            self.looks += 1
            known = [s for s in seen if s is not None]
            if len(known) == 2 and known[0] & known[1]:
                self.both.append((time.monotonic(), known[0] & known[1]))

    def every_second(self) -> bool:
        """Looked about once a second (each look waits a second after the last, and takes its own time)."""
        return self.looks >= (self.ended - self.began) / 2

    def __enter__(self) -> Placement:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()
        self.ended = time.monotonic()


@dataclass
class Scene:
    """One test's scene: the root's copy of the playbook, the store the daemons share, the daemons."""

    playbook: Path
    state: Path
    store: Store
    daemons: Daemons

    def drorch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DRORCH), *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**drorch_env(self.state)})

    def key_site(self) -> str | None:
        res = self.drorch("auto-failover", "status", str(self.playbook), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        site: str | None = json.loads(res.stdout)["key"].get("site")
        return site

    def roles(self, site: str) -> list[str]:
        """The roles of the site's live daemons at their last turns, as `auto-failover status` shows them."""
        res = self.drorch("auto-failover", "status", str(self.playbook), "--json")
        return [t["role"] for t in json.loads(res.stdout)["turns"] if t["site"] == site and t["daemon_role"] != "gone"]

    def fresh_points(self) -> bool:
        res = self.drorch("protect", "status", str(self.playbook), "--json")
        rows = {r["workload"]: r for r in json.loads(res.stdout)} if res.stdout.strip() else {}
        return set(NAMES) <= set(rows) and all(int(rows[n]["points"]) >= 1 and not rows[n]["stale"] for n in NAMES)

    def failovers(self) -> list[Run]:
        return [r for r in self.store.runs() if r.operation == "failover"]

    def no_failover_for(self, seconds: float) -> None:
        """No failover run begins in that time, and the workloads stay where they ran, on a."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert not self.failovers(), "a failover began"
            time.sleep(1)
        assert everything_on("a")

    def started(self, *daemons: tuple[str, str], kill_at: int | None = None) -> None:
        """The daemons started (each killing itself at `kill_at`, if given), and protection and the key as they
        should be before any trouble."""
        for name, site in daemons:
            self.daemons.start(name, site, kill_at)
        wait_until(self.fresh_points, "a recovery point of every workload", timeout=120)
        wait_until(lambda: self.key_site() == "a", "site a holding the key")


def everything_on(site: str) -> bool:
    """Every workload runs at that site, and none at the other (or the other does not answer: lost)."""
    here, there = (Placement.running(s) for s in (lab_base.SITES[site], next(
        s for name, s in lab_base.SITES.items() if name != site)))
    return here == set(NAMES) and not there


@pytest.fixture
def scene(fresh_lab: None, tmp_path: Path) -> Iterator[Scene]:
    """The witness cleared and whole, no cut, and a store the places' daemons share; everything as it was after."""
    lab_partition.heal()
    lab_etcd.up()
    lab_etcd.clear()
    state = lab_partition.shared(LAB / "places" / f"state-{tmp_path.name}")
    store = Store(f"sqlite:///{state / 'drorch.db'}")  # made here (drorch makes it its maker's alone): then shared
    store.runs()
    for made in state.iterdir():
        os.chown(made, 0, lab_partition.GROUP)
        made.chmod(0o660)
    daemons = Daemons(state)
    try:
        yield Scene(auto_playbook(tmp_path / "auto.yaml", lab_pki.ensure(PKI)), state, store, daemons)
    finally:
        daemons.stop()
        for log in state.glob("daemon-*.log"):
            shutil.copy(log, tmp_path / log.name)
        shutil.rmtree(state)
        lab_partition.heal()
        lab_etcd.up()
        lab_etcd.clear()
        labctl.cmd_up(argparse.Namespace(reset=True))


def test_no_trouble_short_of_a_lost_primary_fails_over(scene: Scene) -> None:
    """The witness down, a's daemon killed while a's hosts answer, a back within after_s, b cut from a while a
    reaches the witness: no failover, and every workload runs on a throughout."""
    with Placement() as placement:
        scene.started(("a", "a"), ("b1", "b"))

        lab_etcd.stop("witness")  # two of three still answer: site a keeps its key
        scene.no_failover_for(2 * LEASE_S)
        assert scene.key_site() == "a"
        lab_etcd.start("witness")

        scene.daemons.kill("a")  # its key expires, its hosts answer: nothing more happens
        scene.no_failover_for(SEEN_SILENT)
        assert scene.key_site() is None
        scene.daemons.start("a", "a")
        wait_until(lambda: scene.key_site() == "a", "site a taking its key again")

        scene.daemons.kill("a")  # a flapping: its daemon and its libvirtd gone for less than after_s
        labctl.cmd_stop(argparse.Namespace(site="a", daemon="libvirtd"))
        time.sleep(AFTER_S / 2)
        labctl.cmd_start(argparse.Namespace(site="a", daemon="libvirtd"))
        scene.daemons.start("a", "a")
        scene.no_failover_for(SEEN_SILENT)
        wait_until(lambda: scene.key_site() == "a", "site a holding its key after the flap")

        lab_partition.cut("a", "b")  # b's probes of a fail, but a renews its key through the witness
        scene.no_failover_for(SEEN_SILENT)
        assert scene.key_site() == "a" and "active" in scene.roles("a")
        lab_partition.heal()
    assert placement.both == [] and placement.every_second()  # never both, at any second


def test_site_a_lost_is_taken_over_by_one_daemon_of_site_b_once_even_killed_halfway(scene: Scene) -> None:
    with Placement() as placement:
        scene.started(("a", "a"), ("b1", "b"), ("b2", "b"))

        last_a = container_counts("a", labctl.CHECKPOINT_CONTAINER)[-1]
        lost = time.monotonic()  # the site's machines go, its drorch daemon with them
        scene.daemons.kill("a")
        labctl.cmd_lose(argparse.Namespace(site="a"))
        wait_until(lambda: bool(scene.failovers()), "an automatic failover", timeout=AFTER_S + ACQUIRE_AFTER_S + 60)
        (run,) = scene.failovers()
        decider = next(n for n, p in scene.daemons.procs.items() if p.pid == run.pid)
        wait_until(lambda: scene.store.steps(run.id or 0)[0].state is StepState.SUCCEEDED, "the run's fence")
        scene.daemons.kill(decider)  # the other daemon of b takes the run up
        wait_until(lambda: everything_on("b"), "every workload running on b", timeout=120)
        took = time.monotonic() - lost
        wait_until(lambda: scene.store.run(run.id or 0).state is not RunState.RUNNING, "the run to end")

        labctl.cmd_up(argparse.Namespace(reset=False))  # site a back, its daemon with it: stale, it starts nothing
        scene.daemons.start("a", "a")
        wait_until(lambda: "stale" in scene.roles("a"), "site a's daemon naming it stale")
        time.sleep(LEASE_S)
        assert everything_on("b")
    assert placement.both == [] and placement.every_second()  # never at both sites, at any second of it
    (done,) = scene.failovers()
    other = next(n for n in ("b1", "b2") if n != decider)
    assert done.state is RunState.SUCCEEDED and done.pid == scene.daemons.procs[other].pid  # b's other finished it
    gates = {g: ok for g, ok, _said in json.loads(done.automatic or "[]")}
    assert gates == dict.fromkeys(["not paused", "key expired", "primary silent", "window", "key won", "fenced",
                                   "ready"], True), done.automatic
    assert "fenced by /bin/true" in (scene.store.steps(run.id or 0)[0].outcome or "")
    assert scene.key_site() == "b"
    first = container_counts("b", labctl.CHECKPOINT_CONTAINER)[0]
    assert 1 < first <= last_a + 2  # from its newest recovery point (a second may pass before the loss), not from 1
    print(f"\nsite a lost -> every workload running on site b: {took:.1f} s (after_s {AFTER_S}, acquire_after_s "
          f"{ACQUIRE_AFTER_S}, the deciding daemon killed after the fence)")
    assert took <= AFTER_S + ACQUIRE_AFTER_S + 30


def daemon_events(state: Path, name: str) -> list[dict[str, Any]]:
    """The structured lines of every log the daemon `name` wrote, in order."""
    return [json.loads(line) for log in sorted(state.glob(f"daemon-{name}-*.log"))
            for line in log.read_text().splitlines() if line.startswith("{")]


def test_site_a_cut_from_everyone_stops_its_own_workloads_before_site_b_starts_them(scene: Scene) -> None:
    """Site a's daemon and hosts run on, cut from b and from the witness: a cannot renew its key, so with
    on_lost_quorum: stop it stops its workloads itself before its lease ends; b, with the majority, takes over
    once after_s has passed, its fence finding a's hosts silent within their answer_timeout_s. Every daemon of b
    kills itself at the end of the run's steps (its second step transition): another daemon of b takes the run
    up at each step boundary and it ends once, every step done once. Healed, a is stale and starts nothing."""
    with Placement() as placement:
        scene.started(("a", "a"), ("b1", "b"), ("b2", "b"), kill_at=2)
        cut = time.monotonic()
        lab_partition.cut("a", "b")
        lab_partition.cut("a", "witness")
        wait_until(lambda: bool(scene.failovers()), "an automatic failover", timeout=AFTER_S + ACQUIRE_AFTER_S + 60)
        (run,) = scene.failovers()
        died = scene.daemons.replaced("b", 2, lambda: scene.store.run(run.id or 0).state is not RunState.RUNNING,
                                      timeout=240)
        took = time.monotonic() - cut
        lab_partition.heal()
        wait_until(lambda: "stale" in scene.roles("a"), "site a's daemon naming it stale")
        time.sleep(LEASE_S)
        assert everything_on("b")
    assert placement.both == [] and placement.every_second()  # never at both sites, at any second of it
    assert [r.id for r in scene.failovers()] == [run.id]  # one run
    done = scene.store.run(run.id or 0)
    steps = scene.store.steps(run.id or 0)
    assert done.state is RunState.SUCCEEDED, [s.error for s in steps]
    assert all(s.state is StepState.SUCCEEDED for s in steps), [(s.kind, s.workload, s.state) for s in steps]
    # Each step's end killed the daemon that ran it: one daemon per step, each one's run taken up by the next.
    assert len(died) == len(steps) and all(scene.daemons.procs[n].returncode == -signal.SIGKILL for n in died)
    taken_up = [e for name in scene.daemons.procs for e in daemon_events(scene.state, name)
                if str(e.get("said", "")).startswith(f"taking up automatic run {run.id}:")]
    assert len(taken_up) == len(steps), [e["said"] for e in taken_up]
    assert done.pid not in {scene.daemons.procs[n].pid for n in died}  # a daemon that lived finished it
    cut_off = [e for e in daemon_events(scene.state, "a") if e.get("role") == "cut off"]
    stop = next((e for e in cut_off if "the lease has ended: stopped" in e["said"]), None)
    assert stop is not None and f"vm {lab_base.VM_NAME} on a1" in stop["said"], [e["said"][-120:] for e in cut_off]
    stopped_at = datetime.fromisoformat(stop["at"])
    assert stopped_at < done.started_at.replace(tzinfo=UTC)  # a stopped itself before b began
    fence = steps[0]
    assert "a1 fenced by /bin/true" in (fence.outcome or ""), fence.outcome
    assert fence.started_at and fence.ended_at
    fenced_in = (fence.ended_at - fence.started_at).total_seconds()
    assert fenced_in < 10  # a's silent daemons given up at their answer_timeout_s (3 s), not a call's own wait
    print(f"\nsite a cut off: it stopped its workloads at {stopped_at:%H:%M:%S}; site b's run began at "
          f"{done.started_at:%H:%M:%S}, its fence took {fenced_in:.1f} s; {len(died)} daemons of b killed, one at "
          f"each of the {len(steps)} steps' ends; the run ended {took:.1f} s after the cut")
