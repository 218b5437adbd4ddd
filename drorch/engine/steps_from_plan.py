"""What a run is made of: its steps, made from a plan, and the request each moving step gives its driver
(made from the plan, or read back from the step for a resumed run). No I/O but the drivers' pre-flight."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from drorch.drivers.base import Driver, MoveRequest
from drorch.engine._guest_reip import reversed_moves
from drorch.engine.live_run import LiveRun
from drorch.engine.names_step import LOWER, follows
from drorch.model.playbook import STRATEGIES, Playbook, Resources, WorkloadKind
from drorch.model.records import Action, StepKind
from drorch.plan import preflight
from drorch.plan.inventory import Snapshot
from drorch.plan.planner import ACTING, MOVING, Plan, PlanItem, plan
from drorch.reach import host_endpoint
from drorch.store.rows import Step

FENCE_WAVE = "fence"
ROLLBACK_WAVE = "rollback"  # the wave of the steps that move back what a run moved


def check_playbook(
    pb: Playbook, snap: Snapshot, drivers: Mapping[WorkloadKind, Driver]
) -> tuple[Plan, list[preflight.Finding]]:
    """Everything `drorch validate` checks: the plan's problems, pre-flight over the snapshot, and the
    drivers' live checks (none when working from a saved snapshot without drivers)."""
    the_plan = plan(pb, snap, pb.primary, pb.secondary)
    return the_plan, plan_findings(pb, snap, the_plan, drivers, silent_hosts=True) + preflight.drill_subnets(pb, snap)


def plan_findings(pb: Playbook, snap: Snapshot, the_plan: Plan, drivers: Mapping[WorkloadKind, Driver],
                  silent_hosts: bool = False) -> list[preflight.Finding]:
    """What `validate` finds in a plan, and what a run checks before it acts on its own plan (either way). A run
    plans around a host that does not answer; `validate` names it too (silent_hosts)."""
    findings = [preflight.Finding(loc, msg) for loc, msg in the_plan.problems]
    findings += [preflight.Finding(loc, msg, error=False) for loc, msg in the_plan.notes]
    findings += preflight.silent_hosts(pb, snap) if silent_hosts else []
    findings += preflight.check(pb, snap, the_plan)
    findings += preflight.addresses(pb, snap, the_plan)
    for item in the_plan.items:
        if item.action in MOVING and item.kind in drivers:
            findings += [preflight.Finding(("workloads", item.entry), m)
                         for m in drivers[item.kind].preflight(move_request(pb, the_plan, item))]
    return findings


def move_request(pb: Playbook, plan: Plan, item: PlanItem) -> MoveRequest:
    """What the driver is asked to do for one moving item of the plan."""
    assert item.from_host is not None and item.to_host is not None, "only moving items have both hosts"
    resized = item.after is not None and item.after != item.before
    return MoveRequest(
        workload=item.workload,
        strategy=item.strategy,
        source=host_endpoint(pb, plan.source, item.from_host, item.at_source),
        target=host_endpoint(pb, plan.target, item.to_host, item.at_target),
        mappings=item.mappings,
        resources=Resources(vcpus=item.after.vcpus or None, memory_mib=item.after.memory_mib or None)
        if resized and item.after is not None else None,
        controls=pb.migration_for(pb.workloads[item.entry]),
    )


def steps_for(pb: Playbook, the_plan: Plan, disaster: bool) -> list[Step]:
    """The run's rows: per wave its approval, its before hooks, its workloads, its after hooks."""
    def row(kind: str, workload: str, wave: str, **kw: Any) -> Step:
        return Step(run_id=0, seq=0, kind=kind, workload=workload, strategy=str(kw.pop("strategy", "-")),
                    source_site=the_plan.source, target_site=the_plan.target, wave=wave, **kw)

    steps = []
    if disaster:
        steps.append(row(StepKind.FENCE, f"site {the_plan.source}", FENCE_WAVE))
    lowers = not disaster and pb.dns is not None and pb.dns.lower_ttl_s is not None and any(
        i.workload in pb.dns.records for i in the_plan.items if i.action in MOVING)
    for name in dict.fromkeys(i.wave for i in the_plan.items):
        wave = pb.wave(name)
        if lowers:
            steps.append(row(StepKind.NAMES, "lower TTLs", name, detail=json.dumps({"phase": LOWER})))
            lowers = False
        if wave.approval:
            steps.append(row(StepKind.APPROVAL, f"wave {name}", name))
        if wave.hooks.before:
            steps.append(row(StepKind.HOOK, f"wave {name} before", name, detail=json.dumps({"phase": "before"})))
        for item in (i for i in the_plan.items if i.wave == name):
            req = move_request(pb, the_plan, item) if item.action in MOVING else None
            steps.append(row(item.kind, item.workload, name, strategy=item.strategy, action=item.action,
                             from_host=item.from_host, to_host=item.to_host, outcome=item.reason or None,
                             request=req.to_json() if req else None, source_kind=item.source_kind,
                             target_kind=item.target_kind,
                             detail=json.dumps({"addresses": [asdict(a) for a in item.addresses]})
                             if item.action in ACTING and item.addresses else None))
        if any(follows(pb, pb.workloads[i.entry], i.workload) for i in the_plan.items if i.wave == name):
            steps.append(row(StepKind.NAMES, f"wave {name} names", name))
        if wave.hooks.after:
            steps.append(row(StepKind.HOOK, f"wave {name} after", name, detail=json.dumps({"phase": "after"})))
    for seq, step in enumerate(steps, 1):
        step.seq = seq
    return steps


def rollback_steps(live: LiveRun, moved: list[Step]) -> list[Step]:
    """The rows that move back, newest first, what the run moved, and the names step that follows them."""
    backs: list[Step] = []
    for s in reversed(moved):
        kind = WorkloadKind(s.kind)
        if s.request:
            req = live.sites.request(s).reverse()
        else:  # restarted from a copy: live back to the first host of the source that takes the kind
            target = live.sites.host(s.target_site, s.to_host or "", s.at_target)
            spec = live.pb.spec_of(kind, s.workload)
            req = MoveRequest(s.workload, spec.move_strategy if spec else STRATEGIES[kind][0],
                              target, live.sites.hosts(s.source_site, s.at_source)[0], live.pb.mappings.inverse())
        backs.append(Step(run_id=live.run.id or 0, seq=len(live.steps) + len(backs) + 1, workload=s.workload,
                          kind=s.kind, source_kind=s.target_kind, target_kind=s.source_kind,
                          strategy=req.strategy, source_site=req.source.site,
                          target_site=req.target.site, wave=ROLLBACK_WAVE, action=Action.ROLLBACK,
                          from_host=req.source.host, to_host=req.target.host, request=req.to_json(),
                          detail=json.dumps({"undoes": s.seq, "addresses": reversed_moves(s)})))
    if any(follows(live.pb, live.pb.spec_of(WorkloadKind(b.kind), b.workload), b.workload) for b in backs):
        backs.append(Step(run_id=live.run.id or 0, seq=len(live.steps) + len(backs) + 1, kind=StepKind.NAMES,
                          workload=f"wave {ROLLBACK_WAVE} names", strategy="-", source_site=backs[0].source_site,
                          target_site=backs[0].target_site, wave=ROLLBACK_WAVE, action=Action.ROLLBACK))
    return backs
