"""The daemon's state in Prometheus's text format, through prometheus_client: read from the state store at each
scrape (drorch.web._readings), never from the sites. Names follow Prometheus's conventions: the drorch_ prefix, base
units (seconds, bytes), counters ending in _total."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from drorch.errors import printable
from drorch.model.playbook import Playbook
from drorch.model.records import FINAL_RUN_STATES, naive
from drorch.model.run_settings import Schedule
from drorch.store.sql_store import Store
from drorch.web._readings import DURATION_BUCKETS, Histogram, Readings, read

WORKLOAD = ["playbook", "kind", "workload", "site"]


class StoreCollector(Collector):
    """Every metric, made anew from one read of the store at each scrape."""

    def __init__(self, store: Store, playbooks: Callable[[], Mapping[str, Playbook]],
                 names: Sequence[str] | None = None,
                 next_runs: Callable[[], list[tuple[str, str, datetime | None]]] | None = None) -> None:
        self.store = store
        self.playbooks = playbooks  # name -> playbook: RPO targets come from the playbooks themselves
        self.names = names  # only these playbooks' metrics (None: every playbook in the store)
        self.next_runs = next_runs

    def collect(self) -> Iterator[Metric]:
        """Every metric, label values shown as drorch prints names: control characters and backslashes escaped
        (the text format itself escapes only newlines, quotes and backslashes)."""
        for metric in self._collect():
            for i, s in enumerate(metric.samples):
                if not all(v.isprintable() and "\\" not in v for v in s.labels.values()):
                    metric.samples[i] = s._replace(labels={k: printable(v) for k, v in s.labels.items()})
            yield metric

    def _collect(self) -> Iterator[Metric]:
        seen, playbooks = read(self.store, self.names), self.playbooks()
        read_at = GaugeMetricFamily("drorch_store_read_timestamp_seconds",
                                    "When the state store was read for these figures (Unix time)")
        read_at.add_metric([], epoch(seen.at))
        yield read_at
        yield from points(seen, playbooks)
        yield from schedules(playbooks)
        yield from readiness(seen)
        yield from drills(seen)
        yield from runs(seen)
        yield from daemons(seen)
        yield from takeovers(seen)
        if self.next_runs is not None:
            jobs = GaugeMetricFamily("drorch_job_next_run_timestamp_seconds",
                                     "When each scheduled job runs next (Unix time)", labels=["job", "name"])
            for job, name, at in self.next_runs():
                if at is not None:
                    jobs.add_metric([job, name], at.timestamp())
            yield jobs


def points(seen: Readings, playbooks: Mapping[str, Playbook]) -> Iterator[Metric]:
    now = naive(seen.at)
    age = GaugeMetricFamily("drorch_rpo_age_seconds", "Age of the newest complete recovery point", labels=WORKLOAD)
    target = GaugeMetricFamily("drorch_rpo_target_seconds", "The playbook's RPO target", labels=WORKLOAD)
    newest = GaugeMetricFamily("drorch_point_newest_timestamp_seconds", "When the newest point was taken",
                               labels=WORKLOAD)
    size = GaugeMetricFamily("drorch_point_newest_bytes", "Bytes the newest point shipped", labels=WORKLOAD)
    info = GaugeMetricFamily("drorch_point_newest_info", "What the newest point is: full or incremental",
                             labels=[*WORKLOAD, "point_kind"])
    kept = GaugeMetricFamily("drorch_points_kept", "Complete recovery points the store records", labels=WORKLOAD)
    worth = GaugeMetricFamily("drorch_point_newest_consistency", "What a restart from the newest point finds: "
                              "crash, filesystem or application-consistent; its group's cut, if any",
                              labels=[*WORKLOAD, "consistency", "cut"])
    worst = GaugeMetricFamily("drorch_playbook_rpo_age_seconds", "The playbook's RPO on the site: the age of the "
                              "oldest among its workloads' newest points", labels=["playbook", "site"])
    skipped = CounterMetricFamily("drorch_protect_skipped", "Ships not begun because the workload's last one still "
                                  "ran", labels=["playbook", "kind", "workload"])
    oldest: dict[tuple[str, str], float] = {}
    for p in seen.points:
        labels = [p.playbook, p.kind, p.workload, p.site]
        oldest[(p.playbook, p.site)] = max(oldest.get((p.playbook, p.site), 0.0), (now - p.at).total_seconds())
        age.add_metric(labels, (now - p.at).total_seconds())
        pb = playbooks.get(p.playbook)
        if pb is not None and pb.protect is not None and pb.protect.target_s is not None:
            target.add_metric(labels, pb.protect.target_s)
        newest.add_metric(labels, epoch(p.taken_at))
        if p.size_bytes is not None:
            size.add_metric(labels, p.size_bytes)
        info.add_metric([*labels, p.point_kind or "point"], 1)
        kept.add_metric(labels, p.kept)
        worth.add_metric([*labels, p.consistency, p.cut or ""], 1)
    for (book, site), age_s in oldest.items():
        worst.add_metric([book, site], age_s)
    for s in seen.skipped:
        skipped.add_metric([s.playbook, s.kind, s.workload], s.count)
    yield from (age, target, newest, size, info, kept, worth, worst, skipped)


def readiness(seen: Readings) -> Iterator[Metric]:
    ready = GaugeMetricFamily("drorch_ready", "Whether a failover would work, at the last check (1 or 0)",
                              labels=["playbook"])
    checked = GaugeMetricFamily("drorch_readiness_checked_timestamp_seconds", "When readiness was last checked",
                                labels=["playbook"])
    up = GaugeMetricFamily("drorch_site_up", "Whether every host of the site answered at the last check (1 or 0)",
                           labels=["playbook", "site"])
    host_up = GaugeMetricFamily("drorch_host_up", "Whether the host answered at the last check (1 or 0)",
                                labels=["playbook", "site", "host"])
    right = GaugeMetricFamily("drorch_dns_record_right", "Whether the DNS record names the site its workload runs "
                              "on, as a run there would have made it, at the last readiness check (1 or 0)",
                              labels=["playbook", "record", "type", "workload"])
    for r in seen.readiness:
        for d in r.records:
            right.add_metric([r.playbook, str(d.get("name")), str(d.get("type")), str(d.get("workload"))],
                             1.0 if d.get("right") else 0.0)
        ready.add_metric([r.playbook], 1.0 if r.ready else 0.0)
        checked.add_metric([r.playbook], epoch(r.checked_at))
        sites: dict[str, bool] = {}
        for h in r.hosts:
            sites[h["site"]] = sites.get(h["site"], True) and bool(h["answered"])
            host_up.add_metric([r.playbook, h["site"], h["host"]], 1.0 if h["answered"] else 0.0)
        for site, answered in sorted(sites.items()):
            up.add_metric([r.playbook, site], 1.0 if answered else 0.0)
    yield from (ready, checked, up, host_up, right)


def schedules(playbooks: Mapping[str, Playbook]) -> Iterator[Metric]:
    """How often each playbook's own schedules run: an alert knows from it when a drill is overdue."""
    every = GaugeMetricFamily("drorch_schedule_interval_seconds", "Seconds between runs of the playbook's schedule "
                              "(for a cron schedule, between its next two runs)", labels=["playbook", "job"])
    for name, pb in sorted(playbooks.items()):
        for s in pb.schedules:
            every.add_metric([name, str(s.job)], interval_s(s))
    yield every


