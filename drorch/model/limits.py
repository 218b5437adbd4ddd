"""Bounds of the numbers drorch takes from playbooks, snapshots and options: each is finite (no .inf or .nan) and
far beyond any real use, so that no later sum, product or sleep overflows or waits for ever."""

from __future__ import annotations

DAY_S = 86_400.0
MAX_WAIT_S = 7 * DAY_S  # a timeout, a hold or a delay
MAX_PERIOD_S = 366 * DAY_S  # an interval, an RPO, a commit window
MAX_ANSWER_S = 3_600.0  # a site's time to answer the inventory
MAX_COUNT = 1_000_000  # priorities, retries, parallel moves, points kept, vCPUs
MAX_MIB = 1 << 40  # memory
MAX_RATIO = 1_000.0  # overcommit
MAX_PORT = 65_535
