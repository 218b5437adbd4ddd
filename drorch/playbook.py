"""The playbook: the two sites, how one maps onto the other, and which workloads move, how and in what order.

The secondary site need not mirror the primary: it has its own hosts and capacity, other network,
storage and image names (`mappings`, written once from primary to secondary; failing back uses
their inverse), and tiers that say what happens to a workload when the DR site is short of room.

Loading keeps the YAML position of every node so that each problem, from YAML syntax to a
reference that points nowhere, is reported as `file:line:col: message`, all of them at once.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drorch import bounded
from drorch.errors import PlaybookError
from drorch.records import JobKind
from drorch.redact import redact

Loc = tuple[str | int, ...]


class WorkloadKind(StrEnum):
    VM = "vm"
    CONTAINER = "container"


class Strategy(StrEnum):
    LIVE = "live"  # VM: libvirt live migration, the guest keeps running
    COLD = "cold"  # VM: shut down, define on the target with the mapped configuration, start
    REPLICA = "replica"  # VM: start the copy already defined on the target, after stopping the source
    CHECKPOINT = "checkpoint"  # container: CRIU checkpoint, copy, restore
    REDEPLOY = "redeploy"  # container: recreate from its image with the same (mapped) config


STRATEGIES: dict[WorkloadKind, tuple[Strategy, ...]] = {
    WorkloadKind.VM: (Strategy.LIVE, Strategy.COLD, Strategy.REPLICA),
    WorkloadKind.CONTAINER: (Strategy.CHECKPOINT, Strategy.REDEPLOY),
}
# Strategies that recreate the workload and so can give it other memory or vCPUs on the DR side.
RESIZABLE = frozenset({Strategy.COLD, Strategy.REDEPLOY, Strategy.CHECKPOINT})


class Shortage(StrEnum):
    REQUIRED = "required"  # the plan fails when the workload does not fit
    DEGRADE = "degrade"  # start with its smaller DR resources when the full size does not fit
    SKIP = "skip"  # leave it behind, and say so in the plan


Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
DEFAULT_TIER = "default"
DEFAULT_WAVE = "default"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Capacity(_Model):
    vcpus: int = Field(gt=0)
    memory_mib: int = Field(gt=0)


class Overcommit(_Model):
    cpu: float = Field(1.0, gt=0, description="schedulable vCPUs per physical CPU")
    memory: float = Field(1.0, gt=0, description="schedulable memory per MiB of host memory")


class ClientTLS(_Model):
    """Files of a client certificate, checked against `ca`: the Docker daemon's TCP endpoint with --tlsverify."""

    ca: str = Field(description="CA certificate that signed the daemon's certificate (PEM)")
    cert: str = Field(description="this client's certificate (PEM)")
    key: str = Field(description="this client's private key (PEM)")


class Host(_Model):
    name: Name
    libvirt: str | None = Field(None, description="libvirt URI of the host's hypervisor; qemu+tls:// for TLS")
    docker: str | None = Field(None, description="Docker endpoint, e.g. unix:///run/docker.sock or tcp://host:2376")
    podman: str | None = Field(None, description="rootful Podman service, e.g. unix:///run/podman/podman.sock or "
                               "tcp://host:8888; a host runs Docker or Podman, not both")
    tls: ClientTLS | None = Field(None, description="client certificate for a tcp:// Docker endpoint")
    migration_address: str | None = Field(None, description="address the host receives migration streams on")
    capacity: Capacity | None = Field(None, description="declared capacity; discovered from the host when absent")
    max_moves: int | None = Field(None, ge=1, description="moves at once into or out of this host")

    def endpoint(self, kind: WorkloadKind) -> str | None:
        return self.libvirt if kind is WorkloadKind.VM else self.docker or self.podman

    def engine(self, kind: WorkloadKind) -> str:
        """The technology that answers for `kind` on this host: libvirt, docker or podman."""
        if kind is WorkloadKind.VM:
            return "libvirt"
        return "podman" if self.podman and not self.docker else "docker"


class Site(_Model):
    hosts: list[Host] = Field(min_length=1)
    overcommit: Overcommit = Overcommit()
    max_moves: int | None = Field(None, ge=1, description="moves at once into or out of this site")
    answer_timeout_s: float = Field(15.0, gt=0, description="seconds each host has to answer the inventory; one "
                                    "that does not is reported as not answering")


