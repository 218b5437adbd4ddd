"""The driver contract on the fake driver, over each kind and the strategies the real drivers are held to."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from drorch.drivers.base import Driver, Endpoint, MoveRequest
from drorch.drivers.fake import FakeCloud, FakeDriver, FakeSite, FakeWorkload
from drorch.model.playbook import Strategy, WorkloadKind
from tests.support.driver_contract import DriverContract

A = Endpoint("a", "fake://a")
B = Endpoint("b", "fake://b")


@pytest.fixture(params=[(WorkloadKind.VM, Strategy.LIVE), (WorkloadKind.CONTAINER, Strategy.CHECKPOINT),
                        (WorkloadKind.CONTAINER, Strategy.REDEPLOY), (WorkloadKind.LXD, Strategy.COPY),
                        (WorkloadKind.LXD, Strategy.STATEFUL), (WorkloadKind.LXD, Strategy.REDEPLOY)],
                ids=lambda p: f"{p[0]}-{p[1]}")
def kind_strategy(request: pytest.FixtureRequest) -> tuple[WorkloadKind, Strategy]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fake_cloud(kind_strategy: tuple[WorkloadKind, Strategy]) -> FakeCloud:
    cloud = FakeCloud(sites={A.uri: FakeSite(), B.uri: FakeSite(), "fake://down": FakeSite(reachable=False)})
    cloud.sites[A.uri].workloads["w1"] = FakeWorkload(kind_strategy[0], counter=7)
    return cloud


@pytest.fixture
def driver(fake_cloud: FakeCloud, kind_strategy: tuple[WorkloadKind, Strategy]) -> Iterator[Driver]:
    d = FakeDriver(fake_cloud, kind_strategy[0])
    yield d
    d.close()


@pytest.fixture
def request_(kind_strategy: tuple[WorkloadKind, Strategy]) -> MoveRequest:
    return MoveRequest("w1", kind_strategy[1], A, B)


@pytest.fixture
def reopen(fake_cloud: FakeCloud, kind_strategy: tuple[WorkloadKind, Strategy]) -> Callable[[], Driver]:
    return lambda: FakeDriver(fake_cloud, kind_strategy[0])


@pytest.fixture
def unreachable() -> Endpoint:
    return Endpoint("z", "fake://down")


@pytest.fixture
def stops_at_once() -> bool:
    return True


class TestFakeDriver(DriverContract):
    pass
