"""Drivers: one interface (base), one real driver per technology, a fake for tests."""

from __future__ import annotations

from collections.abc import Mapping

from drorch.drivers.base import Driver
from drorch.playbook import WorkloadKind


def make_drivers(kinds: set[WorkloadKind]) -> dict[WorkloadKind, Driver]:
    """The real drivers of the kinds a playbook uses; each is imported only when needed."""
    drivers: dict[WorkloadKind, Driver] = {}
    if WorkloadKind.VM in kinds:
        from drorch.drivers.libvirt import LibvirtDriver

        drivers[WorkloadKind.VM] = LibvirtDriver()
    if WorkloadKind.CONTAINER in kinds:
        from drorch.drivers.docker import DockerDriver

        drivers[WorkloadKind.CONTAINER] = DockerDriver()
    return drivers


def close_drivers(drivers: Mapping[WorkloadKind, Driver]) -> None:
    for d in drivers.values():
        d.close()