def interval_s(s: Schedule) -> float:
    if s.every_s is not None:
        return s.every_s
    from apscheduler.triggers.cron import CronTrigger  # the scheduler's own reading of the expression

    trigger = CronTrigger.from_crontab(s.cron or "", timezone="UTC")
    first = trigger.get_next_fire_time(None, datetime.now(UTC))
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    return (second - first).total_seconds() if first and second else 0.0


def drills(seen: Readings) -> Iterator[Metric]:
    passed = GaugeMetricFamily("drorch_drill_last_success", "Whether the last drill passed (1 or 0)",
                               labels=["playbook"])
    rto = GaugeMetricFamily("drorch_drill_last_rto_seconds", "RTO the last drill achieved", labels=["playbook"])
    when = GaugeMetricFamily("drorch_drill_last_timestamp_seconds", "When the last drill started",
                             labels=["playbook"])
    for d in seen.drills:
        passed.add_metric([d.playbook], 1.0 if d.passed else 0.0)
        when.add_metric([d.playbook], epoch(d.started_at))
        if d.rto_s is not None:
            rto.add_metric([d.playbook], d.rto_s)
    yield from (passed, rto, when)


def runs(seen: Readings) -> Iterator[Metric]:
    started = CounterMetricFamily("drorch_runs_started", "Runs started", labels=["playbook", "operation"])
    ended = CounterMetricFamily("drorch_runs_ended", "Runs ended, by outcome",
                                labels=["playbook", "operation", "outcome"])
    begun: dict[tuple[str, str], int] = {}
    final = {str(s) for s in FINAL_RUN_STATES}
    for playbook, operation, state, n in seen.runs:
        begun[(playbook, operation)] = begun.get((playbook, operation), 0) + n
        if state in final:
            ended.add_metric([playbook, operation, state], n)
    for (playbook, operation), n in sorted(begun.items()):
        started.add_metric([playbook, operation], n)
    moving = GaugeMetricFamily("drorch_moves_in_progress", "Moves under way", labels=["playbook"])
    for playbook, n in sorted(seen.moving.items()):
        moving.add_metric([playbook], n)
    yield from (started, ended, moving)
    yield histogram("drorch_run_duration_seconds", "How long runs took, by operation", "operation",
                    seen.run_durations)
    yield histogram("drorch_step_duration_seconds", "How long moves and restarts took, by kind of workload",
                    "kind", seen.step_durations)


