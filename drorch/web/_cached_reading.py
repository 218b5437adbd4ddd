"""A value read from the state store, served to many readers without each of them reading the store again.

A scrape of 10,000 workloads writes some 60,000 samples, which takes prometheus_client a second or more; a
scraper or a page that asks every few seconds must not pay that each time, nor a thousand of them at once. So a
reading is served while it is younger than `max_age_s`, or ten times what the last reading took when that is more
(so readings take at most a tenth of the time, however big the store); an older one is made anew in the background
(one at a time) and, while it is younger than `stale_s`, still served meanwhile. A reader finding none younger
than `stale_s` waits for the new one: nobody is served figures older than that."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Fresh(Generic[T]):
    def __init__(self, make: Callable[[], T], max_age_s: float, stale_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make
        self.max_age_s = max_age_s
        self.stale_s = stale_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._error: Exception | None = None
        self._made_at = float("-inf")
        self._making: threading.Thread | None = None
        self._took = 0.0  # how long the last reading took

    def get(self) -> T:
        """The newest reading; the error of the newest try when it failed (a store outage is said, not hidden
        behind an older reading: a failed try counts as no reading at all)."""
        with self._lock:
            age = self._clock() - self._made_at
            too_old = age >= self.stale_s
            if (too_old or age >= max(self.max_age_s, 10 * self._took)) and self._making is None:
                self._making = threading.Thread(target=self._remake, name="drorch-reading", daemon=True)
                self._making.start()
            making = self._making if too_old else None
        if making is not None:
            making.join()
        with self._lock:
            if self._error is not None:
                raise self._error
            assert self._value is not None
            return self._value

    def _remake(self) -> None:
        value: T | None = None
        error: Exception | None = None
        started = self._clock()
        try:
            value = self._make()
        except Exception as exc:  # raised again in each reader's own thread, which says it as it says any error
            error = exc
        with self._lock:
            if error is None:
                self._value = value
            self._error = error
            # a failed try is old at once: the next reader tries again
            self._made_at = float("-inf") if error else self._clock()
            self._took = self._clock() - started
            self._making = None
