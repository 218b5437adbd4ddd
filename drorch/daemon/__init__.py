"""`drorch daemon`: one leading daemon per store runs the scheduled jobs (`drorch.jobs`).

- `scheduler`: the APScheduler with its job table in the store, the lease, the heartbeat.
- `shutdown`: the stop signal that lets each running job finish its current step.
"""
