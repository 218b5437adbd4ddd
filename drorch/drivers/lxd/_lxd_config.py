"""An LXD instance's description as the API gives it, read and mapped onto the other site (no I/O)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from drorch.model.playbook import Mappings, Resources, WorkloadKind
from drorch.plan.inventory import Nic, Subnet, WorkloadInfo

DRORCH_KEY = "user.drorch"  # instance config keys drorch sets begin so
POINT_KEY = f"{DRORCH_KEY}.point"  # a stopped copy a ship keeps its points on, never started by a ship
DRILL_KEY = f"{DRORCH_KEY}.drill"  # a drill's clone
STAGE_KEY = f"{DRORCH_KEY}.stage"  # where an instance lands before its point copy is refreshed from it
SNAPSHOT_PREFIX = "drorch-"  # snapshots that are recovery points

_UNITS = {"": 1, "B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def memory_mib(limit: str | None) -> int | None:
    """`limits.memory` in MiB ("256MiB", "1GB"); None when unset or a share of the host ("50%")."""
    m = re.fullmatch(r"\s*([0-9]+)\s*([kMGT]i?B|B|)\s*", limit or "")
    return int(m.group(1)) * _UNITS[m.group(2)] >> 20 if m and m.group(2) in _UNITS else None


def cpus(limit: str | None) -> int | None:
    """`limits.cpu`: a count ("2"), or a set of CPUs ("0-1,4") counted."""
    if not limit:
        return None
    if limit.strip().isdigit():
        return int(limit)
    total = 0
    for part in limit.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        total += int(hi or lo) - int(lo) + 1
    return total


def is_point_copy(inst: dict[str, Any]) -> bool:
    return (inst.get("config") or {}).get(POINT_KEY) == "1"


def point_names(snapshots: list[str]) -> list[str]:
    """The recovery points among an instance's snapshots (oldest first, as given)."""
    return [s for s in snapshots if s.startswith(SNAPSHOT_PREFIX)]


def user_labels(config: dict[str, str]) -> dict[str, str]:
    """An instance's `user.*` keys as labels, drorch's own left out."""
    return {k[len("user."):]: v for k, v in config.items() if k.startswith("user.") and not k.startswith(DRORCH_KEY)}


def info(inst: dict[str, Any], site: str, host: str) -> WorkloadInfo:
    config: dict[str, str] = inst.get("expanded_config") or inst.get("config") or {}
    devices: dict[str, dict[str, str]] = inst.get("expanded_devices") or inst.get("devices") or {}
    status = str(inst.get("status") or "")
    running = status == "Running"
    return WorkloadInfo(
        name=str(inst["name"]),
        kind=WorkloadKind.LXD,
        site=site,
        running=running,
        memory_mib=memory_mib(config.get("limits.memory")),
        vcpus=cpus(config.get("limits.cpu")),
        image=image_key(inst) or None,
        host=host,
        labels=user_labels(config),
        networks=tuple(sorted({d.get("network") or d.get("parent") or "" for d in devices.values()
                               if d.get("type") == "nic"} - {""})),
        pools=tuple(sorted({d["pool"] for d in devices.values() if d.get("type") == "disk" and d.get("pool")})),
        status="" if running else f"{status.lower() or 'unknown'} ({inst.get('type') or 'container'})",
        nics=nics(devices),
    )


ADDRESS_KEYS = ("ipv4.address", "ipv6.address")  # a NIC's static addresses on a managed network


def nics(devices: dict[str, dict[str, str]]) -> tuple[Nic, ...]:
    """The instance's NICs on LXD networks, with the addresses their devices fix."""
    found = []
    for _, d in sorted(devices.items()):
        network = d.get("network") or d.get("parent")
        if d.get("type") != "nic" or not network:
            continue
        fixed = tuple(d[k] for k in ADDRESS_KEYS if d.get(k) and d[k] != "none")
        found.append(Nic(network, fixed, bool(fixed), d.get("hwaddr")))
    return tuple(found)


def network_subnets(networks: list[dict[str, Any]]) -> tuple[Subnet, ...]:
    """The subnets of LXD's managed networks: their ipv4.address and ipv6.address (gateway/prefix)."""
    found = []
    for net in networks:
        for key in ADDRESS_KEYS:
            value = str((net.get("config") or {}).get(key) or "")
            if "/" not in value:
                continue  # none, auto (LXD picks one when it creates the network, and shows it then)
            try:
                found.append(Subnet(str(net.get("name")), str(ipaddress.ip_interface(value).network),
                                    value.split("/")[0]))
            except ValueError:
                continue
    return tuple(found)


def mapped_device(device: dict[str, str], mappings: Mappings) -> dict[str, str]:
    d = dict(device)
    if d.get("type") == "nic":
        for key in ("network", "parent"):
            if key in d:
                d[key] = mappings.network(d[key])
        for key in ADDRESS_KEYS:
            if d.get(key) and d[key] != "none":
                d[key] = mappings.address(d[key])
    if d.get("type") == "disk" and "pool" in d:
        d["pool"] = mappings.pool(d["pool"])
    return d


