"""The `drorch` command: parses, calls the engine or the store, prints. Nothing else lives here."""

from importlib import import_module

from drorch.cli.app import app, main

for _commands in ("runs", "sites", "history", "protect", "daemon"):  # each registers its commands, in --help order
    import_module(f"drorch.cli.{_commands}")

__all__ = ["app", "main"]
