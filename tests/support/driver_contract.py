"""What every driver promises, run against the fake here and against the real drivers on the lab.

A subclass provides the fixtures `driver` (a Driver), `request` (a MoveRequest for a workload that
runs on its source), `reopen` (a factory for a fresh driver, standing for a later process), `unreachable`
(an Endpoint where nothing answers) and `stops_at_once` (whether a cancel right after the start always stops
the move: false where the hypervisor may not have begun a job to abort yet). Every method of the interface
is covered: inventory, host_facts, locate, preflight, start_move and progress (joined when repeated, followed
by a later process), fence, start, ship, held_points, restart, clone, discard, drop_network, leftovers and
cancel.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from drorch.drivers.base import DrillNet, Driver, Endpoint, Handle, HostFacts, MoveRequest, Phase, Progress, Retention
from drorch.errors import MoveFailed, SiteUnreachable
from drorch.model.records import clone_name, network_name


def wait(driver: Driver, handle: Handle, timeout: float = 120.0) -> Progress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = driver.progress(handle)
        if p.finished:
            return p
        time.sleep(0.05)
    raise AssertionError(f"move {handle.id} did not finish in {timeout} s")


class DriverContract:
    def test_inventory_and_locate_see_the_workload(self, driver: Driver, request_: MoveRequest) -> None:
        names = [w.name for w in driver.inventory(request_.source)]
        assert request_.workload in names
        info = driver.locate(request_.workload, request_.source)
        assert info is not None and info.running and info.site == request_.source.site
        assert driver.locate(request_.workload, request_.target) is None
        assert driver.locate("no-such-workload-here", request_.source) is None

    def test_move_lands_on_target_once_and_is_idempotent(
        self, driver: Driver, request_: MoveRequest, reopen: Callable[[], Driver]
    ) -> None:
        handle = driver.start_move(request_)
        final = wait(driver, handle)
        assert final.phase is Phase.COMPLETED, final.message
        there = driver.locate(request_.workload, request_.target)
        assert there is not None and there.running
        left = driver.locate(request_.workload, request_.source)
        assert left is None or not left.running
        # Starting again does nothing but report where it is.
        again = driver.start_move(request_)
        assert wait(driver, again).message == f"already running on site {request_.target.site}"
        # A later process follows the stored handle from reality.
        later = reopen()
        try:
            assert later.progress(Handle.from_json(handle.to_json())).phase is Phase.COMPLETED
        finally:
            later.close()

    def test_unreachable_target_is_refused_and_nothing_moves(
        self, driver: Driver, request_: MoveRequest, unreachable: Endpoint
    ) -> None:
        with pytest.raises(SiteUnreachable) as err:
            handle = driver.start_move(dataclasses.replace(request_, target=unreachable))
            wait(driver, handle)
        assert unreachable.site in str(err.value)
        info = driver.locate(request_.workload, request_.source)
        assert info is not None and info.running

    def test_host_facts_and_preflight_answer_and_an_unreachable_host_is_named(
        self, driver: Driver, request_: MoveRequest, unreachable: Endpoint
    ) -> None:
        assert isinstance(driver.host_facts(request_.target), HostFacts)
        assert isinstance(driver.host_facts(request_.source, brief=True), HostFacts)
        assert driver.preflight(request_) == []
        for call in (lambda: driver.host_facts(unreachable), lambda: driver.inventory(unreachable),
                     lambda: driver.fence(request_.workload, unreachable)):
            with pytest.raises(SiteUnreachable):
                call()

    def test_fence_stops_the_workload_once_and_start_brings_it_back(self, driver: Driver, request_: MoveRequest
                                                                     ) -> None:
        name, site = request_.workload, request_.source
        assert driver.fence(name, site) is True
        info = driver.locate(name, site)
        assert info is not None and not info.running and info.status  # stopped, its definition kept, and said so
        assert driver.fence(name, site) is False
        assert driver.fence("no-such-workload-here", site) is False
        assert driver.start(name, site).startswith(f"started on site {site.site}")
        info = driver.locate(name, site)
        assert info is not None and info.running and info.status == ""
        assert driver.start(name, site) == f"already running on site {site.site}"
        with pytest.raises(MoveFailed):
            driver.start("no-such-workload-here", site)

    def test_ship_then_restart_from_the_point_which_stays(self, driver: Driver, request_: MoveRequest) -> None:
        """Protect, lose the source, start the copy: the workload runs on the target, the point it started
        from is still held there, and a second restart only says it runs."""
        assert driver.held_points(request_.workload, request_.target) is None  # no copy there yet
        shipped = driver.ship(request_, Retention(keep=2))
        held = driver.held_points(request_.workload, request_.target)
        assert held is not None and (shipped.name is None or shipped.name in held)
        there = driver.locate(request_.workload, request_.target)
        assert there is None or not there.running  # shipped, never started
        source = driver.locate(request_.workload, request_.source)
        assert source is not None and source.running  # protecting moves nothing
        driver.fence(request_.workload, request_.source)
        done = driver.restart(request_.workload, request_.target, shipped.name)
        assert done.phase is Phase.COMPLETED, done.message
        there = driver.locate(request_.workload, request_.target)
        assert there is not None and there.running
        assert driver.held_points(request_.workload, request_.target) == held
        again = driver.restart(request_.workload, request_.target, shipped.name)
        assert again.message == f"already running on site {request_.target.site}"
        assert driver.leftovers(request_.workload, request_.target) == []  # it runs there: nothing stale

    def test_clone_discard_and_drop_network_leave_the_point_as_it_was(
        self, driver: Driver, request_: MoveRequest
    ) -> None:
        shipped = driver.ship(request_, Retention(keep=2))
        held = driver.held_points(request_.workload, request_.target)
        clone, network = clone_name(request_.workload, 9999), network_name(9999)
        said = driver.clone(request_.workload, clone, request_.target, DrillNet(network), shipped.name)
        assert clone in said
        up = driver.locate(clone, request_.target)
        assert up is not None and up.running
        assert driver.clone(request_.workload, clone, request_.target, DrillNet(network)) == \
            f"{clone} already up on site {request_.target.site}"
        assert request_.workload not in [w.name for w in driver.inventory(request_.target) if w.running]
        assert driver.discard(clone, request_.target) != []
        assert driver.locate(clone, request_.target) is None
        assert driver.discard(clone, request_.target) == []  # idempotent
        driver.drop_network(network, request_.target)
        assert driver.drop_network(network, request_.target) is False
        assert driver.held_points(request_.workload, request_.target) == held
        source = driver.locate(request_.workload, request_.source)
        assert source is not None and source.running  # the original ran on

    def test_cancel_leaves_the_workload_running_in_exactly_one_place(
        self, driver: Driver, request_: MoveRequest, stops_at_once: bool
    ) -> None:
        """A cancelled move stops and leaves the workload on its source; one past the point where the target took
        over ends there: either way it runs once, and the move says how it ended."""
        handle = driver.start_move(request_)
        driver.cancel(handle)
        final = wait(driver, handle)
        places = [ep.site for ep in (request_.source, request_.target)
                  if (info := driver.locate(request_.workload, ep)) is not None and info.running]
        assert len(places) == 1, places
        if stops_at_once:
            assert final.phase is Phase.FAILED, final.message
        if final.phase is Phase.FAILED:
            assert places == [request_.source.site], final.message
            assert "cancelled" in final.message and request_.source.site in final.message
            assert driver.locate(request_.workload, request_.target) is None  # nothing half-made stays there
        else:
            assert places == [request_.target.site]
