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


class DrorchError(Exception):
    """An error meant for the operator: its message is one clear line."""

    exit_code: ExitCode = ExitCode.FAILED


class PlaybookError(DrorchError):
    """The playbook cannot be used; every problem is reported as `file:line:col: message`."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class PlanRefused(PlaybookError):
    """The plan has problems (a required workload does not fit, a name points nowhere): nothing was touched."""

    exit_code = ExitCode.FAILED


class SiteUnreachable(DrorchError):
    """A site's libvirt or Docker endpoint does not answer."""


class MoveFailed(DrorchError):
    """A workload could not be moved; it is left where it was unless the message says otherwise."""


class WorkloadBusy(DrorchError):
    """Another running operation holds the workload."""

    exit_code = ExitCode.BUSY


class UsageError(DrorchError):
    """The command was given something it cannot use."""

    exit_code = ExitCode.USAGE


class NotFound(DrorchError):
    """A run, step or workload that the operator named does not exist."""

    exit_code = ExitCode.USAGE
