"""The `drorch` command: parses, calls the engine or the store, prints. Nothing else lives here."""

# Each command module registers its commands on import, in --help order.
from drorch.cli import run_commands, site_commands, history_commands, protect_commands  # noqa: I001, F401
from drorch.cli import daemon_commands, auto_failover_commands  # noqa: F401
from drorch.cli.app import app, main

__all__ = ["app", "main"]
