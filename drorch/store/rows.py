"""The state store's rows: runs and their steps, locks, recovery points, freezes, skipped ships, readiness checks,
leases and daemons, as SQLModel tables."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column
from sqlalchemy import Enum as SqlEnum
from sqlmodel import Field, SQLModel

from drorch.model.groups import Consistency
from drorch.model.playbook import WorkloadKind
from drorch.model.records import Action, Mode, Operation, RunState, StepState, naive, utcnow
from drorch.store.damaged_rows import loaded


def _valued(enum: type[StrEnum], nullable: bool = False) -> Any:
    """A column of an enum kept as its value (the text drorch has always written there), read as its member; a
    value that is none of them is a damaged row."""
    return Column(SqlEnum(enum, values_callable=lambda members: [m.value for m in members], native_enum=False,
                          create_constraint=False), nullable=nullable)


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    operation: Operation = Field(sa_column=_valued(Operation))
    playbook: str
    playbook_path: str
    source_site: str
    target_site: str
    state: RunState = Field(index=True)
    pid: int
    host: str
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    error: str | None = None
    mode: Mode | None = Field(default=None, sa_column=_valued(Mode, nullable=True))
    abort_requested: bool | None = None
    commit_deadline: datetime | None = None
    automatic: str | None = None  # an automatic failover: the gates that let it start (JSON)


class Lock(SQLModel, table=True):
    """A playbook or a workload held by one run; it outlives a crash, so `drorch resume` can take it over."""

    __tablename__ = "locks"

    key: str = Field(primary_key=True)  # playbook/<name> or <kind>/<workload>
    run_id: int | None = Field(default=None, index=True)  # None while the run is still being planned
    pid: int
    host: str
    taken_at: datetime = Field(default_factory=utcnow)


class RecoveryPoint(SQLModel, table=True):
    """What a disaster restart of one workload can start from, shipped to a site at a time."""

    __tablename__ = "recovery_points"

    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(index=True)
    workload: str
    kind: str
    site: str
    taken_at: datetime = Field(default_factory=utcnow)
    size_bytes: int | None = None  # bytes shipped
    name: str | None = None  # the driver's name for it, e.g. the checkpoint's
    detail: str | None = None  # what was shipped
    point_kind: str | None = None  # "full" or "incremental", for points of disks
    # When a ship to the other site made it history: a point of the way back, kept but out of RPO and alerts.
    retired_at: datetime | None = None
    chain: int | None = None  # volumes a restart from it reads
    complete: bool = True
    error: str | None = None
    consistency: Consistency | None = Field(default=None, sa_column=_valued(Consistency, nullable=True))  # None: crash
    group: str | None = None  # its consistency group, whose members' points of one cut share `cut`
    cut: str | None = None  # <group>@<time>: the cut it was taken in, with its group's other members
    cut_at: datetime | None = None  # the instant its data describes
    frozen_at: datetime | None = None  # when its freeze began (its group's); None when nothing was frozen
    freeze_ms: float | None = None  # how long it (its group) stayed frozen
    warning: str | None = None  # taken, but not as asked: e.g. crash-consistent because the guest agent refused

    @property
    def consistent(self) -> Consistency:
        return self.consistency or Consistency.CRASH

    @property
    def instant(self) -> datetime:
        """The instant the point describes (its cut; for points recorded before cuts were, when it was shipped):
        what a restart from it loses is everything since."""
        return naive(self.cut_at or self.taken_at)


class OpenFreeze(SQLModel, table=True):
    """A workload frozen for a cut and not yet released, kept before it is frozen: if the process that froze it
    dies, the next one that touches its playbook releases it."""

    __tablename__ = "open_freezes"

    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(index=True)
    workload: str
    kind: str
    site: str
    host: str  # the playbook's name of the host it was frozen on
    how: str  # what the driver did, which its thaw undoes
    owner: str  # host:pid of the process that froze it
    release_by: datetime  # past this, it is released whoever froze it


class SkippedShip(SQLModel, table=True):
    """The ships of one workload that were due while its last one still ran, and so were not begun."""

    __tablename__ = "skipped_ships"

    playbook: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    workload: str = Field(primary_key=True)
    count: int = 0
    last_at: datetime = Field(default_factory=utcnow)
    why: str = ""


class ReadinessCheck(SQLModel, table=True):
    """One look at whether a failover would work now: validate's checks and every workload's RPO."""

    __tablename__ = "readiness"

    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(index=True)
    checked_at: datetime = Field(default_factory=utcnow)
    ready: bool
    problems: str = "[]"  # JSON list of one-line problems
    alert: str | None = None  # how the change to not ready was told, or why it could not be
    hosts: str | None = None  # JSON list: per host of the playbook, its site, whether it answered, and why not
    records: str | None = None  # JSON list: per DNS record of the playbook, where it points and whether rightly

    def problem_list(self) -> list[str]:
        return [str(p) for p in loaded("readiness", self.id, "problems", self.problems)]


class Lease(SQLModel, table=True):
    """Who runs the scheduler: taken when free or expired, renewed by its holder."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True)
    holder: str
    expires_at: datetime


class DaemonRow(SQLModel, table=True):
    """Each daemon's heartbeat, for `drorch daemon status`."""

    __tablename__ = "daemons"

    identity: str = Field(primary_key=True)  # host:pid
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    leader: bool = False
    stopped: bool = False
    lease_s: float | None = None  # its lease: a heartbeat older than that is a daemon gone

    def role(self, now: datetime) -> str:
        """leader, standby, stopped, or gone: a heartbeat older than the daemon's lease (killed, say)."""
        if self.stopped:
            return "stopped"
        if self.lease_s is not None and (naive(now) - naive(self.heartbeat_at)).total_seconds() > self.lease_s:
            return "gone"
        return "leader" if self.leader else "standby"


class Step(SQLModel, table=True):
    __tablename__ = "steps"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True)
    seq: int
    workload: str
    kind: str
    strategy: str
    source_site: str
    target_site: str
    wave: str | None = None
    action: Action | None = Field(default=None, sa_column=_valued(Action, nullable=True))
    from_host: str | None = None
    to_host: str | None = None
    state: StepState = StepState.PENDING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    error: str | None = None
    handle: str | None = None  # the driver's JSON handle: lets a later run pick the action up
    bytes_done: int | None = None
    bytes_total: int | None = None
    request: str | None = None  # the MoveRequest as JSON: a resumed run moves exactly what was planned
    detail: str | None = None  # hooks, approvals and fencing: what the step is about, as JSON
    warning: str | None = None  # succeeded, but not as asked (a checkpoint move that became a redeploy), and why
    source_kind: str | None = None  # what the workload runs as on each site, where that is not its kind
    target_kind: str | None = None

    def details(self) -> dict[str, Any]:
        """What the step is about (its `detail` JSON); DamagedRow when the store holds something else there."""
        detail: dict[str, Any] = loaded("steps", self.id, "detail", self.detail)
        return detail

    @property
    def at_source(self) -> WorkloadKind:
        return WorkloadKind(self.source_kind or self.kind)

    @property
    def at_target(self) -> WorkloadKind:
        return WorkloadKind(self.target_kind or self.kind)

