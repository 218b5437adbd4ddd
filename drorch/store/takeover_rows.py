"""The rows of automatic failover: each daemon's last turn, and what operators said (paused, approved)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from drorch.model.records import utcnow


class SentinelTurn(SQLModel, table=True):
    """A daemon's last turn at a playbook's automatic failover: its role and what it saw, gate by gate."""

    __tablename__ = "sentinel_turns"

    daemon: str = Field(primary_key=True)  # host:pid
    playbook: str = Field(primary_key=True)
    site: str
    role: str
    decision: str = ""  # its role, or "held" (a gate after the key's win did not hold), or "failed over"
    said: str
    gates: str = "{}"  # {"gates": [[gate, held, said], ...], "silent": {host: why}} as JSON
    at: datetime = Field(default_factory=utcnow)


class TakeoverControl(SQLModel, table=True):
    """What operators said of a playbook's automatic failover: paused, or a held takeover approved."""

    __tablename__ = "takeover_controls"

    playbook: str = Field(primary_key=True)
    paused: bool = False
    paused_by: str | None = None
    approved_at: datetime | None = None
    approved_by: str | None = None
