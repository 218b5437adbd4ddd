"""What the daemon's listener shows a person, read from the state store: the live status page at / with the
document it refreshes from (/status.json), and a run's report at /runs/ID (the page `drorch report --html`
writes)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from drorch.errors import NotFound
from drorch.model import run_report
from drorch.model.playbook import Playbook
from drorch.store.sql_store import Store
from drorch.web import _status_page
from drorch.web._cached_reading import Fresh
from drorch.web._readings import read

RUN_PAGE = re.compile(r"/runs/([0-9]{1,18})")
HTML = "text/html; charset=utf-8"


class Pages:
    """The pages at their paths. The status document is read as the listener's metrics are (a cached reading),
    however many look at it; a run's report is read when asked."""

    def __init__(self, store: Store, playbooks: Callable[[], Mapping[str, Playbook]], max_age_s: float = 1.0,
                 stale_s: float = 60.0, others: bool = True) -> None:
        """`others`: whether the status page also shows the store's playbooks that the daemon does not serve."""
        self.store = store
        self._status = Fresh(lambda: self._render(playbooks, others), max_age_s, stale_s)

    def _render(self, playbooks: Callable[[], Mapping[str, Playbook]], others: bool) -> tuple[str, str]:
        doc = _status_page.document(read(self.store), playbooks(), self.store, others)
        return json.dumps(doc), _status_page.page(doc)

    def __call__(self, path: str) -> tuple[int, str, str] | None:
        """The page at `path`: its HTTP status, content type and body; None when nothing is served there."""
        if path in ("/", "/status.json"):
            doc, page = self._status.get()
            return (200, HTML, page) if path == "/" else (200, "application/json", doc)
        found = RUN_PAGE.fullmatch(path)
        if found is None:
            return None
        try:
            run = self.store.run(int(found[1]))
        except NotFound:
            return 404, HTML, f"<!DOCTYPE html><title>no such run</title><p>No run {int(found[1])} in the store.</p>\n"
        return 200, HTML, run_report.html(run_report.timeline(run, self.store.steps(run.id or 0)))
