"""The cyclic garbage collector, paused around work that makes many objects and no reference cycles."""

from __future__ import annotations

import gc
import threading


class _CollectorPause:
    """Reading a playbook and planning make a few objects per workload and no reference cycles, so the cyclic
    garbage collector would only walk the whole estate again and again: a fifth of a 100,000-workload plan's
    time, four fifths of composing a large playbook's YAML. It is paused while any such work runs (in any
    thread) and resumed, if it ran before, when the last one is done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._working = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._working == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._working += 1

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._working -= 1
            if self._working == 0 and self._resume:
                gc.enable()


collector_paused = _CollectorPause()
