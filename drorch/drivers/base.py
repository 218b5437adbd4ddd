"""The narrow interface every workload driver implements, and the values that cross it.

A move is started with `start_move`, which returns a JSON-serialisable `Handle` and is idempotent:
it first looks where the workload really is and does only what is still missing. `progress` reads
the state of a move back from a handle, from the driver's own bookkeeping when the move runs in
this process and from both sites' reality otherwise, so a later process can pick a move up.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from drorch.errors import MoveFailed
from drorch.model.playbook import Mappings, Resources, Strategy, WorkloadKind
from drorch.model.retention import RetentionTier, kept
from drorch.model.run_settings import MigrationControls
from drorch.plan.inventory import HostFacts, WorkloadInfo
from drorch.redact import redact

__all__ = ["Cut", "DrillNet", "Driver", "Endpoint", "Frozen", "Handle", "HostFacts", "MoveRequest", "Phase",
           "Progress", "Retention", "Sent", "Shipped", "WorkloadInfo"]


@dataclass(frozen=True)
class Endpoint:
    """One host of a site, for one technology, as a driver sees it."""

    site: str
    uri: str
    migration_address: str | None = None
    host: str = ""
    tls: tuple[str, str, str] | None = None  # (CA, certificate, key) files of a Docker TCP endpoint
    engine: str = ""  # a container host's engine: "podman", or Docker ("docker", and "" in older records)
    relay: bool = False  # an LXD whose migrations drorch relays (`drivers.lxd._lxd_relay`)
    answer_timeout_s: float = 15.0  # the site's bound on a question or a short call
    operation_timeout_s: float = 600.0  # and on a long one (a checkpoint, a restore, data sent)

    @property
    def podman(self) -> bool:
        return self.engine == "podman"

    @property
    def containers(self) -> bool:
        """Whether a container engine (Docker or Podman) answers here: where an LXD instance lands as a container."""
        return self.engine in ("docker", "podman")

    @property
    def shown(self) -> str:
        """The URI as messages show it: without a password or a token."""
        return redact(self.uri)


def _endpoint(raw: dict[str, Any]) -> Endpoint:
    tls = raw.get("tls")
    return Endpoint(**{**raw, "tls": tuple(tls) if tls else None})


@dataclass(frozen=True)
class MoveRequest:
    workload: str
    strategy: Strategy
    source: Endpoint
    target: Endpoint
    mappings: Mappings = field(default_factory=Mappings)  # applied on the target
    resources: Resources | None = None  # other vCPUs or memory on the target, where the strategy allows
    controls: MigrationControls | None = None  # limits of a live migration

    def reverse(self) -> MoveRequest:
        """The way back: sites swapped, mappings inverted, the size the workload has now."""
        return MoveRequest(self.workload, self.strategy, self.target, self.source, self.mappings.inverse(),
                           None, self.controls)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "strategy": self.strategy.value,
            "source": {**asdict(self.source), "uri": self.source.shown},  # kept in the store: no secrets
            "target": {**asdict(self.target), "uri": self.target.shown},
            "mappings": self.mappings.model_dump(mode="json"),
            "resources": self.resources.model_dump(mode="json") if self.resources else None,
            "controls": self.controls.model_dump(mode="json", exclude_unset=True) if self.controls else None,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MoveRequest:
        return cls(
            workload=raw["workload"],
            strategy=Strategy(raw["strategy"]),
            source=_endpoint(raw["source"]),
            target=_endpoint(raw["target"]),
            mappings=Mappings.model_validate(raw.get("mappings") or {}),
            resources=Resources.model_validate(raw["resources"]) if raw.get("resources") else None,
            controls=MigrationControls.model_validate(raw["controls"]) if raw.get("controls") else None,
        )


@dataclass(frozen=True)
class DrillNet:
    """A drill's isolated network on one host: nothing routes off it. With subnets, the host has the gateway
    address of each (so that checks reach the clones) and clones with an address take theirs from them."""

    name: str
    subnets: tuple[tuple[str, str], ...] = ()  # (subnet, gateway): at most one of each family


@dataclass
class Handle:
    """What a step stores so that it, or a later run, can follow the move."""

    request: MoveRequest
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "request": self.request.to_dict(), "data": self.data}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Handle:
        raw = json.loads(text)
        return cls(request=MoveRequest.from_dict(raw["request"]), id=raw["id"], data=raw["data"])


@dataclass(frozen=True)
class Shipped:
    """A recovery point put on the target by `ship`."""

    message: str
    size_bytes: int | None = None  # what was sent
    name: str | None = None  # the driver's name for it, e.g. the checkpoint's
    kind: str | None = None  # "full" or "incremental", where the driver ships disks
    chain: int | None = None  # volumes a restart from it reads: 1 for a full point


@dataclass(frozen=True)
class Retention:
    """Which points a ship keeps on the target beside the one it ships: of `held` (the complete points drorch
    recorded there, each with its instant, newest first), those the `keep` newest and the `tiers` choose once the
    new point is taken; a VM's disk is a full point after `full_every` points of one chain."""

    keep: int = 1
    full_every: int = 7
    held: tuple[tuple[str, datetime], ...] = ()
    tiers: tuple[RetentionTier, ...] = ()
    merge_mib_s: int = 0  # a bound on the disk bandwidth of a VM point's merge on the target (0: none)

    @property
    def points(self) -> tuple[str, ...]:
        """The held points' names, newest first."""
        return tuple(name for name, _ in self.held)

    def kept(self, new: str, at: datetime) -> set[str]:
        """The points kept once point `new` of instant `at` is taken: `new` and the held points chosen."""
        return kept([*self.held, (new, at)], at, self.keep, self.tiers) | {new}


