"""Read sessions (PROTOCOL.md section 6, `POST /v1/sessions`), on SQLite and PostgreSQL.

A party signs a `session.requested` envelope (common fields only) with one of its active keys
and gets a bearer token; the request never enters the log; a replayed, stale, forged or
wrongly typed request is refused; a token expires, survives a restart, is stored only as a
hash, and dies with the key that asked for it. Which reads a token opens is the next step
(the issue on access control); these tests pin the sessions themselves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from ledger.canonical import b64decode_strict, parse_json
from ledger.errors import Unauthenticated
from ledger.wire import format_time
from tests.support import Clock, World, new_ledger, populate, signer, stamp

Json = dict[str, Any]


@pytest.fixture
def desk(any_store: str, clock: Clock, world: World) -> Iterator[tuple[Ledger, TestClient]]:
    ledger = new_ledger(any_store, clock)
    populate(ledger, world)
    yield ledger, TestClient(create_app(ledger, open_reads=True), raise_server_exceptions=False)
    ledger.close()


def request(world: World, actor: str, *keys: str, **fields: Any) -> Json:
    return world.envelope(world.event("session.requested", actor, **fields), *(keys or (actor,)))


def opened(client: TestClient, envelope: Json) -> Json:
    response = client.post("/v1/sessions", json=envelope)
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


def refused(client: TestClient, envelope: Json, status: int, code: str) -> str:
    response = client.post("/v1/sessions", json=envelope)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    message: str = response.json()["error"]["message"]
    return message


def test_a_party_signing_a_fresh_request_gets_a_token_and_the_log_stays_as_it_was(
    desk: tuple[Ledger, TestClient], world: World, clock: Clock
) -> None:
    ledger, client = desk
    size, checkpoint = ledger.size(), ledger.checkpoint()
    body = opened(client, request(world, "gulf-cloud"))
    assert set(body) == {"token", "party", "expires_at"}
    assert body["party"] == "gulf-cloud"
    assert body["expires_at"] == format_time(clock.now + timedelta(hours=1))
    assert len(body["token"]) >= 40
    assert ledger.session_party(body["token"]) == "gulf-cloud"
    assert (ledger.size(), ledger.checkpoint()) == (size, checkpoint)
    other = opened(client, request(world, "gulf-cloud"))
    assert other["token"] != body["token"]


def test_a_replayed_request_or_an_id_the_log_holds_is_409(
    desk: tuple[Ledger, TestClient], world: World
) -> None:
    ledger, client = desk
    envelope = request(world, "desert-ai")
    opened(client, envelope)
    assert "used before" in refused(client, envelope, 409, "conflict")
    logged = ledger.log_entries(1, 1).entries[0].envelope
    used = parse_json(b64decode_strict(logged["payload"], "payload"))["id"]
    assert "used before" in refused(client, request(world, "desert-ai", id=used), 409, "conflict")


@pytest.mark.parametrize(("minutes", "accepted"), [
    (-5, True), (-5.02, False), (4.9, True), (5.02, False),
])  # fmt: skip
def test_a_request_is_good_for_five_minutes_either_side_of_the_clock(
    desk: tuple[Ledger, TestClient], world: World, clock: Clock, minutes: float, accepted: bool
) -> None:
    _, client = desk
    envelope = request(world, "nvidia", at=stamp(clock.now + timedelta(minutes=minutes)))
    if accepted:
        opened(client, envelope)
    else:
        assert "5 minutes" in refused(client, envelope, 422, "invalid_event")


def test_forged_unsigned_and_mistyped_requests_are_refused_and_give_no_token(
    desk: tuple[Ledger, TestClient], world: World
) -> None:
    ledger, client = desk
    assert "one of its active keys" in refused(
        client, request(world, "gulf-cloud", "desert-ai"), 403, "not_authorized"
    )
    assert refused(client, request(world, "gulf-cloud", "stranger"), 401, "bad_signature")
    forged = request(world, "gulf-cloud")
    forged["signatures"][0]["sig"] = request(world, "gulf-cloud")["signatures"][0]["sig"]
    assert refused(client, forged, 401, "bad_signature")
    unsigned = request(world, "gulf-cloud") | {"signatures": []}
    assert refused(client, unsigned, 403, "not_authorized")
    wrong = world.envelope(world.event("party.listed", "gulf-cloud"), "gulf-cloud")
    assert "'session.requested' event" in refused(client, wrong, 422, "invalid_event")
    extra = request(world, "gulf-cloud", party="gulf-cloud")
    assert refused(client, extra, 422, "invalid_event")
    size = ledger.size()
    logged = client.post("/v1/events", json=request(world, "gulf-cloud"))
    assert logged.status_code == 422, logged.text
    assert ledger.size() == size


def test_a_token_expires_and_the_lifetime_can_be_set(
    desk: tuple[Ledger, TestClient], world: World, clock: Clock
) -> None:
    ledger, client = desk
    token = opened(client, request(world, "gulf-cloud"))["token"]
    clock.advance(minutes=59, seconds=59)
    assert ledger.session_party(token) == "gulf-cloud"
    clock.advance(seconds=1)
    with pytest.raises(Unauthenticated, match="expired"):
        ledger.session_party(token)
    ledger.session_lifetime = timedelta(minutes=10)
    body = opened(client, request(world, "gulf-cloud"))
    assert body["expires_at"] == format_time(clock.now + timedelta(minutes=10))
    with pytest.raises(Unauthenticated, match="not one this ledger gave out"):
        ledger.session_party(token[:-1] + ("A" if token[-1] != "A" else "B"))


def test_a_token_dies_with_the_key_that_asked_for_it(
    desk: tuple[Ledger, TestClient], world: World
) -> None:
    ledger, client = desk
    key = signer("gulf-cloud-2").public_key_b64
    ledger.submit(world.envelope(
        world.event("party.key_added", "bis", party="gulf-cloud", key=key), "bis", "gulf-cloud-2"
    ))  # fmt: skip
    by_new = opened(client, request(world, "gulf-cloud", "gulf-cloud-2"))["token"]
    by_old = opened(client, request(world, "gulf-cloud"))["token"]
    ledger.submit(world.envelope(world.event(
        "party.key_revoked", "bis", party="gulf-cloud", keyid=signer("gulf-cloud-2").key_id
    ), "bis"))  # fmt: skip
    with pytest.raises(Unauthenticated, match="revoked"):
        ledger.session_party(by_new)
    assert ledger.session_party(by_old) == "gulf-cloud"
    assert refused(client, request(world, "gulf-cloud", "gulf-cloud-2"), 401, "bad_signature")


def test_tokens_survive_a_restart_and_are_stored_only_as_hashes(
    store: str, clock: Clock, world: World
) -> None:
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    token = ledger.open_session(request(world, "desert-ai")).token
    ledger.close()
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT * FROM ledger_sessions").fetchall()
    assert rows
    assert all(token not in str(row) for row in rows)
    reopened = Ledger(store, clock=clock)
    assert reopened.session_party(token) == "desert-ai"
    reopened.close()
