"""Automatic failover: auto-failover status, pause and resume."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Any

import typer

from drorch.cli.app import JsonOpt, PlaybookArg, app, echo
from drorch.errors import QuorumLost, UsageError
from drorch.model.records import Operation, naive, utcnow

if TYPE_CHECKING:
    from drorch.model.playbook import Playbook

auto_app = typer.Typer(help="Automatic failover decided by a quorum (a playbook's auto_failover section).",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(auto_app, name="auto-failover")


def _settled(playbook: PlaybookArg) -> Playbook:
    from drorch.model.playbook_file import load_playbook

    pb = load_playbook(playbook)
    if pb.auto_failover is None:
        raise UsageError(f"playbook {pb.name} has no auto_failover section")
    return pb


@auto_app.command("status")
def status(playbook: PlaybookArg, json_out: JsonOpt = False) -> None:
    """Who holds the playbook's key (asked of the etcd cluster now), each daemon's last turn at each site (a site
    whose key the other holds is named stale), whether it is paused, and the last automatic failover."""
    from drorch.store.sql_store import Store
    from drorch.witness.etcd_witness import EtcdWitness

    pb = _settled(playbook)
    assert pb.auto_failover is not None
    store = Store()
    witness = EtcdWitness(pb.auto_failover.etcd)
    try:
        hold = witness.holder(pb.name)
        key: dict[str, Any] = {"site": hold.site, "daemon": hold.daemon, "since": hold.since.isoformat()} if hold \
            else {"site": None}
    except QuorumLost as exc:
        key = {"error": str(exc)}
    finally:
        witness.close()
    now = naive(utcnow())
    roles = {d.identity: d.role(now) for d in store.daemons()}
    rows = store.sentinel_turns(pb.name)
    control = store.takeover_control(pb.name)
    paused = control.paused
    turns = [{"daemon": r.daemon, "site": r.site, "role": r.role, "said": r.said, "at": r.at.isoformat(),
              "age_s": round((now - naive(r.at)).total_seconds(), 1), "daemon_role": roles.get(r.daemon, "gone"),
              "decision": r.decision, **json.loads(r.gates)} for r in rows]
    automatic = [r for r in store.runs_of(Operation.FAILOVER, pb.name) if r.automatic]
    last = max(automatic, key=lambda r: r.started_at, default=None)
    doc = {"playbook": pb.name, "paused": paused, "paused_by": control.paused_by, "key": key, "turns": turns,
           "approved_at": control.approved_at.isoformat() if control.approved_at else None,
           "last_automatic": None if last is None else {"run": last.id, "state": str(last.state),
                                                        "started_at": last.started_at.isoformat()}}
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
        return
    if "error" in key:
        echo(f"key: unknown ({key['error']})")
    else:
        echo(f"key: held by site {key['site']} ({key['daemon']}, since {key['since']})" if key["site"]
             else "key: held by no site")
    echo(f"paused by {control.paused_by}: drorch auto-failover resume arms it again" if paused else "armed")
    for t in turns:
        echo(f"site {t['site']} {t['daemon']} ({t['daemon_role']}): {t['role']}, {t['said']} ({t['age_s']:.0f} s ago)")
    if last is not None:
        echo(f"last automatic failover: run {last.id} {last.state}, {last.started_at:%Y-%m-%d %H:%M:%S}")


@auto_app.command("pause")
def pause(playbook: PlaybookArg) -> None:
    """No automatic failover of the playbook until resume (the active site still renews its key)."""
    _paused(playbook, True)


@auto_app.command("resume")
def resume(playbook: PlaybookArg) -> None:
    """Arm the playbook's automatic failover again."""
    _paused(playbook, False)


def _paused(playbook: PlaybookArg, on: bool) -> None:
    from drorch.daemon.sentinels import set_paused
    from drorch.store.sql_store import Store

    pb = _settled(playbook)
    set_paused(Store(), pb.name, on, getpass.getuser())
    echo(f"automatic failover of {pb.name} {'paused' if on else 'armed'}")


@auto_app.command("approve")
def approve(playbook: PlaybookArg) -> None:
    """Let a takeover that holds the key but was held back at a gate (fencing, readiness) go on at the site's next
    turn: you vouch that the other site's silent hosts are down."""
    from drorch.daemon.sentinels import approve as approved
    from drorch.store.sql_store import Store

    pb = _settled(playbook)
    approved(Store(), pb.name, getpass.getuser())
    echo(f"takeover of {pb.name} approved: the site that holds its key goes on at its next turn")
