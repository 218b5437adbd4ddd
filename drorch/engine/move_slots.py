"""Bounds on moves at once (a site's or a host's `max_moves`), shared by the moves of a run's waves or by the units
of a ship: each bound a semaphore, taken in one order so that no two holders wait on each other."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping


class MoveSlots:
    def __init__(self) -> None:
        self._slots: dict[str, threading.Semaphore] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def held(self, limits: Mapping[str, int]) -> Iterator[None]:
        """A slot of each bound in `limits` (bound key -> its number, as `Playbook.move_limits` gives them)."""
        with self._lock:
            slots = [self._slots.setdefault(k, threading.Semaphore(n)) for k, n in sorted(limits.items())]
        with contextlib.ExitStack() as stack:
            for slot in slots:
                stack.enter_context(slot)
            yield
