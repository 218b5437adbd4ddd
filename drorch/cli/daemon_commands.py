"""The daemon and its schedules: daemon run/status, schedule add/list/remove."""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer

from drorch.cli.app import JsonOpt, PlaybookArg, app, echo, seconds
from drorch.errors import UsageError, printable
from drorch.model.records import JobKind, RunState, naive, utcnow
from drorch.process import run_alive
from drorch.redact import redact

daemon_app = typer.Typer(help="The daemon: scheduled protection and other jobs, one leader per store.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(daemon_app, name="daemon")
schedule_app = typer.Typer(help="Jobs the daemon runs, kept in the state store.", no_args_is_help=True,
                            rich_markup_mode=None)
app.add_typer(schedule_app, name="schedule")


class _OneLine(logging.Formatter):
    """Log lines carry names from playbooks and sites, APScheduler's own lines too: each stays one line, its
    control characters escaped and secrets in URLs masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(printable(super().format(record)))


@daemon_app.command("run")
def daemon_run(
    playbooks: Annotated[list[Path] | None, typer.Argument(
        help="playbooks whose own schedules to run; a folder stands for its *.yaml files")] = None,
    lease_s: Annotated[float, typer.Option(help="seconds a leader holds the scheduler without renewing",
                                           callback=seconds(1, 3600))] = 15.0,
    listen: Annotated[str | None, typer.Option(
        help="serve /metrics, the status page and /healthz, /readyz on [HOST:]PORT (loopback unless a host is "
             "given; any other address needs --tls-cert, --tls-key and --token-file)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="the listener's TLS certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="its private key (PEM)")] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="a file, readable by its owner only, holding the bearer token every request but the probes needs")] = None,
    site: Annotated[str | None, typer.Option(
        help="the site this daemon runs at: it acts for that site in the automatic failover of the playbooks "
             "with an auto_failover section (without it, none is armed here)")] = None,
    only_served: Annotated[bool, typer.Option(
        help="the status page shows this daemon's playbooks only, not the others the store holds (by default, "
             "those active in the last week are shown below the daemon's own)")] = False,
) -> None:
    """Run until SIGTERM: keeps a heartbeat, takes the lease when it is free, and runs the scheduled jobs."""
    from drorch.daemon.scheduler import Daemon
    from drorch.model.playbook_file import load_playbook
    from drorch.store.sql_store import Store
    from drorch.web.listener import Listen

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_OneLine("%(message)s"))
    named = [p for p in playbooks or [] if not p.is_dir()]
    for f in named:
        load_playbook(f)  # a playbook named alone is refused before the daemon starts; one of a folder is skipped
    files = [f for p in playbooks or [] for f in (sorted(p.glob("*.y*ml")) if p.is_dir() else [p])]
    if listen is None and (tls_cert or tls_key or token_file):
        raise UsageError("--tls-cert, --tls-key and --token-file go with --listen")
    served = None if listen is None else Listen.parse(listen, tls_cert, tls_key, token_file)
    Daemon(Store(), [f.resolve() for f in files], lease_s=lease_s, listen=served, only_served=only_served,
           site=site).run()


@app.command()
def metrics(playbooks: Annotated[list[Path], typer.Argument(help="the playbooks whose metrics to print")]) -> None:
    """The daemon's metrics for these playbooks, printed once in Prometheus's text format (for node_exporter's
    textfile collector on a machine without the daemon), read from the state store."""
    from drorch.daemon.scheduler import next_runs
    from drorch.model.playbook_file import load_playbook
    from drorch.store.sql_store import Store
    from drorch.web.metrics import StoreCollector, exposition

    loaded = {pb.name: pb for pb in map(load_playbook, playbooks)}
    store = Store()
    sys.stdout.write(exposition(StoreCollector(store, lambda: loaded, sorted(loaded), lambda: next_runs(store)))
                     .decode())


@daemon_app.command("status")
def daemon_status(json_out: JsonOpt = False) -> None:
    """The daemons' heartbeats (and which one leads), the scheduled jobs' next runs, and running jobs."""
    from drorch.daemon.scheduler import next_runs
    from drorch.store.sql_store import Store

    store = Store()
    now = naive(utcnow())
    here = socket.gethostname()
    daemons = [{"daemon": d.identity, "role": d.role(now), "leader": d.role(now) == "leader", "stopped": d.stopped,
                "started_at": d.started_at.isoformat(), "lease_s": d.lease_s,
                "heartbeat_age_s": (now - naive(d.heartbeat_at)).total_seconds()} for d in store.daemons()]
    jobs_ = [{"id": i, "name": n, "next_run": t.isoformat() if t else None} for i, n, t in next_runs(store)]
    running = [{"run": r.id, "operation": r.operation, "playbook": r.playbook} for r in store.runs(100)
               if r.state is RunState.RUNNING and run_alive(r.host, r.pid, here)]
    if json_out:
        typer.echo(json.dumps({"daemons": daemons, "jobs": jobs_, "running": running}, indent=2))
        return
    for d in daemons:
        gone = f" (older than its {d['lease_s']:.0f} s lease: killed or cut off)" if d["role"] == "gone" else ""
        echo(f"daemon {d['daemon']:<24} {d['role']:<8} heartbeat {d['heartbeat_age_s']:.0f} s ago{gone}")
    for j in jobs_:
        echo(f"job {j['id']:<32} {j['name']:<32} next {j['next_run'] or 'paused'}")
    for r in running:
        echo(f"running: run {r['run']} {r['operation']} {r['playbook']}")
    if not daemons:
        echo("no daemon has run against this store", err=True)


def _schedule_id(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}", value):
        raise typer.BadParameter(f"'{printable(value)[:60]}' is not an id: letters, digits and ._:@- (up to 200, a "
                                 "letter or digit first)")
    return value


@schedule_app.command("add")
def schedule_add(
    playbook: PlaybookArg,
    job: Annotated[JobKind, typer.Option(help="what to run")],
    every: Annotated[float | None, typer.Option(help="seconds between runs")] = None,
    cron: Annotated[str | None, typer.Option(help="cron expression, UTC: minute hour day month weekday")] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="the schedule's id (letters, digits and ._:@-); "
                                               "replaces one with that id", callback=_schedule_id)] = None,
) -> None:
    """Add a schedule to the store; the leading daemon picks it up."""
    from drorch.daemon.scheduler import store_schedule
    from drorch.model.playbook_file import load_playbook
    from drorch.model.run_settings import schedule_from_options
    from drorch.store.sql_store import Store

    pb = load_playbook(playbook)
    s = schedule_from_options(job, every, cron)
    added = store_schedule(Store(), playbook, s, job_id or f"{pb.name}:{job}:{uuid.uuid4().hex[:6]}")
    echo(f"schedule {added.id}: {added.name}, {added.trigger}")


@schedule_app.command("list")
def schedule_list(json_out: JsonOpt = False) -> None:
    """Every schedule in the store and its next run."""
    from drorch.daemon.scheduler import next_runs
    from drorch.store.sql_store import Store

    rows = next_runs(Store())
    if json_out:
        typer.echo(json.dumps([{"id": i, "name": n, "next_run": t.isoformat() if t else None} for i, n, t in rows],
                              indent=2))
        return
    for i, n, t in rows:
        echo(f"{i:<32} {n:<32} next {t.isoformat() if t else 'paused'}")


@schedule_app.command("remove")
def schedule_remove(job_id: Annotated[str, typer.Argument(help="the id from drorch schedule list")]) -> None:
    """Remove a schedule from the store."""
    from drorch.daemon.scheduler import remove_schedule
    from drorch.store.sql_store import Store

    remove_schedule(Store(), job_id)
    echo(f"schedule {job_id} removed")