def target_body(inst: dict[str, Any], mappings: Mappings, resources: Resources | None = None,
                volatile: bool = True) -> dict[str, Any]:
    """The instance as the target creates it: profiles, networks and pools mapped, drorch's own keys left out;
    `volatile` keeps LXD's volatile keys (as a move does, for the same id map), else they are made anew."""
    config = {k: v for k, v in (inst.get("config") or {}).items()
              if not k.startswith(DRORCH_KEY) and (volatile or not k.startswith("volatile."))}
    if resources is not None:
        if resources.memory_mib:
            config["limits.memory"] = f"{resources.memory_mib}MiB"
        if resources.vcpus:
            config["limits.cpu"] = str(resources.vcpus)
    return {
        "name": inst["name"],
        "type": inst.get("type") or "container",
        "architecture": inst.get("architecture"),
        "profiles": [mappings.profile(p) for p in inst.get("profiles") or []],
        "devices": {k: mapped_device(v, mappings) for k, v in (inst.get("devices") or {}).items()},
        "config": config,
        "ephemeral": False,
    }


def missing_names(inst: dict[str, Any], mappings: Mappings, profiles: list[str], networks: list[str],
                  pools: list[str]) -> list[str]:
    """What the instance needs on the target that the target lacks, each as 'profile "x"', after mapping."""
    body = target_body(inst, mappings)
    missing = [f'profile "{p}"' for p in body["profiles"] if p not in profiles]
    for d in body["devices"].values():
        net = d.get("network") if d.get("type") == "nic" else None
        if net and net not in networks:
            missing.append(f'network "{net}"')
        if d.get("type") == "disk" and d.get("pool") and d["pool"] not in pools:
            missing.append(f'storage pool "{d["pool"]}"')
    return missing


def bridge_name(network: str) -> str:
    """The name LXD gives the drill's bridge, which is also a network interface's: 15 characters at most."""
    return network if len(network) <= 15 else f"drd{hashlib.sha256(network.encode()).hexdigest()[:12]}"


def isolated_devices(inst: dict[str, Any], network: str, addresses: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """Every NIC of the instance (its own and its profiles') put on `network` only, the first at `addresses`: a
    drill clone's devices."""
    devices: dict[str, dict[str, str]] = inst.get("expanded_devices") or inst.get("devices") or {}
    nics = sorted(k for k, d in devices.items() if d.get("type") == "nic")
    fixed = {"ipv6.address" if ":" in a else "ipv4.address": a for a in addresses}
    return {k: {"type": "nic", "network": bridge_name(network), **(fixed if i == 0 else {})}
            for i, k in enumerate(nics)}


ENV_PREFIX = "environment."  # an LXD instance's environment variables, as config keys


def image_key(inst: dict[str, Any]) -> str:
    """How a playbook names the image an instance was made from: its fingerprint's first 12 characters."""
    return str((inst.get("config") or {}).get("volatile.base_image") or "")[:12]


def container_view(inst: dict[str, Any]) -> dict[str, Any]:
    """The instance as Docker's inspect would show a container made with what of its config a container has:
    its image (by `image_key`, which the images mapping turns into a container image), environment, user keys
    as labels, memory and CPU limits, and the network of its first NIC (none without one). Shaped so, it is
    created, shipped as a point and started as any container is."""
    config: dict[str, str] = inst.get("expanded_config") or inst.get("config") or {}
    devices: dict[str, dict[str, str]] = inst.get("expanded_devices") or inst.get("devices") or {}
    nics = [d.get("network") or d.get("parent") for _k, d in sorted(devices.items()) if d.get("type") == "nic"]
    memory, vcpus = memory_mib(config.get("limits.memory")), cpus(config.get("limits.cpu"))
    return {
        "Name": f"/{inst['name']}",
        "Config": {
            "Image": image_key(inst),
            "Env": [f"{k.removeprefix(ENV_PREFIX)}={v}" for k, v in sorted(config.items()) if k.startswith(ENV_PREFIX)],
            "Labels": user_labels(config),
        },
        "HostConfig": {"NetworkMode": next((n for n in nics if n), "none"),
                       "Memory": (memory or 0) << 20, "NanoCpus": (vcpus or 0) * 10**9},
        "Mounts": [],
    }


def instance_from_container(c: dict[str, Any], image: dict[str, str], mappings: Mappings) -> dict[str, Any]:
    """An instance made anew from the container that stood for it: from `image` (the image source the
    container's image maps back to), with its environment, labels as user keys, limits and network."""
    config = c.get("Config") or {}
    host = c.get("HostConfig") or {}
    keys = {f"{ENV_PREFIX}{k}": v for k, _, v in (e.partition("=") for e in config.get("Env") or []) if k != "PATH"}
    keys |= {f"user.{k}": v for k, v in (config.get("Labels") or {}).items() if not k.startswith("drorch.")}
    if host.get("Memory"):
        keys["limits.memory"] = f"{int(host['Memory']) >> 20}MiB"
    if host.get("NanoCpus"):
        keys["limits.cpu"] = str(max(1, int(host["NanoCpus"]) // 10**9))
    network = str(host.get("NetworkMode") or "none")
    devices = {} if network in ("none", "default", "bridge", "host") else \
        {"eth0": {"type": "nic", "network": mappings.network(network)}}
    return {"name": str(c["Name"]).lstrip("/"), "profiles": ["default"], "config": keys, "devices": devices,
            "ephemeral": False, "source": {"type": "image", **image}}
