"""The `drorch` command's root: its global options, the argument types the commands share, and the boundary
where errors become one line and an exit code.

Command modules import the engine, the store, the drivers and their libraries inside the commands that use
them: `drorch --help` loads none of it, and each command only what it needs."""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from drorch.errors import DrorchError, ExitCode, PlaybookError, printable
from drorch.redact import redact

app = typer.Typer(
    help="Move libvirt/QEMU VMs, Docker and Podman containers and LXD instances to a disaster-recovery site and back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: rich's formatter costs a tenth of a second to load
)

PlaybookArg = Annotated[Path, typer.Argument(help="the playbook (YAML)", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
MAX_RUN_ID = (1 << 63) - 1  # the store's ids are 64-bit integers
RunArg = Annotated[int, typer.Argument(help="the run's id, from drorch history", show_default=False, min=1,
                                       max=MAX_RUN_ID)]


def seconds(low: float, high: float) -> Callable[[float | None], float | None]:
    """An option's check: a finite number of seconds within [low, high] (click's ranges let nan and inf by)."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise typer.BadParameter(f"{value} is not a number of seconds from {low:g} to {high:g}")
        return value

    return check


def point_time(value: str | None) -> datetime | None:
    """--point: a time (ISO 8601; UTC unless it says its zone) or `latest`, which is the default."""
    if value is None or value == "latest":
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a time like 2026-11-30T17:48:11 nor 'latest'") from None
    try:
        return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    except OverflowError:
        raise typer.BadParameter(f"{value!r} is not a time drorch can use: in UTC it falls outside years 1 to "
                                 "9999") from None


PointOpt = Annotated[datetime | None, typer.Option(
    "--point", metavar="TIME|latest", parser=point_time,
    help="start from each workload's newest recovery point taken at or before TIME (UTC): the way back to before "
         "an infection; `drorch protect status --points` lists them")]


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Global options; --debug is read by main() before the command runs."""


MAX_LINE = 1000  # an error quoting a hostile name or path stays readable


def clamped(line: str) -> str:
    if len(line) <= MAX_LINE:
        return line
    return f"{line[:MAX_LINE - 100]}...({len(line) - MAX_LINE + 60} characters)...{line[-40:]}"


def echo(*lines: str, err: bool = False) -> None:
    """Text output, a line per argument: names from the sites and the playbook are shown with their control
    characters escaped (an ESC, a CR or a newline in a container's name cannot fake a row or move the cursor),
    and secrets in URLs masked. JSON output needs neither: json.dumps escapes them."""
    for line in lines:
        typer.echo(redact(printable(line)), err=err)


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
            typer.echo(f"{prefix}{clamped(line)}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"drorch: internal error: {exc!r} (run with --debug for the traceback)", err=True)
        sys.exit(ExitCode.FAILED)


def run() -> None:
    """The console script: main(), then out at once. Python's own teardown of the libraries' objects
    (SQLAlchemy's, pydantic's) costs a quarter of a second and does nothing of ours: by then every record is
    committed, every driver closed, every thread joined; the exit handlers still run."""
    code: int | str | None
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for thread in threading.enumerate():  # as the interpreter would before it exits
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
