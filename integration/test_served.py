"""What `drorch daemon run --listen` serves, seen as people and Prometheus see it, on the real lab: the status page in
Debian's chromium (driven by selenium) while a failover runs, a drill's report opened from it, and /metrics parsed
by prometheus_client's own parser, checked against the state store."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from drorch.store.sql_store import Store
from integration import lab_base, labctl
from integration.support.lab_views import DRORCH, LAB_PLAYBOOK, REPO, Drorch, free_port, scrape, wait_until
from tests.support.browser import chromium, fits, rows

WORKLOADS = {lab_base.VM_NAME, *labctl.CONTAINERS}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(tmp_path / "chromium") as driver:
        yield driver


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    """The lab playbook with recovery points (an RPO of an hour) and its VM's migration slowed, so that a step's
    progress shows."""
    doc = yaml.safe_load(LAB_PLAYBOOK.read_text())
    doc["protect"] = {"interval_s": 600, "rpo_s": 3600, "keep": 2}
    doc["workloads"][0]["migration"] = {"tls": True, "bandwidth_mib_s": 4}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def daemon(state_dir: Path, playbook: Path) -> Iterator[str]:
    """A daemon serving on loopback; yields its base URL."""
    port = free_port()
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
    env.pop("DRORCH_DB_URL", None)
    proc = subprocess.Popen([str(DRORCH), "daemon", "run", str(playbook), "--listen", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or _answers(f"{base}/readyz"), "the daemon's listener")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as res:
            return bool(res.status == 200)
    except OSError:
        return False


@pytest.mark.usefixtures("fresh_lab")
def test_the_page_in_a_browser_and_a_scrape_follow_a_drill_and_a_failover(
        run_drorch: Drorch, state_dir: Path, playbook: Path, daemon: str, browser: WebDriver, tmp_path: Path) -> None:
    shipped = run_drorch("protect", "ship", str(playbook))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    drill = run_drorch("drill", str(playbook))
    assert drill.returncode == 0, drill.stdout + drill.stderr
    store = Store(f"sqlite:///{state_dir / 'drorch.db'}")

    # The page shows the drill, and its report opens from it
    browser.get(daemon)
    wait_until(lambda: "last drill: run 1" in browser.find_element(By.ID, "books").text, "the drill on the page", 20)
    browser.find_element(By.LINK_TEXT, "run 1").click()
    wait_until(lambda: browser.current_url.endswith("/runs/1"), "the drill's report", 20)
    report = browser.find_element(By.TAG_NAME, "body").text
    assert "drill" in report and all(w in report for w in WORKLOADS), report
    browser.back()

    # A failover runs: the page, left open, follows its steps without a reload
    env = {**os.environ, "DRORCH_STATE_DIR": str(state_dir)}
    env.pop("DRORCH_DB_URL", None)
    failover = subprocess.Popen([str(DRORCH), "failover", str(playbook)], env=env, cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[tuple[str, ...]] = []
    scraped = None
    while failover.poll() is None:
        now = tuple(" ".join(cells) for cells in rows(browser, "tr.step"))
        if now and (not seen or seen[-1] != now):
            seen.append(now)
        if now and scraped is None:  # the run is under way: Prometheus's view of it
            scraped = scrape(daemon)
        time.sleep(0.2)
    out, err = failover.communicate()
    assert failover.returncode == 0, out + err
    assert len(seen) >= 2, f"the page showed the run's steps only as {seen}"
    assert any("running" in row for view in seen for row in view), seen
    assert scraped is not None
    assert ({"playbook": "lab", "operation": "failover"}, 1.0) in scraped["drorch_runs_started_total"]

    # The run ends: gone from the page, every workload shown on site b, as the store and the sites say
    wait_until(lambda: browser.find_element(By.ID, "running").text == "none", "the run to leave the page", 20)
    shown = rows(browser, "tr.workload")  # kind and name, runs on, points on, RPO, target, points, newest is
    runs_on = {cells[0].split(" ", 1)[1]: cells[1] for cells in shown}
    assert {cells[6] for cells in shown} == {"crash-consistent"}, shown  # the lab's ships freeze nothing
    moved_by = store.runs_of("failover")[-1].id
    assert runs_on == {w: f"last seen on site b by run {moved_by}" for w in WORKLOADS}, shown
    assert fits(browser), "the page scrolls sideways on a phone"
    shot = tmp_path / "status-page.png"
    browser.save_screenshot(str(shot))
    print(f"status page after the failover: {shot}")
    assert shot.stat().st_size > 1000

    # A scrape agrees with the store: each workload's RPO and the runs counted. A scrape may be served a reading
    # made before the run ended (up to 60 s old): the test scrapes until one made after it is served.
    ended = max(r.ended_at.replace(tzinfo=UTC).timestamp() for r in store.runs() if r.ended_at)
    metrics: dict[str, list[tuple[dict[str, str], float]]] = {}

    def read_after_the_run() -> bool:
        metrics.update(scrape(daemon))
        return metrics["drorch_store_read_timestamp_seconds"][0][1] > ended

    wait_until(read_after_the_run, "a reading of the store made after the run ended", 30)
    points = {(p.workload, p.site): p for p in reversed(store.points("lab")) if p.complete}  # the newest of each
    ages = {(lb["workload"], lb["site"]): value for lb, value in metrics["drorch_rpo_age_seconds"]}
    assert ages.keys() == points.keys(), (ages, points)
    assert {(lab_base.VM_NAME, "b"), (labctl.CHECKPOINT_CONTAINER, "b")} <= ages.keys(), ages
    ((_, read_at),) = metrics["drorch_store_read_timestamp_seconds"]
    assert time.time() - 61 < read_at <= time.time()  # served at most stale_s (60 s) after the store was read
    for key, point in points.items():
        age = read_at - point.instant.replace(tzinfo=UTC).timestamp()  # since the instant it describes
        assert abs(ages[key] - age) < 0.01, (key, ages[key], age, points)
    assert {lb["consistency"] for lb, _ in metrics["drorch_point_newest_consistency"]} == {"crash"}
    started = {(lb["operation"]): v for lb, v in metrics["drorch_runs_started_total"]}
    assert started == {"drill": 1.0, "failover": 1.0}
    ended = {(lb["operation"], lb["outcome"]): v for lb, v in metrics["drorch_runs_ended_total"]}
    assert ended == {(r.operation, str(r.state)): 1.0 for r in store.runs()}, (ended, store.runs())