def histogram(name: str, doc: str, label: str, h: Histogram) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, counts in sorted(h.buckets.items()):
        pairs = [(repr(b), float(c)) for b, c in zip(DURATION_BUCKETS, counts, strict=True)]
        family.add_metric([value], [*pairs, ("+Inf", float(h.counts[value]))], h.sums[value])
    return family


def daemons(seen: Readings) -> Iterator[Metric]:
    now = naive(seen.at)
    leader = GaugeMetricFamily("drorch_daemon_leader", "Whether the daemon leads (1) or stands by (0)",
                               labels=["daemon"])
    up = GaugeMetricFamily("drorch_daemon_up", "Whether the daemon's heartbeat is younger than the lease (1 or 0)",
                           labels=["daemon"])
    beat = GaugeMetricFamily("drorch_daemon_heartbeat_age_seconds", "Age of the daemon's last heartbeat",
                             labels=["daemon"])
    for d in seen.daemons:
        role = d.role(now)
        leader.add_metric([d.identity], 1.0 if role == "leader" else 0.0)
        up.add_metric([d.identity], 1.0 if role in ("leader", "standby") else 0.0)
        beat.add_metric([d.identity], (now - naive(d.heartbeat_at)).total_seconds())
    lease = GaugeMetricFamily("drorch_lease_expiry_seconds", "Seconds until the leader's lease runs out unless "
                              "renewed (negative: no daemon leads)", labels=["holder"])
    if seen.lease is not None:
        lease.add_metric([seen.lease.holder], (naive(seen.lease.expires_at) - now) / timedelta(seconds=1))
    yield from (leader, up, beat, lease)


def takeovers(seen: Readings) -> Iterator[Metric]:
    """Automatic failover, from each live daemon's last turn: armed or not, which site holds the key, what the
    secondary's probes of the primary found, and the last decision."""
    now = naive(seen.at)
    live = {d.identity for d in seen.daemons if d.role(now) in ("leader", "standby")}
    armed = GaugeMetricFamily("drorch_auto_failover_armed", "Whether a live daemon at the site turns the "
                              "playbook's automatic failover and it is not paused (1 or 0)",
                              labels=["playbook", "site"])
    holder = GaugeMetricFamily("drorch_auto_failover_key_holder", "Whether the site holds the playbook's key, as "
                               "its live daemons last saw it (1 or 0)", labels=["playbook", "site"])
    silent = GaugeMetricFamily("drorch_auto_failover_probe_failures", "Hosts of the other site that did not answer "
                               "the daemon's last probe", labels=["playbook", "site", "daemon"])
    decided = GaugeMetricFamily("drorch_auto_failover_last_decision", "The daemon's last decision (1): its role, "
                                "held (a gate after the key's win did not hold) or failed over",
                                labels=["playbook", "site", "daemon", "decision"])
    at = GaugeMetricFamily("drorch_auto_failover_turn_timestamp_seconds", "When the daemon last turned the "
                           "playbook's automatic failover", labels=["playbook", "site", "daemon"])
    sites: dict[tuple[str, str], bool] = {}
    for t in seen.turns:
        if t.daemon not in live:
            continue
        key = (t.playbook, t.site)
        sites[key] = sites.get(key, False) or t.role == "active"
        silent.add_metric([t.playbook, t.site, t.daemon], len(json.loads(t.gates).get("silent", {})))
        decided.add_metric([t.playbook, t.site, t.daemon, t.decision or t.role], 1)
        at.add_metric([t.playbook, t.site, t.daemon], epoch(t.at))
    for (playbook, site), active in sorted(sites.items()):
        armed.add_metric([playbook, site], 0.0 if playbook in seen.paused else 1.0)
        holder.add_metric([playbook, site], 1.0 if active else 0.0)
    last = GaugeMetricFamily("drorch_auto_failover_last_run_timestamp_seconds", "When the playbook's newest "
                             "automatic failover started", labels=["playbook"])
    for playbook, started in sorted(seen.last_automatic.items()):
        last.add_metric([playbook], epoch(started))
    yield from (armed, holder, silent, decided, at, last)


def epoch(at: datetime) -> float:
    """A stored time (UTC, maybe without its zone) as Unix time."""
    return naive(at).replace(tzinfo=UTC).timestamp()


def exposition(collector: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
