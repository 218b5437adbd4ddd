"""The group's hooks that stop the lab writer (`integration.seq_writer`) at a transaction's end for a cut and let
it go on after: standard library only, so a hook costs a Python start and little more. Files in DIR: pause
(asked), paused (done: the last n written), cuts (each cut's n, appended by `pause`).

    python -m integration.seq_control pause DIR | resume DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

WAIT_S = 20.0


def pause(folder: Path) -> int:
    (folder / "pause").touch()
    deadline = time.monotonic() + WAIT_S
    while not (folder / "paused").exists():
        if time.monotonic() > deadline:
            raise SystemExit("the writer did not stop at a transaction's end")
        time.sleep(0.002)
    return int((folder / "paused").read_text())


def resume(folder: Path) -> None:
    (folder / "pause").unlink(missing_ok=True)


if __name__ == "__main__":
    verb, where = sys.argv[1], Path(sys.argv[2])
    if verb == "pause":
        with (where / "cuts").open("a") as f:
            f.write(f"{pause(where)}\n")
    else:
        resume(where)
