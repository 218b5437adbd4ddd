"""The `drorch` command: parses, calls the engine or the store, prints. Nothing else lives here."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from drorch.drivers.base import Driver
from drorch.engine import Engine, StepEvent, endpoint
from drorch.errors import DrorchError, ExitCode, PlaybookError
from drorch.playbook import Playbook, WorkloadKind, load_playbook
from drorch.records import EXIT_CODES, RunState, StepState
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


def make_drivers(kinds: set[WorkloadKind]) -> dict[WorkloadKind, Driver]:
    """The real drivers of the kinds a playbook uses; each is imported only when needed."""
    drivers: dict[WorkloadKind, Driver] = {}
    if WorkloadKind.VM in kinds:
        from drorch.drivers.libvirt import LibvirtDriver

        drivers[WorkloadKind.VM] = LibvirtDriver()
    if WorkloadKind.CONTAINER in kinds:
        from drorch.drivers.docker import DockerDriver

        drivers[WorkloadKind.CONTAINER] = DockerDriver()
    return drivers


def _close(drivers: Mapping[WorkloadKind, Driver]) -> None:
    for d in drivers.values():
        d.close()


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.1f}"


class LineReporter:
    """Progress as plain lines: one per state change, at most one a second per running step."""

    def __init__(self) -> None:
        self._announced: set[int] = set()
        self._last: dict[int, float] = {}

    def __call__(self, ev: StepEvent) -> None:
        run, step = ev.run, ev.step
        if run.id not in self._announced:
            self._announced.add(run.id or 0)
            typer.echo(f"run {run.id}: {run.operation} {run.playbook}, site {run.source_site} -> site "
                       f"{run.target_site}, {ev.total} workloads")
        where = f"[{step.seq}/{ev.total}] {step.kind} {step.workload}"
        p = ev.progress
        if step.state is StepState.RUNNING and p is None:
            typer.echo(f"{where}: {step.strategy} started")
        elif step.state is StepState.RUNNING and p is not None:
            now = time.monotonic()
            if now - self._last.get(step.id or 0, 0.0) >= 1.0:
                self._last[step.id or 0] = now
                size = f" {_mib(p.bytes_done)}/{_mib(p.bytes_total)} MiB" if p.bytes_total else ""
                typer.echo(f"{where}: {p.step}{size}")
        elif step.started_at and step.ended_at:
            took = (step.ended_at - step.started_at).total_seconds()
            if step.state is StepState.SUCCEEDED:
                typer.echo(f"{where}: done in {took:.1f} s, {step.outcome}")
            else:
                typer.echo(f"{where}: FAILED after {took:.1f} s: {step.error}")


def _run_json(run: Run, steps: list[Step]) -> dict[str, Any]:
    return {**run.model_dump(mode="json"), "steps": [s.model_dump(mode="json", exclude={"handle"}) for s in steps]}


def _move(playbook: Path, source_role: str, json_out: bool, operation: str) -> None:
    pb = load_playbook(playbook)
    source, target = (pb.primary, pb.secondary) if source_role == "primary" else (pb.secondary, pb.primary)
    store = Store()
    drivers = make_drivers({w.kind for w in pb.workloads})
    try:
        engine = Engine(store, drivers, report=None if json_out else LineReporter())
        run = engine.failover(pb, str(playbook), source, target, operation)
    finally:
        _close(drivers)
    steps = store.steps(run.id or 0)
    if json_out:
        typer.echo(json.dumps(_run_json(run, steps), indent=2))
    took = ((run.ended_at or run.started_at) - run.started_at).total_seconds()
    if run.state is RunState.SUCCEEDED:
        if not json_out:
            typer.echo(f"run {run.id} succeeded in {took:.1f} s")
    else:
        failed = [s for s in steps if s.state is StepState.FAILED]
        more = f" (and {len(failed) - 1} more: drorch history {run.id})" if len(failed) > 1 else ""
        first = failed[0]
        typer.echo(f"drorch: run {run.id} {run.state}: {first.kind} {first.workload}: {first.error}{more}", err=True)
    raise typer.Exit(EXIT_CODES[run.state])


@app.command()
def failover(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Move every workload of the playbook from its primary site to its secondary site."""
    _move(playbook, "primary", json_out, "failover")


@app.command()
def failback(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Move every workload of the playbook from its secondary site home to its primary site."""
    _move(playbook, "secondary", json_out, "failback")


def _where(pb: Playbook, drivers: Mapping[WorkloadKind, Driver]) -> list[dict[str, Any]]:
    rows = []
    for w in pb.workloads:
        running: list[str] = []
        present: list[str] = []
        unreachable: list[str] = []
        for site in (pb.primary, pb.secondary):
            try:
                info = drivers[w.kind].locate(w.name, endpoint(pb, w.kind, site))
            except DrorchError:
                unreachable.append(site)
                continue
            if info is not None:
                (running if info.running else present).append(site)
        rows.append({"workload": w.name, "kind": str(w.kind), "running_on": running, "stopped_on": present,
                     "unreachable": unreachable})
    return rows


@app.command()
def status(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Where each workload of the playbook runs now, as both sites report it."""
    pb = load_playbook(playbook)
    drivers = make_drivers({w.kind for w in pb.workloads})
    try:
        rows = _where(pb, drivers)
    finally:
        _close(drivers)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        where = ", ".join(f"site {s}" for s in r["running_on"]) or "nowhere"
        notes = [f"stopped on site {s}" for s in r["stopped_on"]]
        notes += [f"site {s} unreachable" for s in r["unreachable"]]
        extra = f" ({'; '.join(notes)})" if notes else ""
        typer.echo(f"{r['kind']:<9} {r['workload']:<24} running on {where}{extra}")


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
                   f"{run.target_site}: {run.state}, started {run.started_at:%Y-%m-%d %H:%M:%S}")
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
                   f"{r.source_site} -> {r.target_site}  {r.state}{': ' + r.error if r.error else ''}")


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
        for line in str(exc).splitlines():
            typer.echo(f"{prefix}{line}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"drorch: internal error: {exc!r} (run with --debug for the traceback)", err=True)
        sys.exit(ExitCode.FAILED)