def short_image(name: str) -> str:
    """An image name as Docker shows it: without Docker Hub's registry (and library/), which Podman adds."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


class Mappings(_Model):
    """Names on the primary site -> names on the secondary site."""

    networks: dict[str, str] = Field(default_factory=dict, description="libvirt networks / Docker networks")
    storage: dict[str, str] = Field(default_factory=dict, description="libvirt storage pools or disk folders")
    images: dict[str, str] = Field(default_factory=dict, description="container images or tags")
    ports: dict[int, int] = Field(default_factory=dict, description="published host ports of containers")
    paths: dict[str, str] = Field(default_factory=dict, description="host folders of containers' bind mounts "
                                  "(their contents do not travel: the secondary must hold them)")

    def inverse(self) -> Mappings:
        return Mappings(**{f: {v: k for k, v in getattr(self, f).items()} for f in MAPPING_FIELDS})

    def over(self, defaults: Mappings) -> Mappings:
        """These mappings, falling back to `defaults` for every name they do not map."""
        return Mappings(**{f: {**getattr(defaults, f), **getattr(self, f)} for f in MAPPING_FIELDS})

    def network(self, name: str) -> str:
        return self.networks.get(name, name)

    def pool(self, name: str) -> str:
        return self.storage.get(name, name)

    def image(self, name: str) -> str:
        """The mapped image; Podman spells out the registry of a short name, which a mapping need not."""
        return self.images.get(name) or self.images.get(short_image(name), name)

    def port(self, port: int) -> int:
        return self.ports.get(port, port)

    def path(self, path: str) -> str:
        return self.paths.get(path, path)


MAPPING_FIELDS = ("networks", "storage", "images", "ports", "paths")


class Resources(_Model):
    vcpus: int | None = Field(None, gt=0)
    memory_mib: int | None = Field(None, gt=0)


class Tier(_Model):
    priority: int = Field(ge=0, description="lower goes first and is placed first")
    on_shortage: Shortage = Shortage.REQUIRED


class OnError(StrEnum):
    CONTINUE = "continue"
    FAIL = "fail"


class Hook(_Model):
    """A command (argv list, never a shell string) or an HTTP or TCP check, with a timeout and retries."""

    run: list[str] | None = Field(None, min_length=1, description="argv; the run's context is in DRORCH_* variables")
    http: str | None = Field(None, description="URL that must answer with a 2xx status")
    tcp: str | None = Field(None, description="host:port that must accept a connection")
    timeout: float = Field(10.0, gt=0, description="seconds per attempt")
    retries: int = Field(0, ge=0, description="attempts after the first one")
    delay: float = Field(1.0, ge=0, description="seconds between attempts")
    on_error: OnError = OnError.FAIL
    drill: bool = Field(False, description="a workload's check that DR drills run too, against the clone "
                                           "(DRORCH_CLONE); drills run no other hook")

    @model_validator(mode="after")
    def _one_action(self) -> Hook:
        if sum(x is not None for x in (self.run, self.http, self.tcp)) != 1:
            raise ValueError("a hook has exactly one of run, http or tcp")
        return self

    @property
    def label(self) -> str:
        return " ".join(self.run) if self.run else f"http {redact(self.http)}" if self.http else f"tcp {self.tcp}"


class Hooks(_Model):
    before: list[Hook] = Field(default_factory=list)
    after: list[Hook] = Field(default_factory=list)


class MigrationControls(_Model):
    """Limits on a live migration; a migration that breaks one is aborted and the VM stays on its source."""

    bandwidth_mib_s: int | None = Field(None, gt=0)
    max_downtime_ms: int | None = Field(None, gt=0)
    timeout_s_per_gib: float | None = Field(None, gt=0, description="completion timeout per GiB of guest memory")
    no_progress_timeout_s: float | None = Field(None, gt=0, description="abort when nothing is left less for so long")
    auto_converge: bool = False
    post_copy: bool = False
    tls: bool = Field(False, description="encrypt the migration streams (QEMU's TLS certificates on both hosts)")


class FailurePolicy(StrEnum):
    ABORT = "abort"  # stop after this wave; later waves do not run
    CONTINUE = "continue"  # go on with the next waves
    ROLLBACK = "rollback"  # move back what this run moved, then stop


class Wave(_Model):
    name: Name
    parallel: int = Field(1, ge=1, description="moves at once inside the wave")
    on_failure: FailurePolicy = FailurePolicy.CONTINUE
    approval: bool = Field(False, description="pause before this wave until drorch approve RUN_ID")
    hooks: Hooks = Field(default_factory=Hooks)
    migration: MigrationControls | None = None


class Fencing(_Model):
    """How a primary that does not answer is fenced before its workloads start on the secondary."""

    command: list[str] | None = Field(None, min_length=1, description="argv that must exit 0; gets DRORCH_SITE")
    timeout: float = Field(60.0, gt=0)


class CommitDefault(StrEnum):
    COMMIT = "commit"
    ROLLBACK = "rollback"


class CommitWindow(_Model):
    """A failover waits this long for drorch commit or drorch rollback; then `default` decides."""

    window_s: float = Field(gt=0)
    default: CommitDefault = CommitDefault.COMMIT


class Defaults(_Model):
    tier: str = DEFAULT_TIER
    wave: str = DEFAULT_WAVE


class Workload(_Model):
    """One entry of the playbook: selects workloads by exact name, by glob, or by labels."""

    name: Name | None = None
    match: str | None = Field(None, description="glob over workload names, e.g. web-*")
    labels: dict[str, str] | None = Field(None, description="every label must match (Docker labels)")
    kind: WorkloadKind
    strategy: Strategy | None = Field(None, description="defaults to the first strategy of the kind")
    tier: str | None = None
    wave: str | None = None
    depends_on: list[Name] = Field(default_factory=list)
    resources: Resources | None = Field(None, description="size when the inventory does not tell")
    dr_resources: Resources | None = Field(None, description="smaller size on the DR side when degraded")
    mappings: Mappings | None = Field(None, description="overrides of the playbook's mappings")
    anti_affinity: str | None = Field(None, description="workloads of one group land on different hosts")
    migration: MigrationControls | None = Field(None, description="live-migration limits; over the wave's")
    hooks: Hooks = Field(default_factory=Hooks)

    @property
    def move_strategy(self) -> Strategy:
        return self.strategy or STRATEGIES[self.kind][0]

    @property
    def selector(self) -> str:
        if self.name is not None:
            return self.name
        if self.match is not None:
            return self.match
        return ",".join(f"{k}={v}" for k, v in sorted((self.labels or {}).items()))

    def selects(self, name: str, labels: dict[str, str]) -> bool:
        if self.name is not None:
            return name == self.name
        if self.match is not None:
            return fnmatch.fnmatchcase(name, self.match)
        return all(labels.get(k) == v for k, v in (self.labels or {}).items())


class Protect(_Model):
    """How often each workload's recovery point is shipped to the secondary, and how many are kept."""

    interval_s: float = Field(gt=0, description="seconds between recovery points")
    rpo_s: float | None = Field(None, gt=0, description="target age of the newest point; twice the interval if unset")
    keep: int = Field(3, ge=1, description="recovery points kept per workload; older ones are removed")

    @property
    def target_s(self) -> float:
        return self.rpo_s or 2 * self.interval_s


