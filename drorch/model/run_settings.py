"""How a playbook's runs are run: hooks and checks, waves and their limits, fencing, commit windows, protection,
drills, readiness alerts and the daemon's schedules."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, ValidationError, field_validator, model_validator

from drorch.errors import UsageError
from drorch.model._strict import Model as _Model
from drorch.model._strict import Name
from drorch.model.address_rules import AddressRule, checked_rules
from drorch.model.limits import MAX_COUNT, MAX_MIB, MAX_PERIOD_S, MAX_WAIT_S
from drorch.model.records import JobKind
from drorch.model.retention import RetentionTier, tier_problems
from drorch.redact import redact


class OnError(StrEnum):
    CONTINUE = "continue"
    FAIL = "fail"


class Hook(_Model):
    """A command (argv list, never a shell string) or an HTTP or TCP check, with a timeout and retries."""

    run: list[str] | None = Field(None, min_length=1, description="argv; the run's context is in DRORCH_* variables")
    http: str | None = Field(None, description="URL that must answer with a 2xx status")
    tcp: str | None = Field(None, description="host:port that must accept a connection")
    timeout: float = Field(10.0, gt=0, le=MAX_WAIT_S, description="seconds per attempt")
    retries: int = Field(0, ge=0, le=MAX_COUNT, description="attempts after the first one")
    delay: float = Field(1.0, ge=0, le=MAX_WAIT_S, description="seconds between attempts")
    on_error: OnError = OnError.FAIL
    drill: bool = Field(False, description="a workload's check that DR drills run too, against the clone "
                                           "(DRORCH_CLONE); drills run no other hook")
    inside: bool = Field(False, description="a VM's pre_freeze or post_thaw command run in its guest, through the "
                                            "QEMU guest agent, rather than on this machine")

    @model_validator(mode="after")
    def _one_action(self) -> Hook:
        if sum(x is not None for x in (self.run, self.http, self.tcp)) != 1:
            raise ValueError("a hook has exactly one of run, http or tcp")
        return self

    @property
    def label(self) -> str:
        return " ".join(self.run) if self.run else f"http {redact(self.http)}" if self.http else f"tcp {self.tcp}"


class Hooks(_Model):
    before: list[Hook] = Field(default_factory=list)
    after: list[Hook] = Field(default_factory=list)
    pre_freeze: list[Hook] = Field(default_factory=list, description="a workload's commands before it is frozen "
                                   "for a recovery point (e.g. a database's flush); one that fails leaves the point "
                                   "filesystem-consistent at best, said")
    post_thaw: list[Hook] = Field(default_factory=list, description="a workload's commands once it is released")


class MigrationControls(_Model):
    """Limits on a live migration; a migration that breaks one is aborted and the VM stays on its source."""

    bandwidth_mib_s: int | None = Field(None, gt=0, le=MAX_MIB)
    max_downtime_ms: int | None = Field(None, gt=0, le=int(MAX_WAIT_S * 1000))
    timeout_s_per_gib: float | None = Field(None, gt=0, le=MAX_WAIT_S,
                                            description="completion timeout per GiB of guest memory")
    no_progress_timeout_s: float | None = Field(None, gt=0, le=MAX_WAIT_S,
                                                description="abort when nothing is left less for so long")
    auto_converge: bool = False
    post_copy: bool = False
    tls: bool = Field(False, description="encrypt the migration streams (QEMU's TLS certificates on both hosts)")


class FailurePolicy(StrEnum):
    ABORT = "abort"  # stop after this wave; later waves do not run
    CONTINUE = "continue"  # go on with the next waves
    ROLLBACK = "rollback"  # move back what this run moved, then stop


class Wave(_Model):
    name: Name
    parallel: int = Field(1, ge=1, le=MAX_COUNT, description="moves at once inside the wave")
    on_failure: FailurePolicy = FailurePolicy.CONTINUE
    approval: bool = Field(False, description="pause before this wave until drorch approve RUN_ID")
    hooks: Hooks = Field(default_factory=Hooks)
    migration: MigrationControls | None = None


class Fencing(_Model):
    """How a primary that does not answer is fenced before its workloads start on the secondary."""

    command: list[str] | None = Field(None, min_length=1, description="argv that must exit 0; gets DRORCH_SITE")
    timeout: float = Field(60.0, gt=0, le=MAX_WAIT_S)


class CommitDefault(StrEnum):
    COMMIT = "commit"
    ROLLBACK = "rollback"


class CommitWindow(_Model):
    """A failover waits this long for drorch commit or drorch rollback; then `default` decides."""

    window_s: float = Field(gt=0, le=MAX_PERIOD_S)
    default: CommitDefault = CommitDefault.COMMIT


class Protect(_Model):
    """How often each workload's recovery point is shipped to the secondary, and how many are kept."""

    interval_s: float | None = Field(None, gt=0, le=MAX_PERIOD_S,
                                     description="seconds between recovery points (the daemon ships as the playbook's "
                                     "protect schedule says): sets the RPO target when rpo_s does not")
    rpo_s: float | None = Field(None, gt=0, le=MAX_PERIOD_S,
                                description="target age of the newest point; twice the interval if unset, and none "
                                "without either")
    keep: int = Field(3, ge=1, le=MAX_COUNT, description="the newest recovery points kept per workload, whatever "
                      "the retention tiers say; older ones are removed unless a tier keeps them")
    retention: list[RetentionTier] = Field(
        default_factory=list, description="tiers that keep older points, thinned out with age (e.g. every point for "
        "an hour, one per 15 minutes for a day); a VM's dropped increments are merged into the next point kept")
    merge_mib_s: int = Field(0, ge=0, le=MAX_COUNT, description="MiB/s a merge of a VM's dropped increments may "
                             "read and write on the secondary, so that thinning leaves room for its other work; 0 "
                             "for no bound")
    parallel: int = Field(4, ge=1, le=MAX_COUNT, description="workloads (or groups) shipped at once; the sites' and "
                          "hosts' max_moves bound them too")
    full_every: int = Field(7, ge=1, le=MAX_COUNT,
                            description="a VM disk's point is a full copy after this many points of one chain; "
                                        "those between ship only what changed")
    max_freeze_ms: int = Field(2000, ge=1, le=int(MAX_WAIT_S * 1000),
                               description="longest a workload stays frozen for its point (a group's or a quiesced "
                                           "VM's); past it, every member is released and the point is "
                                           "crash-consistent, said")

    @model_validator(mode="after")
    def _tiers_in_order(self) -> Protect:
        problems = tier_problems(self.retention)
        if problems:
            raise ValueError("retention: " + "; ".join(problems))
        return self

    @property
    def target_s(self) -> float | None:
        return self.rpo_s or (2 * self.interval_s if self.interval_s else None)


