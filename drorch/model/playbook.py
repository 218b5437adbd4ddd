"""The playbook: the two sites, how one maps onto the other, and which workloads move, how and in what order.

The secondary site need not mirror the primary: it has its own hosts and capacity, other network,
storage and image names (`mappings`, written once from primary to secondary; failing back uses
their inverse), and tiers that say what happens to a workload when the DR site is short of room.

Loading keeps the YAML position of every node so that each problem, from YAML syntax to a
reference that points nowhere, is reported as `file:line:col: message`, all of them at once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from drorch.model._strict import Model as _Model
from drorch.model._strict import Name
from drorch.model.address_rules import (
    AddressCheck,
    AddressRule,
    ReIp,
    SiteAddresses,
    checked_rules,
    inverse_rules,
    map_address,
)
from drorch.model.auto_failover import AutoFailover
from drorch.model.dns_names import Dns
from drorch.model.groups import ConsistencyGroup
from drorch.model.limits import MAX_ANSWER_S, MAX_COUNT, MAX_MIB, MAX_PORT, MAX_RATIO, MAX_WAIT_S
from drorch.model.run_settings import (
    CommitWindow,
    DrillSettings,
    Fencing,
    Hooks,
    MigrationControls,
    Protect,
    Readiness,
    Schedule,
    Wave,
)


class WorkloadKind(StrEnum):
    VM = "vm"
    CONTAINER = "container"
    LXD = "lxd"  # an LXD instance: a system container or one of LXD's VMs


# A step's kind as recorded: one of these moves a workload; a step of another kind (a hook) moves none.
WORKLOAD_KINDS: tuple[str, ...] = tuple(k.value for k in WorkloadKind)


class Strategy(StrEnum):
    LIVE = "live"  # VM: libvirt live migration, the guest keeps running
    COLD = "cold"  # VM: shut down, define on the target with the mapped configuration, start
    REPLICA = "replica"  # VM: start the copy already defined on the target, after stopping the source
    CHECKPOINT = "checkpoint"  # container: CRIU checkpoint, copy, restore
    REDEPLOY = "redeploy"  # container, LXD: recreate from its image with the same (mapped) config
    COPY = "copy"  # LXD: stop, copy through LXD's migration API, start
    STATEFUL = "stateful"  # LXD: the same with its CRIU live state, where LXD and the container allow it


STRATEGIES: dict[WorkloadKind, tuple[Strategy, ...]] = {
    WorkloadKind.VM: (Strategy.LIVE, Strategy.COLD, Strategy.REPLICA),
    WorkloadKind.CONTAINER: (Strategy.CHECKPOINT, Strategy.REDEPLOY),
    WorkloadKind.LXD: (Strategy.COPY, Strategy.STATEFUL, Strategy.REDEPLOY),
}
# What a workload of one kind may run as on the secondary (`land_as`): made anew there from its mapped image.
LANDINGS: tuple[tuple[WorkloadKind, WorkloadKind], ...] = ((WorkloadKind.LXD, WorkloadKind.CONTAINER),)
# Strategies that recreate the workload and so can give it other memory or vCPUs on the DR side.
RESIZABLE = frozenset({Strategy.COLD, Strategy.REDEPLOY, Strategy.CHECKPOINT, Strategy.COPY})


class Shortage(StrEnum):
    REQUIRED = "required"  # the plan fails when the workload does not fit
    DEGRADE = "degrade"  # start with its smaller DR resources when the full size does not fit
    SKIP = "skip"  # leave it behind, and say so in the plan


DEFAULT_TIER = "default"
DEFAULT_WAVE = "default"


Port = Annotated[int, Field(ge=1, le=MAX_PORT)]


class Capacity(_Model):
    vcpus: int = Field(gt=0, le=MAX_COUNT)
    memory_mib: int = Field(gt=0, le=MAX_MIB)


class Overcommit(_Model):
    cpu: float = Field(1.0, gt=0, le=MAX_RATIO, description="schedulable vCPUs per physical CPU")
    memory: float = Field(1.0, gt=0, le=MAX_RATIO, description="schedulable memory per MiB of host memory")


class ClientTLS(_Model):
    """Files of a client certificate, checked against `ca`: the Docker daemon's TCP endpoint with --tlsverify."""

    ca: str = Field(description="CA certificate that signed the daemon's certificate (PEM)")
    cert: str = Field(description="this client's certificate (PEM)")
    key: str = Field(description="this client's private key (PEM)")


