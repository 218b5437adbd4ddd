"""Whether the secondary may take a playbook over on its own: the conditions that need no action to be judged,
from what the secondary's daemon has seen of the witness and of the primary's hosts, in the order they must
hold. (Winning the key, fencing, readiness and the points' age follow, each an action recorded by the run.)
No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from drorch.model.auto_failover import AutoFailover


class Gate(StrEnum):
    NOT_PAUSED = "not paused"
    KEY_EXPIRED = "key expired"
    PRIMARY_SILENT = "primary silent"
    WINDOW = "window"


@dataclass(frozen=True)
class Sighting:
    """One look at the witness and at the primary's hosts."""

    at: datetime
    quorum: bool  # a majority of the cluster answered: only then is what it says of the key known
    holder: str | None  # the site whose key is live; None when it expired or was never written
    answered: frozenset[str] = frozenset()  # the primary's hosts that answered their probe


@dataclass
class Watch:
    """What the secondary has seen of one playbook: since when its key has been seen expired (through a majority)
    and since when no host of the primary has answered."""

    key_gone_since: datetime | None = None
    silent_since: datetime | None = None

    def saw(self, s: Sighting) -> None:
        if not s.quorum or s.holder is not None:
            self.key_gone_since = None  # without a majority nothing is known of the key: the wait starts again
        elif self.key_gone_since is None:
            self.key_gone_since = s.at
        self.silent_since = None if s.answered else self.silent_since or s.at


@dataclass(frozen=True)
class Verdict:
    """Each gate as it stood, in order, and the first that holds the takeover back (None: all held)."""

    gates: list[tuple[Gate, bool, str]] = field(default_factory=list)

    @property
    def waiting(self) -> Gate | None:
        return next((g for g, ok, _ in self.gates if not ok), None)

    @property
    def go(self) -> bool:
        return self.waiting is None


def judge(watch: Watch, settings: AutoFailover, now: datetime, paused: bool,
          last_automatic: datetime | None) -> Verdict:
    """The gates of an automatic failover that need no action, as they stand at `now`."""

    def lasted(since: datetime | None, needed: float) -> tuple[bool, str]:
        if since is None:
            return False, "not seen"
        held = (now - since).total_seconds()
        return held >= needed, f"{held:.0f} s of {needed:g} s"

    key = lasted(watch.key_gone_since, settings.acquire_after_s)
    silent = lasted(watch.silent_since, settings.after_s)
    window_ends = last_automatic + timedelta(seconds=settings.window_s) if last_automatic else None
    return Verdict([
        (Gate.NOT_PAUSED, not paused, "paused by drorch auto-failover pause" if paused else "armed"),
        (Gate.KEY_EXPIRED, *key),
        (Gate.PRIMARY_SILENT, *silent),
        (Gate.WINDOW, window_ends is None or now >= window_ends,
         f"the last automatic failover was at {last_automatic:%Y-%m-%d %H:%M:%S} UTC" if last_automatic
         else "no automatic failover yet"),
    ])
