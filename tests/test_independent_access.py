"""Who reads what (PROTOCOL.md section 6), through a real `chipledger serve` WITHOUT open reads.

The client is tests/independent/client.py, written from PROTOCOL.md alone; nothing here imports
the project's packages (`ledger`, `api`, `tools`, `tests.support`).

One server serves the module. The cast: the genesis authority `bis`, an investigator, a vendor
and two buyers, each buyer operating one site. The vendor holds a license for buyer A. Batch A is
fabricated by the vendor, exported to buyer A under that license, delivered short (a
`delivery-shortfall` flag) and split by buyer A into two children; batch B is fabricated and
exported to buyer B in CN without a license (a `license-required` flag); the authority inspects
both buyers' sites and counts wrongly (an `inspection-mismatch` flag naming each operator, on no
batch). Every party gets a token from `POST /v1/sessions`.

What this proves, against the contract of section 6:

- a table of (reader, endpoint, object) -> status: authorities and investigators read
  everything; any other party reads the batches it owned, held or was consignee of (a split
  child with its parent, history and bundle alike), its own allocation, the licenses it holds and
  the rule packs, and gets 404 for anything else; `/v1/log/entries` is 403 for all but
  authorities and investigators; `POST /v1/checks` is 200 with a token and 401 without;
- `GET /v1/flags` gives a party exactly the flags on the batches it sees or naming it, measured
  against the investigator's full list;
- every non-public read without a token (or with one the ledger never issued) is 401
  `unauthenticated`, even for an object that does not exist; the public reads are 200 without;
- a 404 for a hidden object is indistinguishable from a 404 for a non-existent one;
- `POST /v1/sessions`: 201 with `token`, `party`, `expires_at` about an hour away; the same
  request id again is 409; an `at` 6 minutes old is 422; an envelope signed by another party's
  key gets no token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.independent.client import (
    JSONObject,
    LedgerClient,
    ServerProcess,
    Signer,
    Timeline,
    canonical,
    envelope_hash,
    format_time,
    init_ledger,
    make_event,
    now,
    parse_time,
    sign,
)

# --- the cast -------------------------------------------------------------------------------

AUTHORITY = "bis"
INVESTIGATOR = "inv"
VENDOR = "vendor"
BUYER_A = "buyer-a"
BUYER_B = "buyer-b"
PARTIES = [AUTHORITY, INVESTIGATOR, VENDOR, BUYER_A, BUYER_B]
PRIVILEGED = {AUTHORITY, INVESTIGATOR}

SITE_A = "site-a"
SITE_B = "site-b"
LICENSE = "lic-vendor-a"
BATCH_A = "batch-a"
CHILD_1 = "batch-a.1"
CHILD_2 = "batch-a.2"
BATCH_B = "batch-b"
BATCHES = [BATCH_A, CHILD_1, CHILD_2, BATCH_B]

MISSING_BATCH = "batch-none"
MISSING_PARTY = "party-none"
MISSING_LICENSE = "lic-none"

# Who may see which batch, by section 6's rule (ever owned, held or consignee; a split child
# with its parent). The vendor owned and held A before the split, so it sees the children too.
VISIBLE_BATCHES: dict[str, set[str]] = {
    AUTHORITY: set(BATCHES),
    INVESTIGATOR: set(BATCHES),
    VENDOR: set(BATCHES),
    BUYER_A: {BATCH_A, CHILD_1, CHILD_2},
    BUYER_B: {BATCH_B},
}
LICENSE_READERS = {AUTHORITY, INVESTIGATOR, VENDOR}  # the holder, not the consignee

ERROR_FIELDS = {"code", "message"}


@dataclass
class World:
    server: ServerProcess
    client: LedgerClient
    http: httpx.Client
    timeline: Timeline
    signers: dict[str, Signer]
    heads: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def submit(self, event: JSONObject, *parties: str) -> JSONObject:
        envelope = sign(event, [self.signers[party] for party in parties])
        response = self.client.post_event(envelope)
        assert response.status_code == 201, f"{event['type']}: {response.text}"
        receipt: JSONObject = response.json()
        assert receipt["envelope_hash"] == envelope_hash(envelope)
        if "batch" in event:
            self.heads[event["batch"]] = receipt["envelope_hash"]
            for child in event.get("into", []):
                self.heads[child["batch"]] = receipt["envelope_hash"]
        return receipt

    def register(self, party: str, role: str, country: str) -> None:
        signer = self.signers.setdefault(party, Signer.from_label(f"access {party}"))
        record = {
            "id": party,
            "name": f"{party} Ltd",
            "roles": [role],
            "country": country,
            "keys": [signer.public_key_b64],
        }
        event = make_event("party.registered", AUTHORITY, at=self.timeline.next(), party=record)
        parties = [AUTHORITY] if party == AUTHORITY else [AUTHORITY, party]
        self.submit(event, *parties)

    def act(self, type_: str, actor: str, batch: str, **fields: Any) -> JSONObject:
        chain = {} if type_ == "batch.fabricated" else {"prev": self.heads[batch]}
        event = make_event(type_, actor, at=self.timeline.next(), batch=batch, **chain, **fields)
        return self.submit(event, actor)

    def session(self, envelope: JSONObject) -> httpx.Response:
        return self.http.post(
            "/v1/sessions",
            content=canonical(envelope),
            headers={"Content-Type": "application/json"},
        )

    def session_envelope(
        self, actor: str, signer: Signer | None = None, *, at: str | None = None
    ) -> JSONObject:
        event = make_event("session.requested", actor, at=at)
        return sign(event, [signer or self.signers[actor]])

    def get(self, reader: str | None, path: str) -> httpx.Response:
        token = self.tokens[reader] if reader is not None else None
        return self.client.get(path, token=token)


def check_envelope() -> JSONObject:
    """A fabrication the vendor could make, unsigned: `POST /v1/checks` judges it as signed."""
    event = make_event(
        "batch.fabricated", VENDOR, batch="batch-check", model="H200", quantity=5, country="TW"
    )
    envelope = sign(event, [])
    assert envelope["signatures"] == []
    return envelope


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("independent-access")
    bis = Signer.from_label("access bis")
    store, log_key = init_ledger(directory, bis)
    server = ServerProcess(store, log_key)  # no open reads: tokens are the point
    server.start()
    client = LedgerClient(server.url)
    http = httpx.Client(base_url=server.url, timeout=15.0)
    timeline = Timeline(now() - timedelta(minutes=20), timedelta(seconds=2))
    w = World(server, client, http, timeline, signers={AUTHORITY: bis})
    try:
        w.register(AUTHORITY, "authority", "US")
        w.register(INVESTIGATOR, "investigator", "US")
        w.register(VENDOR, "vendor", "TW")
        w.register(BUYER_A, "buyer", "AE")
        w.register(BUYER_B, "buyer", "AE")
        for site, operator, country in ((SITE_A, BUYER_A, "AE"), (SITE_B, BUYER_B, "CN")):
            record = {"id": site, "operator": operator, "country": country, "name": f"Site {site}"}
            w.submit(
                make_event("site.registered", operator, at=timeline.next(), site=record), operator
            )
        terms = {
            "id": LICENSE,
            "holder": VENDOR,
            "destinations": ["AE"],
            "consignees": [BUYER_A],
            "models": ["H200"],
            "max_quantity": 1000,
            "valid_from": format_time(now() - timedelta(days=30)),
            "valid_until": format_time(now() + timedelta(days=365)),
            "conditions": {
                "reexport_allowed": False,
                "security_guarantee": False,
                "us_investment_commitment": False,
            },
        }
        w.submit(
            make_event("license.granted", AUTHORITY, at=timeline.next(), license=terms), AUTHORITY
        )
        # Batch A: vendor -> buyer A under the license, delivered short, split by buyer A.
        w.act("batch.fabricated", VENDOR, BATCH_A, model="H200", quantity=100, country="TW")
        w.act("batch.exported", VENDOR, BATCH_A, to=BUYER_A, destination="AE", license=LICENSE)
        w.act("batch.delivered", BUYER_A, BATCH_A, site=SITE_A, quantity=90)
        into = [{"batch": CHILD_1, "quantity": 50}, {"batch": CHILD_2, "quantity": 40}]
        w.act("batch.split", BUYER_A, BATCH_A, into=into)
        # Batch B: vendor -> buyer B in CN, unlicensed, still in transit.
        w.act("batch.fabricated", VENDOR, BATCH_B, model="H200", quantity=30, country="TW")
        w.act("batch.exported", VENDOR, BATCH_B, to=BUYER_B, destination="CN")
        # Inspections that miscount: flags about each operator, on no batch.
        for site in (SITE_A, SITE_B):
            w.submit(
                make_event(
                    "site.inspected",
                    AUTHORITY,
                    at=timeline.next(),
                    site=site,
                    observed={"H200": 7},
                ),
                AUTHORITY,
            )
        for party in PARTIES:
            response = w.session(w.session_envelope(party))
            assert response.status_code == 201, f"session for {party}: {response.text}"
            w.tokens[party] = str(response.json()["token"])
        yield w
    finally:
        http.close()
        client.close()
        server.stop()


def assert_error(response: httpx.Response, status: int, code: str) -> JSONObject:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: JSONObject = response.json()
    assert set(body) == {"error"}, body
    error: JSONObject = body["error"]
    assert set(error) == ERROR_FIELDS, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert " " in error["message"].strip(), f"not a sentence for a person: {error}"
    return error


# --- sessions -------------------------------------------------------------------------------


@pytest.mark.parametrize("party", PARTIES)
def test_a_session_gives_a_token_for_the_party_that_signed_for_an_hour(
    world: World, party: str
) -> None:
    before = now()
    response = world.session(world.session_envelope(party))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"token", "party", "expires_at"}, body
    assert body["party"] == party
    assert isinstance(body["token"], str)
    assert body["token"]
    expires = parse_time(body["expires_at"])
    assert before + timedelta(minutes=55) <= expires <= now() + timedelta(minutes=65), body
    # and the token reads
    assert world.client.get(f"/v1/parties/{party}/allocation", token=body["token"]).is_success


def test_a_session_request_replayed_with_the_same_id_is_409_and_gives_no_token(
    world: World,
) -> None:
    envelope = world.session_envelope(BUYER_A)
    first = world.session(envelope)
    assert first.status_code == 201, first.text
    again = world.session(envelope)
    assert_error(again, 409, "conflict")
    assert "token" not in again.json()


def test_a_session_request_six_minutes_old_is_422_and_gives_no_token(world: World) -> None:
    stale = format_time(now() - timedelta(minutes=6))
    response = world.session(world.session_envelope(BUYER_A, at=stale))
    assert_error(response, 422, "invalid_event")
    assert "token" not in response.json()


def test_a_session_request_signed_by_another_partys_key_gives_no_token(world: World) -> None:
    envelope = world.session_envelope(BUYER_A, world.signers[BUYER_B])
    response = world.session(envelope)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert "token" not in body
    assert set(body) == {"error"}, body


# --- the access table -----------------------------------------------------------------------


def _case(reader: str, path: str, status: int) -> Any:
    return pytest.param(reader, path, status, id=f"{reader} GET {path} -> {status}")


def _table() -> list[Any]:
    cases: list[Any] = []
    for reader in PARTIES:
        for batch in BATCHES:
            status = 200 if batch in VISIBLE_BATCHES[reader] else 404
            for path in (
                f"/v1/batches/{batch}",
                f"/v1/batches/{batch}/history",
                f"/v1/bundles/batches/{batch}",
            ):
                cases.append(_case(reader, path, status))
        for party in PARTIES:
            status = 200 if reader in PRIVILEGED or reader == party else 404
            cases.append(_case(reader, f"/v1/parties/{party}/allocation", status))
        cases.append(
            _case(reader, f"/v1/licenses/{LICENSE}", 200 if reader in LICENSE_READERS else 404)
        )
        cases.append(_case(reader, "/v1/policies", 200))
        cases.append(_case(reader, "/v1/policies/current", 200))
        cases.append(_case(reader, "/v1/flags", 200))
        cases.append(_case(reader, "/v1/log/entries", 200 if reader in PRIVILEGED else 403))
    return cases


@pytest.mark.parametrize(("reader", "path", "status"), _table())
def test_who_reads_what(world: World, reader: str, path: str, status: int) -> None:
    response = world.get(reader, path)
    if status == 404:
        assert_error(response, 404, "not_found")
        return
    if status == 403:
        assert_error(response, 403, "not_authorized")
        return
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    assert "X-Chipledger-Open-Reads" not in response.headers
    body = response.json()
    parts = path.strip("/").split("/")
    if parts[1] == "batches":
        assert body["batch"] == parts[2], body
    elif parts[1] == "bundles":
        assert parts[3] in canonical(body).decode(), "a bundle names its batch"
    elif parts[1] == "parties":
        assert body["party"] == parts[2], body
    elif parts[1] == "licenses":
        assert body["id"] == parts[2], body
    elif parts[1] == "log":
        assert {entry["seq"] for entry in body["entries"]} >= {0}, body


@pytest.mark.parametrize("reader", PARTIES)
def test_a_check_with_a_token_is_200_and_judges_only_the_readers_own_events(
    world: World, reader: str
) -> None:
    response = world.http.post(
        "/v1/checks",
        content=canonical(check_envelope()),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {world.tokens[reader]}",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["findings"], list)
    if reader in PRIVILEGED or reader == VENDOR:
        assert body["accepted"] is True, body
    else:
        # The ledger's decision where section 6 is silent (README, "Who reads what"): a party
        # checks only events it would sign, so a check cannot read another party's state.
        assert body["accepted"] is False, body
        assert body["error"]["code"] == "not_authorized", body


@pytest.mark.parametrize("token", [None, "not-a-token-this-ledger-issued"])
def test_a_check_without_a_token_is_401(world: World, token: str | None) -> None:
    size = world.client.size()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = world.http.post("/v1/checks", content=canonical(check_envelope()), headers=headers)
    assert_error(response, 401, "unauthenticated")
    assert world.client.size() == size


# --- flags ----------------------------------------------------------------------------------


def _flags(world: World, reader: str) -> list[JSONObject]:
    response = world.get(reader, "/v1/flags")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"flags"}, body
    flags: list[JSONObject] = body["flags"]
    return flags


def test_the_investigator_and_the_authority_see_every_flag_and_there_are_some_to_hide(
    world: World,
) -> None:
    full = _flags(world, INVESTIGATOR)
    assert _flags(world, AUTHORITY) == full
    on = {str(flag.get("batch")) for flag in full}
    assert on & {BATCH_A, CHILD_1, CHILD_2}, f"no flag on batch A's lineage: {full}"
    assert BATCH_B in on, f"no flag on batch B: {full}"
    about = {
        (flag.get("rule"), flag.get("party"), flag.get("site"))
        for flag in full
        if "batch" not in flag
    }
    assert ("inspection-mismatch", BUYER_A, SITE_A) in about, full
    assert ("inspection-mismatch", BUYER_B, SITE_B) in about, full


@pytest.mark.parametrize("reader", [VENDOR, BUYER_A, BUYER_B])
def test_a_party_sees_exactly_the_flags_on_its_batches_or_naming_it(
    world: World, reader: str
) -> None:
    full = _flags(world, INVESTIGATOR)
    expected = [
        flag
        for flag in full
        if flag.get("batch") in VISIBLE_BATCHES[reader] or flag.get("party") == reader
    ]
    assert expected, f"nothing for {reader} to see: the test would prove nothing"
    assert _flags(world, reader) == expected


# --- no token -------------------------------------------------------------------------------

PRIVATE_READS = [
    f"/v1/batches/{BATCH_A}",
    f"/v1/batches/{BATCH_A}/history",
    f"/v1/batches/{MISSING_BATCH}",
    f"/v1/batches/{MISSING_BATCH}/history",
    "/v1/serials/SN-none",
    f"/v1/parties/{BUYER_A}/allocation",
    f"/v1/parties/{MISSING_PARTY}/allocation",
    "/v1/flags",
    f"/v1/flags?batch={BATCH_A}",
    f"/v1/licenses/{LICENSE}",
    f"/v1/licenses/{MISSING_LICENSE}",
    "/v1/policies",
    "/v1/policies/current",
    "/v1/log/entries",
    f"/v1/bundles/batches/{BATCH_A}",
    f"/v1/bundles/batches/{MISSING_BATCH}",
]


@pytest.mark.parametrize("token", [None, "not-a-token-this-ledger-issued"], ids=["none", "bogus"])
@pytest.mark.parametrize("path", PRIVATE_READS)
def test_a_non_public_read_without_a_token_is_401_unauthenticated(
    world: World, path: str, token: str | None
) -> None:
    assert_error(world.client.get(path, token=token), 401, "unauthenticated")


def _checkpoint_size(world: World) -> int:
    """The latest checkpoint's size once it covers the whole ledger (section 8: within 1 s)."""
    size = world.client.size()
    deadline = time.monotonic() + 3.0
    while True:
        response = world.client.get("/v1/log/checkpoint")
        assert response.status_code == 200, response.text
        covered = int(response.text.split("\n")[1])
        if covered >= size or time.monotonic() > deadline:
            return covered
        time.sleep(0.1)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/ledger",
        "/v1/log/key",
        "/v1/log/checkpoint",
        "/v1/log/inclusion?seq=0",
        "/v1/log/inclusion?seq=1&size={size}",
        "/v1/log/consistency?from=1&to={size}",
    ],
)
def test_a_public_read_without_a_token_is_200(world: World, path: str) -> None:
    size = _checkpoint_size(world)
    response = world.client.get(path.format(size=size))
    assert response.status_code == 200, response.text
    assert "X-Chipledger-Open-Reads" not in response.headers