class LxdTLS(_Model):
    """Files of a client certificate the LXD server trusts, and the server's own certificate, pinned: LXD's
    certificates are self-signed, so the server is known by its certificate rather than by a CA."""

    cert: str = Field(description="this client's certificate (PEM), in the server's trust store")
    key: str = Field(description="this client's private key (PEM)")
    server_cert: str = Field(description="the LXD server's certificate (PEM), e.g. its LXD_DIR/server.crt")


class Host(_Model):
    name: Name
    libvirt: str | None = Field(None, description="libvirt URI of the host's hypervisor; qemu+tls:// for TLS")
    docker: str | None = Field(None, description="Docker endpoint, e.g. unix:///run/docker.sock or tcp://host:2376")
    podman: str | None = Field(None, description="rootful Podman service, e.g. unix:///run/podman/podman.sock or "
                               "tcp://host:8888; a host runs Docker or Podman, not both")
    lxd: str | None = Field(None, description="LXD endpoint: unix:///var/lib/lxd/unix.socket or https://host:8443")
    tls: ClientTLS | None = Field(None, description="client certificate for a tcp:// Docker endpoint")
    lxd_tls: LxdTLS | None = Field(None, description="client certificate and pinned server certificate of an "
                                   "https:// LXD endpoint")
    lxd_relay: bool = Field(False, description="drorch relays this LXD's migrations through itself: for servers "
                                               "the other site's LXD cannot reach, or cannot be reached from")
    migration_address: str | None = Field(None, description="address the host receives migration streams on")
    capacity: Capacity | None = Field(None, description="declared capacity; discovered from the host when absent")
    max_moves: int | None = Field(None, ge=1, le=MAX_COUNT, description="moves at once into or out of this host")

    def endpoint(self, kind: WorkloadKind) -> str | None:
        if kind is WorkloadKind.LXD:
            return self.lxd
        return self.libvirt if kind is WorkloadKind.VM else self.docker or self.podman

    def engine(self, kind: WorkloadKind) -> str:
        """The technology that answers for `kind` on this host: libvirt, docker, podman or lxd."""
        if kind is WorkloadKind.VM:
            return "libvirt"
        if kind is WorkloadKind.LXD:
            return "lxd"
        return "podman" if self.podman and not self.docker else "docker"


