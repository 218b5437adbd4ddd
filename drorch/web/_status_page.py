"""The daemon's live status page at / and the document it refreshes itself from at /status.json: read-only, one
self-contained page (no script or style fetched from anywhere), every name from a playbook or a site shown as
text, laid out to read on a phone."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drorch.model.playbook import Playbook
from drorch.model.records import naive
from drorch.store.rows import Step
from drorch.store.sql_store import Store
from drorch.web._readings import Readings

OTHERS_SHOWN_S = 7 * 86400  # a playbook the daemon does not serve is shown while it was active this recently


def _shown(seen: Readings, served: Mapping[str, Playbook], others: bool) -> list[str]:
    """The daemon's own playbooks first, in its order; then, unless hidden, the others the store holds (tried by
    hand, say) that were active in the last week, by name."""
    now = naive(seen.at)
    active: dict[str, datetime] = {}
    for name, at in [*((p.playbook, p.taken_at) for p in seen.points), *((r.playbook, r.checked_at)
                     for r in seen.readiness), *((d.playbook, d.started_at) for d in seen.drills),
                     *seen.last_run.items()]:
        active[name] = max(active.get(name, at), at, key=naive)
    recent = sorted(n for n, at in active.items()
                    if n not in served and (now - naive(at)).total_seconds() <= OTHERS_SHOWN_S)
    return [*served, *(recent if others else [])]


def document(seen: Readings, playbooks: Mapping[str, Playbook], store: Store, others: bool = True) -> dict[str, Any]:
    """What the page shows, as JSON: what the store says now. Where a workload runs is known from the store
    alone: the site the newest run that moved it left it on (and that run), or its playbook's primary."""
    now = naive(seen.at)
    ready = {r.playbook: r for r in seen.readiness}
    drills = {d.playbook: d for d in seen.drills}
    points: dict[str, list[dict[str, Any]]] = {}
    for p in seen.points:
        points.setdefault(p.playbook, []).append({"kind": p.kind, "workload": p.workload, "site": p.site,
                                                  "rpo_s": (now - p.at).total_seconds(), "kept": p.kept,
                                                  "consistency": p.consistency, "cut": p.cut})
    pointed = {(p.playbook, p.kind, p.workload) for p in seen.points}
    for (book, kind, workload) in sorted(seen.placed.keys() - pointed):  # moved, never protected
        points.setdefault(book, []).append({"kind": kind, "workload": workload, "site": None, "rpo_s": None,
                                            "kept": 0, "consistency": None, "cut": None})
    books = []
    for name in _shown(seen, playbooks, others):
        pb, r = playbooks.get(name), ready.get(name)
        answered = {(h["site"], h["host"]): h for h in (r.hosts if r else [])}
        sites = [{"site": site, "hosts": [{"host": h.name, "answered": answered.get((site, h.name), {}).get("answered"),
                                           "error": answered.get((site, h.name), {}).get("error")}
                                          for h in pb.hosts(site)]} for site in pb.sites] if pb else []
        target = pb.protect.target_s if pb and pb.protect else None
        home = pb.primary if pb else None
        workloads = []
        for w in sorted(points.get(name, []), key=lambda w: (w["kind"], w["workload"])):
            runs_on, by_run = seen.placed.get((name, w["kind"], w["workload"]), (home, None))
            workloads.append({**w, "runs_on": runs_on, "seen_by_run": by_run, "moved": by_run is not None,
                              "target_s": target,
                              "stale": target is not None and w["rpo_s"] is not None and w["rpo_s"] > target})
        d = drills.get(name)
        timed = [w for w in workloads if w["rpo_s"] is not None]
        worst = max(timed, key=lambda w: w["rpo_s"], default=None)
        books.append({
            "playbook": name, "sites": sites, "workloads": workloads, "target_s": target,
            "rpo": None if worst is None else {"rpo_s": worst["rpo_s"], "kind": worst["kind"],
                                               "workload": worst["workload"], "stale": worst["stale"]},
            "ready": None if r is None else r.ready, "problems": r.problems if r else [],
            "records": r.records if r else [],
            "checked_at": r.checked_at.replace(tzinfo=UTC).isoformat() if r else None,
            "drill": None if d is None else {"run": d.run, "passed": d.passed, "state": d.state, "rto_s": d.rto_s,
                                            "started_at": d.started_at.replace(tzinfo=UTC).isoformat()}})
    running = [{"run": run.id, "operation": run.operation, "playbook": run.playbook,
                "steps": [_step(s) for s in store.steps(run.id or 0)]} for run in seen.running]
    return {"at": seen.at.isoformat(), "playbooks": books, "running": running,
            "daemons": [{"daemon": d.identity, "role": d.role(now),
                         "heartbeat_age_s": (now - naive(d.heartbeat_at)).total_seconds()} for d in seen.daemons]}


def _step(s: Step) -> dict[str, Any]:
    return {"seq": s.seq, "kind": s.kind, "workload": s.workload, "state": str(s.state), "to": s.target_site,
            "bytes_done": s.bytes_done, "bytes_total": s.bytes_total, "said": s.error or s.outcome or ""}


_CSS = """body{font:15px system-ui,sans-serif;margin:1em;color:#222;max-width:70em}table{border-collapse:collapse;
width:100%;margin:.5em 0}p,td,th{overflow-wrap:anywhere}td,th{border-bottom:1px solid #ddd;padding:3px 6px;
text-align:left}
.bad{color:#c0392b;font-weight:bold}.good{color:#2e8540;font-weight:bold}section{margin-bottom:1.5em}
@media (max-width:40em){body{font-size:14px;margin:.5em}td,th{padding:2px 3px}}"""

SCRIPT = (Path(__file__).parent / "status_page.js").read_text()


def page(doc: dict[str, Any]) -> str:
    """The page, its first state embedded as JSON (escaped so that no name can close the script element)."""
    first = json.dumps(doc).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>drorch</title>"
            f"<style>{_CSS}</style></head><body><h1>drorch</h1><p>as of <span id=\"at\">{html.escape(doc['at'])}</span>"
            ", read-only, refreshed every 2 s</p><div id=\"books\"></div><h2>Runs under way</h2><div id=\"running\">"
            "</div><h2>Daemons</h2><ul id=\"daemons\"></ul>"
            f"<script type=\"application/json\" id=\"first\">{first}</script><script>{SCRIPT}</script>"
            "</body></html>\n")
