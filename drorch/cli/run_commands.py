"""Commands that move workloads or decide a run: failover, failback, resume, abort, approve, commit,
rollback, settle."""

from __future__ import annotations

import contextlib
import getpass
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drorch.cli.app import JsonOpt, PlaybookArg, PointOpt, RunArg, app, echo
from drorch.cli.common import directed, drivers, progress_shown, refuse_findings, run_json
from drorch.errors import PlaybookError, UsageError
from drorch.model.records import EXIT_CODES, Operation, RunState, StepState, naive, utcnow
from drorch.process import kill_at

if TYPE_CHECKING:
    from drorch.engine.runner import Engine
    from drorch.model.playbook import Playbook
    from drorch.store.contract import StateStore
    from drorch.store.rows import Run
    from drorch.store.sql_store import Store


@contextlib.contextmanager
def _engine(pb: Playbook, json_out: bool, store: Store | None = None) -> Iterator[Engine]:
    """An engine with the playbook's drivers."""
    from drorch.engine.runner import Engine
    from drorch.store.sql_store import Store

    with drivers(pb) as found, progress_shown(json_out) as report:
        yield Engine(store or Store(), found, report=report, kill_at=kill_at())


def _ended(store: StateStore, run: Run, json_out: bool) -> None:
    """Print how a run ended and exit with its code."""
    steps = store.steps(run.id or 0)
    if json_out:
        typer.echo(json.dumps(run_json(run, steps), indent=2))
    took = (naive(run.ended_at or utcnow()) - naive(run.started_at)).total_seconds()
    if run.state in (RunState.SUCCEEDED, RunState.SUCCEEDED_WITH_WARNINGS, RunState.PENDING_COMMIT):
        if not json_out:
            skipped = sum(s.state is StepState.SKIPPED for s in steps)
            note = f", {skipped} left behind as planned" if skipped else ""
            echo(f"run {run.id} {run.state} in {took:.1f} s{note}")
            for s in steps:
                if s.warning:
                    echo(f"drorch: warning: {s.kind} {s.workload}: {s.warning}", err=True)
            if run.state is RunState.PENDING_COMMIT and run.commit_deadline:
                echo(f"run {run.id} is pending commit until {run.commit_deadline:%Y-%m-%d %H:%M:%S} UTC: "
                           f"drorch commit {run.id} or drorch rollback {run.id}")
    elif run.state is RunState.ROLLED_BACK:
        echo(f"drorch: run {run.id} rolled back: {run.error or 'what it moved is back'}", err=True)
    else:
        failed = [s for s in steps if s.state in (StepState.FAILED, StepState.CANCELLED)]
        first = failed[0] if failed else None
        more = f" (and {len(failed) - 1} more: drorch history {run.id})" if len(failed) > 1 else ""
        said = f"{first.kind} {first.workload}: {first.error}{more}" if first else run.error or ""
        echo(f"drorch: run {run.id} {run.state}: {said}", err=True)
    raise typer.Exit(EXIT_CODES[run.state])


def _move(playbook: Path, operation: Operation, json_out: bool, disaster: bool = False,
          confirmed: bool = False, point_at: datetime | None = None) -> None:
    from drorch.model.playbook_file import read_playbook

    pb, pos = read_playbook(playbook)
    source, target = directed(pb, operation is Operation.FAILBACK)
    with _engine(pb, json_out) as engine:
        run = engine.operate(pb, str(playbook), operation, source, target, disaster, confirmed,
                             check=lambda found: refuse_findings(found, pos), point_at=point_at)
        _ended(engine.store, run, json_out)


@app.command()
def failover(
    playbook: PlaybookArg,
    disaster: Annotated[bool, typer.Option("--disaster", help="the primary is lost: start what site B holds")] = False,
    confirm_primary_down: Annotated[bool, typer.Option(
        "--confirm-primary-down", help="the operator vouches the primary runs nothing (when it cannot be fenced)",
    )] = False,
    point: PointOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move every workload of the playbook from its primary site to its secondary site."""
    if confirm_primary_down and not disaster:
        raise UsageError("--confirm-primary-down goes with --disaster")
    if point is not None and not disaster:
        raise UsageError("--point goes with --disaster: a planned failover moves the workloads as they are now")
    _move(playbook, Operation.FAILOVER, json_out, disaster, confirm_primary_down, point)


@app.command()
def failback(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Move every workload of the playbook from its secondary site home to its primary site."""
    _move(playbook, Operation.FAILBACK, json_out)


def _recorded(run_id: int) -> tuple[Store, Run, Playbook]:
    """The store, the run as it holds it (read once), and the playbook the run was started from."""
    from drorch.store.sql_store import Store

    store = Store()
    run = store.run(run_id)
    return store, run, _playbook_of(run)


def _playbook_of(run: Run) -> Playbook:
    """The playbook a recorded run was started from, read again from its path."""
    from drorch.model.playbook_file import load_playbook

    path, run_id = run.playbook_path, run.id
    try:
        return load_playbook(Path(path))
    except PlaybookError as exc:
        raise UsageError(f"run {run_id} needs its playbook {path}, which cannot be used: "
                         f"{exc.problems[0]}") from None


@app.command()
def resume(run_id: RunArg, json_out: JsonOpt = False) -> None:
    """Continue a run that was interrupted, failed or aborted: each step first checks where its workload is."""
    store, run, pb = _recorded(run_id)
    with _engine(pb, json_out, store) as engine:
        _ended(store, engine.resume(pb, run), json_out)


@app.command()
def abort(run_id: RunArg, json_out: JsonOpt = False) -> None:
    """Stop a run: moves under way are cancelled where they can be, the rest do not start."""
    store, run, pb = _recorded(run_id)
    with _engine(pb, True, store) as engine:
        run = engine.abort(pb, run)
    if json_out:
        typer.echo(json.dumps(run_json(run, engine.store.steps(run_id)), indent=2))
    else:
        echo(f"run {run_id} {run.state}")


@app.command()
def approve(run_id: RunArg) -> None:
    """Let a run that waits for approval go on with its next wave."""
    from drorch.engine import commit_window
    from drorch.store.sql_store import Store

    step = commit_window.approve(Store(), run_id, getpass.getuser())
    echo(f"run {run_id}: {step.workload} approved")


@app.command()
def commit(run_id: RunArg) -> None:
    """Make a failover that is pending commit final."""
    from drorch.engine import commit_window
    from drorch.store.sql_store import Store

    run = commit_window.commit(Store(), run_id)
    echo(f"run {run_id} committed: {run.state}")


@app.command()
def rollback(run_id: RunArg, json_out: JsonOpt = False) -> None:
    """Move back what a run moved (a failover pending commit, or one that ended)."""
    store, run, pb = _recorded(run_id)
    with _engine(pb, json_out, store) as engine:
        _ended(store, engine.rollback(pb, run), json_out)


@app.command()
def settle() -> None:
    """Decide failovers whose commit window ended, as their playbooks say (run it from cron or the daemon)."""
    from drorch.engine import commit_window
    from drorch.store.sql_store import Store

    store = Store()
    for run in commit_window.expired(store):
        pb = _playbook_of(run)
        with _engine(pb, True, store) as engine:
            done = engine.settle(pb, run)
        echo(f"run {run.id}: commit window ended: {done.state}")