class DrillSettings(_Model):
    """How a DR drill brings the playbook up on the secondary in isolation."""

    hold_s: float = Field(0, ge=0, description="seconds the clones stay up after their checks, for a look at them")
    check_timeout_s: float = Field(60, gt=0, description="how long a clone may take to be seen running")


class Readiness(_Model):
    """Who hears of it when the DR site stops being ready: a command, a webhook, or both."""

    command: list[str] | None = Field(None, min_length=1, description="argv; gets DRORCH_PLAYBOOK, DRORCH_PROBLEMS")
    webhook: str | None = Field(None, description="URL that gets a JSON POST: playbook, ready, problems, checked_at")
    timeout: float = Field(10.0, gt=0)


class Schedule(_Model):
    """A job the daemon runs on a schedule: every so many seconds, or by a cron expression (UTC)."""

    job: JobKind
    every_s: float | None = Field(None, gt=0)
    cron: str | None = Field(None, description="five fields: minute hour day month weekday")

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.every_s is None) == (self.cron is None):
            raise ValueError("a schedule has exactly one of every_s or cron")
        return self


class Playbook(_Model):
    version: int = 1
    name: Name
    primary: Name
    secondary: Name
    sites: dict[Name, Site]
    mappings: Mappings = Field(default_factory=Mappings)
    tiers: dict[Name, Tier] = Field(default_factory=lambda: {DEFAULT_TIER: Tier(priority=0)})
    waves: list[Wave] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    workloads: list[Workload] = Field(min_length=1)
    fencing: Fencing = Field(default_factory=Fencing)
    commit: CommitWindow | None = Field(None, description="failovers wait for drorch commit or rollback")
    protect: Protect | None = Field(None, description="recovery points shipped to the secondary on a schedule")
    schedules: list[Schedule] = Field(default_factory=list, description="jobs drorch daemon runs for this playbook")
    drill: DrillSettings = Field(default_factory=DrillSettings)
    readiness: Readiness = Field(default_factory=Readiness)

    def tier_of(self, w: Workload) -> Tier:
        return self.tiers[w.tier or self.defaults.tier]

    def wave_names(self) -> list[str]:
        names = [w.name for w in self.waves]
        return names if self.defaults.wave in names else [*names, self.defaults.wave]

    def wave_of(self, w: Workload) -> str:
        return w.wave or self.defaults.wave

    def wave(self, name: str) -> Wave:
        return next((w for w in self.waves if w.name == name), Wave(name=name))

    def parallel(self, wave: str) -> int:
        return self.wave(wave).parallel

    def spec_of(self, kind: WorkloadKind, name: str, labels: dict[str, str] | None = None) -> Workload | None:
        """The entry that selects this workload: an exact name beats a pattern."""
        found = [w for w in self.workloads if w.kind is kind and w.selects(name, labels or {})]
        return next((w for w in found if w.name is not None), found[0] if found else None)

    def migration_for(self, w: Workload) -> MigrationControls | None:
        wave = self.wave(self.wave_of(w)).migration
        if w.migration is None or wave is None:
            return w.migration or wave
        return wave.model_copy(update=w.migration.model_dump(exclude_unset=True))

    def mappings_for(self, w: Workload, source: str) -> Mappings:
        """The workload's mappings in the direction of the move: inverted when going home."""
        m = w.mappings.over(self.mappings) if w.mappings else self.mappings
        return m if source == self.primary else m.inverse()

    def hosts(self, site: str) -> list[Host]:
        return self.sites[site].hosts


