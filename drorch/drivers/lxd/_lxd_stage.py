"""An instance brought onto a server that keeps snapshots of its copy there: the recovery points a ship takes.

Those snapshots are taken on the server that keeps them, so they hold its mapped networks and pools; a snapshot
taken on the source and sent would name the source's, which the target refuses when it lacks them. LXD's
refresh from another server deletes every snapshot of the target that the source does not send, so an instance
is refreshed from the other server into a stage beside its copy (kept for the next refresh, which then carries
only what changed), and the copy is refreshed from the stage on the server itself, which leaves its snapshots
alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drorch.drivers.lxd._lxd_api import LxdSite
from drorch.drivers.lxd._lxd_config import STAGE_KEY
from drorch.drivers.lxd._lxd_relay import send

STAGE_SUFFIX = "-drorch-stage"


def stage_name(name: str) -> str:
    return f"{name}{STAGE_SUFFIX}"


def land(src: LxdSite, dst: LxdSite, name: str, body: dict[str, Any], there: dict[str, Any] | None,
         count: Callable[[int], None] | None = None) -> None:
    """`name` on `src` made on `dst` as `body` describes it, stopped, or its copy `there` brought up to date
    with that copy's snapshots kept."""
    if there is None or not dst.snapshots(name):
        send(src, dst, name, body, live=False, refresh=there is not None, count=count)
        return
    stage = stage_name(name)
    staged = dst.instance(stage) is not None
    send(src, dst, name, {**body, "name": stage, "config": {**body["config"], STAGE_KEY: "1"}}, live=False,
         refresh=staged, count=count)
    dst.create({**body, "source": {"type": "copy", "source": stage, "instance_only": True, "refresh": True}})


def drop_stage(site: LxdSite, name: str) -> None:
    """The stage is of no more use once the copy runs as the workload."""
    site.delete(stage_name(name))
