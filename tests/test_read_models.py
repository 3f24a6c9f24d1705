"""The read models live in the store: written with their entries, read by every process that
opens the store, never rebuilt when a ledger opens, and recomputed by `chipledger rebuild`
exactly as they were written (on SQLite and on PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from ledger.readstore import TABLES
from tests.support import Clock, World, assert_rebuild_equals_live, new_ledger, populate
from tests.support import read_model_rows as rows
from tests.test_reads import arrive, ship
from tests.test_story import Desk
from tools.cli import main


@pytest.fixture
def desk(any_store: str, clock: Clock, world: World) -> Desk:
    ledger = new_ledger(any_store, clock)
    populate(ledger, world)
    desk = Desk(TestClient(create_app(ledger, open_reads=True)), world)
    desk.accept(world.site("auh-1", "desert-ai", "AE"))
    arrive(desk, "d-1", 200, model="H200", serials=[f"D-{n:03d}" for n in range(200)])
    desk.record("batch.split", "gulf-cloud", batch="d-1", into=[
        {"batch": "d-1a", "quantity": 150, "serials": [f"D-{n:03d}" for n in range(150)]},
        {"batch": "d-1b", "quantity": 50, "serials": [f"D-{n:03d}" for n in range(150, 200)]},
    ])  # fmt: skip
    desk.record("batch.installed", "gulf-cloud", batch="d-1a", site="dxb-1")
    desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="d-1b", to="desert-ai",
                site="auh-1")  # fmt: skip
    ship(desk, "t-1", 100, destination="RU")  # flagged: embargoed-destination
    return desk


def ledger_of(desk: Desk) -> Ledger:
    ledger: Ledger = desk.client.app.state.ledger  # type: ignore[attr-defined]  # starlette's app
    return ledger


def test_every_read_model_is_rebuilt_from_the_log_row_for_row(desk: Desk) -> None:
    live = assert_rebuild_equals_live(ledger_of(desk))

    unused = {"rm_license_uses"}  # the scene cites no license (tests/test_rules.py does)
    assert {table for table in TABLES if live[table]} == set(TABLES) - unused


def test_chipledger_rebuild_restores_read_models_that_were_emptied(
    desk: Desk, any_store: str
) -> None:
    ledger = ledger_of(desk)
    before = rows(ledger)
    with ledger.reads.datastore.transaction(commit=True) as cursor:
        for table in ("rm_flags", "rm_serials", "rm_batch_log"):
            cursor.execute(ledger.reads.dialect.sql(f"DELETE FROM {{{table}}}"))  # noqa: S608

    assert main(["rebuild", "--store", any_store]) == 0

    assert rows(Ledger(any_store)) == before


def test_a_store_written_before_the_read_models_gets_them_when_first_opened(
    desk: Desk, any_store: str, clock: Clock
) -> None:
    ledger = ledger_of(desk)
    before = rows(ledger)
    with ledger.reads.datastore.transaction(commit=True) as cursor:
        for table in TABLES:
            cursor.execute(ledger.reads.dialect.sql(f"DROP TABLE {{{table}}}"))

    reopened = Ledger(any_store, clock=clock)

    assert rows(reopened) == before
    assert reopened.allocation("gulf-cloud") == ledger.allocation("gulf-cloud")


def test_opening_a_ledger_whose_read_models_are_current_reads_no_history(
    desk: Desk, any_store: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_replay(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("opening the ledger paged through the log")

    monkeypatch.setattr(type(ledger_of(desk).recorder), "select_notifications", no_replay)

    reopened = Ledger(any_store, clock=clock)

    assert reopened.allocation("gulf-cloud").by_status == {"installed": 150, "in_transit": 100}
    assert reopened.serial("D-160").batch == "d-1b"
    assert [f["rule"] for f in reopened.flags({"batch": "t-1"}).flags] == ["embargoed-destination"]


def test_a_commit_that_fails_leaves_the_read_models_as_they_were(
    desk: Desk, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = ledger_of(desk)
    before = rows(ledger)
    recorder: Any = type(ledger.recorder)
    insert = recorder._insert_events

    def insert_then_fail(self: Any, *args: Any, **kwargs: Any) -> Any:
        insert(self, *args, **kwargs)  # the read models' rows are written, then
        raise IntegrityError("the store refused the commit")

    monkeypatch.setattr(recorder, "_insert_events", insert_then_fail)
    _, envelope = desk.sign("batch.installed", "desert-ai", batch="d-1b", site="auh-1")
    assert desk.post(envelope).status_code == 409
    monkeypatch.undo()

    assert rows(ledger) == before
    assert desk.accept(envelope)["seq"] == ledger.size() - 1
    assert rows(ledger)["rm_position"] == [("read_models", ledger.size())]


def test_a_second_ledger_on_the_store_reads_what_the_first_wrote_at_once(
    desk: Desk, any_store: str, clock: Clock
) -> None:
    first = ledger_of(desk)
    second = Ledger(any_store, clock=clock)
    assert second.allocation("desert-ai").total == 50
    assert second.batch("d-1b").status == "delivered"  # now in its cache

    desk.record("batch.installed", "desert-ai", batch="d-1b", site="auh-1")

    assert second.allocation("desert-ai") == first.allocation("desert-ai")
    assert second.allocation("desert-ai").by_status == {"installed": 50}
    assert second.batch("d-1b").status == "installed"
    assert second.flags({}) == first.flags({})
