"""Commands that prove the secondary could take over: protect (recovery points and RPO), readiness, drill."""

from __future__ import annotations

import json
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from drorch.cli.app import JsonOpt, PlaybookArg, PointOpt, app, echo, seconds
from drorch.cli.common import directed, drivers, progress_shown
from drorch.errors import ExitCode, NeverChecked
from drorch.model.limits import MAX_WAIT_S
from drorch.model.records import EXIT_CODES
from drorch.process import kill_at

if TYPE_CHECKING:
    from drorch.recovery.rpo import Rpo
    from drorch.store.rows import RecoveryPoint

protect_app = typer.Typer(help="Recovery points on the secondary: ship them, and see each workload's RPO.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(protect_app, name="protect")


@protect_app.command("ship")
def protect_ship(playbook: PlaybookArg, failback: Annotated[bool, typer.Option(
        "--failback", help="reprotect: ship from the secondary back to the primary")] = False,
        json_out: JsonOpt = False) -> None:
    """Ship one recovery point now: VM definitions, container images, configs and checkpoints."""
    from drorch.model.playbook_file import load_playbook
    from drorch.recovery import shipping
    from drorch.store.sql_store import Store

    pb = load_playbook(playbook)
    source, target = directed(pb, failback)
    with drivers(pb) as found:
        done = shipping.protect(pb, found, Store(), source, target)
    points = done.points
    if json_out:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in points], indent=2))
    for line in done.skipped:
        echo(f"SKIPPED: {line}", err=True)
    for p in points if not json_out else []:
        what = f"{p.consistent}-consistent{f', cut {p.cut}' if p.cut else ''}: {p.detail}"
        echo(f"{p.kind:<9} {p.workload:<24} {what if p.complete else 'FAILED: ' + (p.error or '')}")
        if p.warning:
            echo(f"{'':<34} WARNING: {p.warning}")
    if done.skipped and not points:
        raise typer.Exit(ExitCode.BUSY)  # every unit is still being shipped by another
    if any(not p.complete for p in points) or done.skipped:
        raise typer.Exit(ExitCode.PARTIAL if any(p.complete for p in points) else ExitCode.FAILED)
    if any(p.warning for p in points):
        raise typer.Exit(ExitCode.WARNINGS)  # taken, but not all as asked (crash-consistent, a cut incomplete)


@protect_app.command("status")
def protect_status(playbook: PlaybookArg, points: Annotated[bool, typer.Option(
        "--points", help="list every kept point of each workload: its time, kind, bytes shipped and chain")] = False,
        json_out: JsonOpt = False) -> None:
    """Every protected workload's RPO (age of its newest complete recovery point) against its target."""
    from drorch.model.playbook_file import load_playbook
    from drorch.recovery import rpo
    from drorch.recovery.freezes import release_orphans
    from drorch.store.sql_store import Store

    pb = load_playbook(playbook)
    store = Store()
    with drivers(pb) as found:
        for line in release_orphans(pb, found, store):
            echo(line, err=True)
        kept = store.points(pb.name)
        missing = rpo.missing_points(pb, found, kept)
    rows = rpo.rpo_status(pb, kept, missing=missing)
    past = rpo.rpo_status(pb, kept, missing=missing, history=True)
    skips = {(s.kind, s.workload): s for s in store.skipped_ships(pb.name)}

    def held(r: Rpo) -> list[RecoveryPoint]:
        return [p for p in kept if p.complete and (p.retired_at is not None) is r.history
                and (p.kind, p.workload, p.site) == (r.kind, r.workload, r.site)]

    def row(r: Rpo) -> dict[str, Any]:
        skip = skips.get((r.kind, r.workload)) if not r.history else None
        kept_rows = [{**p.model_dump(mode="json"), "whole": p.id not in missing} for p in held(r)]
        return {**r.to_dict(), "skipped": skip.count if skip else 0, **({"kept": kept_rows} if points else {})}

    if json_out:
        typer.echo(json.dumps([row(r) for r in [*rows, *past]], indent=2))
    for r in [*rows, *past] if not json_out else []:
        if r is (past[0] if past else None):
            echo("history: points of the way back, kept since the workloads were protected the other way (no RPO):")
        age = "never" if r.age_s is None else f"{r.age_s:.0f} s ago"
        target = f" (target {r.target_s:.0f} s)" if r.target_s else ""
        flag = "kept" if r.history else "STALE" if r.stale else "ok"
        error = f"; last attempt failed: {r.last_error}" if r.last_error else ""
        error += f"; {len(r.missing)} not whole: {'; '.join(r.missing)}" if r.missing else ""
        what = f" ({r.shipped})" if r.shipped else ""
        skip = skips.get((r.kind, r.workload)) if not r.history else None
        error += (f"; {skip.count} ships not begun as the last still ran (the last at "
                  f"{skip.last_at:%Y-%m-%d %H:%M:%S} UTC)") if skip else ""
        echo(f"{r.kind:<9} {r.workload:<24} site {r.site}: {flag:<5} newest {age}{what}{target}, "
             f"{r.points} kept{error}")
        for p in held(r) if points else []:
            echo(f"    {_point_line(p)}{f'  NOT WHOLE: {missing[p.id]}' if p.id in missing else ''}")
    worst = max((r for r in rows if r.age_s is not None), key=lambda r: r.age_s or 0.0, default=None)
    if worst is not None and not json_out:
        target = f", target {worst.target_s:.0f} s" if worst.target_s else ""
        echo(f"{pb.name}: RPO {worst.age_s or 0:.0f} s, from its oldest newest point ({worst.kind} {worst.workload} on "
             f"site {worst.site}){target}")
    if not rows:
        echo(f"no recovery points of {pb.name} yet: drorch protect ship {playbook}", err=True)
    raise typer.Exit(ExitCode.FAILED if any(r.stale for r in rows) or not rows else ExitCode.OK)


