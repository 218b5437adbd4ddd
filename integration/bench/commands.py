"""How long drorch's quick commands take as an operator runs them, start-up included. Prints figures;
asserts nothing.

`drorch --help`, and `drorch history` (the last 20 runs, and one run's steps) against a state store of
200 runs, each command started as a process, median of 9; beside them the bare interpreter starting.

Usage: integration/bench/commands.py   (needs no lab)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.model.records import RunState, StepState  # noqa: E402
from drorch.store.rows import Run, Step  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402

DRORCH = REPO / ".venv" / "bin" / "drorch"
REPEAT = 9


def timed(argv: list[str], env: dict[str, str]) -> float:
    runs = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "DRORCH_STATE_DIR": state}
        env.pop("DRORCH_DB_URL", None)
        store = Store(f"sqlite:///{Path(state) / 'drorch.db'}")
        for i in range(200):
            store.add_run(Run(operation="failover", playbook="shop", playbook_path="shop.yaml", source_site="a",
                              target_site="b", state=RunState.SUCCEEDED, pid=1, host="elsewhere"),
                          [Step(run_id=0, seq=n, workload=f"w{i}-{n}", kind="vm", strategy="live", source_site="a",
                                target_site="b", state=StepState.SUCCEEDED) for n in range(1, 11)])
        store.engine.dispose()
        bare = timed([sys.executable, "-c", "pass"], env)
        for args in (["--help"], ["history"], ["history", "100"]):
            took = timed([str(DRORCH), *args], env)
            print(f"command: drorch {' '.join(args):<12} {took * 1000:4.0f} ms (median of {REPEAT}; Python itself "
                  f"starts in {bare * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
