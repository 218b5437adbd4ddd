"""An LXD move and an incremental recovery point, drorch against the hand-run `lxc` commands, on the lab. Prints
figures; asserts nothing.

Move: the lab's system container goes from site a's LXD to site b's and back each round, alternating drorch and
the bare sequence as integration/bench/failover.py does. Both do the same: stop on the source, have the target
pull it (`lxc copy --refresh SRC:NAME DST:NAME`, which refreshes the stopped copy the other site keeps from the
round before), start it there.
- drorch: its engine in-process (a run in a SQLite store, the `copy` strategy), and as the command.
Relayed: the same with site b's host marked `lxd_relay`, drorch carrying the migration's channels, beside
`lxc copy --mode relay --refresh`, where the `lxc` client carries them.

Point: a snapshot on site a sent to site b as a refresh of the stopped copy there, keeping 3:
- bare: `lxc snapshot a:NAME SNAP`, `lxc copy --refresh a:NAME b:NAME`, `lxc delete a:NAME/OLDEST` past 3;
- drorch: protect() in-process over the LXD driver (snapshot, retention, refresh, the point recorded).

`lxc` reaches both servers over HTTPS with the lab's client certificate, as drorch does.

Usage: integration/lab isolate -- .venv/bin/python integration/bench/lxd.py [--rounds N]
(the lab must be up: integration/lab up)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from drorch.drivers.lxd.lxd_driver import LxdDriver  # noqa: E402
from drorch.model.playbook import WorkloadKind  # noqa: E402
from drorch.model.playbook_file import load_playbook  # noqa: E402
from drorch.recovery.shipping import protect  # noqa: E402
from drorch.store.sql_store import Store  # noqa: E402
from integration import lab_base, lab_lxd, lab_pki, labctl  # noqa: E402
from integration.bench.failover import Mover, check, drorch_command, drorch_engine, measure, report  # noqa: E402

NAME = lab_lxd.CONTAINER
PLAYBOOK = REPO / "playbooks" / "lab-lxd.yaml"
KEEP = 3


def lxc_conf(tmp: Path) -> dict[str, str]:
    """An `lxc` client configuration naming both sites as remotes, with the lab's client certificate."""
    conf = tmp / "lxc"
    (conf / "servercerts").mkdir(parents=True)
    shutil.copyfile(lab_base.PKI / lab_pki.CLIENT, conf / "client.crt")
    shutil.copyfile(lab_base.PKI / lab_pki.CLIENT_KEY, conf / "client.key")
    remotes = {}
    for site in labctl.SITES.values():
        shutil.copyfile(lab_lxd.server_cert(site), conf / "servercerts" / f"{site.name}.crt")
        remotes[site.name] = {"addr": lab_lxd.https_url(site), "protocol": "lxd", "auth_type": "tls", "public": False}
    (conf / "config.yml").write_text(yaml.safe_dump({"default-remote": "a", "remotes": remotes}))
    return {**os.environ, "LXD_CONF": str(conf)}


def lxc(env: dict[str, str], *args: str) -> None:
    res = subprocess.run(["lxc", *args], capture_output=True, text=True, env=env)
    check(res.returncode == 0, f"lxc {' '.join(args)} failed: {res.stderr.strip()}")


def lxc_move(env: dict[str, str], mode: str = "pull") -> Mover:
    def move(src: str, dst: str) -> None:
        lxc(env, "stop", f"{src}:{NAME}")
        lxc(env, "copy", "--refresh", "--mode", mode, f"{src}:{NAME}", f"{dst}:{NAME}")
        lxc(env, "start", f"{dst}:{NAME}")
    return move


def relayed(tmp: Path) -> Path:
    """The lab's LXD playbook with site b's host marked lxd_relay."""
    doc = yaml.safe_load(PLAYBOOK.read_text())
    doc["sites"]["b"]["hosts"][0]["lxd_relay"] = True
    path = tmp / "lab-lxd-relay.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def points(rounds: int, env: dict[str, str], tmp: Path) -> None:
    pb = load_playbook(PLAYBOOK)
    store = Store(f"sqlite:///{tmp / 'points.db'}")
    times: dict[str, list[float]] = {"drorch": [], "bare": []}
    bare_snaps: list[str] = []
    driver = LxdDriver()
    try:
        protect(pb, {WorkloadKind.LXD: driver}, store)  # the first point: the whole copy, not timed
        for r in range(rounds):
            time.sleep(2)  # the counter changes its file in between, as a workload would
            start = time.perf_counter()
            shipped = protect(pb, {WorkloadKind.LXD: driver}, store).points
            times["drorch"].append(time.perf_counter() - start)
            check(all(p.complete for p in shipped), f"ship {r + 1} did not complete")
            time.sleep(2)
            snap = f"bench-{r}"
            start = time.perf_counter()
            lxc(env, "snapshot", f"a:{NAME}", snap)
            lxc(env, "copy", "--refresh", f"a:{NAME}", f"b:{NAME}")
            bare_snaps.append(snap)
            if len(bare_snaps) > KEEP:
                lxc(env, "delete", f"a:{NAME}/{bare_snaps.pop(0)}")
            times["bare"].append(time.perf_counter() - start)
            print(f"round {r + 1}/{rounds} incremental point: drorch {times['drorch'][-1]:.2f}, "
                  f"bare {times['bare'][-1]:.2f} s", flush=True)
    finally:
        driver.close()
    ours, bare = statistics.median(times["drorch"]), statistics.median(times["bare"])
    print(f"  {'LXD incremental point':<34} a->b  drorch {ours:6.2f}   bare {bare:6.2f}   ratio {ours / bare:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    labctl.cmd_up(argparse.Namespace(reset=True, containers_only=True))
    time.sleep(2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = lxc_conf(tmp)
        pairs = {
            "LXD copy, in-process": (drorch_engine(PLAYBOOK, tmp, WorkloadKind.LXD), lxc_move(env)),
            "LXD copy, commands": (drorch_command(PLAYBOOK, tmp), lxc_move(env)),
            "LXD copy relayed, in-process": (drorch_engine(relayed(tmp), tmp, WorkloadKind.LXD),
                                             lxc_move(env, "relay")),
        }
        report(args.rounds, measure(args.rounds, pairs))
        labctl.cmd_up(argparse.Namespace(reset=True, containers_only=True))  # no copy on b: the first point is whole
        points(args.rounds, env, tmp)


if __name__ == "__main__":
    main()