class Site(_Model):
    hosts: list[Host] = Field(min_length=1)
    overcommit: Overcommit = Overcommit()
    max_moves: int | None = Field(None, ge=1, le=MAX_COUNT, description="moves at once into or out of this site")
    answer_timeout_s: float = Field(15.0, gt=0, le=MAX_ANSWER_S,
                                    description="seconds each host has to answer the inventory, and any one "
                                    "question or short call of a move (create, start, stop); a host that does not "
                                    "is reported as not answering")
    operation_timeout_s: float = Field(600.0, gt=0, le=MAX_WAIT_S,
                                       description="seconds a host may work on one long call without a byte of "
                                       "answer: a checkpoint taken or restored, an image or a volume sent")


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
    ports: dict[Port, Port] = Field(default_factory=dict, description="published host ports of containers")
    paths: dict[str, str] = Field(default_factory=dict, description="host folders of containers' bind mounts "
                                  "(their contents do not travel: the secondary must hold them)")
    profiles: dict[str, str] = Field(default_factory=dict, description="LXD profiles")
    addresses: dict[str, AddressRule] = Field(default_factory=dict, description="source subnet -> target subnet "
                                              "(host part kept), with its gateway and DNS servers")

    @field_validator("addresses")
    @classmethod
    def _rules(cls, rules: dict[str, AddressRule]) -> dict[str, AddressRule]:
        return checked_rules(rules)

    def inverse(self) -> Mappings:
        return Mappings(**{f: {v: k for k, v in getattr(self, f).items()} for f in MAPPING_FIELDS},
                        addresses=inverse_rules(self.addresses))

    def over(self, defaults: Mappings) -> Mappings:
        """These mappings, falling back to `defaults` for every name they do not map."""
        return Mappings(**{f: {**getattr(defaults, f), **getattr(self, f)} for f in (*MAPPING_FIELDS, "addresses")})

    def address(self, address: str) -> str:
        """The address at the target: mapped by the most specific rule that covers it, else kept."""
        mapped = map_address(self.addresses, address)
        return mapped[0] if mapped else address

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

    def profile(self, name: str) -> str:
        return self.profiles.get(name, name)


MAPPING_FIELDS = ("networks", "storage", "images", "ports", "paths", "profiles")


class Resources(_Model):
    vcpus: int | None = Field(None, gt=0, le=MAX_COUNT)
    memory_mib: int | None = Field(None, gt=0, le=MAX_MIB)


class Tier(_Model):
    priority: int = Field(ge=0, le=MAX_COUNT, description="lower goes first and is placed first")
    on_shortage: Shortage = Shortage.REQUIRED


class Defaults(_Model):
    tier: str = DEFAULT_TIER
    wave: str = DEFAULT_WAVE


class Workload(_Model):
    """One entry of the playbook: selects workloads by exact name, by glob, or by labels."""

    name: Name | None = None
    match: str | None = Field(None, description="glob over workload names, e.g. web-*")
    labels: dict[str, str] | None = Field(None, description="every label must match (Docker labels)")
    kind: WorkloadKind
    land_as: WorkloadKind | None = Field(None, description="what it runs as on the secondary, if not its kind: an LXD "
                                                           "instance landing as a container is redeployed from the "
                                                           "mapped image")
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
    address: dict[Name, SiteAddresses] = Field(default_factory=dict, description="its exact address (or an IPv4 "
                                               "and an IPv6 one) per site, over the address rules")
    check: AddressCheck | None = Field(None, description="a TCP port it answers on, connected to at its address "
                                       "on the target after every move")
    reip: ReIp | None = Field(None, description="a VM whose guest sets its own address: the command that sets the "
                              "mapped one, run inside through the guest agent")
    group: Name | None = Field(None, description="the consistency group whose points it shares one instant with")
    quiesce: bool = Field(False, description="a VM's filesystems frozen through its guest agent for each point "
                          "(its fsfreeze hooks run): application-consistent, or said when it cannot be")

    @property
    def move_strategy(self) -> Strategy:
        return self.strategy or (Strategy.REDEPLOY if self.lands_apart else STRATEGIES[self.kind][0])

    @property
    def lands_apart(self) -> bool:
        """It runs as another kind on the secondary than on the primary."""
        return self.land_as is not None and self.land_as is not self.kind

    @property
    def kinds(self) -> frozenset[WorkloadKind]:
        """What it may be found as on either site."""
        return frozenset({self.kind, self.land_as or self.kind})

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


