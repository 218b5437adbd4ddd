"""A witness in memory for fast tests: leases end by the clock it is given, and a test can take its majority
away."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drorch.errors import QuorumLost
from drorch.witness.witness_base import Holding, Witness


@dataclass
class FakeWitness(Witness):
    clock: Callable[[], datetime]
    quorum: bool = True  # False: no majority answers
    holds: dict[str, tuple[Holding, datetime]] = field(default_factory=dict)  # by playbook, with when it ends
    said_stopped: dict[tuple[str, str], datetime] = field(default_factory=dict)
    leases: dict[int, float] = field(default_factory=dict)  # each lease's length
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _majority(self) -> None:
        if not self.quorum:
            raise QuorumLost("no majority of the fake witness answered")

    def holder(self, playbook: str) -> Holding | None:
        self._majority()
        hold, ends = self.holds.get(playbook, (None, self.clock()))
        return hold if hold is not None and self.clock() < ends else None

    def claim(self, playbook: str, site: str, daemon: str, lease_s: float) -> Holding:
        held = self.holder(playbook)
        if held is not None:
            return held
        lease = next(self._ids)
        self.leases[lease] = lease_s
        hold = Holding(playbook, site, lease, daemon, self.clock())
        self.holds[playbook] = (hold, self.clock() + timedelta(seconds=lease_s))
        return hold

    def renew(self, hold: Holding) -> bool:
        self._majority()
        if self.holder(hold.playbook) != hold:
            return False
        self.holds[hold.playbook] = (hold, self.clock() + timedelta(seconds=self.leases[hold.lease]))
        return True

    def release(self, hold: Holding) -> None:
        self._majority()
        if self.holder(hold.playbook) == hold:
            del self.holds[hold.playbook]

    def say_stopped(self, playbook: str, site: str, at: datetime) -> None:
        self._majority()
        self.said_stopped[(playbook, site)] = at

    def stopped_at(self, playbook: str, site: str) -> datetime | None:
        self._majority()
        return self.said_stopped.get((playbook, site))
