"""Commands that look at the sites without changing them: status, inventory, plan, validate, schema."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from drorch.cli.app import JsonOpt, PlaybookArg, app, echo, seconds
from drorch.cli.common import directed, drivers, live_snapshot, refuse, refuse_findings, saved_snapshot, shown_state
from drorch.errors import ExitCode, InputError, NamesFailed, PlanRefused, PlaybookError, printable
from drorch.model.records import RunState, utcnow

if TYPE_CHECKING:
    from drorch.model.playbook import Playbook, Workload
    from drorch.plan.inventory import Snapshot
    from drorch.plan.placement import Size
    from drorch.recovery.stale_copies import Stale
    from drorch.store.rows import Run


def _where(pb: Playbook, snap: Snapshot) -> list[dict[str, Any]]:
    """Each workload the playbook selects, with the sites and hosts where it runs now."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    specs: dict[tuple[str, str], Workload] = {}  # the entry behind each row

    def row(spec: Workload, name: str) -> dict[str, Any]:
        specs.setdefault((spec.kind, name), spec)
        return rows.setdefault((spec.kind, name), {"workload": name, "kind": str(spec.kind), "running_on": [],
                                                   "hosts": [], "stopped_on": [], "unreachable": []})

    for spec in pb.workloads:
        if spec.name is not None:
            row(spec, spec.name)
    for inv in snap.hosts:
        for w in inv.workloads:
            found = pb.spec_of(w.kind, w.name, w.labels, inv.site)
            if found is not None:
                mine = row(found, w.name)
                if w.running:
                    mine["running_on"].append(inv.site)
                    mine["hosts"].append(inv.host)
                else:
                    mine["stopped_on"].append(inv.site)
    for key, mine in rows.items():
        spec = specs[key]
        mine["unreachable"] = sorted({inv.site for inv in snap.hosts if pb.kind_on(spec, inv.site) in inv.errors})
        # A site that does not answer may be running it: nothing is said that the sites did not say.
        mine["state"] = ("running" if mine["running_on"] else "unknown" if mine["unreachable"]
                         else "stopped" if mine["stopped_on"] else "absent")
    return [rows[k] for k in sorted(rows)]


def _unanswered(snap: Snapshot) -> list[str]:
    return [why for inv in snap.hosts for why in inv.errors.values()]


def _state(run: Run) -> str:
    return shown_state(run.state, run.host, run.pid)


def _record_line(r: dict[str, Any]) -> str:
    """A DNS record, where it points, and a flag when that is not where its workload runs."""
    said = f"dns {r['name']} {r['type']} {' '.join(r['values']) or '(none)'}"
    where = f"site {r['points_at']}" if r["points_at"] else "no site"
    if r["right"]:
        return f"{said}: points at {where}, where {r['workload']} runs"
    runs = f"runs on site {r['runs_on']}" if r["runs_on"] else "runs nowhere"
    return f"{said}: WRONG: points at {where}, and {r['workload']} {runs}"


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


