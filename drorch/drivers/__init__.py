"""Drivers: one interface (base), one real driver per technology, a fake for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from drorch.drivers.base import Driver
from drorch.model.playbook import Playbook, WorkloadKind


def make_drivers(kinds: set[WorkloadKind]) -> dict[WorkloadKind, Driver]:
    """The real drivers of the kinds a playbook uses; each is imported only when needed."""
    drivers: dict[WorkloadKind, Driver] = {}
    if WorkloadKind.VM in kinds:
        from drorch.drivers.libvirt.vm_driver import LibvirtDriver

        drivers[WorkloadKind.VM] = LibvirtDriver()
    if WorkloadKind.CONTAINER in kinds:
        from drorch.drivers.containers.container_driver import ContainerDriver

        drivers[WorkloadKind.CONTAINER] = ContainerDriver()
    if WorkloadKind.LXD in kinds:
        from drorch.drivers.lxd.lxd_driver import LxdDriver

        drivers[WorkloadKind.LXD] = LxdDriver()
    return drivers


def close_drivers(drivers: Mapping[WorkloadKind, Driver]) -> None:
    for d in drivers.values():
        d.close()


@contextlib.contextmanager
def playbook_drivers(pb: Playbook) -> Iterator[dict[WorkloadKind, Driver]]:
    """The real drivers of the kinds the playbook uses, closed when the caller is done with them."""
    made = make_drivers(pb.kinds)
    try:
        yield made
    finally:
        close_drivers(made)
