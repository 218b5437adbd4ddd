"""What every witness promises, run against the fake here and against the lab's etcd cluster.

A subclass provides the fixtures `witness` (a Witness with no hold yet on playbook "shop"), `later` (lets a
number of seconds pass for the witness's leases) and `lose_majority` (takes the cluster's majority away).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from drorch.errors import QuorumLost
from drorch.witness.witness_base import Witness


class WitnessContract:
    def test_the_first_claim_wins_and_holds_until_its_lease_ends(self, witness: Witness,
                                                                 later: Callable[[float], None]) -> None:
        assert witness.holder("shop") is None
        hold = witness.claim("shop", "a", "host-a:1", 2)
        assert (hold.site, hold.daemon) == ("a", "host-a:1")
        assert witness.claim("shop", "b", "host-b:1", 2) == hold  # taken: the other site only learns who holds it
        assert witness.holder("shop") == hold and witness.holder("other") is None
        later(1.2)
        assert witness.renew(hold)  # renewed for its whole length again
        later(1.2)
        assert witness.holder("shop") == hold
        later(2.5)
        assert witness.holder("shop") is None and not witness.renew(hold)
        assert witness.claim("shop", "b", "host-b:1", 2).site == "b"

    def test_a_hold_let_go_frees_the_key_at_once(self, witness: Witness) -> None:
        hold = witness.claim("shop", "b", "host-b:1", 30)
        witness.release(hold)
        assert witness.holder("shop") is None and not witness.renew(hold)
        assert witness.claim("shop", "a", "host-a:1", 30).site == "a"

    def test_a_site_says_it_stopped(self, witness: Witness) -> None:
        at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        assert witness.stopped_at("shop", "a") is None
        witness.say_stopped("shop", "a", at)
        assert witness.stopped_at("shop", "a") == at and witness.stopped_at("shop", "b") is None

    def test_without_a_majority_nothing_is_known_and_nothing_taken(self, witness: Witness,
                                                                   lose_majority: Callable[[], None]) -> None:
        hold = witness.claim("shop", "a", "host-a:1", 5)
        lose_majority()
        for ask in (lambda: witness.holder("shop"), lambda: witness.claim("shop", "b", "host-b:1", 5),
                    lambda: witness.renew(hold), lambda: witness.stopped_at("shop", "a")):
            with pytest.raises(QuorumLost, match="no majority"):
                ask()
