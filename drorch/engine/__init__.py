"""The run engine: every operation (failover, failback, disaster restart, drill) is a run, a persisted state
machine whose steps are rows written before and after they act.

The phases of a failover or failback, each a method of `runner.Engine` of that name:

1. `plan`: both sites inventoried at once and the playbook fitted onto what the target has (drorch.plan).
2. `preflight`: what `validate` checks of the plan, the drivers' live checks of every move included; an error
   refuses the run before anything is recorded.
3. `fence` (disaster): every host of the lost site answers, is fenced by the playbook's command, or is vouched
   for; otherwise the run is refused. The run's first wave then fences what answers.
4. `start` and `record`: the run, its steps and its locks written.
5. `execute`, wave after wave (`_waves.Waves.run`): each wave's hooks and approvals, its moves in parallel
   within the sites' and hosts' limits, its names step (addresses checked, DNS cut over); a failed wave
   continues, stops, or rolls back the run as its policy says.
6. `verify`: each moved workload looked for again where its step put it; one no longer there fails its step.
7. `commit_window`: a failover that moved its workloads waits for `drorch commit` or `drorch rollback`
   when the playbook has a window (`commit_window.expired` runs the playbook's default when it ends).

A drill (`Engine.drill`) is a run of the same machine with steps of its own (`_drill_steps`): `clone`
brings each workload a disaster would restart up on the other site from its recovery point, in an isolated
network, `check` sees it running, reaches it at its drill address and names and runs its drill checks, and
`teardown` removes every clone, name and network, last, whatever happened before it.

`resume`, `abort` and `rollback` act on a recorded run; each step first looks where its workload really is,
so a run that died halfway goes on without moving anything twice.

What it offers: `runner.Engine`; `live_run` (the run as a process drives it, and the events it reports);
`steps_from_plan` (a run's steps and each move's request, made from a plan); `commit_window` (approvals,
commits, ended windows: what touches only the store); `names_step` (addresses checked and DNS records set).
"""
