"""Hooks: commands (argv, never a shell) and HTTP or TCP checks, each with a timeout, retries and on_error."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from drorch.model.run_settings import Hook, OnError
from drorch.redact import redact


@dataclass(frozen=True)
class HookResult:
    hook: Hook
    ok: bool
    message: str
    attempts: int

    @property
    def fatal(self) -> bool:
        return not self.ok and self.hook.on_error is OnError.FAIL

    def line(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.hook.label}: {'ok' if self.ok else 'failed'}{tries}{': ' + self.message if self.message else ''}"


def _inherited() -> dict[str, str]:
    """drorch's environment minus the store's URL, which may hold its password: a hook has no use for it."""
    return {k: v for k, v in os.environ.items() if k != "DRORCH_DB_URL"}


def _attempt(hook: Hook, env: Mapping[str, str]) -> str | None:
    """One try; None when it passed, else why not."""
    if hook.run is not None:
        try:
            done = subprocess.run(hook.run, env={**_inherited(), **env}, capture_output=True, text=True,
                                  timeout=hook.timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"no exit within {hook.timeout:g} s"
        except OSError as exc:
            return f"cannot run it: {exc.strerror or exc}"
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            return f"exit {done.returncode}{': ' + redact(said[-1]) if said else ''}"
        return None
    if hook.http is not None:
        try:
            with urllib.request.urlopen(hook.http, timeout=hook.timeout) as res:
                status = int(res.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            return redact(str(getattr(exc, "reason", exc)))
        return None if 200 <= status < 300 else f"HTTP {status}"
    assert hook.tcp is not None
    host, _, port = hook.tcp.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=hook.timeout):
            return None
    except (OSError, ValueError) as exc:
        return str(exc)


def run_hook(hook: Hook, env: Mapping[str, str]) -> HookResult:
    why: str | None = None
    for attempt in range(1, hook.retries + 2):
        why = _attempt(hook, env)
        if why is None:
            return HookResult(hook, True, "", attempt)
        if attempt <= hook.retries:
            time.sleep(hook.delay)
    return HookResult(hook, False, why or "", hook.retries + 1)


def run_hooks(hooks: Sequence[Hook], env: Mapping[str, str]) -> list[HookResult]:
    """Hooks in order; the first one that fails with on_error: fail stops the rest."""
    results = []
    for hook in hooks:
        results.append(run_hook(hook, env))
        if results[-1].fatal:
            break
    return results
