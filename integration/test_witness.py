"""The lab's etcd cluster (three members over TLS: beside each site and at a third place) keeps the witness
contract through drorch's etcd witness: a member cut off from the majority answers nothing it last knew."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from drorch.model.auto_failover import Etcd
from drorch.witness.etcd_witness import EtcdWitness
from integration import lab_etcd
from tests.support.witness_contract import WitnessContract


def settings() -> Etcd:
    return Etcd.model_validate({**lab_etcd.client_settings(), "timeout_s": 1.0})


class TestEtcdWitness(WitnessContract):
    @pytest.fixture
    def witness(self) -> Iterator[EtcdWitness]:
        lab_etcd.up()
        lab_etcd.clear()
        w = EtcdWitness(settings())
        try:
            yield w
        finally:
            w.close()
            lab_etcd.up()  # the members a test stopped, back

    @pytest.fixture
    def later(self) -> Callable[[float], None]:
        return time.sleep

    @pytest.fixture
    def lose_majority(self) -> Callable[[], None]:
        def lost() -> None:
            lab_etcd.stop("a")
            lab_etcd.stop("b")
        return lost
