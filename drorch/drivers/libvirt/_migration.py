"""A live migration's parameters and the watchdog that holds it to the playbook's limits."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import libvirt

from drorch.drivers.base import Endpoint
from drorch.model.run_settings import MigrationControls

MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def migrate_params(target: Endpoint, controls: MigrationControls | None = None) -> tuple[dict[str, Any], int]:
    """Parameters and flags of a live migration: where the stream goes, and the playbook's limits."""
    params: dict[str, Any] = {}
    flags = MIGRATE_FLAGS
    if target.migration_address:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{target.migration_address}"
    if controls is not None:
        if controls.bandwidth_mib_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = controls.bandwidth_mib_s
        if controls.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if controls.post_copy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if controls.tls:
            flags |= libvirt.VIR_MIGRATE_TLS
    return params, flags


class Watchdog(threading.Thread):
    """Enforces a migration's limits from outside the blocking migrate call: sets the maximum downtime
    once the job runs, switches to post-copy after the first pass, and aborts the job (the guest stays
    on its source) when it runs past its completion timeout or stops making progress."""

    def __init__(self, dom: libvirt.virDomain, controls: MigrationControls, size_bytes: int) -> None:
        """`size_bytes`: what the migration carries, the guest's memory and the disks it copies."""
        super().__init__(name=f"drorch-watch-{dom.name()}", daemon=True)
        self.dom, self.controls = dom, controls
        gib = max(size_bytes / (1 << 30), 1 / 1024)
        self.timeout = controls.timeout_s_per_gib * gib if controls.timeout_s_per_gib else None
        self.stop = threading.Event()
        self.aborted = ""

    def run(self) -> None:
        started = time.monotonic()
        best, best_at, tuned, post = None, started, False, False
        while not self.stop.wait(0.25):
            try:
                stats = self.dom.jobStats()
            except libvirt.libvirtError:
                continue
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                continue
            now = time.monotonic()
            with contextlib.suppress(libvirt.libvirtError):
                if not tuned and self.controls.max_downtime_ms:
                    self.dom.migrateSetMaxDowntime(self.controls.max_downtime_ms)
                tuned = True
                if self.controls.post_copy and not post and stats.get("memory_iteration", 0) >= 1:
                    self.dom.migrateStartPostCopy()
                    post = True
            remaining = stats.get("data_remaining")
            if remaining is not None and (best is None or remaining < best):
                best, best_at = remaining, now
            if self.timeout is not None and now - started > self.timeout:
                self._abort(f"not done within {self.timeout:.0f} s")
            elif self.controls.no_progress_timeout_s and now - best_at > self.controls.no_progress_timeout_s:
                self._abort(f"no progress for {self.controls.no_progress_timeout_s:g} s")

    def _abort(self, why: str) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.dom.abortJob()
            self.aborted = why
        self.stop.set()