class Frozen(StrEnum):
    """How a workload is held still for a cut: what `thaw` undoes."""

    FILESYSTEMS = "filesystems"  # the guest agent flushed and froze the guest's filesystems (fsfreeze)
    PAUSED = "paused"  # the hypervisor holds its vCPUs, or its cgroup holds its processes


class Cut(ABC):
    """A recovery point's instant, taken on the source: what must be of that instant is fixed (a backup job
    begun, a checkpoint dumped, volumes copied in place), so the workload may run on while `send` ships it."""

    at: datetime  # the instant the point describes
    warning: str = ""  # taken, but not as the workload's strategy asks (said on its point)

    @abstractmethod
    def send(self) -> Shipped:
        """Ship the cut to the target and keep the points its retention names (what that costs in time may be
        left to `thin`). Raises MoveFailed or SiteUnreachable, leaving nothing of the point behind."""

    def thin(self) -> str:
        """After the sent point is recorded: the retention work that would have delayed it (a VM's merges),
        said in a line for the point's record ('' when nothing was said). Never raises: the point is whole, and
        what is left undone here is done by a later ship."""
        return ""

    def abandon(self) -> None:  # noqa: B027 - a cut that made nothing on the source has nothing to undo
        """Drop what the cut made on the source, unsent."""


class Sent(Cut):
    """A cut whose data travelled with it: a technology that cannot part the instant from the copy."""

    def __init__(self, at: datetime, shipped: Shipped) -> None:
        self.at, self._shipped = at, shipped

    def send(self) -> Shipped:
        return self._shipped


