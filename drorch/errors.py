"""One exception hierarchy; each error carries the exit code the CLI returns for it."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    BUSY = 4
    WARNINGS = 5  # done, but not all as asked: e.g. a checkpoint move became a redeploy


def printable(text: str) -> str:
    """A name from a file or a site, made safe to print on one line: control characters and line breaks
    (NEL and U+2028 included) are shown escaped, never acted on by a terminal; a backslash is doubled, so that a
    name holding the text `\\x1b` is told apart from one holding an ESC."""
    if text.isprintable() and "\\" not in text:  # most names: checked at C speed
        return text
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)


class DrorchError(Exception):
    """An error meant for the operator: its message is one clear line."""

    exit_code: ExitCode = ExitCode.FAILED


class PlaybookError(DrorchError):
    """The playbook cannot be used; every problem is reported as `file:line:col: message`."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = [printable(p) for p in problems]
        super().__init__("\n".join(self.problems))


class InputError(PlaybookError):
    """The file cannot be taken as input at all: not a regular file, too large, not UTF-8, or past a limit
    of the parser. Always a usage error, even where a playbook's problems are a failure (validate)."""


class PlanRefused(PlaybookError):
    """The plan has problems (a required workload does not fit, a name points nowhere): nothing was touched."""

    exit_code = ExitCode.FAILED


class SiteUnreachable(DrorchError):
    """A site's libvirt, Docker or Podman endpoint does not answer, or answers as another engine."""


class QuorumLost(DrorchError):
    """No majority of the witness cluster answered: nothing it holds (which site is active) can be known."""


class NeverChecked(DrorchError):
    """Readiness was asked before any check: not known to be ready is not ready (exit 1)."""


class MoveFailed(DrorchError):
    """A workload could not be moved; it is left where it was unless the message says otherwise."""


class MoveCancelled(MoveFailed):
    """A move stopped on request before the target took over; its own rollback left the workload on its source."""


class NamesFailed(DrorchError):
    """A workload does not answer at its new address, or a DNS server did not take or does not show a record."""


class WorkloadBusy(DrorchError):
    """Another running operation holds the workload."""

    exit_code = ExitCode.BUSY


class UsageError(DrorchError):
    """The command was given something it cannot use."""

    exit_code = ExitCode.USAGE


class NoSuchPoint(UsageError):
    """The recovery point asked for is not among those kept."""


class StoreError(DrorchError):
    """The state store cannot be used: not a database, or another program's. Nothing was written to it."""

    exit_code = ExitCode.USAGE


class NotFound(DrorchError):
    """A run, step or workload that the operator named does not exist."""

    exit_code = ExitCode.USAGE


class DamagedRow(StoreError):
    """A row of the state store holds a value drorch never writes there: named, and nothing else is read."""
