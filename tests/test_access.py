"""Who reads what (PROTOCOL.md section 6): a table of (reader, endpoint, object) -> status.

Authorities and investigators read everything; any other party reads the batches it has ever
owned, held or been consignee of (a split child with its parent), its own allocation, the
flags on those batches or naming it, the licenses it holds and the rule packs; the whole log
is for authorities and investigators (403); anything else answers 404 exactly as something
that does not exist; without a token every read but the public ones is 401. The rule lives in
`ledger/access.py`; these tests go through the HTTP API of a ledger served without open reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from tests.support import START, Clock, World, new_ledger, populate, signer, stamp
from tests.test_story import Desk

Json = dict[str, Any]
READERS = ["bis", "audit-office", "nvidia", "gulf-cloud", "desert-ai", "fastfreight"]


@dataclass
class Scene:
    ledger: Ledger
    closed: TestClient
    world: World
    tokens: dict[str, str]

    def get(self, reader: str | None, path: str, **params: Any) -> Any:
        headers = {} if reader is None else {"Authorization": f"Bearer {self.tokens[reader]}"}
        return self.closed.get(path, params=params, headers=headers)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    clock, store = Clock(), str(tmp_path_factory.mktemp("access") / "ledger.db")
    world = World(clock)
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    desk = Desk(TestClient(create_app(ledger, open_reads=True)), world)
    conditions = {"reexport_allowed": False, "security_guarantee": False,
                  "us_investment_commitment": False}  # fmt: skip
    terms = {"id": "L-g", "holder": "nvidia", "destinations": ["AE"], "consignees": ["gulf-cloud"],
             "models": ["H200"], "max_quantity": 1000, "valid_from": stamp(START),
             "valid_until": stamp(START + timedelta(days=30)),
             "conditions": conditions}  # fmt: skip
    desk.accept(world.envelope(world.event("license.granted", "bis", license=terms), "bis"))
    desk.record("batch.fabricated", "nvidia", batch="b-g", model="H200", quantity=100, country="TW")
    desk.record("batch.exported", "nvidia", batch="b-g", to="gulf-cloud", destination="AE",
                license="L-g")  # fmt: skip
    desk.record("batch.delivered", "gulf-cloud", batch="b-g", site="dxb-1", quantity=90)
    desk.record("batch.split", "gulf-cloud", batch="b-g", into=[
        {"batch": "b-g-1", "quantity": 50}, {"batch": "b-g-2", "quantity": 40}])  # fmt: skip
    desk.record("batch.fabricated", "nvidia", batch="b-d", model="H200", quantity=10, country="TW")
    desk.record("batch.exported", "nvidia", batch="b-d", to="desert-ai", destination="AE")
    tokens = {
        party: ledger.open_session(
            world.envelope(world.event("session.requested", party), party)
        ).token
        for party in READERS
    }
    yield Scene(ledger, TestClient(create_app(ledger), raise_server_exceptions=False), world,
                tokens)  # fmt: skip
    ledger.close()


EVERYTHING = ("bis", "audit-office")
OBJECTS: list[tuple[str, dict[str, Any], set[str]]] = [
    # (path, params, the readers other than authority and investigator who get 200)
    ("/v1/batches/b-g", {}, {"nvidia", "gulf-cloud"}),
    ("/v1/batches/b-g/history", {}, {"nvidia", "gulf-cloud"}),
    ("/v1/batches/b-g-1", {}, {"nvidia", "gulf-cloud"}),  # a child, seen with its parent
    ("/v1/batches/b-g-2/history", {}, {"nvidia", "gulf-cloud"}),
    ("/v1/batches/b-d", {}, {"nvidia", "desert-ai"}),
    ("/v1/batches/b-d", {"as_of": 13}, {"nvidia", "desert-ai"}),  # as fabricated
    ("/v1/parties/gulf-cloud/allocation", {}, {"gulf-cloud"}),
    ("/v1/parties/desert-ai/allocation", {}, {"desert-ai"}),
    ("/v1/parties/nvidia/allocation", {}, {"nvidia"}),
    ("/v1/licenses/L-g", {}, {"nvidia"}),
    ("/v1/bundles/batches/b-g", {}, {"nvidia", "gulf-cloud"}),
    ("/v1/bundles/batches/b-d", {}, {"nvidia", "desert-ai"}),
    ("/v1/policies", {}, set(READERS)),
    ("/v1/policies/current", {}, set(READERS)),
    ("/v1/flags", {}, set(READERS)),
]
TABLE = [
    pytest.param(reader, path, params, 200 if reader in EVERYTHING or reader in seen else 404,
                 id=f"{reader}:{path}{'?' if params else ''}{params or ''}")
    for path, params, seen in OBJECTS
    for reader in READERS
]  # fmt: skip


@pytest.mark.parametrize(("reader", "path", "params", "status"), TABLE)
def test_each_reader_sees_exactly_its_own(
    scene: Scene, reader: str, path: str, params: dict[str, Any], status: int
) -> None:
    response = scene.get(reader, path, **params)
    assert response.status_code == status, response.text
    if status == 404:
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("reader", READERS)
def test_a_hidden_object_is_answered_as_one_that_does_not_exist(scene: Scene, reader: str) -> None:
    pairs = [("/v1/batches/b-g", "/v1/batches/b-x"), ("/v1/licenses/L-g", "/v1/licenses/L-x")]
    pairs.append(("/v1/parties/gulf-cloud/allocation", "/v1/parties/x-x/allocation"))
    for hidden, missing in pairs:
        seen, absent = scene.get(reader, hidden), scene.get(reader, missing)
        if seen.status_code == 404:
            name = hidden.split("/")[3]
            other = missing.split("/")[3]
            assert seen.json()["error"]["message"] == absent.json()["error"]["message"].replace(
                other, name
            )


@pytest.mark.parametrize("reader", READERS)
def test_the_whole_log_is_for_authorities_and_investigators(scene: Scene, reader: str) -> None:
    response = scene.get(reader, "/v1/log/entries")
    assert response.status_code == (200 if reader in EVERYTHING else 403), response.text
    if reader not in EVERYTHING:
        assert response.json()["error"]["code"] == "not_authorized"


def test_flags_are_those_on_a_readers_batches_or_naming_it(scene: Scene) -> None:
    every = scene.get("bis", "/v1/flags").json()["flags"]
    assert every, "the scene raises flags"
    for reader in READERS:
        found = scene.get(reader, "/v1/flags").json()["flags"]
        if reader in EVERYTHING:
            assert found == every
            continue
        visible = {b for b in ("b-g", "b-g-1", "b-g-2", "b-d")
                   if scene.get(reader, f"/v1/batches/{b}").status_code == 200}  # fmt: skip
        assert found == [f for f in every if f.get("batch") in visible or f.get("party") == reader]


PUBLIC = [("/v1/ledger", {}), ("/v1/log/key", {}), ("/v1/log/checkpoint", {}),
          ("/v1/log/inclusion", {"seq": 0}),
          ("/v1/log/consistency", {"from": 1, "to": 2})]  # fmt: skip
READS = [(path, params) for path, params, _ in OBJECTS] + [("/v1/log/entries", {}),
                                                            ("/v1/serials/s-1", {})]  # fmt: skip


def test_without_a_token_only_the_public_endpoints_answer(scene: Scene) -> None:
    for path, params in PUBLIC:
        response = scene.closed.get(path, params=params)
        assert response.status_code == 200, (path, response.text)
        assert "X-Chipledger-Open-Reads" not in response.headers
    for path, params in READS:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
            response = scene.closed.get(path, params=params, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
    check = scene.closed.post("/v1/checks", json={"payloadType": "x"})
    assert check.status_code == 401


def test_a_token_dies_with_its_key_and_with_time(scene: Scene) -> None:
    world, ledger = scene.world, scene.ledger
    key = signer("fastfreight-2").public_key_b64
    added = world.event("party.key_added", "bis", party="fastfreight", key=key)
    ledger.submit(world.envelope(added, "bis", "fastfreight-2"))
    token = ledger.open_session(
        world.envelope(world.event("session.requested", "fastfreight"), "fastfreight-2")
    ).token
    auth = {"Authorization": f"Bearer {token}"}
    assert scene.closed.get("/v1/policies", headers=auth).status_code == 200
    ledger.submit(world.envelope(world.event(
        "party.key_revoked", "bis", party="fastfreight", keyid=signer("fastfreight-2").key_id
    ), "bis"))  # fmt: skip
    assert scene.closed.get("/v1/policies", headers=auth).status_code == 401
    assert scene.get("fastfreight", "/v1/policies").status_code == 200
    world.clock.advance(hours=1)
    try:
        expired = scene.get("fastfreight", "/v1/policies")
    finally:
        world.clock.advance(hours=-1)  # the scene's other tokens live on for the other tests
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]


def test_open_reads_answer_every_read_and_say_so(scene: Scene) -> None:
    open_ = TestClient(create_app(scene.ledger, open_reads=True))
    for path, params in READS[:-1]:
        response = open_.get(path, params=params)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["X-Chipledger-Open-Reads"] == "true"


def check(scene: Scene, reader: str, kind: str, actor: str, **fields: Any) -> Json:
    event = scene.world.event(kind, actor, **fields)
    envelope = scene.world.envelope(event, actor) | {"signatures": []}
    response = scene.closed.post(
        "/v1/checks", json=envelope, headers={"Authorization": f"Bearer {scene.tokens[reader]}"}
    )
    assert response.status_code == 200, response.text
    answer: Json = response.json()
    return answer


def test_a_party_checks_only_its_own_events_and_a_hidden_batch_is_an_unknown_one(
    scene: Scene,
) -> None:
    prev = "0" * 64
    as_other = check(scene, "desert-ai", "batch.installed", "gulf-cloud", batch="b-g-1",
                     prev=prev, site="dxb-1")  # fmt: skip
    assert as_other["error"]["code"] == "not_authorized"
    hidden = check(scene, "desert-ai", "batch.installed", "desert-ai", batch="b-g-1",
                   prev=prev, site="dxb-1")  # fmt: skip
    absent = check(scene, "desert-ai", "batch.installed", "desert-ai", batch="b-zz",
                   prev=prev, site="dxb-1")  # fmt: skip
    assert hidden["error"] == {"code": "not_found", "message": "no batch 'b-g-1' is recorded"}
    assert absent["error"] == {"code": "not_found", "message": "no batch 'b-zz' is recorded"}
    own = check(scene, "gulf-cloud", "batch.installed", "gulf-cloud", batch="b-g-1",
                prev=prev, site="dxb-1")  # fmt: skip
    assert own["error"]["code"] == "conflict"  # judged for real: its prev is stale
    assert check(scene, "bis", "batch.installed", "gulf-cloud", batch="b-g-1", prev=prev,
                 site="dxb-1")["error"]["code"] == "conflict"  # fmt: skip


@pytest.mark.parametrize(("as_of", "status"), [
    ("9" * 5000, 404), ("0" * 5000 + "3", 200), ("\u0661", 400), ("99", 404),
])  # fmt: skip
def test_as_of_takes_ascii_digits_of_any_length_without_a_server_error(
    scene: Scene, as_of: str, status: int
) -> None:
    response = scene.get("bis", "/v1/batches/b-g", as_of=as_of)
    assert response.status_code in ({200, 404} if status == 200 else {status}), response.text