class Playbook(_Model):
    version: int = Field(1, ge=1, le=1, description="the playbook format; this drorch reads version 1")
    name: Name = Field(description="the playbook's name: its runs, locks and recovery points are kept under it")
    primary: Name = Field(description="the site its workloads run on, normally")
    secondary: Name = Field(description="the disaster-recovery site")
    sites: dict[Name, Site] = Field(description="both sites, by name: their hosts and limits")
    mappings: Mappings = Field(default_factory=Mappings)
    tiers: dict[Name, Tier] = Field(default_factory=lambda: {DEFAULT_TIER: Tier(priority=0)},
                                    description="what each tier's workloads do when the target is short of room")
    waves: list[Wave] = Field(default_factory=list, description="the order workloads move in, each wave's limits "
                              "and what its failure does")
    defaults: Defaults = Field(default_factory=Defaults)
    workloads: list[Workload] = Field(min_length=1, description="which workloads move, and how")
    fencing: Fencing = Field(default_factory=Fencing)
    commit: CommitWindow | None = Field(None, description="failovers wait for drorch commit or rollback")
    protect: Protect | None = Field(None, description="recovery points shipped to the secondary on a schedule")
    schedules: list[Schedule] = Field(default_factory=list, description="jobs drorch daemon runs for this playbook")
    drill: DrillSettings = Field(default_factory=DrillSettings)
    readiness: Readiness = Field(default_factory=Readiness)
    dns: Dns | None = Field(None, description="records that follow the workloads: changed by RFC 2136 updates")
    groups: list[ConsistencyGroup] = Field(default_factory=list, description="workloads whose recovery points are "
                                           "taken at one instant")
    auto_failover: AutoFailover | None = Field(None, description="the secondary takes over on its own when a "
                                               "quorum of an etcd cluster and its own probes agree the primary is lost")

    def group(self, name: str) -> ConsistencyGroup:
        """A group with every member: those it lists and those whose entry names it."""
        listed = next((g for g in self.groups if g.name == name), ConsistencyGroup(name=name))
        joined = [w.name for w in self.workloads if w.group == name and w.name and w.name not in listed.members]
        return listed.model_copy(update={"members": [*listed.members, *joined]})

    def group_of(self, w: Workload | None, name: str) -> str | None:
        """The group the workload `name` (selected by entry `w`) belongs to, if any."""
        if w is not None and w.group:
            return w.group
        return next((g.name for g in self.groups if name in g.members), None)

    def max_freeze_ms(self, group: str | None) -> int:
        own = self.group(group).max_freeze_ms if group else None
        return own or (self.protect or Protect()).max_freeze_ms

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

    def move_limits(self, ends: Iterable[tuple[str, str | None]]) -> dict[str, int]:
        """The sites' and hosts' bounds on moves at once that a move between these (site, host) ends counts
        against, each by a key that names it."""
        keys: dict[str, int] = {}
        for site, host in ends:
            cfg = self.sites.get(site)
            hosts = cfg.hosts if cfg is not None else []
            keys.update({f"site/{site}": cfg.max_moves} if cfg is not None and cfg.max_moves else {})
            keys.update({f"host/{site}/{h.name}": h.max_moves for h in hosts if h.name == host and h.max_moves})
        return keys

    @property
    def kinds(self) -> set[WorkloadKind]:
        """What its workloads run as, on either site: the drivers it needs."""
        return {k for w in self.workloads for k in w.kinds}

    def kinds_on(self, site: str) -> frozenset[WorkloadKind]:
        """What the workloads run as on the site: the daemons of its hosts that may hold one of them."""
        return frozenset(self.kind_on(w, site) for w in self.workloads)

    def kind_on(self, w: Workload, site: str) -> WorkloadKind:
        """What the workload runs as on the site: its kind, or on the secondary what it lands as."""
        return w.land_as if w.land_as is not None and site == self.secondary else w.kind

    def spec_of(self, kind: WorkloadKind, name: str, labels: dict[str, str] | None = None,
                site: str | None = None) -> Workload | None:
        """The entry that selects this workload, of its kind or (`site`) of what it runs as on that site: an exact
        name beats a pattern."""
        found = [w for w in self.workloads if (w.kind if site is None else self.kind_on(w, site)) is kind
                 and w.selects(name, labels or {})]
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
