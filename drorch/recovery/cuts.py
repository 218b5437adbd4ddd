"""The cut of a recovery point: one workload's, or a consistency group's at one instant.

A group's cut runs its hooks (the group's pre_freeze on this machine, each member's own, in its guest or here),
freezes every member (a quiesced VM's filesystems through its guest agent, other VMs' vCPUs paused, containers'
processes held by their cgroup), takes each member's cut and releases them all. Only then does any data travel
(`recovery.shipping` sends each cut, while the post_thaw hooks run). The freeze is bounded: past the bound every
member is released, the cuts are dropped and taken again unfrozen, crash-consistent, and the points say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from drorch.drivers.base import Cut, Driver, Frozen, MoveRequest, Retention
from drorch.engine.hooks import run_hooks
from drorch.errors import DrorchError
from drorch.model.groups import Consistency
from drorch.model.playbook import Playbook, Workload, WorkloadKind
from drorch.model.records import utcnow
from drorch.model.run_settings import Hook
from drorch.recovery.freezes import Freezer
from drorch.store.contract import StateStore


@dataclass
class Member:
    """One workload of a cut, and how its cut went."""

    kind: WorkloadKind
    name: str
    request: MoveRequest | None  # None: its point fails with `error` (a site it needs did not answer)
    retention: Retention
    driver: Driver
    spec: Workload
    error: str = ""  # its point failed: why
    frozen: Frozen | None = None
    taken: Cut | None = None
    notes: list[str] = field(default_factory=list)  # less than asked, and why

    @property
    def ready(self) -> MoveRequest | None:
        """Its request, while nothing has failed it."""
        return None if self.error else self.request

    @property
    def quiesce(self) -> bool:
        return self.spec.quiesce and self.kind is WorkloadKind.VM

    def run_hooks(self, hooks: list[Hook], env: dict[str, str]) -> list[str]:
        """Its own hooks, each in its guest (`inside`) or on this machine: the failures, one line each."""
        failed = []
        for hook in hooks:
            if hook.inside and hook.run is not None and self.ready is not None:
                try:
                    code, said = self.driver.run_inside(self.name, self.ready.source, hook.run, env, hook.timeout)
                except DrorchError as exc:
                    code, said = -1, str(exc)
                if code != 0:
                    failed.append(f"{hook.label} in {self.name}: exit {code}{': ' + said.strip() if said else ''}")
            else:
                failed += [f"{self.name}: {r.line()}" for r in run_hooks([hook], env) if not r.ok]
        return failed


@dataclass
class GroupCut:
    """A cut of one or more members: the group, its instant's window and what it is worth."""

    members: list[Member]
    group: str | None = None
    name: str | None = None  # <group>@<time>, shared by the members' points
    frozen_at: datetime | None = None
    freeze_ms: float | None = None
    hooked: bool = False  # the group's pre_freeze hooks quiesced the application
    hooks_failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what every member's point says
    after_thaw: Callable[[], list[str]] = list  # the post_thaw hooks, run while the data travels: their failures

    def consistency(self, m: Member) -> Consistency:
        """A frozen filesystem (the guest's fsfreeze hooks ran) or held processes whose application's hooks
        ran: application; held processes with no hooks, or hooks that failed: filesystem; else crash."""
        if m.frozen is None or m.taken is None or (m.frozen is Frozen.PAUSED and m.kind is WorkloadKind.VM):
            return Consistency.CRASH  # a paused guest's page cache is not on its disks
        if self.hooks_failed:
            return Consistency.FILESYSTEM
        hooked = m.frozen is Frozen.FILESYSTEMS or bool(m.spec.hooks.pre_freeze) or self.hooked
        return Consistency.APPLICATION if hooked else Consistency.FILESYSTEM


def _each(work: Callable[[Member], None], members: list[Member]) -> None:
    """`work` on every member still ready, all at once: a group's freeze lasts as long as its slowest member."""
    ready = [m for m in members if m.ready is not None]
    with ThreadPoolExecutor(max_workers=max(1, len(ready)), thread_name_prefix="drorch-cut") as pool:
        list(pool.map(work, ready))