@app.command()
def prune(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Remove the stale copies `drorch status` names: what a site holds of a workload that runs on the other
    site (a lost primary's stopped definitions, disks and containers), never a recovery point, and nothing of a
    workload that runs nowhere."""
    from drorch.model.playbook_file import load_playbook
    from drorch.reach import snapshot
    from drorch.recovery.stale_copies import prune as prune_all

    pb = load_playbook(playbook)
    with drivers(pb) as found:
        removed = prune_all(pb, found, snapshot(pb, found))
    if json_out:
        typer.echo(json.dumps([{**dataclasses.asdict(x), "kind": str(x.kind)} for x in removed], indent=2))
    else:
        echo(*(f"removed from site {x.site} host {x.host}: {x.kind} {x.workload}: {', '.join(x.items)}"
               for x in removed))
        if not removed:
            echo("no stale copies")


@app.command()
def status(
    playbook: PlaybookArg,
    json_out: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until interrupted")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes with --watch",
                                            callback=seconds(0.1, 3600))] = 2.0,
) -> None:
    """Where each workload of the playbook runs now, as both sites report it, and its open runs."""
    from drorch.engine.names_step import records_status
    from drorch.model.playbook_file import load_playbook
    from drorch.reach import snapshot
    from drorch.recovery.stale_copies import stale_copies
    from drorch.store.sql_store import Store

    pb = load_playbook(playbook)
    store = Store()

    def current() -> tuple[list[dict[str, Any]], list[Run], list[str], list[Stale], list[dict[str, Any]]]:
        """The workloads' rows, the open runs, why hosts did not answer, the stale copies sites hold, and
        where the playbook's DNS records point."""
        open_runs = [r for r in store.runs(100) if r.playbook == pb.name
                     and r.state in (RunState.RUNNING, RunState.PENDING_COMMIT)]
        with drivers(pb) as found:
            snap = snapshot(pb, found)
            stale = stale_copies(pb, found, snap)
        unanswered = _unanswered(snap)
        try:
            records = records_status(pb, snap)
        except NamesFailed as exc:
            records, unanswered = [], [*unanswered, str(exc)]
        return _where(pb, snap), open_runs, unanswered, stale, records

    def show(rows: list[dict[str, Any]], runs: list[Run], stale: list[Stale], records: list[dict[str, Any]]) -> None:
        if json_out:  # one document per line, also when watching
            runs_json = [{**r.model_dump(mode="json"), "state": _state(r)} for r in runs]
            stale_json = [{**dataclasses.asdict(x), "kind": str(x.kind)} for x in stale]
            typer.echo(json.dumps({"workloads": rows, "runs": runs_json, "stale": stale_json, "records": records},
                                  indent=None if watch else 2))
        else:
            echo(*_status_lines(rows, runs), *map(_record_line, records))
            echo(*(f"stale: {x.line()}" for x in stale))
            if stale:
                echo(f"  (drorch prune {playbook} removes them)")

    if not watch:
        rows, runs, unanswered, stale, records = current()
        show(rows, runs, stale, records)
        if unanswered:  # a site that did not answer may run what it was asked about
            echo(*(f"drorch: {why}" for why in unanswered), err=True)
            raise typer.Exit(ExitCode.FAILED)
        return
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    def _cells(*values: str) -> list[Text]:
        """Names as text: neither a terminal's control characters nor rich's markup act."""
        return [Text(printable(v)) for v in values]

    tty = sys.stdout.isatty() and not json_out
    display = Live(auto_refresh=False) if tty else contextlib.nullcontext()
    with contextlib.suppress(KeyboardInterrupt), display as live:
        while True:
            rows, runs, _, stale, records = current()
            if live is not None:
                table = Table("kind", "workload", "running on", "notes",
                              title=Text(f"{pb.name} at {utcnow():%H:%M:%S}"))
                for r in rows:
                    notes = [*(f"stopped on {x}" for x in r["stopped_on"]),
                             *(f"{x} unreachable" for x in r["unreachable"])]
                    where = ", ".join(r["running_on"]) or ("unknown" if r["state"] == "unknown" else "nowhere")
                    table.add_row(*_cells(r["kind"], r["workload"], where, "; ".join(notes)))
                for run in runs:
                    table.add_row(*_cells("run", str(run.id), run.operation, _state(run)))
                live.update(table, refresh=True)
            else:
                show(rows, runs, stale, records)
                if not json_out:
                    echo("")
            time.sleep(interval)


@app.command()
def schema(markdown: Annotated[bool, typer.Option("--markdown", help="the reference of every key, in Markdown")]
           = False) -> None:
    """The playbook's JSON Schema, for editors that validate YAML; with --markdown, the playbook reference."""
    from drorch.model.playbook import Playbook

    found = Playbook.model_json_schema()
    if markdown:
        from drorch.model.schema_doc import reference

        typer.echo(reference(found), nl=False)
    else:
        typer.echo(json.dumps(found, indent=2))


@app.command()
def inventory(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Both sites' live inventory: hosts, capacity, names and workloads. Save it with --json."""
    from drorch.model.playbook_file import load_playbook

    snap = live_snapshot(load_playbook(playbook))
    if json_out:
        typer.echo(snap.to_json())
    else:
        for inv in snap.hosts:
            vcpus, memory = inv.discovered()
            echo(f"site {inv.site} host {inv.host}: {vcpus or '?'} CPUs, {memory or '?'} MiB")
            for kind, facts in inv.facts.items():
                echo(f"  {kind}: networks {', '.join(facts.networks) or '-'}; pools {', '.join(facts.pools) or '-'}")
            for kind, error in inv.errors.items():
                echo(f"  {kind}: {error}")
            for w in inv.workloads:
                state = "running" if w.running else "stopped"
                echo(f"  {w.kind:<9} {w.name:<24} {state:<8} {w.vcpus or '-'} vCPU, {w.memory_mib or '-'} MiB")
    if _unanswered(snap):  # as status says: a host that did not answer is a failure
        raise typer.Exit(ExitCode.FAILED)


InventoryOpt = Annotated[Path | None, typer.Option("--inventory", help="plan against a saved snapshot")]
BackOpt = Annotated[bool, typer.Option("--failback", help="plan the way home, secondary to primary")]


def _fmt_size(size: Size | None) -> str:
    return "-" if size is None else f"{size.vcpus}c/{size.memory_mib}M"


@app.command("plan")
def plan_cmd(playbook: PlaybookArg, inventory: InventoryOpt = None, failback: BackOpt = False,
             json_out: JsonOpt = False) -> None:
    """The plan: wave, workload, hosts, strategy, resources before and after, and why."""
    from drorch.model.playbook_file import read_playbook
    from drorch.model.records import Action
    from drorch.plan.planner import plan

    pb, pos = read_playbook(playbook)
    source, target = directed(pb, failback)
    the_plan = plan(pb, saved_snapshot(inventory) if inventory else live_snapshot(pb), source, target)
    if json_out:
        typer.echo(json.dumps(the_plan.to_dict(), indent=2))
    else:
        echo(f"plan {pb.name}: site {source} -> site {target}")
        echo(f"{'#':>3} {'wave':<10} {'workload':<20} {'kind':<9} {'tier':<10} {'action':<8} {'from':<10} "
             f"{'to':<10} {'strategy':<10} {'before':>10} {'after':>10}  why")
        for i in the_plan.items:
            lands = f"runs as a {i.at_target} on site {target}" if i.at_target is not i.at_source else ""
            echo(f"{i.seq:>3} {i.wave:<10} {i.workload:<20} {i.kind:<9} {i.tier:<10} {i.action:<8} "
                 f"{i.from_host or '-':<10} {i.to_host or '-':<10} {i.strategy:<10} {_fmt_size(i.before):>10} "
                 f"{_fmt_size(i.after):>10}  {'; '.join(filter(None, [lands, i.reason]))}")
            for move in i.addresses:
                echo(f"{'':>4}address {move.line()}")
        for loc, message in the_plan.notes:
            echo(f"{pos.where(loc)}: note: {message}", err=True)
    refuse(the_plan, pos)
    blocked = [i for i in the_plan.items if i.action is Action.BLOCKED]
    if blocked:  # the plan cannot be carried out whole: its text or JSON says which and why
        echo(f"drorch: {len(blocked)} of {len(the_plan.items)} workloads cannot move now: a site they need did not "
             "answer", err=True)
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def validate(playbook: PlaybookArg, inventory: InventoryOpt = None) -> None:
    """Check the playbook against both sites: every problem as file:line:col, exit 1 on any error."""
    from drorch.engine.steps_from_plan import check_playbook
    from drorch.model.playbook_file import read_playbook
    from drorch.reach import snapshot

    try:
        pb, pos = read_playbook(playbook)
    except InputError:
        raise
    except PlaybookError as exc:
        raise PlanRefused(exc.problems) from None
    if inventory:
        the_plan, findings = check_playbook(pb, saved_snapshot(inventory), {})
    else:
        with drivers(pb) as found:
            the_plan, findings = check_playbook(pb, snapshot(pb, found), found)
    refuse_findings(findings, pos)
    echo(f"{playbook}: ok ({len(the_plan.items)} workloads, site {pb.primary} -> site {pb.secondary})")
    waves: dict[str, list[str]] = {}
    for item in the_plan.items:
        waves.setdefault(item.wave, []).append(item.workload)
    for wave, names in waves.items():
        echo(f"  wave {wave} ({pb.parallel(wave)} at a time): {', '.join(names)}")
