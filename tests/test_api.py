"""The HTTP API of PROTOCOL.md section 6: the ledger's description, receipts, batches, limits,
log paging, and error bodies for every input, never a 500.

Reads that need a token (`/v1/log/entries`) go through an app served with open reads, as the
protocol allows for a local demo; public reads and writes go through the plain app.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
from collections.abc import Callable, MutableMapping
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import MAX_BATCH, MAX_BATCH_BYTES, MAX_ENVELOPE_BYTES, Ledger
from ledger.canonical import canonical
from ledger.crypto import Signer
from ledger.notes import verifier_key
from tests.support import LOG_SEED, ORIGIN, Clock, World, new_ledger, populate, signer

Json = dict[str, Any]
POPULATED_SIZE = 8
MiB = 1 << 20


@pytest.fixture
def reader(populated: Ledger) -> TestClient:
    """The same ledger served with open reads (no token needed for any read)."""
    return TestClient(create_app(populated, open_reads=True), raise_server_exceptions=False)


def post(client: TestClient, envelope: Json) -> Any:
    return client.post("/v1/events", content=json.dumps(envelope).encode())


def post_batch(client: TestClient, envelopes: list[Any]) -> Any:
    return client.post("/v1/events/batch", content=json.dumps({"envelopes": envelopes}).encode())


def size(client: TestClient) -> int:
    value = client.get("/v1/ledger").json()["size"]
    assert isinstance(value, int)
    return value


def assert_error(response: Any, status: int, code: str) -> Json:
    """An error answer: the status, and exactly `{"error": {"code", "message"}}` (+ index)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: Json = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"].strip()
    assert "Traceback" not in response.text
    return error


def newcomer(world: World, party_id: str, roles: list[str] | None = None) -> Json:
    return world.party(party_id, roles or ["buyer"], "AE")


# -- GET /v1/ledger -------------------------------------------------------------------------------


def test_ledger_description_is_public_and_names_origin_keys_size_and_version(
    client: TestClient,
) -> None:
    response = client.get("/v1/ledger")

    assert response.status_code == 200
    assert response.json() == {
        "origin": ORIGIN,
        "log_key": verifier_key(ORIGIN, Signer(LOG_SEED).public_key),
        "authority": {"party": "bis", "key": signer("bis").public_key_b64},
        "size": POPULATED_SIZE,
        "version": 1,
    }


def test_log_key_is_the_c2sp_verifier_key_of_the_log_seed(client: TestClient) -> None:
    """Section 8: `<origin>+<8 hex of note key ID>+<base64 of 0x01 || public key>`."""
    public = Signer(LOG_SEED).public_key
    note_key_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public).digest()[:4]
    key = base64.b64encode(b"\x01" + public).decode()
    expected = f"{ORIGIN}+{note_key_id.hex()}+{key}"

    assert client.get("/v1/ledger").json()["log_key"] == expected
    assert client.get("/v1/log/key").text == expected + "\n"


def test_empty_ledger_has_size_zero_and_the_trust_root_key(ledger: Ledger) -> None:
    client = TestClient(create_app(ledger, open_reads=True), raise_server_exceptions=False)

    info = client.get("/v1/ledger").json()

    assert info["size"] == 0
    assert info["authority"]["key"] == signer("bis").public_key_b64


# -- POST /v1/events ------------------------------------------------------------------------------


def test_accepted_envelope_gets_a_201_receipt_with_its_hashes(
    client: TestClient, world: World, clock: Clock
) -> None:
    clock.advance(hours=1)
    envelope = newcomer(world, "newco")
    event = json.loads(base64.b64decode(envelope["payload"]))

    response = post(client, envelope)

    assert response.status_code == 201, response.text
    stored = canonical(envelope)
    assert response.json() == {
        "seq": POPULATED_SIZE,
        "id": event["id"],
        "type": "party.registered",
        "recorded_at": "2026-03-06T13:00:00Z",
        "envelope_hash": hashlib.sha256(stored).hexdigest(),
        "leaf_hash": hashlib.sha256(b"\x00" + stored).hexdigest(),
        "findings": [],
    }
    assert size(client) == POPULATED_SIZE + 1