class DrillSettings(_Model):
    """How a DR drill brings the playbook up on the secondary in isolation."""

    hold_s: float = Field(0, ge=0, le=MAX_WAIT_S,
                          description="seconds the clones stay up after their checks, for a look at them")
    check_timeout_s: float = Field(60, gt=0, le=MAX_WAIT_S, description="how long a clone may take to be seen running")
    addresses: dict[str, AddressRule] = Field(
        default_factory=dict, description="subnet a workload has where the drill runs -> drill subnet (host part "
        "kept): the clones' isolated network on each host carries it, the host at its gateway, and each clone "
        "takes its drill address; without a rule a clone takes any address there, or none")

    @field_validator("addresses")
    @classmethod
    def _rules(cls, rules: dict[str, AddressRule]) -> dict[str, AddressRule]:
        return checked_rules(rules)


class Readiness(_Model):
    """Who hears of it when the DR site stops being ready: a command, a webhook, or both."""

    command: list[str] | None = Field(None, min_length=1, description="argv; gets DRORCH_PLAYBOOK, DRORCH_PROBLEMS")
    webhook: str | None = Field(None, description="URL that gets a JSON POST: playbook, ready, problems, checked_at")
    timeout: float = Field(10.0, gt=0, le=MAX_WAIT_S)


class Schedule(_Model):
    """A job the daemon runs on a schedule: every so many seconds, or by a cron expression (UTC)."""

    job: JobKind
    every_s: float | None = Field(None, ge=1, le=MAX_PERIOD_S, description="seconds between runs")
    cron: str | None = Field(None, description="five fields: minute hour day month weekday")

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.every_s is None) == (self.cron is None):
            raise ValueError("a schedule has exactly one of every_s or cron")
        return self

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str | None) -> str | None:
        """Checked as the daemon's scheduler will read it, so that a bad expression is found when the playbook
        is, not when the daemon starts."""
        if cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(cron, timezone="UTC")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"not a cron expression (minute hour day month weekday): {exc}") from None
        return cron


def schedule_from_options(job: JobKind, every: float | None, cron: str | None) -> Schedule:
    """A schedule from `drorch schedule add`'s options; UsageError naming the option that is wrong."""
    try:
        return Schedule(job=job, every_s=every, cron=cron)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = {"every_s": "--every", "cron": "--cron"}.get(str(err["loc"][0]) if err["loc"] else "")
        if option is None:
            raise UsageError("give --every SECONDS or --cron EXPRESSION, one of them") from None
        raise UsageError(f"{option}: {err['msg'].removeprefix('Value error, ')}") from None
