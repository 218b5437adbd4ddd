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
from drorch.engine import Engine, StepEvent, check_playbook, snapshot
from drorch.errors import DrorchError, ExitCode, PlanRefused, PlaybookError, UsageError
from drorch.inventory import Snapshot
from drorch.planner import Plan, Size, plan
from drorch.playbook import Playbook, Positions, WorkloadKind, load_playbook, read_playbook
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
        elif step.state is StepState.SKIPPED:
            typer.echo(f"{where}: skipped: {step.outcome}")
        elif step.started_at and step.ended_at:
            took = (step.ended_at - step.started_at).total_seconds()
            if step.state is StepState.SUCCEEDED:
                typer.echo(f"{where}: done in {took:.1f} s, {step.outcome}")
            else:
                typer.echo(f"{where}: FAILED after {took:.1f} s: {step.error}")


def _run_json(run: Run, steps: list[Step]) -> dict[str, Any]:
    return {**run.model_dump(mode="json"), "steps": [s.model_dump(mode="json", exclude={"handle"}) for s in steps]}


def _directed(pb: Playbook, back: bool) -> tuple[str, str]:
    return (pb.secondary, pb.primary) if back else (pb.primary, pb.secondary)


def _live_snapshot(pb: Playbook) -> Snapshot:
    drivers = make_drivers({w.kind for w in pb.workloads})
    try:
        return snapshot(pb, drivers)
    finally:
        _close(drivers)


def _saved_snapshot(path: Path) -> Snapshot:
    try:
        return Snapshot.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the inventory snapshot {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not an inventory snapshot from drorch inventory --json: {exc}") from None


def _refuse(plan: Plan, pos: Positions) -> None:
    if plan.problems:
        raise PlanRefused([f"{pos.where(loc)}: {msg}" for loc, msg in plan.problems])


def _move(playbook: Path, back: bool, json_out: bool, operation: str) -> None:
    pb, pos = read_playbook(playbook)
    source, target = _directed(pb, back)
    store = Store()
    drivers = make_drivers({w.kind for w in pb.workloads})
    try:
        the_plan = plan(pb, snapshot(pb, drivers), source, target)
        _refuse(the_plan, pos)
        engine = Engine(store, drivers, report=None if json_out else LineReporter())
        run = engine.execute(pb, the_plan, str(playbook), operation)
    finally:
        _close(drivers)
    steps = store.steps(run.id or 0)
    if json_out:
        typer.echo(json.dumps(_run_json(run, steps), indent=2))
    took = ((run.ended_at or run.started_at) - run.started_at).total_seconds()
    if run.state is RunState.SUCCEEDED:
        if not json_out:
            skipped = sum(s.state is StepState.SKIPPED for s in steps)
            note = f", {skipped} left behind as planned" if skipped else ""
            typer.echo(f"run {run.id} succeeded in {took:.1f} s{note}")
    else:
        failed = [s for s in steps if s.state is StepState.FAILED]
        more = f" (and {len(failed) - 1} more: drorch history {run.id})" if len(failed) > 1 else ""
        first = failed[0]
        typer.echo(f"drorch: run {run.id} {run.state}: {first.kind} {first.workload}: {first.error}{more}", err=True)
    raise typer.Exit(EXIT_CODES[run.state])


@app.command()
def failover(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Move every workload of the playbook from its primary site to its secondary site."""
    _move(playbook, False, json_out, "failover")


@app.command()
def failback(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Move every workload of the playbook from its secondary site home to its primary site."""
    _move(playbook, True, json_out, "failback")


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
    return [rows[k] for k in sorted(rows)]


@app.command()
def status(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Where each workload of the playbook runs now, as both sites report it."""
    pb = load_playbook(playbook)
    rows = _where(pb, _live_snapshot(pb))
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        where = ", ".join(f"site {s} ({h})" for s, h in zip(r["running_on"], r["hosts"], strict=True)) or "nowhere"
        notes = [f"stopped on site {s}" for s in r["stopped_on"]]
        notes += [f"site {s} unreachable" for s in r["unreachable"]]
        extra = f" ({'; '.join(notes)})" if notes else ""
        typer.echo(f"{r['kind']:<9} {r['workload']:<24} running on {where}{extra}")


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
