"""Progress of a run as it goes: plain lines, or a live display with a bar per move on a terminal."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from drorch.cli.app import echo
from drorch.errors import printable
from drorch.model.records import StepState
from drorch.redact import redact

if TYPE_CHECKING:
    from drorch.engine.live_run import StepEvent


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
    """Progress as plain lines: one per state change, and for a running step one when what it says changes, at
    most one a second."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._last: dict[int, tuple[float, str]] = {}  # per step: when its progress was last shown, and what

    def __call__(self, ev: StepEvent) -> None:
        head = _announce(ev, self._seen)
        if head:
            echo(head)
        line = self.line(ev)
        if line:
            echo(line)

    def line(self, ev: StepEvent) -> str | None:
        step, p = ev.step, ev.progress
        where = f"[{step.seq}/{ev.total}] {step.kind} {step.workload}"
        if step.state is StepState.RUNNING and p is None:
            doing = step.strategy if step.request else step.action
            return f"{where}: {doing} started" if doing else f"{where}: started"
        if step.state is StepState.RUNNING and p is not None:
            size = f" {_mib(p.bytes_done)}/{_mib(p.bytes_total)} MiB" if p.bytes_total else ""
            said = f"{p.step}{size}".strip()
            now, (then, before) = time.monotonic(), self._last.get(step.id or 0, (0.0, ""))
            if not said or said == before or now - then < 1.0:
                return None
            self._last[step.id or 0] = (now, said)
            return f"{where}: {said}"
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
        self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                                  TimeRemainingColumn(), console=console or Console(), transient=True)
        self._tasks: dict[int, TaskID] = {}
        self._seen: set[int] = set()
        self._lines = LineReporter()
        self._progress.start()

    def __call__(self, ev: StepEvent) -> None:
        step, p = ev.step, ev.progress
        head = _announce(ev, self._seen)
        if head:
            self._say(head)
        key = step.id or 0
        if step.state is StepState.RUNNING and p is not None:
            task = self._tasks.get(key)
            label = printable(f"[{step.seq}/{ev.total}] {step.kind} {step.workload}: {p.step}")
            if task is None:
                task = self._tasks[key] = self._progress.add_task(label, total=p.bytes_total)
            self._progress.update(task, description=label, completed=p.bytes_done or 0, total=p.bytes_total)
            return
        if key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))
        line = self._lines.line(ev)
        if line:
            self._say(line)

    def _say(self, line: str) -> None:
        """Names shown as text: neither a terminal's control characters nor rich's markup act."""
        self._progress.console.print(redact(printable(line)), markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()
