"""The state store shared by the CLI and the daemons: SQLite under state/, or PostgreSQL.

- `contract`: `StateStore`, what the engine, protection and the daemon may ask of a store.
- `sql_store`: the tables and `Store`, which keeps that contract in SQLite or PostgreSQL.
- `connect`: a URL turned into an engine, the tables made; `damaged_rows`: rows drorch cannot read.
- `history`: the run history read with the standard library alone, for `drorch history`.
"""
