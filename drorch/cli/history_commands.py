"""Commands that read the record of past runs: history and report. `history` reads an SQLite store with the
standard library alone, so that it answers at once."""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from drorch.cli.app import MAX_RUN_ID, JsonOpt, RunArg, app, echo
from drorch.cli.common import shown_state
from drorch.errors import UsageError
from drorch.file_kinds import not_regular
from drorch.store.history import History, Record

MAX_HISTORY = 100_000  # runs listed at once


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):  # as pydantic writes times: UTC as Z
        text = value.isoformat()
        return f"{text[:-6]}Z" if text.endswith("+00:00") else text
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON")


def _state(r: Record) -> str:
    return shown_state(r["state"], r["host"], r["pid"])


@app.command()
def history(
    run_id: Annotated[int | None, typer.Argument(help="show this run's steps", min=1, max=MAX_RUN_ID)] = None,
    limit: Annotated[int, typer.Option(help="how many runs", min=1, max=MAX_HISTORY)] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Past runs, newest first; with RUN_ID, that run and each of its steps."""
    found = History()
    if run_id is not None:
        run, steps = found.run(run_id), found.steps(run_id)
        run["automatic"] = json.loads(run["automatic"]) if run.get("automatic") else None  # the takeover's gates
        if json_out:
            shown = [{k: v for k, v in s.items() if k not in ("handle", "request")} for s in steps]
            typer.echo(json.dumps({**run, "steps": shown}, indent=2, default=_plain))
            return
        echo(f"run {run['id']} {run['operation']} {run['playbook']} ({run['playbook_path']}) site "
                   f"{run['source_site']} -> {run['target_site']}: {_state(run)}, "
                   f"started {run['started_at']:%Y-%m-%d %H:%M:%S}")
        if run["automatic"]:
            echo("  started automatically: " + "; ".join(f"{g} {'held' if ok else 'did not hold'} ({said})"
                                                          for g, ok, said in run["automatic"]))
        for s in steps:
            began, ended = s["started_at"], s["ended_at"]
            took = f"{(ended - began).total_seconds():.1f} s" if began and ended else "-"
            echo(f"  {s['seq']:>3} {s['kind']:<9} {s['workload']:<24} {s['strategy']:<10} {s['state']:<9} "
                       f"{took:>7}  {s['outcome'] or s['error'] or ''}")
        return
    runs = found.runs(limit)
    if json_out:
        typer.echo(json.dumps(runs, indent=2, default=_plain))
        return
    for r in runs:
        error = f": {r['error']}" if r["error"] else ""
        echo(f"{r['id']:>5} {r['started_at']:%Y-%m-%d %H:%M:%S} {r['operation']:<9} {r['playbook']:<16} "
                   f"{r['source_site']} -> {r['target_site']}  {_state(r)}{error}")


def write_file(path: Path, text: str) -> None:
    """A page written to a regular file: a named pipe or a device is refused at once (a pipe nobody reads would
    hold the command for ever)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO with no reader
            raise UsageError(f"{path}: not a regular file (a named pipe): write the report to a file") from None
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        kind = not_regular(os.fstat(fd).st_mode)
        if kind is not None:
            raise UsageError(f"{path}: not a regular file ({kind}): write the report to a file")
        os.set_blocking(fd, True)
        out.truncate()
        out.write(text)


@app.command()
def report(run_id: RunArg, json_out: JsonOpt = False, html: Annotated[Path | None, typer.Option(
        "--html", help="also write a self-contained page with the timeline chart to this file")] = None) -> None:
    """A run's timeline: each step's start and duration, the RTO it achieved; for drills the checks and RPO."""
    from drorch.model import run_report as reports
    from drorch.store.sql_store import Store

    store = Store()
    doc = reports.timeline(store.run(run_id), store.steps(run_id))
    if html is not None:
        write_file(html, reports.html(doc))
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
    else:
        echo(*reports.text(doc))
