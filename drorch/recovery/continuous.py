"""The daemon's protection of one playbook. Each due time begins the units that are not still shipping and returns
at once, so that a slow workload holds up no other; a unit still shipping is counted as skipped, never begun twice.
What to ship (a plan over both sites' inventories) is reused while nothing that could change it happened: no run
recorded since, no unit failed, no `REPLAN_S` passed, the playbook's file unchanged. The drivers' connections stay
open between ships.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from drorch.drivers import playbook_drivers
from drorch.drivers.base import Driver
from drorch.engine.move_slots import MoveSlots
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.playbook_file import load_playbook
from drorch.model.run_settings import Protect
from drorch.recovery.freezes import release_orphans
from drorch.recovery.shipping import Outline, Unit, outline, ship_unit
from drorch.store.contract import StateStore
from drorch.store.rows import RecoveryPoint

REPLAN_S = 60.0  # the longest a plan is reused: a workload created or moved by hand is shipped by then
log = logging.getLogger("drorch.protect")


@dataclass
class Tick:
    """What one due time did."""

    playbook: str
    begun: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # still shipping: each with since when
    planned_ms: float | None = None  # the plan was made again, taking this long


@dataclass
class Ended:
    """How one unit's ship ended."""

    unit: str
    points: list[RecoveryPoint] | str  # or why it was not begun
    took_s: float


class Protector:
    """One playbook's continuous protection, held by the daemon between its due times."""

    def __init__(self, path: Path, store: StateStore, said: Callable[[str, Ended], None]) -> None:
        self.path, self.store, self._said = path, store, said  # `said` hears how each unit's ship ended
        self._stack = contextlib.ExitStack()
        self._pb: Playbook | None = None
        self._mtime = 0.0
        self._drivers: dict[WorkloadKind, Driver] = {}
        self._outline: Outline | None = None
        self._outlined_at = 0.0
        self._last_run: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: MoveSlots | None = None
        self._running: dict[str, tuple[Future[Ended], float]] = {}
        self._stale = threading.Event()  # a unit failed: plan again before the next ship

    def tick(self) -> Tick:
        """Begin the units that are due; return without waiting for them."""
        pb = self._playbook()
        release_orphans(pb, self._drivers, self.store)
        done = Tick(pb.name)
        plan_ = self._plan(pb, done)
        assert self._pool is not None and self._slots is not None
        for unit in plan_.units:
            running = self._running.get(unit.key)
            if running is not None and not running[0].done():
                why = f"its ship begun {time.monotonic() - running[1]:.1f} s ago still runs"
                self.store.ship_skipped(pb.name, unit.keys, why)
                done.skipped.append(f"{unit.key}: {why}")
                continue
            self._running[unit.key] = (self._pool.submit(self._ship, pb, plan_, unit, self._slots), time.monotonic())
            done.begun.append(unit.key)
        return done

    def _ship(self, pb: Playbook, plan_: Outline, unit: Unit, slots: MoveSlots) -> Ended:
        began = time.monotonic()
        try:
            points = ship_unit(pb, self._drivers, self.store, plan_, unit, slots)
        except Exception:
            self._stale.set()
            log.exception("protect %s: the ship of %s failed", pb.name, unit.key)
            raise
        if isinstance(points, list) and any(not p.complete for p in points):
            self._stale.set()  # a workload moved, or a site changed: the next ship plans again
        shipped = Ended(unit.key, points, time.monotonic() - began)
        self._said(pb.name, shipped)
        return shipped

    def _playbook(self) -> Playbook:
        """The playbook, read again when its file changed; the drivers with it, once running ships end."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = -1.0  # gone or unreadable: load_playbook says so, in one line
        if self._pb is None or mtime != self._mtime:
            self.close()
            self._pb, self._mtime = load_playbook(self.path), mtime
            self._drivers = self._stack.enter_context(playbook_drivers(self._pb))
            self._pool = ThreadPoolExecutor(max_workers=(self._pb.protect or Protect()).parallel,
                                            thread_name_prefix=f"drorch-protect-{self._pb.name}")
            self._slots = MoveSlots()
        return self._pb

    def _plan(self, pb: Playbook, done: Tick) -> Outline:
        newest = self.store.runs(limit=1)
        last_run = newest[0].id if newest else None
        if (self._outline is None or self._stale.is_set() or last_run != self._last_run
                or time.monotonic() - self._outlined_at >= REPLAN_S):
            began = time.monotonic()
            self._stale.clear()
            self._outline, self._outlined_at, self._last_run = outline(pb, self._drivers), began, last_run
            done.planned_ms = (time.monotonic() - began) * 1000
        return self._outline

    def close(self) -> None:
        """Wait for the ships under way, then let the drivers go."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pool, self._pb, self._outline, self._running = None, None, None, {}
        self._stack.close()