def test_repeat_gets_the_original_receipt_with_200(client: TestClient, world: World) -> None:
    envelope = newcomer(world, "newco")
    first = post(client, envelope)

    again = post(client, envelope)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert size(client) == POPULATED_SIZE + 1


def test_envelope_sent_in_any_json_layout_is_stored_and_hashed_canonically(
    client: TestClient, reader: TestClient, world: World
) -> None:
    envelope = newcomer(world, "newco")
    layout = json.dumps(dict(reversed(envelope.items())), indent=3).encode()

    response = client.post("/v1/events", content=layout)

    assert response.status_code == 201, response.text
    assert response.json()["envelope_hash"] == hashlib.sha256(canonical(envelope)).hexdigest()
    entries = reader.get("/v1/log/entries", params={"start": POPULATED_SIZE}).json()["entries"]
    assert entries == [{"seq": POPULATED_SIZE, "envelope": envelope}]


# -- POST /v1/events/batch ------------------------------------------------------------------------


def _bad_signature(world: World, _: Json) -> Json:
    envelope = newcomer(world, "badsig")
    envelope["signatures"][0]["sig"] = envelope["signatures"][1]["sig"]
    return envelope


def _unknown_party(world: World, _: Json) -> Json:
    event = world.event("party.listed", "bis", party="ghost", list="entity", reason="r")
    return world.envelope(event, "bis")


def _unsigned(world: World, _: Json) -> Json:
    return {**newcomer(world, "nosig"), "signatures": []}


def _wrong_role(world: World, _: Json) -> Json:
    event = world.event("party.listed", "nvidia", party="desert-ai", list="entity", reason="r")
    return world.envelope(event, "nvidia")


def _bad_country(world: World, _: Json) -> Json:
    return world.site("dxb-9", "gulf-cloud", "ae")


def _same_party_as_envelope_0(world: World, _: Json) -> Json:
    return world.party("newco-0", ["buyer"], "AE", hq_country="AE")


def _same_id_as_envelope_0(world: World, first: Json) -> Json:
    event = json.loads(base64.b64decode(first["payload"]))
    event["party"] = {**event["party"], "name": "Other Bytes"}
    return world.envelope(event, "bis", "newco-0")


def _oversized(world: World, _: Json) -> Json:
    """An envelope over 1 MiB inside a batch under 16 MiB."""
    return {**newcomer(world, "big"), "payload": "A" * MiB}


BATCH_CAUSES: list[Any] = [
    pytest.param(_bad_signature, 401, "bad_signature", id="bad-signature"),
    pytest.param(_unsigned, 403, "not_authorized", id="no-signatures"),
    pytest.param(_wrong_role, 403, "not_authorized", id="wrong-role"),
    pytest.param(_unknown_party, 404, "not_found", id="unknown-party"),
    pytest.param(_same_party_as_envelope_0, 409, "conflict", id="party-id-taken-by-envelope-0"),
    pytest.param(_bad_country, 422, "invalid_event", id="bad-country"),
    pytest.param(_same_id_as_envelope_0, 409, "conflict", id="event-id-of-envelope-0-other-bytes"),
    pytest.param(lambda w, _: "x", 422, "invalid_event", id="not-an-object"),
    # Size is the first check of PROTOCOL.md section 5, for one envelope inside a batch too.
    pytest.param(_oversized, 413, "too_large", id="envelope-over-1MiB"),
]


@pytest.mark.parametrize(("bad", "status", "code"), BATCH_CAUSES)
def test_batch_with_a_bad_third_envelope_stores_nothing_and_names_index_2(
    client: TestClient,
    world: World,
    bad: Callable[[World, Json], Any],
    status: int,
    code: str,
) -> None:
    first, second = newcomer(world, "newco-0"), newcomer(world, "newco-1")
    batch = [first, second, bad(world, first), newcomer(world, "newco-3")]

    response = post_batch(client, batch)

    error = assert_error(response, status, code)
    assert error["index"] == 2
    assert size(client) == POPULATED_SIZE
    alone = post(client, first)
    assert (alone.status_code, alone.json()["seq"]) == (201, POPULATED_SIZE)


