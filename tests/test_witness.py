"""The fake witness keeps the witness contract that the lab's etcd cluster keeps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from drorch.witness.fake_witness import FakeWitness
from tests.support.witness_contract import WitnessContract


class TestFakeWitness(WitnessContract):
    @pytest.fixture
    def now(self) -> list[datetime]:
        return [datetime(2026, 12, 7, tzinfo=UTC)]

    @pytest.fixture
    def witness(self, now: list[datetime]) -> FakeWitness:
        return FakeWitness(clock=lambda: now[0])

    @pytest.fixture
    def later(self, now: list[datetime]) -> Callable[[float], None]:
        def passed(seconds: float) -> None:
            now[0] += timedelta(seconds=seconds)
        return passed

    @pytest.fixture
    def lose_majority(self, witness: FakeWitness) -> Callable[[], None]:
        def lost() -> None:
            witness.quorum = False
        return lost
