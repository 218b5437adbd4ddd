"""A reading served to many: made once per max age, remade in the background, its failure said."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from drorch.errors import StoreError
from drorch.web._cached_reading import Fresh


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def eventually(fresh: Fresh[object], value: object) -> bool:
    for _ in range(200):
        with contextlib.suppress(StoreError):
            if fresh.get() == value:
                return True
        time.sleep(0.02)
    return False


def test_a_reading_is_served_until_it_is_old_then_remade_while_the_old_one_is_served() -> None:
    clock, made, gate = Clock(), [], threading.Event()
    gate.set()

    def make() -> int:
        gate.wait(5)
        made.append(len(made) + 1)
        return made[-1]

    fresh = Fresh(make, max_age_s=10, stale_s=30, clock=clock)
    assert fresh.get() == 1  # the first reader waits for the first reading
    clock.now = 9
    assert fresh.get() == 1 and made == [1]
    clock.now = 10
    gate.clear()  # the next reading takes its time
    assert [fresh.get() for _ in range(50)] == [1] * 50  # served the old one meanwhile, one reading under way
    gate.set()
    assert eventually(fresh, 2) and made == [1, 2]


def test_a_reader_waits_rather_than_be_served_a_reading_past_stale() -> None:
    clock, made = Clock(), []

    def make() -> int:
        made.append(len(made) + 1)
        return made[-1]

    fresh = Fresh(make, max_age_s=10, stale_s=30, clock=clock)
    assert fresh.get() == 1
    clock.now = 29
    assert fresh.get() in (1, 2)  # remade in the background, the old one still fit to serve meanwhile
    assert eventually(fresh, 2)
    clock.now = 100
    assert fresh.get() == 3  # nobody asked for a long time: this reader waits for a new one


def test_a_failed_reading_is_said_and_tried_again_by_the_next_reader() -> None:
    clock, outage = Clock(), [True]

    def make() -> str:
        if outage[0]:
            raise StoreError("the state store does not answer")
        return "read"

    fresh = Fresh(make, max_age_s=10, stale_s=30, clock=clock)
    with pytest.raises(StoreError, match="does not answer"):
        fresh.get()
    outage[0] = False  # the failure stands until a try succeeds, which the next reader starts
    assert eventually(fresh, "read")


def test_a_slow_reading_is_made_less_often() -> None:
    """Readings take at most a tenth of the time: one that took 5 s is served for 50 s."""
    clock, made = Clock(), []

    def make() -> int:
        clock.now += 5
        made.append(len(made) + 1)
        return made[-1]

    fresh = Fresh(make, max_age_s=1, stale_s=1000, clock=clock)
    assert fresh.get() == 1
    clock.now += 40
    assert fresh.get() == 1 and made == [1]
    clock.now += 10
    assert fresh.get() in (1, 2)
    assert eventually(fresh, 2)
