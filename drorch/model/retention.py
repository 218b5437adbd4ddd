"""Which recovery points are kept: the newest few, and tiers that thin older points out with age.

A tier keeps, among the points younger than its `for_s`, the newest point of each `every_s` period (periods
aligned on the UTC epoch, so they do not move as points come and go). Each rule only ever lets a point go as
time passes, never takes one back; so thinning at every ship keeps exactly what the rules would choose from
every point ever taken, whatever the ship times were. No I/O here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from typing import TypeVar

from pydantic import Field

from drorch.model._strict import Model
from drorch.model.limits import MAX_PERIOD_S
from drorch.model.records import naive

K = TypeVar("K", bound=Hashable)
_EPOCH = datetime(1970, 1, 1)  # periods are counted from it, in UTC (times here are naive UTC)


class RetentionTier(Model):
    """One tier of retention: one point per period, for a time."""

    every_s: float = Field(0, ge=0, le=MAX_PERIOD_S,
                           description="one point (the newest) per period of this many seconds, periods aligned on "
                                       "UTC; 0 keeps every point")
    for_s: float = Field(gt=0, le=10 * MAX_PERIOD_S, description="for points younger than this many seconds")


def tier_problems(tiers: Sequence[RetentionTier]) -> list[str]:
    """What makes a list of tiers read as other than meant: each tier reaches further back than the one before,
    with periods no shorter."""
    problems = []
    for before, tier in itertools.pairwise(tiers):
        if tier.for_s <= before.for_s:
            problems.append(f"tier for {tier.for_s:g} s comes after one for {before.for_s:g} s: list tiers from "
                            "the youngest points to the oldest")
        if tier.every_s < before.every_s:
            problems.append(f"tier every {tier.every_s:g} s keeps more points than the younger tier before it "
                            f"(every {before.every_s:g} s)")
    return problems


def kept(points: Iterable[tuple[K, datetime]], now: datetime, keep: int, tiers: Sequence[RetentionTier]) -> set[K]:
    """The points kept at `now` of `points` (each a key and the instant it describes): the `keep` newest, the
    newest point at all, and each tier's choice."""
    ordered = sorted(((key, naive(at)) for key, at in points), key=lambda p: p[1], reverse=True)
    chosen = {key for key, _ in ordered[:max(keep, 1)]}
    for tier in tiers:
        seen: set[Hashable] = set()
        for key, at in ordered:
            if (naive(now) - at).total_seconds() >= tier.for_s:
                break
            period = math.floor((at - _EPOCH).total_seconds() / tier.every_s) if tier.every_s else key
            if period not in seen:
                seen.add(period)
                chosen.add(key)
    return chosen
