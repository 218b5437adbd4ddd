"""What the daemon's listener shows a person, read from the state store: the live status page at / with the
document it refreshes from (/status.json), and a run's report at /runs/ID (the page `drorch report --html`
writes)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from drorch import report, status_page
from drorch.errors import NotFound
from drorch.observed import read
from drorch.playbook import Playbook
from drorch.store import Store

RUN_PAGE = re.compile(r"/runs/([0-9]{1,18})")
HTML = "text/html; charset=utf-8"


def page(store: Store, path: str, playbooks: Callable[[], Mapping[str, Playbook]]) -> tuple[int, str, str] | None:
    """The page at `path`: its HTTP status, content type and body; None when nothing is served there."""
    if path in ("/", "/status.json"):
        doc = status_page.document(read(store), playbooks(), store)
        if path == "/":
            return 200, HTML, status_page.page(doc)
        return 200, "application/json", json.dumps(doc)
    found = RUN_PAGE.fullmatch(path)
    if found is None:
        return None
    try:
        run = store.run(int(found[1]))
    except NotFound:
        return 404, HTML, f"<!DOCTYPE html><title>no such run</title><p>No run {int(found[1])} in the store.</p>\n"
    return 200, HTML, report.html(report.timeline(run, store.steps(run.id or 0)))
