"""A run's report: its timeline, each step's duration, the recovery time it achieved, and for drills each
clone's checks and the age of the recovery point it came from (no I/O)."""

from __future__ import annotations

import html as _html
from typing import Any

from drorch.errors import printable
from drorch.model.playbook import WORKLOAD_KINDS
from drorch.model.records import Action, RunState, StepState, naive
from drorch.store.rows import Run, Step


def timeline(run: Run, steps: list[Step]) -> dict[str, Any]:
    """RTO is counted from the run's start to the moment each workload ran on the target."""
    start = naive(run.started_at)
    rows = []
    rto: dict[str, float] = {}
    rpo: dict[str, float] = {}
    for s in sorted(steps, key=lambda s: (s.started_at is None, naive(s.started_at or start), s.seq)):
        offset = (naive(s.started_at) - start).total_seconds() if s.started_at else None
        took = (naive(s.ended_at) - naive(s.started_at)).total_seconds() if s.started_at and s.ended_at else None
        detail = s.details()
        rows.append({"seq": s.seq, "kind": s.kind, "workload": s.workload, "wave": s.wave, "action": s.action,
                     "strategy": s.strategy, "state": str(s.state), "offset_s": offset, "duration_s": took,
                     "outcome": s.outcome, "error": s.error, "checks": detail.get("checks"),
                     "clone": detail.get("clone"), "rpo_s": detail.get("rpo_s")})
        if s.kind in WORKLOAD_KINDS and s.state is StepState.SUCCEEDED and s.ended_at and s.action != Action.ROLLBACK:
            rto[f"{s.kind}/{s.workload}"] = (naive(s.ended_at) - start).total_seconds()
        if detail.get("rpo_s") is not None:
            rpo[f"{s.kind}/{s.workload}"] = detail["rpo_s"]
    ended = (naive(run.ended_at) - start).total_seconds() if run.ended_at else None
    return {"run": run.id, "operation": run.operation, "mode": run.mode or "planned", "playbook": run.playbook,
            "source_site": run.source_site, "target_site": run.target_site, "state": str(run.state),
            "started_at": run.started_at.isoformat(), "duration_s": ended, "rto_s": max(rto.values(), default=None),
            "workload_rto_s": rto, "workload_rpo_s": rpo, "passed": run.state is RunState.SUCCEEDED,
            "error": run.error, "steps": rows}


def text(report: dict[str, Any]) -> list[str]:
    def secs(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} s"

    lines = [f"run {report['run']}: {report['operation']} ({report['mode']}) of {report['playbook']}, site "
             f"{report['source_site']} -> site {report['target_site']}: {report['state']}"
             f"{' (' + report['error'] + ')' if report['error'] else ''}",
             f"started {report['started_at']}, took {secs(report['duration_s'])}"]
    for r in report["steps"]:
        at = "" if r["offset_s"] is None else f"+{r['offset_s']:.1f}"
        lines.append(f"  {at:>7} [{r['seq']:>3}] {r['kind']:<9} {r['workload']:<24} {r['state']:<11} "
                     f"{secs(r['duration_s']):>8}  {r['outcome'] or r['error'] or ''}")
        for c in r["checks"] or []:
            lines.append(f"{'':>16}check {'passed' if c['ok'] else 'FAILED'}: {c['check']}"
                         f"{': ' + c['said'] if c['said'] else ''}")
    lines.append(f"RTO achieved: {secs(report['rto_s'])}" + (
        f" (the last workload ran on site {report['target_site']} {secs(report['rto_s'])} after the run started)"
        if report["rto_s"] is not None else " (no workload reached the target)"))
    if report["workload_rpo_s"]:
        lines.append("RPO of the recovery points used: " + ", ".join(
            f"{w} {secs(v)}" for w, v in sorted(report["workload_rpo_s"].items())))
    return lines


STATE_COLOURS = {"succeeded": "#2e8540", "failed": "#c0392b", "cancelled": "#888", "skipped": "#bbb",
                 "rolled_back": "#d68910", "running": "#2874a6", "waiting": "#2874a6", "pending": "#ddd"}
