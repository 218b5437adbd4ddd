"""What drorch asks of the witness: a key per playbook naming its active site, held under a lease that the site
renews, taken only by a transaction a majority accepts; and the primary's own word that it stopped."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Holding:
    """A site's hold on a playbook's key: the lease it renews, who took it and when."""

    playbook: str
    site: str
    lease: int
    daemon: str
    since: datetime


class Witness(ABC):
    """Every call raises QuorumLost when no majority answers: then nothing of the key is known."""

    @abstractmethod
    def holder(self, playbook: str) -> Holding | None:
        """The live hold on the playbook's key; None when it expired or was never taken."""

    @abstractmethod
    def claim(self, playbook: str, site: str, daemon: str, lease_s: float) -> Holding:
        """The key taken for `site` under a new lease of `lease_s`, if no one holds it; else the hold there is."""

    @abstractmethod
    def renew(self, hold: Holding) -> bool:
        """The hold's lease renewed for its whole length; False when it had expired (the key is gone)."""

    @abstractmethod
    def release(self, hold: Holding) -> None:
        """The hold let go at once (its lease revoked): the key is free for the site that runs the workloads."""

    @abstractmethod
    def say_stopped(self, playbook: str, site: str, at: datetime) -> None:
        """The site's own word that it stopped the playbook's workloads: a fence the other site can read."""

    @abstractmethod
    def stopped_at(self, playbook: str, site: str) -> datetime | None:
        """When the site last said it stopped the playbook's workloads."""

    def close(self) -> None:  # noqa: B027 - a witness without connections has nothing to close
        """Let its connections go."""