# --- a hidden object is indistinguishable from a missing one --------------------------------


@pytest.mark.parametrize(
    ("reader", "template", "hidden", "missing"),
    [
        (BUYER_B, "/v1/batches/{}", BATCH_A, MISSING_BATCH),
        (BUYER_B, "/v1/batches/{}", CHILD_1, MISSING_BATCH),
        (BUYER_A, "/v1/batches/{}", BATCH_B, MISSING_BATCH),
        (BUYER_B, "/v1/batches/{}/history", BATCH_A, MISSING_BATCH),
        (BUYER_B, "/v1/bundles/batches/{}", BATCH_A, MISSING_BATCH),
        (BUYER_A, "/v1/parties/{}/allocation", BUYER_B, MISSING_PARTY),
        (VENDOR, "/v1/parties/{}/allocation", BUYER_A, MISSING_PARTY),
        (BUYER_A, "/v1/licenses/{}", LICENSE, MISSING_LICENSE),
    ],
)
def test_a_404_for_a_hidden_object_looks_like_a_404_for_a_missing_one(
    world: World, reader: str, template: str, hidden: str, missing: str
) -> None:
    seen = world.get(reader, template.format(hidden))
    absent = world.get(reader, template.format(missing))
    hidden_error = assert_error(seen, 404, "not_found")
    missing_error = assert_error(absent, 404, "not_found")
    assert hidden_error["message"].replace(hidden, "<id>") == missing_error["message"].replace(
        missing, "<id>"
    ), (hidden_error, missing_error)
    assert seen.headers.get("content-type") == absent.headers.get("content-type")
