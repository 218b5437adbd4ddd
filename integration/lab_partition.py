"""Partitions between the lab's three places (site a, site b, the witness) on loopback. Each place's processes
(its etcd member, and the drorch daemons a test runs beside it) run under a uid of the place's own, and `cut X Y`
drops, in one nftables table of the lab's, every packet of a connection a process of X opened to Y's address (or
one of Y to X's), both ways: such a connection hangs, as across a real partition, opened before the cut or after.
`heal` drops nothing again. Root's connections (the sites' daemons, the tests' own looks) are never cut, and
nothing leaves loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration import lab_pki
from integration.lab_base import LAB, PKI, log

TABLE = "drorch_lab"
GROUP = 64100  # the places' processes share the lab's group: a test's state store is theirs together
CUTS = LAB / "cuts.json"


@dataclass(frozen=True)
class Place:
    name: str
    uid: int
    address: str  # the loopback address its site's daemons and its etcd member listen on

    @property
    def home(self) -> Path:
        """Its processes' home: their copies of the lab's client certificate and what a test gives them."""
        return LAB / "places" / self.name


PLACES = {p.name: p for p in (Place("a", 64101, "127.0.0.1"), Place("b", 64102, "127.0.0.2"),
                              Place("witness", 64103, "127.0.0.3"))}


def as_place(name: str) -> dict[str, Any]:
    """subprocess.Popen's arguments that run a process as the place's own (files it makes shared with the
    lab's group)."""
    p = PLACES[name]
    return {"user": p.uid, "group": GROUP, "extra_groups": [], "umask": 0o007,
            "env": {**os.environ, "HOME": str(home(name))}}


def home(name: str) -> Path:
    """The place's home, made once, holding its own copy of the lab's CA and client certificate (libvirt's
    names too), readable by it alone."""
    p = PLACES[name]
    pki = p.home / "pki"
    if not (pki / lab_pki.CLIENT_KEY).exists():
        pki.mkdir(parents=True, exist_ok=True)
        for name_ in {lab_pki.CA, lab_pki.CLIENT, lab_pki.CLIENT_KEY, *lab_pki.LIBVIRT_CLIENT}:
            shutil.copy(PKI / name_, pki / name_)
        for path in (p.home, pki, *pki.iterdir()):
            os.chown(path, p.uid, GROUP)
        for key in pki.glob("*key.pem"):
            key.chmod(0o600)
    return p.home


def shared(folder: Path) -> Path:
    """A folder every place's processes may write (a state store several daemons share)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, 0, GROUP)
    folder.chmod(0o2770)
    return folder


def cuts() -> set[tuple[str, str]]:
    return {(x, y) for x, y in json.loads(CUTS.read_text())} if CUTS.exists() else set()


def ensure() -> None:
    """The lab's table, with what it cuts now: from `lab up` on, so that every connection a place's process opens
    is marked as that place's, and a later cut ends it too."""
    _apply(cuts())


def cut(x: str, y: str) -> None:
    """Every path between places x and y cut, the cuts made before kept."""
    _apply(cuts() | {(min(x, y), max(x, y))})
    log(f"cut {x} from {y}: {', '.join(f'{a}-{b}' for a, b in sorted(cuts()))} cut")


def heal() -> None:
    """Every cut the lab made, gone; the connections stay marked."""
    _apply(set())
    log("healed: no place cut from another")


def down() -> None:
    """The lab's table gone (`lab down`)."""
    if TABLE in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout:
        _nft(f"delete table inet {TABLE}\n")
    CUTS.unlink(missing_ok=True)


def _apply(pairs: set[tuple[str, str]]) -> None:
    """The table made anew. A connection that a place's process opens is marked with its uid (conntrack keeps the
    mark for both directions); a cut between X and Y drops, of a connection X opened, what goes to Y's address and
    what comes back from it, and the same for Y. Loopback gives every connection the source 127.0.0.1, so a reply
    is told by its sender's address, never by where it goes."""
    marks = [f"    ct state new meta skuid {p.uid} ct mark set {p.uid}" for p in PLACES.values()]
    drops = [f"    ct direction original ct mark {PLACES[s].uid} ip daddr {PLACES[d].address} drop\n"
             f"    ct direction reply ct mark {PLACES[s].uid} ip saddr {PLACES[d].address} drop"
             for pair in sorted(pairs) for s, d in (pair, pair[::-1])]
    rules = "\n".join([*marks, *drops])
    _nft(f"table inet {TABLE} {{}}\nflush table inet {TABLE}\ntable inet {TABLE} {{\n  chain out {{\n"
         f"    type filter hook output priority 0; policy accept;\n{rules}\n  }}\n}}\n")
    CUTS.write_text(json.dumps(sorted(pairs)))


def _nft(ruleset: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"[lab] nft refused the lab's rules: {done.stderr.strip()}")
