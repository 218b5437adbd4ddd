"""Planning, with no I/O: a snapshot of both sites and a playbook give a checked plan.

- `inventory`: the snapshot (hosts, their room, the workloads on them).
- `planner`: the plan of a failover, failback or disaster restart; `placement`: where each workload fits.
- `preflight`: what would make a move fail halfway, found before anything moves.
- `drill_addresses`: where a drill's clones are addressed.
"""
