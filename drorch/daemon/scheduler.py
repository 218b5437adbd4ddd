"""`drorch daemon`: an APScheduler whose jobs live in drorch's own store, run by one daemon at a time.

Several daemons may share a store (PostgreSQL); a lease row says which one runs the scheduler. The
holder renews it; when it stops renewing, another takes it over and runs what is due. Jobs missed while
no daemon ran run once (coalesced), not once per missed time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from drorch.daemon.sentinels import Watcher, watchers
from drorch.daemon.shutdown import stopping
from drorch.errors import DrorchError, NotFound, StoreError, printable
from drorch.model.playbook import Playbook
from drorch.model.playbook_file import load_playbook
from drorch.model.records import SCHEDULER_LEASE, JobKind, utcnow
from drorch.model.run_settings import Schedule
from drorch.redact import redact
from drorch.store.connect import ensure_tables
from drorch.store.sql_store import Store
from drorch.web.listener import Listen, Web
from drorch.web.metrics import StoreCollector, exposition
from drorch.web.pages import Pages

JOBS_TABLE = "scheduled_jobs"
log = logging.getLogger("drorch.daemon")


def _job(kind: JobKind) -> str:
    """The job's function as APScheduler stores it: a reference, so stored jobs survive upgrades."""
    return f"drorch.jobs:{kind.value}"


def _trigger(s: Schedule) -> IntervalTrigger | CronTrigger:
    """A schedule's trigger; the playbook's model has checked the expression or the interval."""
    if s.cron is not None:
        return CronTrigger.from_crontab(s.cron, timezone="UTC")
    return IntervalTrigger(seconds=s.every_s, timezone="UTC")


# Missed runs run once, late rather than never (APScheduler's default grace of 1 s skips a late job silently).
JOB_DEFAULTS: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


def _job_table(store: Store) -> SQLAlchemyJobStore:
    """The store's job table, made with drorch's own tables' care (in one transaction, never in a foreign
    database) before APScheduler would make it itself."""
    jobs = SQLAlchemyJobStore(engine=store.engine, tablename=JOBS_TABLE)
    ensure_tables(store.engine, [jobs.jobs_t])
    return jobs


def scheduler(store: Store, threads: int = 2) -> BackgroundScheduler:
    return BackgroundScheduler(
        jobstores={"default": _job_table(store)},
        executors={"default": {"type": "threadpool", "max_workers": threads}},
        job_defaults=JOB_DEFAULTS,
        timezone="UTC",
    )


def _job_fields(playbook: Path, s: Schedule, job_id: str) -> dict[str, Any]:
    return {"func": _job(s.job), "trigger": _trigger(s), "args": [str(playbook.resolve())], "id": job_id,
            "name": f"{s.job} {playbook.name}"}


def add_schedule(sched: BackgroundScheduler, playbook: Path, s: Schedule, job_id: str) -> Job:
    return sched.add_job(**_job_fields(playbook, s, job_id), replace_existing=True)


@contextmanager
def job_table(store: Store, owner: BackgroundScheduler | None = None) -> Iterator[SQLAlchemyJobStore]:
    """The job table read and written as rows, for a scheduler that never starts: `drorch schedule` runs no job
    and moves no other job's next run, whatever is due."""
    jobs = _job_table(store)
    jobs.start(owner or BackgroundScheduler(timezone="UTC"), "default")
    try:
        yield jobs
    finally:
        jobs.shutdown()


def store_schedule(store: Store, playbook: Path, s: Schedule, job_id: str) -> Job:
    """A schedule written into the job table (replacing one with its id); the leading daemon picks it up."""
    fields = _job_fields(playbook, s, job_id)
    owner = BackgroundScheduler(timezone="UTC")
    with job_table(store, owner) as jobs:
        job = Job(owner, **fields, **JOB_DEFAULTS, executor="default", kwargs={},
                  next_run_time=fields["trigger"].get_next_fire_time(None, datetime.now(UTC)))
        try:
            jobs.add_job(job)
        except ConflictingIdError:
            jobs.update_job(job)
    return job


def remove_schedule(store: Store, job_id: str) -> None:
    with job_table(store) as jobs:
        try:
            jobs.remove_job(job_id)
        except JobLookupError:
            raise NotFound(f"no schedule {printable(job_id)}") from None


def playbook_schedules(sched: BackgroundScheduler, path: Path, pb: Playbook) -> list[Job]:
    """The schedules a playbook carries, under ids that a later start replaces rather than duplicates."""
    return [add_schedule(sched, path, s, f"{pb.name}:{s.job}:{i}") for i, s in enumerate(pb.schedules)]


