"""The state store's contract on SQLite, drorch's default store (PostgreSQL's run is a lab test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.store_contract import StoreContract


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'drorch.db'}"


class TestSqliteStore(StoreContract):
    pass