_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.pass{color:#2e8540;font-weight:bold}
.fail{color:#c0392b;font-weight:bold}svg text{font:12px system-ui,sans-serif}"""


def html(report: dict[str, Any]) -> str:
    """One self-contained page: the timeline as an SVG chart, per-workload RTO and RPO, every check."""
    def e(text: str) -> str:
        """Markup escaped, and control characters shown rather than sent raw to the page."""
        return _html.escape(printable(text))

    rows = [r for r in report["steps"] if r["offset_s"] is not None]
    span = max([r["offset_s"] + (r["duration_s"] or 0) for r in rows] + [report["duration_s"] or 0, 1e-3])
    label_w, chart_w, row_h = 260, 640, 24
    bars = []
    for i, r in enumerate(rows):
        y = 30 + i * row_h
        x = label_w + r["offset_s"] / span * chart_w
        w = max((r["duration_s"] or 0) / span * chart_w, 2)
        took = "" if r["duration_s"] is None else f"{r['duration_s']:.1f} s"
        bars.append(f'<text x="4" y="{y + 15}">{e(r["kind"])} {e(r["workload"])}</text>'
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
                    f'fill="{STATE_COLOURS.get(r["state"], "#999")}"><title>{e(r["state"])} {took}: '
                    f'{e(r["outcome"] or r["error"] or "")}</title></rect>'
                    f'<text x="{x + w + 4:.1f}" y="{y + 15}">{took}</text>')
    ticks = "".join(f'<line x1="{label_w + t / 4 * chart_w:.1f}" y1="20" x2="{label_w + t / 4 * chart_w:.1f}" '
                    f'y2="{30 + len(rows) * row_h}" stroke="#eee"/><text x="{label_w + t / 4 * chart_w:.1f}" '
                    f'y="14">+{span * t / 4:.1f} s</text>' for t in range(5))
    height = 40 + len(rows) * row_h
    chart = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + chart_w + 80}" height="{height}" '
             f'role="img" aria-label="timeline">{ticks}{"".join(bars)}</svg>')
    workloads = sorted(set(report["workload_rto_s"]) | set(report["workload_rpo_s"]) |
                       {f"{r['kind']}/{r['workload']}" for r in report["steps"] if r["kind"] in WORKLOAD_KINDS})

    def secs(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} s"

    per_workload = "".join(f"<tr><td>{e(w)}</td><td>{secs(report['workload_rto_s'].get(w))}</td>"
                           f"<td>{secs(report['workload_rpo_s'].get(w))}</td></tr>" for w in workloads)
    checks = "".join(f"<tr><td>{e(r['kind'])} {e(r['workload'])}</td><td>{e(c['check'])}</td>"
                     f"<td class=\"{'pass' if c['ok'] else 'fail'}\">{'pass' if c['ok'] else 'fail'}</td>"
                     f"<td>{e(c['said'] or '')}</td></tr>" for r in report["steps"] for c in r["checks"] or [])
    verdict = "pass" if report["passed"] else "fail"
    title = f"drorch run {report['run']}: {report['operation']} of {report['playbook']}"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>"
            f"<p>Site {e(report['source_site'])} &rarr; site {e(report['target_site'])}, {e(report['mode'])}, "
            f"started {e(report['started_at'])}, took {secs(report['duration_s'])}: "
            f"<span class=\"{verdict}\">{e(report['state'])}</span>"
            f"{' (' + e(report['error']) + ')' if report['error'] else ''}. RTO achieved: {secs(report['rto_s'])}.</p>"
            f"<h2>Timeline</h2>{chart}<h2>Workloads</h2><table><tr><th>workload</th><th>RTO</th>"
            f"<th>RPO (age of the recovery point used)</th></tr>{per_workload}</table>"
            f"<h2>Checks</h2><table><tr><th>workload</th><th>check</th><th>result</th><th>said</th></tr>"
            f"{checks or '<tr><td colspan=4>no checks ran</td></tr>'}</table></body></html>\n")
