"""Consistency groups: workloads whose recovery points are taken at one instant, and what a point is worth.

A group's members are frozen together (a VM's filesystems through its guest agent, or its vCPUs paused; a
container's processes held by its cgroup), each takes its cut, and all are released before any data travels.
So the points of one cut describe one state of the application, as the writes of its members left it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from drorch.model._strict import Model as _Model
from drorch.model._strict import Name
from drorch.model.limits import MAX_WAIT_S
from drorch.model.run_settings import Hook


class Consistency(StrEnum):
    """What a restart from a point finds, from worst to best."""

    CRASH = "crash"  # what a power cut leaves: filesystems replay their journals, applications recover
    FILESYSTEM = "filesystem"  # filesystems flushed and frozen (the guest agent), or the processes held still
    APPLICATION = "application"  # that, after the application's own pre_freeze hooks quiesced it


RANK = {c: i for i, c in enumerate(Consistency)}


class FreezeHooks(_Model):
    pre_freeze: list[Hook] = Field(default_factory=list, description="commands on this machine before the members "
                                   "are frozen, e.g. one that brings the application to a transaction's end; one "
                                   "that fails leaves the cut filesystem-consistent at best, said")
    post_thaw: list[Hook] = Field(default_factory=list, description="commands once every member is released")


class ConsistencyGroup(_Model):
    """Workloads whose points are cut at one instant: those named here and those whose entry says `group:`."""

    name: Name
    members: list[Name] = Field(default_factory=list, description="workload names; entries may join with group:")
    max_freeze_ms: int | None = Field(None, ge=1, le=int(MAX_WAIT_S * 1000),
                                      description="longest the members stay frozen; protect.max_freeze_ms if unset")
    hooks: FreezeHooks = Field(default_factory=FreezeHooks)