class Daemon:
    """One daemon: heartbeat, lease, and the scheduler while it holds the lease."""

    def __init__(self, store: Store, playbooks: list[Path], lease_s: float = 15.0, threads: int = 2,
                 listen: Listen | None = None, only_served: bool = False, site: str | None = None) -> None:
        self.store = store
        self.playbooks = playbooks
        self.site = site  # where this daemon runs: its sentinels act for that site (auto_failover)
        self.lease_s = lease_s
        self.threads = threads
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.sched: BackgroundScheduler | None = None
        stopping.clear()
        # Bound now: a port in use, or an address without TLS and a token, stops the daemon before it starts.
        collector = StoreCollector(store, self._served, next_runs=lambda: next_runs(store))
        self.web = None if listen is None else Web(listen, store, lambda: exposition(collector),
                                                    Pages(store, self._served, others=not only_served))
        self._loaded: dict[Path, Playbook] = {}
        self._watchers: list[Watcher] = []
        self._stop_jobs: Callable[[], None] = lambda: None  # what the jobs hold between runs, let go
        self._renewed = 0.0  # when the lease was last renewed (monotonic)

    def _files(self) -> dict[Path, Playbook]:
        """The playbooks that load, by their files, read once."""
        if not self._loaded:
            for path in self.playbooks:
                with contextlib.suppress(DrorchError):
                    self._loaded[path] = load_playbook(path)
        return self._loaded

    def _served(self) -> dict[str, Playbook]:
        """The playbooks whose RPO targets the metrics give."""
        return {pb.name: pb for pb in self._files().values()}

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Until SIGTERM or SIGINT: renew, lead or follow, and let the scheduler work."""
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        self._event("started", playbooks=[str(p) for p in self.playbooks], site=self.site,
                    listening=f"{self.web.listen.host}:{self.web.port}" if self.web else None)
        if self.web is not None:
            self.web.start()
        self._watchers = watchers(self._files(), self.site, self.store, self.identity, self.lease_s, self._event)
        for w in self._watchers:
            w.start()
        try:
            while not stopping.is_set():
                try:
                    self.tick()
                except StoreError as exc:  # locked, full, cut off: wait for it, never leave the schedules
                    self._store_failed(exc)
                if on_tick is not None:
                    on_tick()
                stopping.wait(self.lease_s / 3)
        finally:
            self.stop()

    def _store_failed(self, exc: StoreError) -> None:
        """The store did not answer a tick. The daemon stays up (serving its probes) and tries again; a leader
        that could not renew its lease for a lease's length stops leading, as every other daemon then may."""
        self._event("state store unavailable", error=str(exc))
        if self.sched is not None and time.monotonic() - self._renewed >= self.lease_s:
            self._event("lease not renewed in time: following until the store answers")
            self._follow()

    def tick(self) -> None:
        leader = self.store.lease(SCHEDULER_LEASE, self.identity, timedelta(seconds=self.lease_s))
        if leader:
            self._renewed = time.monotonic()
        self.store.heartbeat(self.identity, leader, lease_s=self.lease_s)
        if leader and self.sched is None:
            self._lead()
        elif leader and self.sched is not None:
            self.sched.wakeup()  # schedules added to the store by `drorch schedule add` since the last look
        elif not leader and self.sched is not None:
            self._event("lost the lease: following")
            self._follow()

    def _follow(self) -> None:
        """Stop scheduling; the ships under way end before this daemon's protection is let go."""
        assert self.sched is not None
        self.sched.shutdown(wait=False)
        self.sched = None
        self._stop_jobs()

    def _lead(self) -> None:
        """Clean up what drills of dead daemons left, then run the scheduler."""
        from drorch import jobs  # the drivers they load: only once this daemon leads

        jobs.clean_up_drills(self.store.gone_daemons() - {self.identity})
        self._stop_jobs = jobs.stop_protection
        sched = scheduler(self.store, self.threads)
        sched.start(paused=True)
        try:
            self._schedule(sched)
        except BaseException:  # the store failed halfway: lead again from the start next time
            sched.shutdown(wait=False)
            raise
        self.sched = sched
        jobs_ = [(j.id, j.next_run_time.isoformat() if j.next_run_time else None) for j in sched.get_jobs()]
        self._event("leading: scheduler started", jobs=jobs_)

    def _schedule(self, sched: BackgroundScheduler) -> None:
        """The playbooks' own schedules added beside those in the store, and the scheduler let go."""
        for path in self.playbooks:
            try:
                playbook = load_playbook(path)
            except DrorchError as exc:  # one broken file must not stop the others' protection
                self._event("playbook skipped", playbook=str(path), error=str(exc).splitlines()[0])
                continue
            playbook_schedules(sched, path, playbook)
        sched.add_listener(self._job_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        sched.resume()

    def _job_event(self, event: Any) -> None:
        self._event("job ended", job=event.job_id, scheduled=event.scheduled_run_time.isoformat(),
                    error=repr(event.exception) if event.exception else None)

    def stop(self) -> None:
        """Running jobs finish their current step (they watch `stopping`); then the lease is let go."""
        stopping.set()
        if self.sched is not None:
            self.sched.shutdown(wait=True)
            self.sched = None
        self._stop_jobs()
        for w in self._watchers:
            w.join()
        try:
            self.store.release_lease(SCHEDULER_LEASE, self.identity)
            self.store.heartbeat(self.identity, False, stopped=True)
        except StoreError as exc:  # the lease then ends by itself
            self._event("state store unavailable", error=str(exc))
        if self.web is not None:
            self.web.close()
        self._event("stopped")

    def _event(self, what: str, **fields: Any) -> None:
        """One structured line per event."""
        log.info(redact(json.dumps({"at": utcnow().isoformat(), "daemon": self.identity, "event": what, **fields})))


def next_runs(store: Store) -> list[tuple[str, str, datetime | None]]:
    """Jobs in the store and when each runs next, read without starting a scheduler."""
    with job_table(store) as jobs:
        return [(j.id, j.name, j.next_run_time) for j in jobs.get_all_jobs()]