def test_batch_receipts_take_dense_seqs_in_order(client: TestClient, world: World) -> None:
    batch = [newcomer(world, f"newco-{i}") for i in range(3)]

    response = post_batch(client, batch)

    assert response.status_code == 201, response.text
    receipts = response.json()["receipts"]
    assert [r["seq"] for r in receipts] == [8, 9, 10]
    assert [r["type"] for r in receipts] == ["party.registered"] * 3
    assert size(client) == POPULATED_SIZE + 3


def test_repeats_in_a_batch_get_their_original_receipts_and_do_not_fail_it(
    client: TestClient, world: World
) -> None:
    earlier = newcomer(world, "earlier")
    original = post(client, earlier).json()
    fresh = newcomer(world, "fresh")

    response = post_batch(client, [earlier, fresh, fresh, earlier])

    assert response.status_code == 201, response.text
    receipts = response.json()["receipts"]
    assert receipts[0] == receipts[3] == original
    assert receipts[1] == receipts[2]
    assert receipts[1]["seq"] == POPULATED_SIZE + 1
    assert size(client) == POPULATED_SIZE + 2


def test_batch_registers_a_party_and_then_its_site(client: TestClient, world: World) -> None:
    batch = [newcomer(world, "newco", ["carrier"]), world.site("newco-1", "newco", "MY")]

    response = post_batch(client, batch)

    assert response.status_code == 201, response.text
    assert [r["type"] for r in response.json()["receipts"]] == [
        "party.registered",
        "site.registered",
    ]
    assert size(client) == POPULATED_SIZE + 2


def test_batch_of_1000_envelopes_is_accepted(client: TestClient, world: World) -> None:
    envelope = newcomer(world, "newco")

    response = post_batch(client, [envelope] * MAX_BATCH)

    assert response.status_code == 201, response.text
    receipts = response.json()["receipts"]
    assert len(receipts) == MAX_BATCH
    assert {r["seq"] for r in receipts} == {POPULATED_SIZE}


def test_batch_of_1001_envelopes_is_refused(client: TestClient, world: World) -> None:
    response = post_batch(client, [newcomer(world, "newco")] * (MAX_BATCH + 1))

    assert_error(response, 422, "invalid_event")
    assert size(client) == POPULATED_SIZE


# -- size limits (PROTOCOL.md section 5) ----------------------------------------------------------


def padded_to(data: bytes, total: int) -> bytes:
    """JSON padded with trailing whitespace to exactly `total` bytes."""
    assert len(data) <= total
    return data + b" " * (total - len(data))


def test_envelope_body_of_exactly_1_mib_is_accepted(client: TestClient, world: World) -> None:
    body = padded_to(json.dumps(newcomer(world, "newco")).encode(), MAX_ENVELOPE_BYTES)

    response = client.post("/v1/events", content=body)

    assert response.status_code == 201, response.text


def test_envelope_body_over_1_mib_is_too_large(client: TestClient, world: World) -> None:
    body = padded_to(json.dumps(newcomer(world, "newco")).encode(), MAX_ENVELOPE_BYTES + 1)

    response = client.post("/v1/events", content=body)

    assert_error(response, 413, "too_large")
    assert size(client) == POPULATED_SIZE


def test_batch_body_of_exactly_16_mib_is_accepted(client: TestClient, world: World) -> None:
    body = json.dumps({"envelopes": [newcomer(world, "newco")]}).encode()

    response = client.post("/v1/events/batch", content=padded_to(body, MAX_BATCH_BYTES))

    assert response.status_code == 201, response.text


