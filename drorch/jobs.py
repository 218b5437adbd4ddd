"""What the daemon runs: each job takes a playbook's path, opens its own store and drivers, and logs."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from drorch.daemon.shutdown import stopping
from drorch.drivers import playbook_drivers
from drorch.engine import commit_window
from drorch.engine.runner import Engine
from drorch.errors import DrorchError
from drorch.model.playbook_file import load_playbook
from drorch.model.records import JobKind, Operation, utcnow
from drorch.model.run_report import timeline
from drorch.recovery import readiness as ready
from drorch.recovery.continuous import Ended, Protector
from drorch.store.sql_store import Store

log = logging.getLogger("drorch.jobs")


def _say(job: str, playbook: str, **fields: object) -> None:
    log.info(json.dumps({"at": utcnow().isoformat(), "job": job, "playbook": playbook, **fields}))


_protectors: dict[str, Protector] = {}
_protecting = threading.Lock()


def protect(playbook_path: str) -> None:
    """Begin a recovery point of every workload of the playbook that is not still shipping; each unit's end is
    logged as it comes."""
    with _protecting:
        protector = _protectors.get(playbook_path)
        if protector is None:
            protector = _protectors[playbook_path] = Protector(Path(playbook_path), Store(), _shipped)
    done = protector.tick()
    _say("protect", done.playbook, begun=done.begun, skipped=done.skipped, planned_ms=done.planned_ms)


def _shipped(playbook: str, shipped: Ended) -> None:
    if isinstance(shipped.points, str):
        _say("protect", playbook, unit=shipped.unit, skipped=shipped.points)
        return
    points = shipped.points
    _say("protect", playbook, unit=shipped.unit, took_s=round(shipped.took_s, 3),
         shipped=[p.workload for p in points if p.complete],
         failed={p.workload: p.error for p in points if not p.complete},
         warned={p.workload: p.warning for p in points if p.complete and p.warning})


def stop_protection() -> None:
    """The ships under way end; the drivers they held are let go."""
    with _protecting:
        for protector in _protectors.values():
            protector.close()
        _protectors.clear()


def settle(playbook_path: str) -> None:
    """Decide this playbook's failovers whose commit window ended."""
    pb = load_playbook(Path(playbook_path))
    store = Store()
    due = [r for r in commit_window.expired(store) if r.playbook == pb.name]
    if not due:
        return
    with playbook_drivers(pb) as drivers:
        for run in due:
            _say("settle", pb.name, run=run.id, state=str(Engine(store, drivers).settle(pb, run).state))


def drill(playbook_path: str) -> None:
    """A DR drill of the playbook; a daemon stopping cuts it short, and its teardown still runs."""
    pb = load_playbook(Path(playbook_path))
    store = Store()
    with playbook_drivers(pb) as drivers:
        run = Engine(store, drivers, stop=stopping).drill(pb, playbook_path)
    report = timeline(run, store.steps(run.id or 0))
    _say(JobKind.DRILL, pb.name, run=run.id, state=str(run.state), rto_s=report["rto_s"], error=run.error)


def clean_up_drills(gone: frozenset[str] = frozenset()) -> None:
    """What drills of dead processes left on the secondary, removed (a daemon does this when it starts)."""
    store = Store()
    for path in sorted({r.playbook_path for r in store.runs_of(Operation.DRILL)}):
        try:
            pb = load_playbook(Path(path))
        except DrorchError as exc:
            _say("clean up", path, error=str(exc))
            continue
        try:
            with playbook_drivers(pb) as drivers:
                for run in Engine(store, drivers).clean_up_drills(pb.name, gone):
                    _say("clean up", pb.name, run=run.id, state=str(run.state), error=run.error)
        except DrorchError as exc:
            _say("clean up", pb.name, error=str(exc))


def readiness(playbook_path: str) -> None:
    """Re-check that a failover of the playbook would work; alert on a change to not ready."""
    pb = load_playbook(Path(playbook_path))
    with playbook_drivers(pb) as drivers:
        row = ready.check(pb, drivers, Store())
    _say("readiness", pb.name, ready=row.ready, problems=row.problem_list(), alert=row.alert)
