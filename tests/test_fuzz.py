"""Fuzzing the whole API against its own OpenAPI document (schemathesis).

Every operation of `/openapi.json` gets generated requests, valid and not, against a populated
ledger served with open reads, and without them (a token-less fuzzer meets the 401s): no
answer may be a server error (5xx), and no documented response may break its own schema.
Bounded (a few dozen examples per operation) so that `make test` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api import create_app
from tests.support import Clock, World, new_ledger, populate


def _schema(tmp_path_factory: pytest.TempPathFactory, open_reads: bool) -> Iterator[Any]:
    clock = Clock()
    ledger = new_ledger(str(tmp_path_factory.mktemp("fuzz") / "ledger.db"), clock)
    populate(ledger, World(clock))
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(ledger, open_reads))
    ledger.close()


@pytest.fixture(scope="module")
def open_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _schema(tmp_path_factory, open_reads=True)


@pytest.fixture(scope="module")
def closed_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from _schema(tmp_path_factory, open_reads=False)


CHECKS = [not_a_server_error, response_schema_conformance]
BOUNDED = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


def operations(loaded: Any) -> list[str]:
    """Every operation the OpenAPI document lists."""
    paths = loaded.raw_schema["paths"]
    return sorted(f"{method.upper()} {path}" for path in paths for method in paths[path])


def fuzz(loaded: Any) -> list[str]:
    """Run every operation's generated cases; the operations run."""
    ran = []
    for result in loaded.get_all_operations():
        operation = result.ok()

        @BOUNDED
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        run()
        ran.append(f"{operation.method.upper()} {operation.path}")
    return ran


def test_with_open_reads_no_request_gets_a_5xx_or_a_response_off_its_schema(
    open_schema: Any,
) -> None:
    assert sorted(fuzz(open_schema)) == operations(open_schema)


def test_without_a_token_no_request_gets_a_5xx_or_a_response_off_its_schema(
    closed_schema: Any,
) -> None:
    assert sorted(fuzz(closed_schema)) == operations(closed_schema)