def _point_line(p: RecoveryPoint) -> str:
    size = f"{p.size_bytes / 2**20:.1f} MiB" if p.size_bytes is not None else "-"
    chain = f", chain of {p.chain}" if p.chain else ""
    cut = f"  cut {p.cut}" if p.cut else ""
    frozen = f", frozen {p.freeze_ms:.0f} ms" if p.freeze_ms is not None else ""
    return (f"{p.taken_at:%Y-%m-%dT%H:%M:%S} UTC  {p.point_kind or 'point':<11} {size:>12}{chain}  "
            f"{p.consistent}{frozen}  {p.name or '-'}{cut}")


@app.command("readiness")
def readiness_cmd(playbook: PlaybookArg, check: Annotated[bool, typer.Option(
        "--check", help="check now (and record it) rather than show the daemon's last check")] = False,
        json_out: JsonOpt = False) -> None:
    """Whether a failover would work now, since when, and why not: validate's checks and every RPO.
    Exit 0 when ready, 1 when not, or when it was never checked (not known to be ready is not ready)."""
    from drorch.model.playbook_file import load_playbook
    from drorch.recovery import readiness
    from drorch.store.sql_store import Store

    pb = load_playbook(playbook)
    store = Store()
    if check:
        with drivers(pb) as found:
            readiness.check(pb, found, store)
    state = readiness.current(store, pb.name)
    if state is None:
        raise NeverChecked(f"{pb.name} was never checked, so it is not known to be ready: drorch readiness --check, "
                           "or a readiness schedule")
    if json_out:
        typer.echo(json.dumps(state.to_dict(), indent=2))
    else:
        echo(f"{pb.name}: {'ready' if state.ready else 'NOT READY'} since {state.since:%Y-%m-%d %H:%M:%S} UTC "
                   f"(last checked {state.checked_at:%Y-%m-%d %H:%M:%S} UTC)")
        for p in state.problems:
            echo(f"  {p}")
    raise typer.Exit(ExitCode.OK if state.ready else ExitCode.FAILED)


@app.command("drill")
def drill_cmd(playbook: PlaybookArg, hold_s: Annotated[float | None, typer.Option(
        "--hold-s", help="seconds the clones stay up after their checks (default: drill.hold_s)",
        callback=seconds(0, MAX_WAIT_S))] = None,
        point: PointOpt = None, json_out: JsonOpt = False) -> None:
    """Bring the playbook up on the secondary from its recovery points, isolated from production; check
    and time every clone, then tear it all down. Exit 0 when the drill passed."""
    from drorch.engine.runner import Engine
    from drorch.model import run_report as reports
    from drorch.model.playbook_file import load_playbook
    from drorch.store.sql_store import Store

    pb = load_playbook(playbook)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop cloning, still tear down
        signal.signal(sig, lambda *_: stop.set())
    store = Store()
    with drivers(pb) as found, progress_shown(json_out) as report:
        run = Engine(store, found, report, stop=stop, kill_at=kill_at()).drill(pb, str(playbook), hold_s, point)
    doc = reports.timeline(run, store.steps(run.id or 0))
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
    else:
        echo(*reports.text(doc))
    raise typer.Exit(EXIT_CODES[run.state])
