"""What a drill's steps do once the engine lets them start: a clone brought up on the secondary from its
recovery point, in isolation, and checked; and the teardown that removes every clone and the drill's network.

Clone and network names follow from the run's id, so a teardown finds what a drill made whether or not its
clone steps finished. The engine decides when each step runs and writes every transition.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from drorch.drivers.base import DrillNet, Driver, Endpoint
from drorch.engine._drill_checks import clone_reached, drill_names_gone
from drorch.engine.hooks import run_hooks
from drorch.engine.live_run import LiveRun, Transitions, hook_env
from drorch.errors import DrorchError, MoveFailed
from drorch.model.address_rules import AddressRule
from drorch.model.playbook import WorkloadKind
from drorch.model.records import (
    Action,
    RunState,
    StepKind,
    StepState,
    clone_name,
    naive,
    network_name,
    run_outcome,
)
from drorch.plan.drill_addresses import clone_addresses, drill_moves, drill_net
from drorch.plan.planner import PlanItem
from drorch.store.rows import RecoveryPoint, Step

POLL_SECONDS = 0.5
TEARDOWN = "drill clones"


def clone_step(item: PlanItem, source: str, target: str, point: RecoveryPoint | None, now: datetime,
               chosen: bool, rules: dict[str, AddressRule]) -> Step:
    """A drill's step for one item of the disaster plan: a clone of what a disaster would restart, at the drill
    addresses `rules` give its addresses at the target, or the item as the plan left it (skipped, or blocked)."""
    drilled = item.action is Action.RESTART
    detail: dict[str, Any] = {"drill_addresses": drill_moves(item.addresses, rules)} if drilled and rules else {}
    if point is not None:
        detail["point"] = {"taken_at": point.taken_at.isoformat(), "name": point.name,
                           "chosen": chosen or bool(point.cut), "cut": point.cut}
        detail["rpo_s"] = (naive(now) - naive(point.taken_at)).total_seconds()
    action = Action.DRILL if drilled else Action.BLOCKED if item.action is Action.BLOCKED else Action.SKIP
    return Step(run_id=0, seq=item.seq, kind=item.kind, workload=item.workload, strategy=item.strategy,
                source_site=source, target_site=target, wave=item.wave, action=action, to_host=item.to_host,
                outcome=None if drilled else item.reason, detail=json.dumps(detail), target_kind=item.target_kind)


def teardown_step(source: str, target: str, hold_s: float) -> Step:
    """The last step of every drill; the clones stay up `hold_s` before it, once some came up."""
    return Step(run_id=0, seq=0, kind=StepKind.TEARDOWN, workload=TEARDOWN, strategy="-", source_site=source,
                target_site=target, wave=StepKind.TEARDOWN, detail=json.dumps({"hold_s": hold_s}))


def drill_outcome(steps: Iterable[Step]) -> tuple[RunState, str | None]:
    """The clones decide: a drill none of whose clones came up failed, however clean its teardown was; one
    whose teardown left something behind did not wholly pass; one stopped before every clone was checked was
    aborted."""
    steps = list(steps)
    if any(s.state is StepState.CANCELLED for s in steps):
        return RunState.ABORTED, "stopped before every clone was checked"
    if not any(s.action == Action.DRILL for s in steps):  # it tested nothing: not a pass
        said = "; ".join(dict.fromkeys(f"{s.workload}: {s.outcome or s.error}" for s in steps
                                       if s.kind != StepKind.TEARDOWN)) or "the playbook selects no workload"
        return RunState.FAILED, f"nothing could be drilled ({said[:300]})"
    state = run_outcome(s.state for s in steps if s.kind != StepKind.TEARDOWN)
    if state is RunState.SUCCEEDED and any(s.state is StepState.FAILED for s in steps):
        state = RunState.PARTIAL
    failed = [s for s in steps if s.state is StepState.FAILED]
    return state, f"{len(failed)} of {len(steps)} steps failed" if failed else None


class DrillWork:
    def __init__(self, states: Transitions) -> None:
        self.states = states

    def clone(self, live: LiveRun, step: Step) -> None:
        """The clone made from the step's point (or the newest), seen running, then its drill checks."""
        to, run = self.states.transition, live.run
        kind = step.at_target
        driver, site = live.sites.drivers[kind], live.sites.host(step.target_site, step.to_host or "", kind)
        clone, network = clone_name(step.workload, run.id or 0), network_name(run.id or 0)
        detail = {**step.details(), "clone": clone, "network": network}
        to(live, step, StepState.RUNNING, detail=json.dumps(detail))
        checks: list[dict[str, Any]] = []
        said = ""
        point = detail.get("point") or {}
        try:
            net = self._net(live, step, network)
            addresses = clone_addresses(step)
            said = driver.clone(step.workload, clone, site, net, point.get("name") if point.get("chosen") else None,
                                addresses)
            self.check(live, step, driver, site, clone, net, checks)
        except DrorchError as exc:
            checks.append({"check": "clone", "ok": False, "fatal": True, "said": str(exc)})
        detail["checks"] = checks
        failed = [c for c in checks if c["fatal"]]
        if failed:
            to(live, step, StepState.FAILED, detail=json.dumps(detail),
               error="; ".join(f"{c['check']}: {c['said']}" for c in failed))
        else:
            passed = sum(c["ok"] for c in checks)
            cut = f" from cut {point['cut']}" if point.get("cut") else ""
            to(live, step, StepState.SUCCEEDED, detail=json.dumps(detail),
               outcome=f"{said}{cut}; {passed} of {len(checks)} checks passed")

    def check(self, live: LiveRun, step: Step, driver: Driver, site: Endpoint, clone: str, net: DrillNet,
              checks: list[dict[str, Any]]) -> None:
        """The clone seen running, then reached at its drill addresses and names, then the workload's drill
        checks, each added to `checks` and run only when those before it passed."""
        checks.append(self._running(driver, clone, site, live.pb.drill.check_timeout_s))
        if checks[-1]["ok"]:
            checks += clone_reached(live, step, driver, site, clone, net)
        if all(c["ok"] for c in checks):
            checks += self._hooks(live, step, clone, net.name)

    @staticmethod
    def _net(live: LiveRun, step: Step, network: str) -> DrillNet:
        try:
            return drill_net(network, step, live.steps, live.pb.drill.addresses)
        except ValueError as exc:
            raise MoveFailed(str(exc)) from None

    @staticmethod
    def _running(driver: Driver, clone: str, site: Endpoint, timeout: float) -> dict[str, Any]:
        """The first check: the clone is seen running on the site."""
        check = f"running on site {site.site}"
        deadline = time.monotonic() + timeout
        while True:
            info = driver.locate(clone, site)
            if info is not None and info.running:
                return {"check": check, "ok": True, "fatal": False, "said": ""}
            if time.monotonic() > deadline:
                why = "not found" if info is None else "not running"
                return {"check": check, "ok": False, "fatal": True, "said": f"{why} after {timeout:g} s"}
            time.sleep(POLL_SECONDS)

    @staticmethod
    def _hooks(live: LiveRun, step: Step, clone: str, network: str) -> list[dict[str, Any]]:
        """The workload's checks marked `drill: true`; its other hooks may act on production and never run."""
        spec = live.pb.spec_of(WorkloadKind(step.kind), step.workload)
        hooks = [h for h in spec.hooks.after if h.drill] if spec else []
        env = {**hook_env(live, step, step.to_host or ""), "DRORCH_CLONE": clone, "DRORCH_DRILL_NETWORK": network,
               "DRORCH_HOOK_PHASE": "after"}
        return [{"check": r.hook.label, "ok": r.ok, "fatal": r.fatal, "said": r.message}
                for r in run_hooks(hooks, env)]

    def teardown(self, live: LiveRun, step: Step) -> None:
        """Remove every clone the drill may have made, then its networks; what cannot be removed is named."""
        to, run = self.states.transition, live.run
        to(live, step, StepState.RUNNING)
        removed: list[str] = []
        left: list[str] = []
        networks: dict[tuple[WorkloadKind, str], Endpoint] = {}
        for s in live.steps:
            if s.action != Action.DRILL:
                continue
            kind = s.at_target
            clone = clone_name(s.workload, run.id or 0)
            try:
                site = live.sites.host(s.target_site, s.to_host or "", kind)
                networks[(kind, site.uri)] = site
                removed += live.sites.drivers[kind].discard(clone, site)
            except DrorchError as exc:
                left.append(f"{s.kind} {clone} ({exc})")
        gone, kept = drill_names_gone(live)
        removed += gone
        left += kept
        for (kind, _uri), site in networks.items():
            network = network_name(run.id or 0)
            try:
                if live.sites.drivers[kind].drop_network(network, site):
                    removed.append(f"{kind} network {network}")
            except DrorchError as exc:
                left.append(f"{kind} network {network} ({exc})")
        if left:
            to(live, step, StepState.FAILED, error=f"left on site {run.target_site}: {', '.join(left)}",
               detail=json.dumps({"removed": removed}))
        else:
            to(live, step, StepState.SUCCEEDED, detail=json.dumps({"removed": removed}),
               outcome=f"removed {', '.join(removed)}" if removed else "nothing to remove")
