"""Container configurations for the target site, from a container's inspect data (no I/O here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drorch.drivers.base import Endpoint
from drorch.model.playbook import Mappings, Resources, WorkloadKind
from drorch.model.records import DRILL_LABEL
from drorch.plan.inventory import Nic, Subnet, WorkloadInfo

# What a recreated container keeps of the original's host configuration.
HOST_CONFIG_KEYS = (
    "Binds", "NetworkMode", "PortBindings", "RestartPolicy", "Memory", "NanoCpus", "CpuShares",
    "Mounts", "Privileged", "CapAdd", "CapDrop", "ExtraHosts", "LogConfig", "Tmpfs", "Ulimits",
)


def _map_bind(bind: str, m: Mappings) -> str:
    """`source:dest[:opts]`: a host folder is mapped, a named volume keeps its name."""
    source, sep, rest = bind.partition(":")
    return f"{m.path(source)}{sep}{rest}" if source.startswith("/") else bind


def clone_config(
    inspect: dict[str, Any], mappings: Mappings | None = None, resources: Resources | None = None
) -> dict[str, Any]:
    """The create-container body that recreates `inspect`'s container elsewhere, mapped for the target."""
    m = mappings or Mappings()
    config = {k: v for k, v in inspect["Config"].items() if k not in ("Hostname",)}
    config["Image"] = m.image(config["Image"])
    host = inspect.get("HostConfig") or {}
    hc = {k: host[k] for k in HOST_CONFIG_KEYS if host.get(k) not in (None, "", [], {})}
    if "NetworkMode" in hc:
        hc["NetworkMode"] = m.network(hc["NetworkMode"])
    if "PortBindings" in hc:
        hc["PortBindings"] = {
            port: [{**b, "HostPort": str(m.port(int(b["HostPort"]))) if b.get("HostPort") else b.get("HostPort", "")}
                   for b in binds or []]
            for port, binds in hc["PortBindings"].items()
        }
    if "Binds" in hc:
        hc["Binds"] = [_map_bind(b, m) for b in hc["Binds"]]
    if "Ulimits" in hc:  # Podman shows them as RLIMIT_NOFILE, and both engines take only nofile
        hc["Ulimits"] = [{**u, "Name": u["Name"].lower().removeprefix("rlimit_")} for u in hc["Ulimits"]]
    if "Mounts" in hc:
        hc["Mounts"] = [{**mt, "Source": m.path(mt["Source"])} if mt.get("Type") == "bind" else mt
                        for mt in hc["Mounts"]]
    endpoints = _endpoints(inspect, m)
    if endpoints:
        config["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    if resources is not None and resources.memory_mib:
        hc["Memory"] = resources.memory_mib << 20
    if resources is not None and resources.vcpus:
        hc["NanoCpus"] = resources.vcpus * 10**9
    config["HostConfig"] = hc
    return config


def static_addresses(endpoint: dict[str, Any]) -> tuple[str, ...]:
    """The addresses a container asked for on one network (`--ip`, `--ip6`): kept wherever it goes."""
    ipam = endpoint.get("IPAMConfig") or {}
    return tuple(str(a) for a in (ipam.get("IPv4Address"), ipam.get("IPv6Address")) if a)


def _endpoints(inspect: dict[str, Any], m: Mappings) -> dict[str, Any]:
    """The static addresses on the container's network, mapped: without them the target's daemon would pick
    any free address."""
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    mode = (inspect.get("HostConfig") or {}).get("NetworkMode")
    found: dict[str, Any] = {}
    for name, endpoint in networks.items():
        ipam = (endpoint or {}).get("IPAMConfig") or {}
        mapped = {k: m.address(str(ipam[k])) for k in ("IPv4Address", "IPv6Address") if ipam.get(k)}
        if mapped and name == mode:
            found[m.network(name)] = {"IPAMConfig": mapped}
    return found


def network_subnets(listed: list[dict[str, Any]]) -> tuple[Subnet, ...]:
    """The subnets of the networks a daemon lists (Docker and Podman both show IPAM.Config)."""
    return tuple(Subnet(str(n.get("Name")), str(c["Subnet"]), str(c.get("Gateway") or "") or None)
                 for n in listed for c in ((n.get("IPAM") or {}).get("Config") or []) if c.get("Subnet"))


def container_nics(inspect: dict[str, Any]) -> tuple[Nic, ...]:
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    nics = []
    for name, endpoint in sorted(networks.items()):
        e = endpoint or {}
        static = static_addresses(e)
        now = tuple(str(a) for a in (e.get("IPAddress"), e.get("GlobalIPv6Address")) if a)
        nics.append(Nic(name, static or now, bool(static), e.get("MacAddress") or None))
    return tuple(nics)


POINT_LABEL = "drorch.point"  # on a stopped copy that holds a workload's recovery points
POINT_SUFFIX = ".drorch-point"  # its name once a restart or a move has put the workload itself under its name


def point_copy_name(name: str) -> str:
    return f"{name}{POINT_SUFFIX}"


def clone_volume(volume: str, clone: str) -> str:
    """The name of a drill clone's own copy of a named volume."""
    return f"{volume}.{clone}"


def renamed_volumes(config: dict[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    """The create body with each named volume (in Binds or Mounts) renamed; host folders stay."""
    hc = config["HostConfig"]
    if "Binds" in hc:
        hc["Binds"] = [b if src.startswith("/") else f"{rename(src)}:{rest}"
                       for b in hc["Binds"] for src, _, rest in [b.partition(":")]]
    if "Mounts" in hc:
        hc["Mounts"] = [{**mt, "Source": rename(mt["Source"])} if mt.get("Type") == "volume" and mt.get("Source")
                        else mt for mt in hc["Mounts"]]
    return config


def point_config(inspect: dict[str, Any], mappings: Mappings, resources: Resources | None) -> dict[str, Any]:
    """A point copy's create body: labelled, its named volumes under names of their own, so that the workload
    restarted from it gets the original names."""
    config = clone_config(inspect, mappings, resources)
    config["Labels"] = {**(config.get("Labels") or {}), POINT_LABEL: "1"}
    return renamed_volumes(config, lambda v: f"{v}{POINT_SUFFIX}")


def restart_config(copy: dict[str, Any]) -> dict[str, Any]:
    """The workload's own create body, made from its point copy: the original volume names, no point label."""
    config = clone_config(copy)
    config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items() if k != POINT_LABEL}
    return renamed_volumes(config, lambda v: v.removesuffix(POINT_SUFFIX))


def is_point_copy(inspect: dict[str, Any]) -> bool:
    return POINT_LABEL in ((inspect.get("Config") or {}).get("Labels") or {})


# On the volumes that hold one point's contents: the workload, the point, and whether a checkpoint belongs to it.
POINT_OF, POINT_NAME, POINT_CHECKPOINT = "drorch.point-of", "drorch.point-name", "drorch.point-checkpoint"


def point_volume(volume: str, point: str) -> str:
    """The name of point `point`'s own copy of a named volume (given as the workload's or the point copy's)."""
    return f"{volume.removesuffix(POINT_SUFFIX)}.{point}"


def point_volume_labels(workload: str, point: str, checkpoint: bool) -> dict[str, str]:
    return {POINT_OF: workload, POINT_NAME: point, **({POINT_CHECKPOINT: "1"} if checkpoint else {})}


def point_view(copy: dict[str, Any], point: str | None) -> dict[str, Any]:
    """The point copy as a source of point `point`'s contents: its mounts name that point's volumes. The copy's
    own volumes stay empty; they only say where each one is mounted."""
    if point is None:
        return copy
    mounts = [{**mt, "Name": point_volume(mt["Name"], point)} if mt.get("Type") == "volume" else mt
              for mt in copy.get("Mounts") or []]
    return {**copy, "Mounts": mounts}


def whole_points(copy: dict[str, Any], checkpoints: list[str], found: list[dict[str, Any]]) -> list[str]:
    """The points a site holds whole, oldest first: with named volumes, those whose every volume is there (and
    their checkpoint, when one belongs to them); without, the checkpoints. `found` is the volumes (inspect data)
    labelled as the workload's points."""
    wanted = set(volumes(copy).values())
    if not wanted:
        return sorted(checkpoints)
    sets: dict[str, set[str]] = {}
    needs_checkpoint: set[str] = set()
    for vol in found:
        labels = vol.get("Labels") or {}
        point = labels.get(POINT_NAME)
        if point:
            sets.setdefault(point, set()).add(vol["Name"])
            if labels.get(POINT_CHECKPOINT):
                needs_checkpoint.add(point)
    return sorted(p for p, have in sets.items()
                  if {point_volume(v, p) for v in wanted} <= have and (p not in needs_checkpoint or p in checkpoints))


def drill_config(inspect: dict[str, Any], clone: str, network: str, addresses: tuple[str, ...] = ()) -> dict[str, Any]:
    """A drill clone's create body: no published ports, no restart policy, and on `network` (at `addresses`,
    else any address there) unless it had no network at all (then its own empty namespace already isolates
    it); labelled as a drill's. Its named volumes are its own (`clone_volume`), never the recovery point's."""
    config = renamed_volumes(clone_config(inspect), lambda v: clone_volume(v, clone))
    hc = config["HostConfig"]
    for key in ("PortBindings", "RestartPolicy"):
        hc.pop(key, None)
    config.pop("ExposedPorts", None)
    config.pop("NetworkingConfig", None)  # the drill network has subnets of its own
    if hc.get("NetworkMode") != "none":
        hc["NetworkMode"] = network
        if addresses:
            ipam = {"IPv6Address" if ":" in a else "IPv4Address": a for a in addresses}
            config["NetworkingConfig"] = {"EndpointsConfig": {network: {"IPAMConfig": ipam}}}
    labels = {k: v for k, v in (config.get("Labels") or {}).items() if k != POINT_LABEL}
    config["Labels"] = {**labels, DRILL_LABEL: clone}
    return config


def published_ports(inspect: dict[str, Any]) -> tuple[int, ...]:
    bindings = (inspect.get("HostConfig") or {}).get("PortBindings") or {}
    return tuple(sorted({int(b["HostPort"]) for binds in bindings.values() for b in binds or [] if b.get("HostPort")}))


def container_status(inspect: dict[str, Any]) -> str:
    """What the engine says of a container that does not run, e.g. "exited (code 137) at 2026-12-01T05:03:56"."""
    state = inspect.get("State") or {}
    if state.get("Running"):
        return ""
    said = f"{state.get('Status') or 'stopped'} (code {state.get('ExitCode', '?')})"
    finished = str(state.get("FinishedAt") or "")
    return f"{said} at {finished[:19]}" if finished and not finished.startswith("0001") else said


def volumes(inspect: dict[str, Any]) -> dict[str, str]:
    """The container's volumes, named or anonymous, by where they are mounted: destination -> volume name."""
    return {mt["Destination"]: mt["Name"] for mt in inspect.get("Mounts") or [] if mt.get("Type") == "volume"}


def binds(inspect: dict[str, Any]) -> list[str]:
    """Host folders bound into the container."""
    return sorted({mt["Source"] for mt in inspect.get("Mounts") or [] if mt.get("Type") == "bind"})


def unmapped_binds(inspect: dict[str, Any], mappings: Mappings) -> list[str]:
    """Host folders bound into the container that the playbook does not map: their contents cannot travel."""
    return sorted({mt["Source"] for mt in inspect.get("Mounts") or []
                   if mt.get("Type") == "bind" and mt["Source"] not in mappings.paths})


def size_count(value: Any) -> int:
    """A size as a daemon reports it (none is 0); a negative or non-integer one is an answer drorch cannot use."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a size")
    return value


def workload_info(c: dict[str, Any], ep: Endpoint) -> WorkloadInfo:
    """The container as the planner sees any workload."""
    host = c.get("HostConfig") or {}
    memory = host.get("Memory") or 0
    cpus = host.get("NanoCpus") or 0
    networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
    return WorkloadInfo(
        name=c["Name"].lstrip("/"),
        kind=WorkloadKind.CONTAINER,
        site=ep.site,
        running=bool(c["State"]["Running"]),
        memory_mib=size_count(memory) // (1 << 20) or None,
        vcpus=size_count(cpus) // 10**9 or None,
        image=str(c["Config"]["Image"]),
        host=ep.host,
        labels=dict(c["Config"].get("Labels") or {}),
        networks=tuple(sorted(networks)) or (host.get("NetworkMode") or "default",),
        ports=published_ports(c),
        status=container_status(c),
        nics=container_nics(c),
    )
