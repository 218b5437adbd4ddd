"""The state store shared by the CLI and the daemons: SQLite under state/, or PostgreSQL.

- `sql_store`: the tables and `Store`, the one reader and writer of runs, steps, points, locks and leases.
- `connect`: a URL turned into an engine, the tables made; `damaged_rows`: rows drorch cannot read.
- `history`: the run history read with the standard library alone, for `drorch history`.
"""