class Phase(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Progress:
    phase: Phase
    step: str = ""  # what the driver is doing now, e.g. "checkpoint" or "migrating memory"
    bytes_done: int | None = None
    bytes_total: int | None = None
    message: str = ""  # how it ended: "running on site b", or why it failed
    warning: str = ""  # completed, but not as asked: e.g. a checkpoint move that became a redeploy, and why

    @property
    def finished(self) -> bool:
        return self.phase is not Phase.RUNNING


def chosen(held: list[str], point: str | None, what: str) -> str | None:
    """The recovery point asked for among those a site holds (oldest first), or the newest; MoveFailed, naming
    what is held, when the one asked for is not there."""
    if point is None:
        return held[-1] if held else None
    if point not in held:
        raise MoveFailed(f"{what} has no recovery point {point} on this site (it holds: "
                         f"{', '.join(reversed(held)) or 'none'})")
    return point


class Driver(ABC):
    """One technology (libvirt, Docker and Podman, LXD): inventory of a site and moves between sites."""

    kind: WorkloadKind  # what it drives: a class attribute of each real driver, the fake's given per instance

    @abstractmethod
    def inventory(self, site: Endpoint) -> list[WorkloadInfo]:
        """Every workload of this kind on the site; raises SiteUnreachable."""

    @abstractmethod
    def host_facts(self, site: Endpoint, brief: bool = False) -> HostFacts:
        """The host's size and the names mappings can point at; raises SiteUnreachable. `brief` is for a run's
        plan, over a host whose size the playbook declares: what is slow to ask (a Podman's size and
        checkpoint support) may be left unknown (None)."""

    @abstractmethod
    def locate(self, name: str, site: Endpoint) -> WorkloadInfo | None:
        """The workload on that site, or None; raises SiteUnreachable."""

    def start_move(self, request: MoveRequest) -> Handle:
        """Start (or join) moving the workload; returns at once. One that runs on the target already is not
        moved again. Raises MoveFailed or SiteUnreachable."""
        handle = Handle(request)
        there = self.locate(request.workload, request.target)
        if there is not None and there.running:
            handle.data["already_there"] = True
        else:
            self._begin_move(handle)
        return handle

    def settle(self, request: MoveRequest) -> None:  # noqa: B027  a hook: most drivers have nothing to do
        """What a move does once the workload runs on the target, done again for one found there by a later
        process (the one that moved it died before): idempotent. A driver whose moves finish all of it before
        the workload runs there has nothing to do."""

    @abstractmethod
    def _begin_move(self, handle: Handle) -> None:
        """Start the move `handle` names, the workload not running on the target yet, or join one under way."""

    def progress(self, handle: Handle) -> Progress:
        """Where the move stands now: as this process follows it, or else as the target shows it (a later
        process following a move that one which died started)."""
        req = handle.request
        if handle.data.get("already_there"):
            self.settle(req)
            return Progress(Phase.COMPLETED, message=f"already running on site {req.target.site}")
        followed = self._follow_move(handle)
        if followed is not None:
            return followed
        there = self.locate(req.workload, req.target)
        if there is not None and there.running:
            return Progress(Phase.COMPLETED, message=f"running on site {req.target.site}")
        return Progress(Phase.FAILED, message=f"no move of {self.kind} {req.workload} is under way (interrupted?)")

    @abstractmethod
    def _follow_move(self, handle: Handle) -> Progress | None:
        """The move's progress as this process knows it, or None when it follows no move of that handle."""

    @abstractmethod
    def fence(self, name: str, site: Endpoint) -> bool:
        """Stop the workload on that site at once (no shutdown grace): True when it was running.
        Its definition stays. Raises SiteUnreachable."""

    @abstractmethod
    def start(self, name: str, site: Endpoint) -> str:
        """Start a stopped workload as the site holds it (its disks, or its filesystem and volumes, as they are;
        what it held in memory is lost), never a recovery point; says what it did. Raises MoveFailed when the site
        holds no such workload, SiteUnreachable."""

    @abstractmethod
    def restart(self, name: str, site: Endpoint, point: str | None = None) -> Progress:
        """Disaster: start the copy the site holds (a shipped definition, a stopped container) from its
        recovery point `point` (a Shipped.name), or the newest; the point itself stays as it was. Returns how it
        ended, with a warning when not as shipped. Raises MoveFailed or SiteUnreachable."""

    def run_inside(self, name: str, site: Endpoint, argv: list[str], env: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        """Run a command inside the workload (a VM's guest agent): its exit code and output. Raises MoveFailed
        where the technology has no way in."""
        raise MoveFailed(f"drorch runs no command inside a {self.kind}: give {name} a way to take its address "
                         "(DHCP, a fixed address mapped by the engine)")

    def ship(self, request: MoveRequest, retention: Retention) -> Shipped:
        """Protect: put on the target what a disaster restart starts from, leaving the source running, and
        keep there the points `retention` names. Raises MoveFailed or SiteUnreachable."""
        cut = self.cut(request, retention, held=False)
        shipped = cut.send()
        thinned = cut.thin()
        return replace(shipped, message=f"{shipped.message}; {thinned}") if thinned else shipped

    @abstractmethod
    def cut(self, request: MoveRequest, retention: Retention, held: bool) -> Cut:
        """The instant of the workload's next point, fixed on the source, the data to follow with `send`. `held`:
        the workload is frozen for it, so all it holds (volumes too) must be taken now. Raises MoveFailed or
        SiteUnreachable."""

    def freeze(self, name: str, site: Endpoint, quiesce: bool) -> Frozen:
        """Hold the workload still for a cut: with `quiesce`, a VM's filesystems frozen through its guest agent;
        otherwise its vCPUs or processes paused. MoveFailed when it cannot be (no agent, the agent refused)."""
        raise MoveFailed(f"drorch cannot hold a {self.kind} still for a cut")

    def thaw(self, name: str, site: Endpoint, how: Frozen) -> bool:
        """Undo `freeze`: True when something was released. Safe on one that is not frozen (a re-run), and never
        resumes what another paused: a VM is resumed only when the hypervisor says a client paused it."""
        return False

    @abstractmethod
    def clone(self, name: str, clone: str, site: Endpoint, net: DrillNet, point: str | None = None,
              addresses: tuple[str, ...] = ()) -> str:
        """Drill: start `clone`, a renamed copy of the recovery point `point` (or the newest) of `name`, attached
        only to `net`, an isolated network the driver creates for the drill when the copy needs one, at
        `addresses` there (at most one of each family; none: any address the network gives, or none).
        The recovery point is not changed. Returns how it started; raises MoveFailed or SiteUnreachable."""

    @abstractmethod
    def discard(self, clone: str, site: Endpoint) -> list[str]:
        """Drill teardown: remove the clone and what was made for it; returns what was removed.
        Idempotent, so safe on a drill that died at any point. Raises SiteUnreachable."""

    @abstractmethod
    def drop_network(self, network: str, site: Endpoint) -> bool:
        """Drill teardown, after its clones: remove the drill's network; True when there was one."""

    def held_points(self, name: str, site: Endpoint) -> list[str] | None:
        """The recovery points of the workload that the site holds whole (Shipped.name each), or None when
        the site has no copy of it. Raises SiteUnreachable."""
        return None

    def leftovers(self, name: str, site: Endpoint) -> list[str]:
        """What the site holds of a workload that runs on another site, other than its recovery points: a stopped
        definition or container, disks (one phrase each). Raises SiteUnreachable."""
        return []

    def remove_leftovers(self, name: str, site: Endpoint) -> list[str]:
        """Remove what `leftovers` names; what was removed. Raises SiteUnreachable."""
        return []

    def cancel(self, handle: Handle) -> None:  # noqa: B027 - moves that cannot be stopped halfway run to their end
        """Stop a move under way; the workload stays on its source."""

    def preflight(self, request: MoveRequest) -> list[str]:
        """Live checks of what would make this move fail halfway; each problem is one line."""
        return []

    def wait(self, handle: Handle, timeout: float) -> None:
        """Block up to timeout seconds, or less when the driver knows the move finished earlier."""
        time.sleep(timeout)

    def close(self) -> None:  # noqa: B027 - drivers without connections have nothing to close
        """Release connections held by the driver."""