def _cycles(pb: Playbook) -> list[tuple[int, list[str]]]:
    """Dependency cycles among explicitly named workloads, as (entry index, cycle path)."""
    deps = {w.name: w.depends_on for w in pb.workloads if w.name}
    index = {w.name: i for i, w in enumerate(pb.workloads) if w.name}
    found: list[tuple[int, list[str]]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in deps.get(n, []):
            if state.get(d) == 1:
                cycle = [*path[path.index(d):], d]
                found.append((index[d], cycle))
            elif d in deps and d not in state:
                visit(d, [*path, d])
        state[n] = 2

    for n in deps:
        if n not in state:
            visit(n, [n])
    return found


def reference_problems(pb: Playbook) -> list[tuple[Loc, str]]:
    """Checks that span several fields: names that point nowhere, cycles, strategies that do not fit."""
    problems: list[tuple[Loc, str]] = []
    for role in ("primary", "secondary"):
        site = getattr(pb, role)
        if site not in pb.sites:
            problems.append(((role,), f"site {site!r} is not defined under sites ({', '.join(pb.sites)})"))
    if pb.primary == pb.secondary:
        problems.append((("secondary",), "primary and secondary must be different sites"))
    for site_name, site in pb.sites.items():
        seen_hosts: set[str] = set()
        for h, host in enumerate(site.hosts):
            if host.name in seen_hosts:
                problems.append((("sites", site_name, "hosts", h, "name"), f"host {host.name!r} is listed twice"))
            seen_hosts.add(host.name)
            if host.libvirt is None and host.docker is None and host.podman is None:
                problems.append((("sites", site_name, "hosts", h),
                                 f"host {host.name!r} has none of libvirt, docker or podman"))
            if host.docker is not None and host.podman is not None:
                problems.append((("sites", site_name, "hosts", h, "podman"), f"host {host.name!r} lists both docker "
                                 "and podman: a host's containers are run by one engine"))
    for field in MAPPING_FIELDS:
        targets: dict[object, object] = {}
        for src, dst in getattr(pb.mappings, field).items():
            if dst in targets:
                problems.append((("mappings", field, str(src)), f"{field} {targets[dst]!r} and {src!r} both map to "
                                 f"{dst!r}: the reverse mapping for failing back would be ambiguous"))
            targets[dst] = src
    if pb.defaults.tier not in pb.tiers:
        for i, w in enumerate(pb.workloads):
            if w.tier is None:
                problems.append((("workloads", i), f"{w.kind} {w.selector!r} has no tier and the default tier "
                                 f"{pb.defaults.tier!r} is not defined under tiers"))
    wave_names = [w.name for w in pb.waves]
    for i, name in enumerate(wave_names):
        if name in wave_names[:i]:
            problems.append((("waves", i, "name"), f"wave {name!r} is listed twice"))
    waves = pb.wave_names()
    named = {w.name: i for i, w in enumerate(pb.workloads) if w.name}
    patterns = [w.match for w in pb.workloads if w.match]
    labelled = any(w.labels for w in pb.workloads)
    seen: set[tuple[str, str]] = set()
    for i, w in enumerate(pb.workloads):
        selectors = [s for s in ("name", "match", "labels") if getattr(w, s) is not None]
        if len(selectors) != 1:
            problems.append((("workloads", i), "a workload entry selects by exactly one of name, match or labels"))
        key = (w.kind.value, w.selector)
        if key in seen:
            problems.append((("workloads", i, selectors[0] if selectors else "kind"),
                             f"{w.kind} {w.selector!r} is listed twice"))
        seen.add(key)
        if w.strategy is not None and w.strategy not in STRATEGIES[w.kind]:
            allowed = ", ".join(STRATEGIES[w.kind])
            problems.append((("workloads", i, "strategy"), f"strategy {w.strategy} does not apply to a {w.kind} "
                             f"({allowed})"))
        if w.tier is not None and w.tier not in pb.tiers:
            problems.append((("workloads", i, "tier"), f"tier {w.tier!r} is not defined under tiers "
                             f"({', '.join(pb.tiers)})"))
        if w.wave is not None and w.wave not in waves:
            problems.append((("workloads", i, "wave"), f"wave {w.wave!r} is not defined under waves"))
        for d, dep in enumerate(w.depends_on):
            known = dep in named or labelled or any(fnmatch.fnmatchcase(dep, p) for p in patterns)
            if not known:
                problems.append((("workloads", i, "depends_on", d), f"depends on {dep!r}, which no workload entry "
                                 "selects"))
            elif dep in named and pb.wave_of(w) in waves and pb.wave_of(pb.workloads[named[dep]]) in waves:
                dep_wave = pb.wave_of(pb.workloads[named[dep]])
                if waves.index(dep_wave) > waves.index(pb.wave_of(w)):
                    problems.append((("workloads", i, "depends_on", d), f"depends on {dep!r}, which moves in the "
                                     f"later wave {dep_wave!r}"))
        for role in ("primary", "secondary"):
            site = getattr(pb, role)
            if site in pb.sites and not any(h.endpoint(w.kind) for h in pb.sites[site].hosts):
                tech = "libvirt" if w.kind is WorkloadKind.VM else "docker or podman"
                problems.append((("workloads", i), f"{w.kind} {w.selector!r} needs a host with {tech} on site "
                                 f"{site!r}"))
    for i, cycle in _cycles(pb):
        problems.append((("workloads", i, "depends_on"), f"dependency cycle: {' -> '.join(cycle)}"))
    return problems


@dataclass(frozen=True)
class Positions:
    """Where each node of a playbook file starts, to report problems as `file:line:col`."""

    source: str
    marks: dict[Loc, yaml.Mark]

    def where(self, loc: Loc, at_key: bool = False) -> str:
        """The value at loc (or its key), else the nearest enclosing node that the file has."""
        if at_key and (mark := self.marks.get((*loc, "__key__"))) is not None:
            return self._fmt(mark)
        for n in range(len(loc), -1, -1):
            mark = self.marks.get(loc[:n])
            if mark is not None:
                if n < len(loc):  # the path ends below what the file has: point at the nearest key
                    mark = self.marks.get((*loc[:n], str(loc[n]), "__key__"), mark)
                return self._fmt(mark)
        return f"{self.source}:1:1"

    def _fmt(self, mark: yaml.Mark) -> str:
        return f"{self.source}:{mark.line + 1}:{mark.column + 1}"


def _positions(node: yaml.Node, loc: Loc = ()) -> dict[Loc, yaml.Mark]:
    marks: dict[Loc, yaml.Mark] = {loc: node.start_mark}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*loc, str(key.value))
            marks.update(_positions(value, child))
            marks[(*child, "__key__")] = key.start_mark
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks.update(_positions(item, (*loc, i)))
    return marks


def parse_with_positions(text: str, source: str = "<playbook>") -> tuple[Playbook, Positions]:
    node, data = bounded.compose(text, source)
    if not isinstance(data, dict) or node is None:
        raise PlaybookError([f"{source}:1:1: a playbook is a YAML mapping (sites, workloads, ...)"])
    pos = Positions(source, _positions(node))
    try:
        pb = Playbook.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "playbook"
            problems.append(f"{pos.where(loc, at_key=err['type'] == 'extra_forbidden')}: {field}: {err['msg']}")
        raise PlaybookError(problems) from None
    refs = reference_problems(pb)
    if refs:
        raise PlaybookError([f"{pos.where(loc)}: {msg}" for loc, msg in refs])
    return pb, pos


def parse_playbook(text: str, source: str = "<playbook>") -> Playbook:
    return parse_with_positions(text, source)[0]


def read_playbook(path: Path) -> tuple[Playbook, Positions]:
    return parse_with_positions(bounded.read_text(path), str(path))


def load_playbook(path: Path) -> Playbook:
    return read_playbook(path)[0]
