"""Whether a flood of page requests holds up the scheduler's jobs. Prints figures; asserts nothing.

The daemon's listener (drorch.web.listener and drorch.web.pages, as `drorch daemon run --listen` builds them) serves
a store of 1,000 workloads (--workloads) beside an APScheduler BackgroundScheduler running a job every 0.25 s, as the
daemon's own scheduler does. Each job's start is compared with the time it was due, first with the listener idle, then
while rounds of 1,000 requests for the status page arrive at once, each on its own connection, from another
process.

Usage: integration/bench/pages.py [--seconds S] [--parallel N] [--workloads N]   (needs no lab)
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from multiprocessing import Queue
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from drorch.web.listener import Listen, Web
from drorch.web.metrics import StoreCollector, exposition
from drorch.web.pages import Pages
from integration.bench.metrics import estate


def lateness(seconds: float) -> list[float]:
    """Each job's start minus its due time, over `seconds`."""
    late: list[float] = []

    def done(event: JobExecutionEvent) -> None:
        late.append((event.retval - event.scheduled_run_time).total_seconds())

    sched = BackgroundScheduler(timezone=UTC)
    sched.add_listener(done, EVENT_JOB_EXECUTED)
    sched.add_job(lambda: datetime.now(UTC), "interval", seconds=0.25, max_instances=1, misfire_grace_time=None)
    sched.start()
    time.sleep(seconds)
    sched.shutdown()
    return late


def flood(url: str, parallel: int, seconds: float, answers: Queue[tuple[int, int, float]]) -> None:
    """Rounds of `parallel` requests at once for `seconds`, from a process of its own as browsers would be: how many
    were answered 200, how many in all, in how long."""
    ok = total = 0
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        start = threading.Barrier(parallel)
        codes: list[int] = []
        threads = [threading.Thread(target=one, args=(url, start, codes)) for _ in range(parallel)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ok, total = ok + codes.count(200), total + len(codes)
    answers.put((ok, total, time.perf_counter() - t))


def one(url: str, start: threading.Barrier, codes: list[int]) -> None:
    start.wait()
    try:
        with urllib.request.urlopen(url, timeout=60) as res:
            res.read()
            codes.append(res.status)
    except OSError:
        codes.append(0)


def said(late: list[float]) -> str:
    ms = sorted(x * 1000 for x in late)
    return (f"{len(ms)} jobs, late by {statistics.median(ms):.1f} ms median, {ms[int(len(ms) * 0.99) - 1]:.1f} ms "
            f"p99, {ms[-1]:.1f} ms at most")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--parallel", type=int, default=1000)
    ap.add_argument("--workloads", type=int, default=1000)
    args = ap.parse_args()
    with estate(args.workloads) as (store, _):
        web = Web(Listen("127.0.0.1", 0), store, lambda: exposition(StoreCollector(store, dict)),
                  Pages(store, dict))
        web.start()
        try:
            idle = lateness(args.seconds)
            answers: Queue[tuple[int, int, float]] = multiprocessing.get_context("spawn").Queue()
            flooding = multiprocessing.get_context("spawn").Process(
                target=flood, args=(f"http://127.0.0.1:{web.port}/", args.parallel, args.seconds, answers))
            flooding.start()
            busy = lateness(args.seconds)
            ok, total, took = answers.get()
            flooding.join()
        finally:
            web.close()
    print(f"pages: the scheduler's jobs (every 0.25 s) beside the listener of {args.workloads:,} workloads, "
          f"{args.seconds:.0f} s each:\n"
          f"  idle listener:                          {said(idle)}\n"
          f"  {args.parallel:,} page requests at once, in rounds: {said(busy)}\n"
          f"  requests answered 200: {ok:,} of {total:,} ({ok / took:.0f} a second)")


if __name__ == "__main__":
    main()
