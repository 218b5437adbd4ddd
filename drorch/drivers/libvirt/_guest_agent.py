"""Commands run inside a guest through its QEMU guest agent (libvirt's agent API: guest-exec and
guest-exec-status), the one place drorch speaks the agent's protocol."""

from __future__ import annotations

import base64
import json
import time

import libvirt
import libvirt_qemu

from drorch.errors import MoveFailed

POLL_S = 0.2  # the longest pause between two looks at a command's status; the first looks come sooner
FIRST_POLL_S = 0.01


def _ask(dom: libvirt.virDomain, execute: str, timeout_s: int, **arguments: object) -> dict[str, object]:
    said = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": execute, "arguments": arguments}),
                                         max(1, timeout_s), 0)
    answer = json.loads(said).get("return")
    return answer if isinstance(answer, dict) else {}


def guest_exec(dom: libvirt.virDomain, argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Run argv in the guest with env; (exit code, what it printed). The agent is waited for (a guest that
    just booted starts it late); MoveFailed when it does not answer or the command does not end in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            started = _ask(dom, "guest-exec", 5, path=argv[0], arg=argv[1:],
                           env=[f"{k}={v}" for k, v in env.items()], **{"capture-output": True})
            break
        except libvirt.libvirtError as exc:
            if time.monotonic() > deadline:
                raise MoveFailed(f"the guest agent of {dom.name()} did not answer in {timeout_s:g} s: "
                                 f"{exc.get_error_message() or exc}") from None
            time.sleep(1.0)
    pause = FIRST_POLL_S  # most commands a move runs end within milliseconds
    while True:
        try:
            status = _ask(dom, "guest-exec-status", 5, pid=started.get("pid"))
        except libvirt.libvirtError as exc:
            raise MoveFailed(f"the guest agent of {dom.name()} stopped answering: "
                             f"{exc.get_error_message() or exc}") from None
        if status.get("exited"):
            out = b"".join(base64.b64decode(str(status.get(k) or "")) for k in ("out-data", "err-data"))
            return int(str(status.get("exitcode", -1))), out.decode(errors="replace").strip()
        if time.monotonic() > deadline:
            raise MoveFailed(f"{argv[0]} did not end inside {dom.name()} in {timeout_s:g} s")
        time.sleep(pause)
        pause = min(POLL_S, pause * 2)
