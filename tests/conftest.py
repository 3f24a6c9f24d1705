"""Shared fixtures: a SQLite ledger per test, and a PostgreSQL one where the server answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from tests.support import Clock, World, new_ledger, populate

PG_URL = os.environ.get("CHIPLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(clock: Clock) -> World:
    return World(clock)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


@pytest.fixture
def ledger(store: str, clock: Clock) -> Ledger:
    return new_ledger(store, clock)


@pytest.fixture
def populated(ledger: Ledger, world: World) -> Ledger:
    populate(ledger, world)
    return ledger


@pytest.fixture
def client(populated: Ledger) -> TestClient:
    return TestClient(create_app(populated, open_reads=True), raise_server_exceptions=False)


def _postgres_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(
            PG_URL.replace("postgresql://", "postgresql://", 1), connect_timeout=3
        ):
            return None
    except Exception as exc:  # any failure to connect means: no server here
        return f"no PostgreSQL answers at {PG_URL} ({type(exc).__name__})"


@pytest.fixture
def pg_store() -> Iterator[str]:
    """A postgresql:// STORE in a fresh schema, dropped afterwards."""
    reason = _postgres_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the PostgreSQL tests, but {reason}")
        pytest.skip(reason)
    import psycopg

    schema = f"chipledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return str(request.getfixturevalue("pg_store"))
