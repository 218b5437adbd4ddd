"""Readiness: would a failover work now? What `drorch validate` checks plus every workload's RPO, recorded
each time, and told to a command or a webhook the moment it turns to not ready."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drorch.drivers.base import Driver
from drorch.engine.names_step import records_status
from drorch.engine.steps_from_plan import check_playbook
from drorch.errors import NamesFailed
from drorch.model.playbook import Playbook, WorkloadKind
from drorch.plan.planner import MOVING
from drorch.reach import snapshot
from drorch.recovery.freezes import release_orphans
from drorch.recovery.point_choice import mixed_cuts
from drorch.recovery.rpo import missing_points, rpo_status
from drorch.redact import redact
from drorch.store.contract import StateStore
from drorch.store.rows import ReadinessCheck

Alert = Callable[[Playbook, ReadinessCheck], str]


def assess(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore
           ) -> tuple[list[str], list[dict[str, Any]], list[dict[str, object]]]:
    """Every reason a failover would not work now, one line each (none when ready), each host's answer, and
    where each DNS record points."""
    release_orphans(pb, drivers, store)  # a freeze a dead process left is undone (and logged)
    snap = snapshot(pb, drivers)
    hosts = [{"site": h.site, "host": h.host, "answered": not h.errors, "error": "; ".join(h.errors.values()) or None}
             for h in snap.hosts]
    the_plan, findings = check_playbook(pb, snap, drivers)
    problems = [f.message for f in findings if f.error]
    if pb.protect is not None:
        kept = store.points(pb.name)
        rows = {(r.kind, r.workload): r for r in rpo_status(pb, kept, missing=missing_points(pb, drivers, kept))
                if r.site == pb.secondary}
        for item in the_plan.items:
            if item.action not in MOVING:
                continue
            r = rows.get((str(item.kind), item.workload))
            if r is not None and r.missing:
                problems.append(f"{item.kind} {item.workload}: {len(r.missing)} kept points are not whole: "
                                f"{'; '.join(r.missing)}")
            if r is None or r.age_s is None:
                target = f", target {pb.protect.target_s:.0f} s" if pb.protect.target_s else ""
                problems.append(f"{item.kind} {item.workload}: no recovery point{target}")
            elif r.stale:
                problems.append(f"{item.kind} {item.workload}: RPO {r.age_s:.0f} s, target {r.target_s or 0:.0f} s")
        problems += mixed_cuts(pb, kept, pb.secondary, [(str(i.kind), i.workload) for i in the_plan.items
                                                        if i.action in MOVING])
    try:
        records = records_status(pb, snap)
    except NamesFailed as exc:
        problems.append(f"dns: {exc}")
        records = []
    problems += [f"dns {r['name']} {r['type']} does not name where {r['workload']} runs" for r in records
                 if not r["right"]]
    return problems, hosts, records


def alert(pb: Playbook, row: ReadinessCheck) -> str:
    """Tell the playbook's command and webhook; returns what happened, for the record."""
    said = []
    problems = row.problem_list()
    if pb.readiness.command:
        env = {**os.environ, "DRORCH_PLAYBOOK": pb.name, "DRORCH_READY": "0", "DRORCH_PROBLEMS": "\n".join(problems)}
        try:
            done = subprocess.run(pb.readiness.command, env=env, capture_output=True, timeout=pb.readiness.timeout,
                                  check=False)
            said.append(f"command exit {done.returncode}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            said.append(f"command failed: {exc}")
    if pb.readiness.webhook:
        body = json.dumps({"playbook": pb.name, "ready": row.ready, "problems": problems,
                           "checked_at": row.checked_at.isoformat()}).encode()
        req = urllib.request.Request(pb.readiness.webhook, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=pb.readiness.timeout) as res:
                said.append(f"webhook HTTP {res.status}")
        except (urllib.error.URLError, OSError) as exc:
            said.append(f"webhook failed: {redact(str(getattr(exc, 'reason', exc)))}")
    return "; ".join(said) or "no command or webhook set"


def check(pb: Playbook, drivers: Mapping[WorkloadKind, Driver], store: StateStore,
          tell: Alert = alert) -> ReadinessCheck:
    """Assess, record, and alert when this is a change to not ready (not again while it stays so)."""
    before = store.readiness(pb.name, 1)
    problems, hosts, records = assess(pb, drivers, store)
    row = ReadinessCheck(playbook=pb.name, ready=not problems, problems=json.dumps(problems), hosts=json.dumps(hosts),
                         records=json.dumps(records))
    if problems and (not before or before[0].ready):
        row.alert = tell(pb, row)
    store.save(row)
    return row


@dataclass(frozen=True)
class State:
    ready: bool
    since: datetime  # the first check of the current run of equal results
    checked_at: datetime
    problems: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"ready": self.ready, "since": self.since.isoformat(), "checked_at": self.checked_at.isoformat(),
                "problems": self.problems}


def current(store: StateStore, playbook: str) -> State | None:
    rows = store.readiness(playbook)
    if not rows:
        return None
    newest = rows[0]
    since = newest.checked_at
    for r in rows:
        if r.ready != newest.ready:
            break
        since = r.checked_at
    return State(newest.ready, since, newest.checked_at, newest.problem_list())
