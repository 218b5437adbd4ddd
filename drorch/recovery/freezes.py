"""Workloads frozen for a cut, never left frozen: each freeze is journaled in the store before it is made, a
watchdog releases every member once the group's bound has passed whatever the cut is doing, and a freeze whose
process died (SIGKILL between freeze and thaw) is released by the next drorch process that touches its playbook.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from drorch.drivers.base import Driver, Endpoint, Frozen
from drorch.errors import DrorchError
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.model.records import naive, utcnow
from drorch.process import owner, owner_alive
from drorch.reach import ask, site_endpoints
from drorch.store.contract import StateStore
from drorch.store.rows import OpenFreeze

log = logging.getLogger(__name__)
GRACE_S = 30.0  # past the group's bound, a freeze any process left is released by whoever looks

@dataclass
class Held:
    """One workload this process froze, and its journal row."""

    driver: Driver
    name: str
    site: Endpoint
    how: Frozen
    row: OpenFreeze


class Freezer:
    """The freezes of one cut. `release` thaws them all, once, from the cut's thread or from the watchdog's."""

    def __init__(self, store: StateStore, playbook: str, bound_s: float) -> None:
        self.store, self.playbook, self.bound_s = store, playbook, bound_s
        self.held: list[Held] = []
        self.failed_thaws: list[str] = []
        self.started: float | None = None  # time.monotonic() of the first freeze
        self.started_at: datetime | None = None  # and its time of day
        self.released_after_s: float | None = None
        self.overrun = False  # the watchdog released them: the cut took longer than the bound
        self._lock = threading.Lock()
        self._watchdog: threading.Timer | None = None

    def freeze(self, driver: Driver, kind: WorkloadKind, name: str, site: Endpoint, quiesce: bool) -> Frozen:
        """Freeze one workload, journaled first; a freeze that fails is undone as far as it went."""
        how = Frozen.FILESYSTEMS if quiesce else Frozen.PAUSED
        row = OpenFreeze(playbook=self.playbook, workload=name, kind=str(kind), site=site.site, host=site.host,
                         how=how.value, owner=owner(),
                         release_by=utcnow() + timedelta(seconds=self.bound_s + GRACE_S))
        self.store.save(row)
        with self._lock:
            if self.started is None:
                self.started, self.started_at = time.monotonic(), utcnow()
                self._watchdog = threading.Timer(self.bound_s, self._overrun)
                self._watchdog.daemon = True
                self._watchdog.start()
        try:
            frozen = driver.freeze(name, site, quiesce)
        except DrorchError:
            self._thaw_one(Held(driver, name, site, how, row))  # a freeze that half happened is undone too
            raise
        with self._lock:
            self.held.append(Held(driver, name, site, frozen, row))
            if self.overrun:  # frozen after the bound passed: released at once
                self._thaw_one(self.held.pop())
        return frozen

    def _overrun(self) -> None:
        self.overrun = True
        self.release()

    def release(self) -> None:
        """Thaw every member frozen, each once; a thaw that fails stays journaled for the next process."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        with self._lock:
            while self.held:
                self._thaw_one(self.held.pop(0))
            if self.started is not None and self.released_after_s is None:
                self.released_after_s = time.monotonic() - self.started

    def _thaw_one(self, h: Held) -> None:
        try:
            h.driver.thaw(h.name, h.site, h.how)
        except DrorchError as exc:
            self.failed_thaws.append(f"{h.name} could not be released ({exc}); the next drorch command retries")
            return
        self.store.freezes_closed([h.row.id or 0])


def release_orphans(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore) -> list[str]:
    """Release the playbook's freezes whose process died, or that outlived their bound: what was done, each."""
    now = naive(utcnow())
    todo: list[tuple[OpenFreeze, Driver, Endpoint]] = []
    for row in store.freezes(pb.name):
        if owner_alive(row.owner) and naive(row.release_by) > now:
            continue  # its process still runs and is within its bound: it releases its own
        kind = WorkloadKind(row.kind)
        site = next((ep for ep in site_endpoints(pb, row.site, kind) if ep.host == row.host), None)
        driver = drivers.get(kind)
        if site is not None and driver is not None:  # else the playbook no longer names its host
            todo.append((row, driver, site))
    # Asked at once and bounded per daemon: a site cut off does not hold up the plan of a disaster failover.
    answers = ask(pb, [(ep, functools.partial(driver.thaw, row.workload, how=Frozen(row.how)))
                       for row, driver, ep in todo])
    done = []
    for (row, _, _), released in zip(todo, answers, strict=True):
        if isinstance(released, DrorchError):
            done.append(f"{row.kind} {row.workload} on site {row.site} is still frozen by a drorch process that "
                        f"died ({released}); retried by the next command")
            continue
        store.freezes_closed([row.id or 0])
        if released:
            done.append(f"{row.kind} {row.workload} on site {row.site}: released; the drorch process that froze "
                        f"it ({row.owner}) ended before it thawed it")
    for line in done:
        log.warning("%s", line)
    return done
