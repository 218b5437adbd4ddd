"""The `drorch` command: parses, calls the engine or the store, prints. Nothing else lives here."""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from apscheduler.jobstores.base import JobLookupError
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from drorch import bounded, protection, readiness
from drorch import report as reports
from drorch.daemon import Daemon, add_schedule, next_runs, scheduler
from drorch.drill import Drill
from drorch.drivers import close_drivers as _close
from drorch.drivers import make_drivers
from drorch.engine import Engine, Reporter, StepEvent, check_playbook, run_alive, snapshot
from drorch.errors import (
    DrorchError,
    ExitCode,
    InputError,
    NotFound,
    PlanRefused,
    PlaybookError,
    UsageError,
    printable,
)
from drorch.inventory import Snapshot
from drorch.planner import Plan, Size, plan
from drorch.playbook import JobKind, Playbook, Positions, Schedule, load_playbook, read_playbook
from drorch.records import EXIT_CODES, RunState, StepState, utcnow
from drorch.redact import redact
from drorch.store import Run, Step, Store

app = typer.Typer(
    help="Move libvirt VMs and Docker containers to a disaster-recovery site and back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

PlaybookArg = Annotated[Path, typer.Argument(help="the playbook (YAML)", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Global options; --debug is read by main() before the command runs."""


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.1f}"


def _announce(ev: StepEvent, seen: set[int]) -> str | None:
    run = ev.run
    if (run.id or 0) in seen:
        return None
    seen.add(run.id or 0)
    return (f"run {run.id}: {run.operation} {run.playbook}, site {run.source_site} -> site {run.target_site}, "
            f"{ev.total} steps")


class LineReporter:
    """Progress as plain lines: one per state change, at most one a second per running step."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._last: dict[int, float] = {}

    def __call__(self, ev: StepEvent) -> None:
        head = _announce(ev, self._seen)
        if head:
            typer.echo(head)
        line = self.line(ev)
        if line:
            typer.echo(line)

    def line(self, ev: StepEvent) -> str | None:
        step, p = ev.step, ev.progress
        where = f"[{step.seq}/{ev.total}] {step.kind} {step.workload}"
        if step.state is StepState.RUNNING and p is None:
            return f"{where}: {step.strategy if step.request else step.action or 'started'} started"
        if step.state is StepState.RUNNING and p is not None:
            now = time.monotonic()
            if now - self._last.get(step.id or 0, 0.0) < 1.0:
                return None
            self._last[step.id or 0] = now
            size = f" {_mib(p.bytes_done)}/{_mib(p.bytes_total)} MiB" if p.bytes_total else ""
            return f"{where}: {p.step}{size}"
        if step.state is StepState.WAITING:
            return f"{where}: {step.outcome}"
        if step.state is StepState.SKIPPED:
            return f"{where}: skipped: {step.outcome}"
        if step.state in (StepState.CANCELLED, StepState.ROLLED_BACK):
            return f"{where}: {step.state}: {step.error or step.outcome}"
        if step.started_at and step.ended_at:
            took = (step.ended_at - step.started_at).total_seconds()
            if step.state is StepState.SUCCEEDED:
                warned = f" (warning: {step.warning})" if step.warning else ""
                return f"{where}: done in {took:.1f} s, {step.outcome}{warned}"
            return f"{where}: FAILED after {took:.1f} s: {step.error}"
        return None


class RichReporter:
    """A live display for a terminal: a bar per running move with bytes sent and time left."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TimeRemainingColumn(), console=console or Console(), transient=True)
        self._tasks: dict[int, TaskID] = {}
        self._seen: set[int] = set()
        self._lines = LineReporter()
        self._progress.start()

    def __call__(self, ev: StepEvent) -> None:
        step, p = ev.step, ev.progress
        head = _announce(ev, self._seen)
        if head:
            self._progress.console.print(head)
        key = step.id or 0
        if step.state is StepState.RUNNING and p is not None:
            task = self._tasks.get(key)
            label = f"[{step.seq}/{ev.total}] {step.kind} {step.workload}: {p.step}"
            if task is None:
                task = self._tasks[key] = self._progress.add_task(label, total=p.bytes_total)
            self._progress.update(task, description=label, completed=p.bytes_done or 0, total=p.bytes_total)
            return
        if key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))
        line = self._lines.line(ev)
        if line:
            self._progress.console.print(line)

    def close(self) -> None:
        self._progress.stop()


def _run_json(run: Run, steps: list[Step]) -> dict[str, Any]:
    return {**run.model_dump(mode="json"),
            "steps": [s.model_dump(mode="json", exclude={"handle", "request"}) for s in steps]}


def _directed(pb: Playbook, back: bool) -> tuple[str, str]:
    return (pb.secondary, pb.primary) if back else (pb.primary, pb.secondary)


def _live_snapshot(pb: Playbook) -> Snapshot:
    drivers = make_drivers({w.kind for w in pb.workloads})
    try:
        return snapshot(pb, drivers)
    finally:
        _close(drivers)


def _saved_snapshot(path: Path) -> Snapshot:
    text = bounded.read_text(path, bounded.MAX_SNAPSHOT_BYTES)
    try:
        return Snapshot.from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise UsageError(f"{path} is not an inventory snapshot from drorch inventory --json: {why}") from None


def _refuse(plan: Plan, pos: Positions) -> None:
    if plan.problems:
        raise PlanRefused([f"{pos.where(loc)}: {msg}" for loc, msg in plan.problems])


def _reporter(json_out: bool) -> Reporter | None:
    if json_out:
        return None
    return RichReporter() if sys.stdout.isatty() else LineReporter()


@contextlib.contextmanager
def _engine(pb: Playbook, json_out: bool) -> Iterator[Engine]:
    """An engine with the playbook's drivers; DRORCH_TEST_KILL_AT is the fault-injection hook of the tests."""
    drivers = make_drivers({w.kind for w in pb.workloads})
    kill_at = os.environ.get("DRORCH_TEST_KILL_AT")
    report = _reporter(json_out)
    try:
        yield Engine(Store(), drivers, report=report, kill_at=int(kill_at) if kill_at else None)
    finally:
        if isinstance(report, RichReporter):
            report.close()
        _close(drivers)


def _ended(store: Store, run: Run, json_out: bool) -> None:
    """Print how a run ended and exit with its code."""
    steps = store.steps(run.id or 0)
    if json_out:
        typer.echo(json.dumps(_run_json(run, steps), indent=2))
    took = (reports.naive(run.ended_at or utcnow()) - reports.naive(run.started_at)).total_seconds()
    if run.state in (RunState.SUCCEEDED, RunState.SUCCEEDED_WITH_WARNINGS, RunState.PENDING_COMMIT):
        if not json_out:
            skipped = sum(s.state is StepState.SKIPPED for s in steps)
            note = f", {skipped} left behind as planned" if skipped else ""
            typer.echo(f"run {run.id} {run.state} in {took:.1f} s{note}")
            for s in steps:
                if s.warning:
                    typer.echo(f"drorch: warning: {s.kind} {s.workload}: {s.warning}", err=True)
            if run.state is RunState.PENDING_COMMIT and run.commit_deadline:
                typer.echo(f"run {run.id} is pending commit until {run.commit_deadline:%Y-%m-%d %H:%M:%S} UTC: "
                           f"drorch commit {run.id} or drorch rollback {run.id}")
    elif run.state is RunState.ROLLED_BACK:
        typer.echo(f"drorch: run {run.id} rolled back: {run.error or 'what it moved is back'}", err=True)
    else:
        failed = [s for s in steps if s.state in (StepState.FAILED, StepState.CANCELLED)]
        first = failed[0] if failed else None
        more = f" (and {len(failed) - 1} more: drorch history {run.id})" if len(failed) > 1 else ""
        said = f"{first.kind} {first.workload}: {first.error}{more}" if first else run.error or ""
        typer.echo(f"drorch: run {run.id} {run.state}: {said}", err=True)
    raise typer.Exit(EXIT_CODES[run.state])


def _move(playbook: Path, back: bool, json_out: bool, operation: str, disaster: bool = False,
          confirmed: bool = False) -> None:
    pb, pos = read_playbook(playbook)
    source, target = _directed(pb, back)
    with _engine(pb, json_out) as engine:
        run = engine.operate(pb, str(playbook), operation, source, target, disaster, confirmed,
                             check=lambda p: _refuse(p, pos))
        _ended(engine.store, run, json_out)


@app.command()
def failover(
    playbook: PlaybookArg,
    disaster: Annotated[bool, typer.Option("--disaster", help="the primary is lost: start what site B holds")] = False,
    confirm_primary_down: Annotated[bool, typer.Option(
        "--confirm-primary-down", help="the operator vouches the primary runs nothing (when it cannot be fenced)",
    )] = False,
    json_out: JsonOpt = False,
) -> None:
    """Move every workload of the playbook from its primary site to its secondary site."""
    if confirm_primary_down and not disaster:
        raise UsageError("--confirm-primary-down goes with --disaster")
    _move(playbook, False, json_out, "failover", disaster, confirm_primary_down)


@app.command()
def failback(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Move every workload of the playbook from its secondary site home to its primary site."""
    _move(playbook, True, json_out, "failback")


RunArg = Annotated[int, typer.Argument(help="the run's id, from drorch history", show_default=False)]


def _run_playbook(run_id: int) -> Playbook:
    """The playbook a recorded run was started from, read again from its path."""
    run = Store().run(run_id)
    try:
        return load_playbook(Path(run.playbook_path))
    except PlaybookError as exc:
        raise UsageError(f"run {run_id} needs its playbook {run.playbook_path}, which cannot be used: "
                         f"{exc.problems[0]}") from None


@app.command()
def resume(run_id: RunArg, json_out: JsonOpt = False) -> None:
    """Continue a run that was interrupted, failed or aborted: each step first checks where its workload is."""
    pb = _run_playbook(run_id)
    with _engine(pb, json_out) as engine:
        _ended(engine.store, engine.resume(pb, run_id), json_out)


@app.command()
def abort(run_id: RunArg, json_out: JsonOpt = False) -> None:
    """Stop a run: moves under way are cancelled where they can be, the rest do not start."""
    pb = _run_playbook(run_id)
    with _engine(pb, True) as engine:
        run = engine.abort(pb, run_id)
    if json_out:
        typer.echo(json.dumps(_run_json(run, engine.store.steps(run_id)), indent=2))
    else:
        typer.echo(f"run {run_id} {run.state}")


@app.command()
def approve(run_id: RunArg) -> None:
    """Let a run that waits for approval go on with its next wave."""
    step = Engine(Store(), {}).approve(run_id, getpass.getuser())
    typer.echo(f"run {run_id}: {step.workload} approved")


@app.command()
def commit(run_id: RunArg) -> None:
    """Make a failover that is pending commit final."""
    run = Engine(Store(), {}).commit(run_id)
    typer.echo(f"run {run_id} committed: {run.state}")


@app.command()
def rollback(run_id: RunArg, json_out: JsonOpt = False) -> None:
    """Move back what a run moved (a failover pending commit, or one that ended)."""
    pb = _run_playbook(run_id)
    with _engine(pb, json_out) as engine:
        _ended(engine.store, engine.rollback(pb, run_id), json_out)


@app.command()
def settle() -> None:
    """Decide failovers whose commit window ended, as their playbooks say (run it from cron or the daemon)."""
    for run in Engine(Store(), {}).expired():
        pb = _run_playbook(run.id or 0)
        with _engine(pb, True) as engine:
            done = engine.settle(pb, run)
        typer.echo(f"run {run.id}: commit window ended: {done.state}")


protect_app = typer.Typer(help="Recovery points on the secondary: ship them, and see each workload's RPO.",
                          no_args_is_help=True)
app.add_typer(protect_app, name="protect")


@protect_app.command("ship")
def protect_ship(playbook: PlaybookArg, failback: Annotated[bool, typer.Option(
        "--failback", help="reprotect: ship from the secondary back to the primary")] = False,
        json_out: JsonOpt = False) -> None:
    """Ship one recovery point now: VM definitions, container images, configs and checkpoints."""
    pb = load_playbook(playbook)
    source, target = _directed(pb, failback)
    drivers = make_drivers({w.kind for w in pb.workloads})
    try:
        points = protection.protect(pb, drivers, Store(), source, target)
    finally:
        _close(drivers)
    if json_out:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in points], indent=2))
    for p in points if not json_out else []:
        typer.echo(f"{p.kind:<9} {p.workload:<24} {p.detail if p.complete else 'FAILED: ' + (p.error or '')}")
    if any(not p.complete for p in points):
        raise typer.Exit(ExitCode.PARTIAL if any(p.complete for p in points) else ExitCode.FAILED)


@protect_app.command("status")
def protect_status(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Every protected workload's RPO (age of its newest complete recovery point) against its target."""
    pb = load_playbook(playbook)
    rows = protection.rpo_status(pb, Store().points(pb.name))
    if json_out:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    for r in rows if not json_out else []:
        age = "never" if r.age_s is None else f"{r.age_s:.0f} s ago"
        target = f" (target {r.target_s:.0f} s)" if r.target_s else ""
        flag = "STALE" if r.stale else "ok"
        error = f"; last attempt failed: {r.last_error}" if r.last_error else ""
        typer.echo(f"{r.kind:<9} {r.workload:<24} site {r.site}: {flag:<5} newest {age}{target}, "
                   f"{r.points} kept{error}")
    if not rows:
        typer.echo(f"no recovery points of {pb.name} yet: drorch protect ship {playbook}", err=True)
    raise typer.Exit(ExitCode.FAILED if any(r.stale for r in rows) or not rows else ExitCode.OK)


def _where(pb: Playbook, snap: Snapshot) -> list[dict[str, Any]]:
    """Each workload the playbook selects, with the sites and hosts where it runs now."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in pb.workloads:
        if spec.name is not None:
            rows.setdefault((spec.kind, spec.name), {"workload": spec.name, "kind": str(spec.kind), "running_on": [],
                                                     "hosts": [], "stopped_on": [], "unreachable": []})
    for inv in snap.hosts:
        for w in inv.workloads:
            if any(s.kind is w.kind and s.selects(w.name, w.labels) for s in pb.workloads):
                row = rows.setdefault((w.kind, w.name), {"workload": w.name, "kind": str(w.kind), "running_on": [],
                                                         "hosts": [], "stopped_on": [], "unreachable": []})
                if w.running:
                    row["running_on"].append(inv.site)
                    row["hosts"].append(inv.host)
                else:
                    row["stopped_on"].append(inv.site)
    for (kind, _), row in rows.items():
        row["unreachable"] = sorted({inv.site for inv in snap.hosts if kind in inv.errors})
        # A site that does not answer may be running it: nothing is said that the sites did not say.
        row["state"] = ("running" if row["running_on"] else "unknown" if row["unreachable"]
                        else "stopped" if row["stopped_on"] else "absent")
    return [rows[k] for k in sorted(rows)]


def _status_lines(rows: list[dict[str, Any]], runs: list[Run]) -> list[str]:
    lines = []
    for r in rows:
        where = ", ".join(f"site {s} ({h})" for s, h in zip(r["running_on"], r["hosts"], strict=True)) or "nowhere"
        notes = [f"stopped on site {s}" for s in r["stopped_on"]]
        notes += [f"site {s} unreachable" for s in r["unreachable"]]
        extra = f" ({'; '.join(notes)})" if notes else ""
        state = "state unknown" if r["state"] == "unknown" else f"running on {where}"
        lines.append(f"{r['kind']:<9} {r['workload']:<24} {state}{extra}")
    for run in runs:
        lines.append(f"run {run.id} {run.operation}: {_state(run)}")
    return lines


def _state(run: Run) -> str:
    if run.state is RunState.RUNNING and not run_alive(run, socket.gethostname()):
        return "interrupted (drorch resume or drorch abort)"
    return str(run.state)


@app.command()
def status(
    playbook: PlaybookArg,
    json_out: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until interrupted")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes with --watch")] = 2.0,
) -> None:
    """Where each workload of the playbook runs now, as both sites report it, and its open runs."""
    pb = load_playbook(playbook)
    store = Store()

    def current() -> tuple[list[dict[str, Any]], list[Run]]:
        open_runs = [r for r in store.runs(100) if r.playbook == pb.name
                     and r.state in (RunState.RUNNING, RunState.PENDING_COMMIT)]
        return _where(pb, _live_snapshot(pb)), open_runs

    def show(rows: list[dict[str, Any]], runs: list[Run]) -> None:
        if json_out:  # one document per line, also when watching
            runs_json = [{**r.model_dump(mode="json"), "state": _state(r)} for r in runs]
            typer.echo(json.dumps({"workloads": rows, "runs": runs_json}, indent=None if watch else 2))
        else:
            typer.echo("\n".join(_status_lines(rows, runs)))

    if not watch:
        rows, runs = current()
        show(rows, runs)
        if any(r["unreachable"] for r in rows):
            raise typer.Exit(ExitCode.FAILED)
        return
    tty = sys.stdout.isatty() and not json_out
    display = Live(auto_refresh=False) if tty else contextlib.nullcontext()
    with contextlib.suppress(KeyboardInterrupt), display as live:
        while True:
            rows, runs = current()
            if live is not None:
                table = Table("kind", "workload", "running on", "notes", title=f"{pb.name} at {utcnow():%H:%M:%S}")
                for r in rows:
                    notes = [*(f"stopped on {x}" for x in r["stopped_on"]),
                             *(f"{x} unreachable" for x in r["unreachable"])]
                    where = ", ".join(r["running_on"]) or ("unknown" if r["state"] == "unknown" else "nowhere")
                    table.add_row(r["kind"], r["workload"], where, "; ".join(notes))
                for run in runs:
                    table.add_row("run", str(run.id), run.operation, _state(run))
                live.update(table, refresh=True)
            else:
                show(rows, runs)
                if not json_out:
                    typer.echo("")
            time.sleep(interval)


@app.command()
def schema() -> None:
    """The playbook's JSON Schema, for editors that validate YAML."""
    typer.echo(json.dumps(Playbook.model_json_schema(), indent=2))


@app.command()
def inventory(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Both sites' live inventory: hosts, capacity, names and workloads. Save it with --json."""
    pb = load_playbook(playbook)
    snap = _live_snapshot(pb)
    if json_out:
        typer.echo(snap.to_json())
        return
    for inv in snap.hosts:
        vcpus, memory = inv.discovered()
        typer.echo(f"site {inv.site} host {inv.host}: {vcpus or '?'} CPUs, {memory or '?'} MiB")
        for kind, facts in inv.facts.items():
            typer.echo(f"  {kind}: networks {', '.join(facts.networks) or '-'}; pools {', '.join(facts.pools) or '-'}")
        for kind, error in inv.errors.items():
            typer.echo(f"  {kind}: {error}")
        for w in inv.workloads:
            state = "running" if w.running else "stopped"
            typer.echo(f"  {w.kind:<9} {w.name:<24} {state:<8} {w.vcpus or '-'} vCPU, {w.memory_mib or '-'} MiB")


InventoryOpt = Annotated[Path | None, typer.Option("--inventory", help="plan against a saved snapshot")]
BackOpt = Annotated[bool, typer.Option("--failback", help="plan the way home, secondary to primary")]


def _fmt_size(size: Size | None) -> str:
    return "-" if size is None else f"{size.vcpus}c/{size.memory_mib}M"


@app.command("plan")
def plan_cmd(playbook: PlaybookArg, inventory: InventoryOpt = None, failback: BackOpt = False,
             json_out: JsonOpt = False) -> None:
    """The plan: wave, workload, hosts, strategy, resources before and after, and why."""
    pb, pos = read_playbook(playbook)
    source, target = _directed(pb, failback)
    the_plan = plan(pb, _saved_snapshot(inventory) if inventory else _live_snapshot(pb), source, target)
    if json_out:
        typer.echo(json.dumps(the_plan.to_dict(), indent=2))
    else:
        typer.echo(f"plan {pb.name}: site {source} -> site {target}")
        typer.echo(f"{'#':>3} {'wave':<10} {'workload':<20} {'kind':<9} {'tier':<10} {'action':<8} {'from':<10} "
                   f"{'to':<10} {'strategy':<10} {'before':>10} {'after':>10}  why")
        for i in the_plan.items:
            typer.echo(f"{i.seq:>3} {i.wave:<10} {i.workload:<20} {i.kind:<9} {i.tier:<10} {i.action:<8} "
                       f"{i.from_host or '-':<10} {i.to_host or '-':<10} {i.strategy:<10} {_fmt_size(i.before):>10} "
                       f"{_fmt_size(i.after):>10}  {i.reason}")
    _refuse(the_plan, pos)


@app.command()
def validate(playbook: PlaybookArg, inventory: InventoryOpt = None) -> None:
    """Check the playbook against both sites: every problem as file:line:col, exit 1 on any error."""
    try:
        pb, pos = read_playbook(playbook)
    except InputError:
        raise
    except PlaybookError as exc:
        raise PlanRefused(exc.problems) from None
    kinds = {w.kind for w in pb.workloads}
    drivers = {} if inventory else make_drivers(kinds)
    try:
        snap = _saved_snapshot(inventory) if inventory else snapshot(pb, drivers)
        the_plan, findings = check_playbook(pb, snap, drivers)
    finally:
        _close(drivers)
    errors = [f"{pos.where(f.loc)}: {f.message}" for f in findings if f.error]
    for f in findings:
        if not f.error:
            typer.echo(f"{pos.where(f.loc)}: warning: {f.message}", err=True)
    if errors:
        raise PlanRefused(errors)
    typer.echo(f"{playbook}: ok ({len(the_plan.items)} workloads, site {pb.primary} -> site {pb.secondary})")


@app.command()
def history(
    run_id: Annotated[int | None, typer.Argument(help="show this run's steps")] = None,
    limit: Annotated[int, typer.Option(help="how many runs")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Past runs, newest first; with RUN_ID, that run and each of its steps."""
    store = Store()
    if run_id is not None:
        run, steps = store.run(run_id), store.steps(run_id)
        if json_out:
            typer.echo(json.dumps(_run_json(run, steps), indent=2))
            return
        typer.echo(f"run {run.id} {run.operation} {run.playbook} ({run.playbook_path}) site {run.source_site} -> "
                   f"{run.target_site}: {_state(run)}, started {run.started_at:%Y-%m-%d %H:%M:%S}")
        for s in steps:
            took = f"{(s.ended_at - s.started_at).total_seconds():.1f} s" if s.started_at and s.ended_at else "-"
            typer.echo(f"  {s.seq:>3} {s.kind:<9} {s.workload:<24} {s.strategy:<10} {s.state:<9} {took:>7}  "
                       f"{s.outcome or s.error or ''}")
        return
    runs = store.runs(limit)
    if json_out:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return
    for r in runs:
        typer.echo(f"{r.id:>5} {r.started_at:%Y-%m-%d %H:%M:%S} {r.operation:<9} {r.playbook:<16} "
                   f"{r.source_site} -> {r.target_site}  {_state(r)}{': ' + r.error if r.error else ''}")


daemon_app = typer.Typer(help="The daemon: scheduled protection and other jobs, one leader per store.",
                         no_args_is_help=True)
app.add_typer(daemon_app, name="daemon")
schedule_app = typer.Typer(help="Jobs the daemon runs, kept in the state store.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@daemon_app.command("run")
def daemon_run(
    playbooks: Annotated[list[Path] | None, typer.Argument(
        help="playbooks whose own schedules to run; a folder stands for its *.yaml files")] = None,
    lease_s: Annotated[float, typer.Option(help="seconds a leader holds the scheduler without renewing")] = 15.0,
) -> None:
    """Run until SIGTERM: keeps a heartbeat, takes the lease when it is free, and runs the scheduled jobs."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    named = [p for p in playbooks or [] if not p.is_dir()]
    for f in named:
        load_playbook(f)  # a playbook named alone is refused before the daemon starts; one of a folder is skipped
    files = [f for p in playbooks or [] for f in (sorted(p.glob("*.y*ml")) if p.is_dir() else [p])]
    Daemon(Store(), [f.resolve() for f in files], lease_s=lease_s).run()


@daemon_app.command("status")
def daemon_status(json_out: JsonOpt = False) -> None:
    """The daemons' heartbeats (and which one leads), the scheduled jobs' next runs, and running jobs."""
    store = Store()
    now = reports.naive(utcnow())
    daemons = [{"daemon": d.identity, "leader": d.leader, "stopped": d.stopped, "started_at": d.started_at.isoformat(),
                "heartbeat_age_s": (now - reports.naive(d.heartbeat_at)).total_seconds()} for d in store.daemons()]
    jobs_ = [{"id": i, "name": n, "next_run": t.isoformat() if t else None} for i, n, t in next_runs(store)]
    running = [{"run": r.id, "operation": r.operation, "playbook": r.playbook} for r in store.runs(100)
               if r.state is RunState.RUNNING and run_alive(r, socket.gethostname())]
    if json_out:
        typer.echo(json.dumps({"daemons": daemons, "jobs": jobs_, "running": running}, indent=2))
        return
    for d in daemons:
        role = "stopped" if d["stopped"] else "leader" if d["leader"] else "follower"
        typer.echo(f"daemon {d['daemon']:<24} {role:<8} heartbeat {d['heartbeat_age_s']:.0f} s ago")
    for j in jobs_:
        typer.echo(f"job {j['id']:<32} {j['name']:<32} next {j['next_run'] or 'paused'}")
    for r in running:
        typer.echo(f"running: run {r['run']} {r['operation']} {r['playbook']}")
    if not daemons:
        typer.echo("no daemon has run against this store", err=True)


@schedule_app.command("add")
def schedule_add(
    playbook: PlaybookArg,
    job: Annotated[JobKind, typer.Option(help="what to run")],
    every: Annotated[float | None, typer.Option(help="seconds between runs")] = None,
    cron: Annotated[str | None, typer.Option(help="cron expression, UTC: minute hour day month weekday")] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="the schedule's id; replaces one with that id")] = None,
) -> None:
    """Add a schedule to the store; the leading daemon picks it up."""
    pb = load_playbook(playbook)
    try:
        s = Schedule(job=job, every_s=every, cron=cron)
    except ValueError:
        raise UsageError("give --every SECONDS or --cron EXPRESSION, one of them") from None
    sched = scheduler(Store())
    sched.start(paused=True)
    try:
        added = add_schedule(sched, playbook, s, job_id or f"{pb.name}:{job}:{uuid.uuid4().hex[:6]}")
    finally:
        sched.shutdown(wait=False)
    typer.echo(f"schedule {added.id}: {added.name}, {added.trigger}")


@schedule_app.command("list")
def schedule_list(json_out: JsonOpt = False) -> None:
    """Every schedule in the store and its next run."""
    rows = next_runs(Store())
    if json_out:
        typer.echo(json.dumps([{"id": i, "name": n, "next_run": t.isoformat() if t else None} for i, n, t in rows],
                              indent=2))
        return
    for i, n, t in rows:
        typer.echo(f"{i:<32} {n:<32} next {t.isoformat() if t else 'paused'}")


@schedule_app.command("remove")
def schedule_remove(job_id: Annotated[str, typer.Argument(help="the id from drorch schedule list")]) -> None:
    """Remove a schedule from the store."""
    sched = scheduler(Store())
    sched.start(paused=True)
    try:
        sched.remove_job(job_id)
    except JobLookupError:
        raise NotFound(f"no schedule {job_id}") from None
    finally:
        sched.shutdown(wait=False)
    typer.echo(f"schedule {job_id} removed")


@app.command()
def report(run_id: RunArg, json_out: JsonOpt = False, html: Annotated[Path | None, typer.Option(
        "--html", help="also write a self-contained page with the timeline chart to this file")] = None) -> None:
    """A run's timeline: each step's start and duration, the RTO it achieved; for drills the checks and RPO."""
    store = Store()
    doc = reports.timeline(store.run(run_id), store.steps(run_id))
    if html is not None:
        try:
            html.write_text(reports.html(doc), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {html}: {exc.strerror or exc}") from None
    typer.echo(json.dumps(doc, indent=2) if json_out else "\n".join(reports.text(doc)))


@app.command("readiness")
def readiness_cmd(playbook: PlaybookArg, check: Annotated[bool, typer.Option(
        "--check", help="check now (and record it) rather than show the daemon's last check")] = False,
        json_out: JsonOpt = False) -> None:
    """Whether a failover would work now, since when, and why not: validate's checks and every RPO.
    Exit 0 when ready, 1 when not, 2 when it was never checked."""
    pb = load_playbook(playbook)
    store = Store()
    if check:
        drivers = make_drivers({w.kind for w in pb.workloads})
        try:
            readiness.check(pb, drivers, store)
        finally:
            _close(drivers)
    state = readiness.current(store, pb.name)
    if state is None:
        raise UsageError(f"{pb.name} was never checked: drorch readiness --check, or a readiness schedule")
    if json_out:
        typer.echo(json.dumps(state.to_dict(), indent=2))
    else:
        typer.echo(f"{pb.name}: {'ready' if state.ready else 'NOT READY'} since {state.since:%Y-%m-%d %H:%M:%S} UTC "
                   f"(last checked {state.checked_at:%Y-%m-%d %H:%M:%S} UTC)")
        for p in state.problems:
            typer.echo(f"  {p}")
    raise typer.Exit(ExitCode.OK if state.ready else ExitCode.FAILED)


@app.command("drill")
def drill_cmd(playbook: PlaybookArg, hold_s: Annotated[float | None, typer.Option(
        "--hold-s", help="seconds the clones stay up after their checks (default: drill.hold_s)")] = None,
        json_out: JsonOpt = False) -> None:
    """Bring the playbook up on the secondary from its recovery points, isolated from production; check
    and time every clone, then tear it all down. Exit 0 when the drill passed."""
    pb = load_playbook(playbook)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop cloning, still tear down
        signal.signal(sig, lambda *_: stop.set())
    drivers = make_drivers({w.kind for w in pb.workloads})
    report = _reporter(json_out)
    store = Store()
    try:
        run = Drill(store, drivers, report, stop).run(pb, str(playbook), hold_s)
    finally:
        if isinstance(report, RichReporter):
            report.close()
        _close(drivers)
    doc = reports.timeline(run, store.steps(run.id or 0))
    typer.echo(json.dumps(doc, indent=2) if json_out else "\n".join(reports.text(doc)))
    raise typer.Exit(EXIT_CODES[run.state])


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error becomes one line and an exit code; tracebacks only with --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="drorch")  # exits by itself: usage errors with 2, commands with their code
    except DrorchError as exc:
        if debug:
            raise
        # Playbook problems are already `file:line:col: message`, the form editors jump to.
        prefix = "" if isinstance(exc, PlaybookError) else "drorch: error: "
        lines = exc.problems if isinstance(exc, PlaybookError) else [redact(printable(str(exc)))]
        for line in lines:
            typer.echo(f"{prefix}{line}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"drorch: internal error: {exc!r} (run with --debug for the traceback)", err=True)
        sys.exit(ExitCode.FAILED)
