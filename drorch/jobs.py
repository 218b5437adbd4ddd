"""What the daemon runs: each job takes a playbook's path, opens its own store and drivers, and logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from drorch import decisions, protection
from drorch import readiness as ready
from drorch.drill import Drill
from drorch.drivers import playbook_drivers
from drorch.engine import Engine
from drorch.errors import DrorchError
from drorch.playbook_file import load_playbook
from drorch.records import DRILL, utcnow
from drorch.report import timeline
from drorch.shutdown import stopping
from drorch.store import Store

log = logging.getLogger("drorch.jobs")


def _say(job: str, playbook: str, **fields: object) -> None:
    log.info(json.dumps({"at": utcnow().isoformat(), "job": job, "playbook": playbook, **fields}))


def protect(playbook_path: str) -> None:
    """Ship one recovery point of every workload of the playbook."""
    pb = load_playbook(Path(playbook_path))
    with playbook_drivers(pb) as drivers:
        points = protection.protect(pb, drivers, Store())
    _say("protect", pb.name, shipped=[p.workload for p in points if p.complete],
         failed={p.workload: p.error for p in points if not p.complete})


def settle(playbook_path: str) -> None:
    """Decide this playbook's failovers whose commit window ended."""
    pb = load_playbook(Path(playbook_path))
    store = Store()
    due = [r for r in decisions.expired(store) if r.playbook == pb.name]
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
        run = Drill(store, drivers, stop=stopping).run(pb, playbook_path)
    report = timeline(run, store.steps(run.id or 0))
    _say(DRILL, pb.name, run=run.id, state=str(run.state), rto_s=report["rto_s"], error=run.error)


def clean_up_drills(gone: frozenset[str] = frozenset()) -> None:
    """What drills of dead processes left on the secondary, removed (a daemon does this when it starts)."""
    store = Store()
    for path in sorted({r.playbook_path for r in store.runs_of(DRILL)}):
        try:
            pb = load_playbook(Path(path))
        except DrorchError as exc:
            _say("clean up", path, error=str(exc))
            continue
        try:
            with playbook_drivers(pb) as drivers:
                for run in Drill(store, drivers).clean_up(pb.name, gone):
                    _say("clean up", pb.name, run=run.id, state=str(run.state), error=run.error)
        except DrorchError as exc:
            _say("clean up", pb.name, error=str(exc))


def readiness(playbook_path: str) -> None:
    """Re-check that a failover of the playbook would work; alert on a change to not ready."""
    pb = load_playbook(Path(playbook_path))
    with playbook_drivers(pb) as drivers:
        row = ready.check(pb, drivers, Store())
    _say("readiness", pb.name, ready=row.ready, problems=row.problem_list(), alert=row.alert)
