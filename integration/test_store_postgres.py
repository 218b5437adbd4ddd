"""The state store's contract on PostgreSQL, the store several daemons share (DRORCH_DB_URL)."""

from __future__ import annotations

import itertools

import pytest

from integration.postgres import Cluster
from tests.support.store_contract import StoreContract

DATABASES = itertools.count(1)


@pytest.fixture
def store_url(postgres: Cluster) -> str:
    return postgres.new_database(f"drorch_contract_{next(DATABASES)}")


class TestPostgresStore(StoreContract):
    pass
