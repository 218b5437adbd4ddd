"""drorch's CLI as a person runs it: in this process (exit code, what it printed, what it said on stderr), or in a
process of its own with bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drorch import cli

REPO = Path(__file__).resolve().parents[2]
LIMITED = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from drorch.cli import main
main(sys.argv[1:])
"""


def drorch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def run_limited(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process with 1 GiB of address space: a crash, a hang or a memory blow-up shows."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", LIMITED, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
