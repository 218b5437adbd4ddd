"""What the daemon serves, read from the state store alone.

- `listener`: /metrics, /healthz, /readyz and the pages; `metrics`: the Prometheus exposition.
- `pages`: the live status page and each run's report.
"""