def test_batch_body_over_16_mib_is_too_large(client: TestClient, world: World) -> None:
    body = json.dumps({"envelopes": [newcomer(world, "newco")]}).encode()

    response = client.post("/v1/events/batch", content=padded_to(body, MAX_BATCH_BYTES + 1))

    assert_error(response, 413, "too_large")
    assert size(client) == POPULATED_SIZE


def test_streamed_body_without_a_length_is_cut_off_at_the_limit(client: TestClient) -> None:
    chunks = (b" " * (1 << 16) for _ in range(17))

    response = client.post("/v1/events", content=chunks)

    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too_large")


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/events", MAX_ENVELOPE_BYTES), ("/v1/events/batch", MAX_BATCH_BYTES)],
)
def test_too_large_is_answered_from_content_length_before_the_body_is_read(
    populated: Ledger, path: str, limit: int
) -> None:
    app = create_app(populated, open_reads=True)
    reads: list[str] = []
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> Json:
        reads.append(path)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-length", str(limit + 1).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))

    assert reads == []
    assert sent[0]["status"] == 413
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["error"]["code"] == "too_large"


# -- GET /v1/log/entries -------------------------------------------------------------------------


def test_log_entries_are_the_accepted_envelopes_in_seq_order(reader: TestClient) -> None:
    response = reader.get("/v1/log/entries")

    assert response.status_code == 200
    entries = response.json()["entries"]
    assert [e["seq"] for e in entries] == list(range(POPULATED_SIZE))
    assert entries[0]["envelope"] == World(Clock()).genesis()


def test_log_entries_page_by_start_and_limit(reader: TestClient) -> None:
    page = reader.get("/v1/log/entries", params={"start": 2, "limit": 3}).json()["entries"]
    tail = reader.get("/v1/log/entries", params={"start": 7, "limit": 1000}).json()["entries"]

    assert [e["seq"] for e in page] == [2, 3, 4]
    assert [e["seq"] for e in tail] == [7]


def test_log_entries_default_to_a_page_of_100(reader: TestClient, world: World) -> None:
    sites = [world.site(f"s-{i}", "gulf-cloud") for i in range(100)]
    assert reader.post("/v1/events/batch", json={"envelopes": sites}).status_code == 201

    first = reader.get("/v1/log/entries").json()["entries"]
    rest = reader.get("/v1/log/entries", params={"start": 100}).json()["entries"]

    assert [e["seq"] for e in first] == list(range(100))
    assert [e["seq"] for e in rest] == list(range(100, 108))


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("start=-1", id="negative-start"),
        pytest.param("limit=0", id="limit-0"),
        pytest.param("limit=1001", id="limit-1001"),
        pytest.param("limit=-5", id="negative-limit"),
        pytest.param("limit=ten", id="limit-not-a-number"),
        pytest.param("start=x", id="start-not-a-number"),
        pytest.param("start=1.5", id="start-fraction"),
        pytest.param("limit=", id="limit-empty"),
    ],
)
def test_log_entries_with_bad_parameters_is_a_bad_request(reader: TestClient, query: str) -> None:
    assert_error(reader.get(f"/v1/log/entries?{query}"), 400, "bad_request")


def test_open_reads_say_so_on_every_response(reader: TestClient, populated: Ledger) -> None:
    assert reader.get("/v1/ledger").headers["X-Chipledger-Open-Reads"] == "true"
    assert reader.get("/v1/log/entries?limit=0").headers["X-Chipledger-Open-Reads"] == "true"
    closed = TestClient(create_app(populated), raise_server_exceptions=False)
    assert "X-Chipledger-Open-Reads" not in closed.get("/v1/ledger").headers


# -- errors for every input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        pytest.param("GET", "/v1/nope", 404, "not_found", id="unknown-v1-route"),
        pytest.param("GET", "/", 404, "not_found", id="root"),
        pytest.param("GET", "/v2/ledger", 404, "not_found", id="unknown-version"),
        pytest.param("POST", "/v1/ledger", 405, "method_not_allowed", id="post-to-a-read"),
        pytest.param("GET", "/v1/events", 405, "method_not_allowed", id="get-a-write"),
        pytest.param("DELETE", "/v1/events", 405, "method_not_allowed", id="delete"),
    ],
)
def test_unknown_routes_and_methods_get_the_error_body(
    client: TestClient, method: str, path: str, status: int, code: str
) -> None:
    assert_error(client.request(method, path), status, code)


