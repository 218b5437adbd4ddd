"""Both sites asked at once: a bounded pool, a deadline per host, and a host given up on is asked no more; a
fence and a release of orphaned freezes asked the same way."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from drorch.drivers.base import Endpoint, Frozen, HostFacts
from drorch.drivers.fake import FakeCloud, FakeSite, FakeWorkload
from drorch.engine.fencing import fence_site
from drorch.errors import MoveFailed
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import parse_playbook
from drorch.model.records import utcnow
from drorch.reach import RunSites, snapshot
from drorch.recovery.freezes import release_orphans
from drorch.store.rows import OpenFreeze
from drorch.store.sql_store import Store
from tests.support.shop import fake_drivers


def _estate(hosts: int, timeout_s: float = 15.0, declared: str = "") -> tuple[Playbook, FakeCloud]:
    """`hosts` per site; the host named `declared` has its capacity in the playbook."""
    def site(name: str) -> str:
        def size(host: str) -> str:
            return ", capacity: {vcpus: 4, memory_mib: 1024}" if host == declared else ""
        rows = ", ".join(f'{{name: {name}{i}, docker: "fake://{name}{i}/docker"{size(f"{name}{i}")}}}'
                         for i in range(hosts))
        return f"  {name}: {{answer_timeout_s: {timeout_s}, hosts: [{rows}]}}\n"

    pb = parse_playbook("name: big\nprimary: a\nsecondary: b\nsites:\n" + site("a") + site("b") +
                        "workloads:\n  - {match: '*', kind: container, strategy: redeploy}\n", "big.yaml")
    cloud = FakeCloud()
    for i in range(hosts):
        cloud.sites[f"fake://a{i}/docker"] = FakeSite(workloads={f"c{i}": FakeWorkload(WorkloadKind.CONTAINER)})
        cloud.sites[f"fake://b{i}/docker"] = FakeSite()
    return pb, cloud


def test_a_host_that_hangs_is_reported_and_waited_on_once() -> None:
    pb, cloud = _estate(3, timeout_s=0.3)
    cloud.sites["fake://a1/docker"].latency_s = 5.0
    start = time.monotonic()
    snap = snapshot(pb, {WorkloadKind.CONTAINER: fake_drivers(cloud)[WorkloadKind.CONTAINER]}, threads=1)
    took = time.monotonic() - start
    hung = next(inv for inv in snap.hosts if inv.host == "a1")
    assert hung.errors[WorkloadKind.CONTAINER] == ("site a host a1: fake://a1/docker did not answer within "
                                                   "0.3 s")
    assert cloud.calls["fake://a1/docker"] == 1  # its second question was never asked
    assert took < 5.0  # given up at its deadline, not when it answered
    # One thread: the others were asked by the fresh thread the pool got when a1's was left behind.
    assert sorted(w.name for inv in snap.hosts for w in inv.workloads) == ["c0", "c2"]


def test_a_host_that_refuses_is_reported_and_not_asked_again() -> None:
    pb, cloud = _estate(2)
    cloud.sites["fake://b0/docker"].reachable = False
    snap = snapshot(pb, {WorkloadKind.CONTAINER: fake_drivers(cloud)[WorkloadKind.CONTAINER]}, threads=1)
    assert "does not answer" in next(inv for inv in snap.hosts if inv.host == "b0").errors[WorkloadKind.CONTAINER]
    assert cloud.calls["fake://b0/docker"] == 1
    assert [inv.host for inv in snap.hosts if inv.errors] == ["b0"]


def test_a_bug_in_a_driver_is_raised_not_reported() -> None:
    pb, cloud = _estate(2)
    driver = fake_drivers(cloud)[WorkloadKind.CONTAINER]

    def broken(_ep: object, brief: bool = False) -> None:
        raise KeyError("oops")

    driver.host_facts = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyError, match="oops"):
        snapshot(pb, {WorkloadKind.CONTAINER: driver})


def test_every_host_is_asked_at_once() -> None:
    pb, cloud = _estate(20)
    for site in cloud.sites.values():
        site.latency_s = 0.2
    start = time.monotonic()
    snap = snapshot(pb, {WorkloadKind.CONTAINER: fake_drivers(cloud)[WorkloadKind.CONTAINER]})
    assert time.monotonic() - start < 0.2 * 80 / 2  # 80 questions of 0.2 s: far less than one after another
    assert len([w for inv in snap.hosts for w in inv.workloads]) == 20 and not any(inv.errors for inv in snap.hosts)


def test_one_daemon_down_leaves_the_hosts_other_daemon_asked() -> None:
    pb = parse_playbook("name: two\nprimary: a\nsecondary: b\nsites:\n"
                        "  a: {hosts: [{name: a1, libvirt: 'fake://a1/libvirt', docker: 'fake://a1/docker'}]}\n"
                        "  b: {hosts: [{name: b1, libvirt: 'fake://b1/libvirt', docker: 'fake://b1/docker'}]}\n"
                        "workloads:\n  - {match: '*', kind: container, strategy: redeploy}\n", "two.yaml")
    cloud = FakeCloud()
    for uri in ("fake://a1/libvirt", "fake://a1/docker", "fake://b1/libvirt", "fake://b1/docker"):
        cloud.sites[uri] = FakeSite()
    cloud.sites["fake://b1/libvirt"].reachable = False
    cloud.sites["fake://b1/docker"].workloads["web"] = FakeWorkload(WorkloadKind.CONTAINER)
    snap = snapshot(pb, fake_drivers(cloud), threads=1)
    (b1,) = snap.site("b")
    assert list(b1.errors) == [WorkloadKind.VM] and [w.name for w in b1.workloads] == ["web"]


def test_a_runs_snapshot_is_brief_only_with_hosts_of_declared_size() -> None:
    """A run's plan needs a host's size only where the playbook declares none; checks need everything."""
    pb, cloud = _estate(2, declared="b0")
    driver = fake_drivers(cloud)[WorkloadKind.CONTAINER]
    asked: list[tuple[str, bool]] = []
    facts = driver.host_facts

    def recorded(site: Endpoint, brief: bool = False) -> HostFacts:
        asked.append((site.host, brief))
        return facts(site, brief)

    driver.host_facts = recorded  # type: ignore[method-assign]
    snapshot(pb, {WorkloadKind.CONTAINER: driver}, brief=True)
    assert sorted(asked) == [("a0", False), ("a1", False), ("b0", True), ("b1", False)]
    asked.clear()
    snapshot(pb, {WorkloadKind.CONTAINER: driver})
    assert not any(brief for _, brief in asked)


def test_a_fence_of_a_site_gone_silent_is_bounded_by_its_answer_timeout() -> None:
    """A cut-off host is found silent at its site's deadline (then vouched for), while an answering host's copy
    is stopped through its daemon: a disaster's fence does not wait on a partition."""
    pb, cloud = _estate(2, timeout_s=0.3)
    cloud.sites["fake://a1/docker"].latency_s = 5.0
    start = time.monotonic()
    said = fence_site(pb, RunSites.of(pb, fake_drivers(cloud)), "a", {WorkloadKind.CONTAINER: ["c0", "c1"]}, "7",
                      vouched="declared down by the operator")
    assert time.monotonic() - start < 2.0
    assert said == "destroyed container c0 on a0; hosts a1 declared down by the operator"
    assert not cloud.sites["fake://a0/docker"].workloads["c0"].running


