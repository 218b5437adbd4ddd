"""What the daemon's listener shows a person, read from the state store: a run's report at /runs/ID (the page
`drorch report --html` writes)."""

from __future__ import annotations

import re

from drorch import report
from drorch.errors import NotFound
from drorch.store import Store

RUN_PAGE = re.compile(r"/runs/([0-9]{1,18})")


def page(store: Store, path: str) -> tuple[int, str] | None:
    """The page at `path` with its HTTP status, or None when nothing is served there."""
    found = RUN_PAGE.fullmatch(path)
    if found is None:
        return None
    try:
        run = store.run(int(found[1]))
    except NotFound:
        return 404, f"<!DOCTYPE html><title>no such run</title><p>No run {int(found[1])} in the store.</p>\n"
    return 200, report.html(report.timeline(run, store.steps(run.id or 0)))
