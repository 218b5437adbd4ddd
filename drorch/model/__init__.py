"""The domain model, with no I/O but reading a playbook file: the playbook and its settings, the bounds of its
numbers, the address rules, the DNS names, and the run and step records the store keeps.

- `playbook`: sites, hosts, mappings, workloads and waves; `playbook_file` reads one within limits.
- `run_settings`: hooks, checks, failure policies, fencing, commit windows, protection, drills, schedules.
- `address_rules`, `dns_names`, `limits`: what a playbook says about addresses, names and numbers.
- `records`: runs, steps and their states; `run_report`: a run's timeline and recovery time.
"""