LONE_SURROGATE = (
    b'{"payloadType": "application/vnd.chipledger.event.v1+json", "payload": "\\ud800", '
    b'"signatures": []}'
)
JUNK: list[Any] = [
    pytest.param(b"", {400}, id="empty"),
    pytest.param(b"   \n", {400}, id="whitespace"),
    pytest.param(b"null", {422}, id="null"),
    pytest.param(b"[]", {422}, id="empty-array"),
    pytest.param(b'"x"', {422}, id="string"),
    pytest.param(b"{}", {422}, id="empty-object"),
    pytest.param(b"true", {422}, id="true"),
    pytest.param(b"1e400", {422}, id="overflowing-float"),
    pytest.param(b"NaN", {400}, id="NaN"),
    pytest.param(b'{"payload": Infinity}', {400}, id="Infinity"),
    pytest.param(b"{", {400}, id="truncated"),
    pytest.param(b"\xff\xfe\x00{}", {400}, id="invalid-utf8"),
    pytest.param(b"\xef\xbb\xbf{}", {400}, id="utf8-bom"),
    pytest.param(b'{"a":"\x01"}', {400}, id="raw-control-character"),
    pytest.param(LONE_SURROGATE, {422}, id="lone-surrogate"),
    pytest.param(b'{"envelopes": [' + LONE_SURROGATE + b"]}", {422}, id="lone-surrogate-in-batch"),
    pytest.param(b'{"envelopes": null}', {422}, id="envelopes-null"),
    pytest.param(b'{"envelopes": []}', {422}, id="envelopes-empty"),
    pytest.param(b'{"envelopes": [{}], "x": 1}', {422}, id="envelopes-and-more"),
    # Valid JSON beyond the parser's limits: refused as JSON (400) or as no envelope (422).
    pytest.param(b"[" * 100_000 + b"]" * 100_000, {400, 422}, id="deeply-nested-arrays"),
    pytest.param(b'{"payloadType":' + b"[" * 500 + b"]" * 500 + b"}", {422}, id="nested-field"),
    pytest.param(b"9" * 5000, {400, 422}, id="huge-integer"),
    pytest.param(b'{"envelopes": [' + b"9" * 4000 + b"]}", {422}, id="big-integer-envelope"),
    pytest.param(b"[" + b"0," * 50_000 + b"0]", {422}, id="long-array"),
]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
@pytest.mark.parametrize(("junk", "statuses"), JUNK)
def test_junk_body_gets_an_error_body_never_a_500(
    client: TestClient, path: str, junk: bytes, statuses: set[int]
) -> None:
    response = client.post(path, content=junk)

    assert response.status_code in statuses, response.text
    code = {400: "bad_request", 422: "invalid_event"}[response.status_code]
    assert_error(response, response.status_code, code)
    assert size(client) == POPULATED_SIZE


def test_a_write_that_finds_the_store_locked_answers_503_with_retry_after_and_stores_nothing(
    store: str, clock: Clock, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (another server, another worker) holds the SQLite file's write lock
    past the busy timeout: PROTOCOL section 6 `unavailable`, never a 500."""
    monkeypatch.setenv("SQLITE_LOCK_TIMEOUT", "1")  # the library's busy timeout, in seconds
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    client = TestClient(create_app(ledger, open_reads=True), raise_server_exceptions=False)
    envelope = world.party("desert-one", ["buyer"])
    holder = sqlite3.connect(store, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        response = client.post("/v1/events", json=envelope)
    finally:
        holder.close()

    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"
    assert size(client) == POPULATED_SIZE
    again = client.post("/v1/events", json=envelope)
    assert (again.status_code, again.json()["seq"]) == (201, POPULATED_SIZE), again.text