def _cut_all(members: list[Member]) -> None:
    def cut(m: Member) -> None:
        assert m.ready is not None, "only a ready member is cut"
        try:
            m.taken = m.driver.cut(m.ready, m.retention, held=m.frozen is not None)
        except DrorchError as exc:
            m.error = str(exc)
            return
        if m.taken.warning:
            m.notes.append(m.taken.warning)

    _each(cut, members)


def take(pb: Playbook, store: StateStore, source: str, members: list[Member], group: str | None) -> GroupCut:
    """The members' cuts: frozen together when they are a group or a quiesced VM, else each as it runs."""
    taken = GroupCut(members, group)
    held = group is not None or any(m.quiesce for m in members)
    if not held:
        _cut_all(members)
        return taken
    env = {"DRORCH_PLAYBOOK": pb.name, "DRORCH_GROUP": group or "", "DRORCH_SITE": source,
           "DRORCH_MEMBERS": " ".join(m.name for m in members)}
    settings = pb.group(group) if group else None
    if settings is not None:
        taken.hooked = bool(settings.hooks.pre_freeze)
        taken.hooks_failed += [r.line() for r in run_hooks(settings.hooks.pre_freeze, env) if not r.ok]
    for m in members:
        if m.ready is not None:
            taken.hooks_failed += m.run_hooks(m.spec.hooks.pre_freeze, {**env, "DRORCH_WORKLOAD": m.name})
    bound_ms = pb.max_freeze_ms(group)
    freezer = Freezer(store, pb.name, bound_ms / 1000)
    try:
        _each(lambda m: _freeze(freezer, m, alone=group is None), members)
        _cut_all(members)
    finally:
        freezer.release()
    taken.frozen_at, taken.freeze_ms = freezer.started_at, (freezer.released_after_s or 0.0) * 1000
    taken.after_thaw = lambda: [
        *(line for m in members for line in m.run_hooks(m.spec.hooks.post_thaw, {**env, "DRORCH_WORKLOAD": m.name})),
        *(r.line() for r in run_hooks(settings.hooks.post_thaw if settings else [], env) if not r.ok)]
    taken.notes += freezer.failed_thaws
    if taken.hooks_failed:
        taken.notes.append(f"a pre_freeze hook failed ({'; '.join(taken.hooks_failed)}): not application-consistent")
    if freezer.overrun:
        _recut(taken, bound_ms)
    if group is not None:
        taken.name = f"{group}@{min((m.taken.at for m in members if m.taken), default=utcnow()):%Y%m%dT%H%M%S%f}"
    return taken


def _freeze(freezer: Freezer, m: Member, alone: bool) -> None:
    """Freeze one member; a quiesce refused falls back to pausing it when it shares its group's instant."""
    assert m.ready is not None, "only a ready member is frozen"
    site = m.ready.source
    try:
        m.frozen = freezer.freeze(m.driver, m.kind, m.name, site, m.quiesce)
        return
    except DrorchError as exc:
        why = str(exc)
    if m.quiesce:
        m.notes.append(f"its filesystems could not be frozen ({why}): crash-consistent")
    else:
        m.notes.append(f"it could not be held still ({why}): crash-consistent")
    if m.quiesce and not alone:
        try:
            m.frozen = freezer.freeze(m.driver, m.kind, m.name, site, False)
        except DrorchError as exc:
            m.notes.append(f"nor its vCPUs paused ({exc})")


def _recut(taken: GroupCut, bound_ms: int) -> None:
    """The cut outlasted the bound: every member was released by then; the cuts are dropped and taken again,
    unfrozen."""
    started = time.monotonic()
    for m in taken.members:
        if m.taken is not None:
            m.taken.abandon()
        m.taken, m.frozen = None, None
    _cut_all(taken.members)
    taken.notes.append(f"held past max_freeze_ms ({bound_ms} ms): every member was released and the points were "
                       f"taken again as they ran ({(time.monotonic() - started) * 1000:.0f} ms), crash-consistent")
