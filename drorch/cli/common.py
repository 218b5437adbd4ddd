"""What several commands share: drivers for a playbook, the progress display, the way a run is shown."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drorch.cli.app import echo
from drorch.model.records import RunState
from drorch.process import run_alive

if TYPE_CHECKING:
    from pathlib import Path

    from drorch.drivers.base import Driver
    from drorch.engine.live_run import Reporter
    from drorch.model.playbook import Playbook, WorkloadKind
    from drorch.model.playbook_file import Positions
    from drorch.plan.inventory import Snapshot
    from drorch.plan.planner import Plan
    from drorch.plan.preflight import Finding
    from drorch.store.rows import Run, Step


def drivers(pb: Playbook) -> contextlib.AbstractContextManager[dict[WorkloadKind, Driver]]:
    """The real drivers of the kinds the playbook uses, closed afterwards."""
    from drorch.drivers import playbook_drivers

    return playbook_drivers(pb)


def live_snapshot(pb: Playbook) -> Snapshot:
    from drorch.reach import snapshot

    with drivers(pb) as found:
        return snapshot(pb, found)


def saved_snapshot(path: Path) -> Snapshot:
    from pydantic import ValidationError

    from drorch import input_limits
    from drorch.errors import UsageError
    from drorch.plan.inventory import Snapshot

    text = input_limits.read_text(path, input_limits.MAX_SNAPSHOT_BYTES)
    try:
        return Snapshot.from_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the document"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        why = f"{where}: {first['msg']}{more}"
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:200]
    raise UsageError(f"{path} is not an inventory snapshot from drorch inventory --json: {why}")


@contextlib.contextmanager
def progress_shown(json_out: bool) -> Iterator[Reporter | None]:
    """None for --json; a live display on a terminal; else plain lines."""
    if json_out:
        yield None
        return
    from drorch.cli.progress import LineReporter, RichReporter

    if not sys.stdout.isatty():
        yield LineReporter()
        return
    rich = RichReporter()
    try:
        yield rich
    finally:
        rich.close()


def directed(pb: Playbook, back: bool) -> tuple[str, str]:
    return (pb.secondary, pb.primary) if back else (pb.primary, pb.secondary)


def refuse(plan: Plan, pos: Positions) -> None:
    from drorch.errors import PlanRefused

    if plan.problems:
        raise PlanRefused([f"{pos.where(loc)}: {msg}" for loc, msg in plan.problems])


def refuse_findings(findings: list[Finding], pos: Positions) -> None:
    """What validate says, as it says it: each warning printed, and any error refuses (exit 1)."""
    from drorch.errors import PlanRefused

    for f in findings:
        if not f.error:
            echo(f"{pos.where(f.loc)}: warning: {f.message}", err=True)
    errors = [f"{pos.where(f.loc)}: {f.message}" for f in findings if f.error]
    if errors:
        raise PlanRefused(errors)


def run_json(run: Run, steps: list[Step]) -> dict[str, Any]:
    return {**run.model_dump(mode="json"),
            "steps": [s.model_dump(mode="json", exclude={"handle", "request"}) for s in steps]}


def shown_state(state: RunState, host: str, pid: int) -> str:
    """A run's state as an operator needs it: one whose process died is interrupted, not running."""
    if state is RunState.RUNNING and not run_alive(host, pid, socket.gethostname()):
        return "interrupted (drorch resume or drorch abort)"
    return str(state)
