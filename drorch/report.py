"""A run's report: its timeline, each step's duration, and the recovery time it achieved (no I/O)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drorch.playbook import WorkloadKind
from drorch.records import ROLLBACK, StepState
from drorch.store import Run, Step

WORKLOAD_KINDS = frozenset(str(k) for k in WorkloadKind)


def naive(dt: datetime) -> datetime:
    return dt.replace(tzinfo=None)


def timeline(run: Run, steps: list[Step]) -> dict[str, Any]:
    """RTO is counted from the run's start to the moment each workload ran on the target."""
    start = naive(run.started_at)
    rows = []
    rto: dict[str, float] = {}
    for s in sorted(steps, key=lambda s: (s.started_at is None, naive(s.started_at or start), s.seq)):
        offset = (naive(s.started_at) - start).total_seconds() if s.started_at else None
        took = (naive(s.ended_at) - naive(s.started_at)).total_seconds() if s.started_at and s.ended_at else None
        rows.append({"seq": s.seq, "kind": s.kind, "workload": s.workload, "wave": s.wave, "action": s.action,
                     "strategy": s.strategy, "state": str(s.state), "offset_s": offset, "duration_s": took,
                     "outcome": s.outcome, "error": s.error})
        if s.kind in WORKLOAD_KINDS and s.state is StepState.SUCCEEDED and s.ended_at and s.action != ROLLBACK:
            rto[f"{s.kind}/{s.workload}"] = (naive(s.ended_at) - start).total_seconds()
    ended = (naive(run.ended_at) - start).total_seconds() if run.ended_at else None
    return {"run": run.id, "operation": run.operation, "mode": run.mode or "planned", "playbook": run.playbook,
            "source_site": run.source_site, "target_site": run.target_site, "state": str(run.state),
            "started_at": run.started_at.isoformat(), "duration_s": ended, "rto_s": max(rto.values(), default=None),
            "workload_rto_s": rto, "steps": rows}


def text(report: dict[str, Any]) -> list[str]:
    def secs(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} s"

    lines = [f"run {report['run']}: {report['operation']} ({report['mode']}) of {report['playbook']}, site "
             f"{report['source_site']} -> site {report['target_site']}: {report['state']}",
             f"started {report['started_at']}, took {secs(report['duration_s'])}"]
    for r in report["steps"]:
        at = "" if r["offset_s"] is None else f"+{r['offset_s']:.1f}"
        lines.append(f"  {at:>7} [{r['seq']:>3}] {r['kind']:<9} {r['workload']:<24} {r['state']:<11} "
                     f"{secs(r['duration_s']):>8}  {r['outcome'] or r['error'] or ''}")
    lines.append(f"RTO achieved: {secs(report['rto_s'])}" + (
        f" (the last workload ran on site {report['target_site']} {secs(report['rto_s'])} after the run started)"
        if report["rto_s"] is not None else " (no workload reached the target)"))
    return lines
