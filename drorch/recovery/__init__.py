"""What the secondary keeps for a disaster, and whether a failover would work now.

- `shipping`: recovery points shipped, kept and chosen, and each workload's RPO.
- `readiness`: validate's checks plus every RPO, recorded in the store.
- `stale_copies`: what a site that comes back still holds of workloads now running elsewhere.
"""
