"""What every driver promises, run against the fake here and against the real drivers on the lab.

A subclass provides the fixtures `driver` (a Driver), `request` (a MoveRequest for a workload that
runs on its source), `reopen` (a factory for a fresh driver, standing for a later process) and
`unreachable` (an Endpoint where nothing answers).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from drorch.drivers.base import Driver, Endpoint, Handle, MoveRequest, Phase, Progress
from drorch.errors import SiteUnreachable


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