def test_a_fence_refuses_when_a_host_answers_and_will_not_stop_a_copy() -> None:
    pb, cloud = _estate(1)
    driver = fake_drivers(cloud)[WorkloadKind.CONTAINER]

    def refuses(_name: str, _ep: Endpoint) -> bool:
        raise MoveFailed("kill refused")

    driver.fence = refuses  # type: ignore[method-assign]
    with pytest.raises(MoveFailed, match="kill refused"):
        fence_site(pb, RunSites.of(pb, {WorkloadKind.CONTAINER: driver}), "a", {WorkloadKind.CONTAINER: ["c0"]}, "7",
                   vouched="declared down by the operator")


def test_the_freezes_of_a_dead_process_on_a_silent_host_are_left_for_later_within_the_bound(store: Store) -> None:
    pb, cloud = _estate(2, timeout_s=0.3)
    cloud.sites["fake://a1/docker"].latency_s = 5.0
    for i in range(2):
        cloud.sites[f"fake://a{i}/docker"].workloads[f"c{i}"].frozen = Frozen.PAUSED
        store.save(OpenFreeze(playbook="big", workload=f"c{i}", kind="container", site="a", host=f"a{i}",
                              how="paused", owner="gone:1", release_by=utcnow() - timedelta(seconds=1)))
    start = time.monotonic()
    said = release_orphans(pb, fake_drivers(cloud), store)
    assert time.monotonic() - start < 2.0
    assert [f.workload for f in store.freezes("big")] == ["c1"]  # journaled still, for the next command
    assert cloud.sites["fake://a0/docker"].workloads["c0"].frozen is None
    assert "c0 on site a: released" in said[0] and "c1 on site a is still frozen" in said[1]
