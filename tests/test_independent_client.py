"""The real `chipledger serve`, driven by an independent client written from PROTOCOL.md alone.

Nothing here imports the project's packages (`ledger`, `api`, `tools`, `tests.support`): the
client is tests/independent/client.py, and the server is the `chipledger` command, run as a
subprocess on loopback the way a user would run it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import stat
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.independent.client import (
    DEFAULT_ORIGIN,
    PAYLOAD_TYPE,
    JSONObject,
    LedgerClient,
    ServerProcess,
    Signer,
    b64decode_strict,
    b64encode,
    canonical,
    envelope_for_payload,
    envelope_hash,
    format_time,
    init_ledger,
    key_id,
    leaf_hash,
    make_event,
    now,
    pae,
    payload_bytes,
    run_cli,
    sign,
    verifier_key,
    verify_envelope,
)

RECEIPT_FIELDS = {"seq", "id", "type", "recorded_at", "envelope_hash", "leaf_hash", "findings"}
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MIB = 1024 * 1024


# --- the worked examples --------------------------------------------------------------------

# Copied from /work/shared/vectors/envelope.json, case "genesis, self-signed by the authority".
VECTOR_GENESIS: JSONObject = {
    "seeds_hex": ["01" * 32],
    "public_keys": ["iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="],
    "keyids": ["34750f98bd59fcfc946da45aaabe933be154a4b5094e1c4abf42866505f3c97e"],
    "event": {
        "type": "party.registered",
        "id": "00000000-0000-4000-8000-000000000001",
        "ledger": "chipledger.local/ledger",
        "actor": "bis",
        "at": "2026-03-06T09:00:00Z",
        "party": {
            "id": "bis",
            "name": "Bureau of Industry and Security",
            "roles": ["authority"],
            "country": "US",
            "keys": ["iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="],
        },
    },
    "payload_utf8": (
        '{"actor":"bis","at":"2026-03-06T09:00:00Z","id":"00000000-0000-4000-8000-000000000001",'
        '"ledger":"chipledger.local/ledger","party":{"country":"US","id":"bis","keys":'
        '["iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="],"name":"Bureau of Industry and '
        'Security","roles":["authority"]},"type":"party.registered"}'
    ),
    "pae_prefix": "DSSEv1 40 application/vnd.chipledger.event.v1+json 303 ",
    "envelope_canonical_utf8": (
        '{"payload":"eyJhY3RvciI6ImJpcyIsImF0IjoiMjAyNi0wMy0wNlQwOTowMDowMFoiLCJpZCI6IjAwMDAwMDAw'
        "LTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMSIsImxlZGdlciI6ImNoaXBsZWRnZXIubG9jYWwvbGVkZ2VyIiwi"
        "cGFydHkiOnsiY291bnRyeSI6IlVTIiwiaWQiOiJiaXMiLCJrZXlzIjpbImlvamozWFFKOFpYOVV0c3RQTHBkY3Nw"
        "bkNiOGRsQkliODNTSUFiUVBiMXc9Il0sIm5hbWUiOiJCdXJlYXUgb2YgSW5kdXN0cnkgYW5kIFNlY3VyaXR5Iiwi"
        'cm9sZXMiOlsiYXV0aG9yaXR5Il19LCJ0eXBlIjoicGFydHkucmVnaXN0ZXJlZCJ9","payloadType":'
        '"application/vnd.chipledger.event.v1+json","signatures":[{"keyid":"34750f98bd59fcfc946'
        'da45aaabe933be154a4b5094e1c4abf42866505f3c97e","sig":"RdZXZOD+AAUniZD75KWtYhmaq2PZk5t5U'
        '8y9IrWfAKCYaeqcneDsWkkJ2fzE6CrvHk0YIDcJ4FyZzg+L7gWuAw=="}]}'
    ),
    "envelope_hash": "4cef52c8d63842fcfd041d5ae7ab2e4c1023f181609c055afa235a0b4773b2a1",
    "leaf_hash": "3a609178498e1d69ad7bf9db7a69e27a2649d40f7ed1f81ceae6ec5175af0ef4",
}

# Copied from /work/shared/vectors/envelope.json, case "two-party transfer: owner then receiver".
VECTOR_TRANSFER: JSONObject = {
    "seeds_hex": ["02" * 32, "03" * 32],
    "public_keys": [
        "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=",
        "7UkoxijRwsbq6QM4kFmVYSlZJzpcY/k2NsFGFKyHN9E=",
    ],
    "keyids": [
        "6a3803d5f059902a1c6dafbc9ba4729212f7caac08634cc3ae76b27529f03827",
        "b62e867fa2f33afe62d5d6b1642e1621d543307846b2a57b897e710919b76709",
    ],
    "event": {
        "type": "batch.transferred",
        "id": "00000000-0000-4000-8000-000000000002",
        "ledger": "chipledger.local/ledger",
        "actor": "gulf-cloud",
        "at": "2026-04-01T10:30:00Z",
        "batch": "H200-0001",
        "prev": "5c1b3a4e9f2d7c8b6a5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a",
        "to": "desert-ai",
        "site": "dxb-2",
    },
    "payload_utf8": (
        '{"actor":"gulf-cloud","at":"2026-04-01T10:30:00Z","batch":"H200-0001","id":'
        '"00000000-0000-4000-8000-000000000002","ledger":"chipledger.local/ledger","prev":'
        '"5c1b3a4e9f2d7c8b6a5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a","site":"dxb-2",'
        '"to":"desert-ai","type":"batch.transferred"}'
    ),
    "pae_prefix": "DSSEv1 40 application/vnd.chipledger.event.v1+json 282 ",
    "envelope_canonical_utf8": (
        '{"payload":"eyJhY3RvciI6Imd1bGYtY2xvdWQiLCJhdCI6IjIwMjYtMDQtMDFUMTA6MzA6MDBaIiwiYmF0Y2gi'
        "OiJIMjAwLTAwMDEiLCJpZCI6IjAwMDAwMDAwLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMiIsImxlZGdlciI6"
        "ImNoaXBsZWRnZXIubG9jYWwvbGVkZ2VyIiwicHJldiI6IjVjMWIzYTRlOWYyZDdjOGI2YTVlNGQzYzJiMWEwZjll"
        "OGQ3YzZiNWE0ZjNlMmQxYzBiOWE4ZjdlNmQ1YzRiM2EiLCJzaXRlIjoiZHhiLTIiLCJ0byI6ImRlc2VydC1haSIs"
        'InR5cGUiOiJiYXRjaC50cmFuc2ZlcnJlZCJ9","payloadType":"application/vnd.chipledger.event.v1'
        '+json","signatures":[{"keyid":"6a3803d5f059902a1c6dafbc9ba4729212f7caac08634cc3ae76b2752'
        '9f03827","sig":"NqBc9bldBeHcM8owYYZaakFHjXEC8uRDWXmQ75ZXNxaFX8QqPSW9vr4nYXD1eZo17MmUSn/J'
        'q3DHE73L2ZiACg=="},{"keyid":"b62e867fa2f33afe62d5d6b1642e1621d543307846b2a57b897e710919b'
        '76709","sig":"ynWaJsuYKutl2+AatGHqbo/J8Eb561YUUwoRaPRuQ7taav17mWYDaM450GkO/S6pBbmKjSV6Ur'
        'VABSDsZ+/HBA=="}]}'
    ),
    "envelope_hash": "5198f42beeba3559b265d50505658ac684b7942bd6e7f741a7aec93837dc434e",
    "leaf_hash": "64c96dac63b189f63acce02685c90cd1812cd55a2a53f4a7f3c48349f9516a69",
}


@pytest.mark.parametrize("vector", [VECTOR_GENESIS, VECTOR_TRANSFER], ids=["genesis", "transfer"])
def test_sign_reproduces_the_worked_envelope_examples_byte_for_byte(vector: JSONObject) -> None:
    signers = [Signer(bytes.fromhex(seed)) for seed in vector["seeds_hex"]]
    assert [s.public_key_b64 for s in signers] == vector["public_keys"]
    assert [s.keyid for s in signers] == vector["keyids"]

    envelope = sign(vector["event"], signers)

    payload = payload_bytes(envelope)
    assert payload == vector["payload_utf8"].encode()
    assert pae(PAYLOAD_TYPE, payload) == vector["pae_prefix"].encode() + payload
    assert canonical(envelope) == vector["envelope_canonical_utf8"].encode()
    assert envelope_hash(envelope) == vector["envelope_hash"]
    assert leaf_hash(envelope) == vector["leaf_hash"]
    assert verify_envelope(envelope, [s.public_key for s in signers])


def test_strict_base64_refuses_what_does_not_re_encode_to_itself() -> None:
    assert b64decode_strict("AQI=") == b"\x01\x02"
    for text in ("AQI", "AQJ=", "AQI=\n", "A QI=", "-_8="):
        with pytest.raises(ValueError, match="base64"):
            b64decode_strict(text)


# --- the ledger under test ------------------------------------------------------------------


@dataclass
class Party:
    id: str
    roles: list[str]
    country: str
    signer: Signer
    name: str = ""
    hq_country: str | None = None

    def record(self) -> JSONObject:
        """The `party` object of its `party.registered`."""
        party: JSONObject = {
            "id": self.id,
            "name": self.name or f"{self.id} Ltd",
            "roles": self.roles,
            "country": self.country,
            "keys": [self.signer.public_key_b64],
        }
        if self.hq_country is not None:
            party["hq_country"] = self.hq_country
        return party


@dataclass
class World:
    """One ledger served by `chipledger serve`, with the parties the tests act as."""

    directory: Path
    server: ServerProcess
    parties: dict[str, Party] = field(default_factory=dict)
    keys: dict[str, Signer] = field(default_factory=dict)
    sent: list[JSONObject] = field(default_factory=list)
    receipts: dict[str, JSONObject] = field(default_factory=dict)
    events: dict[str, JSONObject] = field(default_factory=dict)
    _client: LedgerClient | None = None
    _client_url: str = ""
    _counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def client(self) -> LedgerClient:
        if self._client is None or self._client_url != self.server.url:
            if self._client is not None:
                self._client.close()
            self._client = LedgerClient(self.server.url)
            self._client_url = self.server.url
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def signer(self, party: str) -> Signer:
        return self.parties[party].signer

    def fresh_name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._counter)}"

    def fresh_key(self) -> Signer:
        return Signer.from_label(self.fresh_name("key"))

    def accept(self, name: str, event: JSONObject, signers: list[Signer]) -> JSONObject:
        """Send an event that must be accepted; remember its envelope and receipt."""
        envelope = sign(event, signers)
        response = self.client.post_event(envelope)
        assert response.status_code == 201, f"{name}: {response.status_code} {response.text}"
        receipt: JSONObject = response.json()
        self.sent.append(envelope)
        self.receipts[name] = receipt
        self.events[name] = event
        return receipt

    def registration(
        self, roles: list[str], *, actor: str = "bis", country: str = "AE"
    ) -> tuple[JSONObject, Signer]:
        """A well-formed `party.registered` of a new party, and the new party's key."""
        key = self.fresh_key()
        party = Party(self.fresh_name("party"), roles, country, key)
        return make_event("party.registered", actor, party=party.record()), key


def register(world: World, name: str, party: Party, by: str = "bis") -> None:
    world.parties[party.id] = party
    event = make_event("party.registered", by, party=party.record())
    world.accept(name, event, [world.signer(by), party.signer])


def populate(world: World) -> None:
    """The registry the tests stand on, in this order (seq 0, 1, 2, ...)."""
    bis = world.parties["bis"]
    world.accept(
        "genesis",
        make_event("party.registered", "bis", party=bis.record()),
        [bis.signer],
    )
    register(world, "ofac", Party("ofac", ["authority"], "US", Signer.from_label("ofac")))
    register(world, "vendor", Party("acme-chips", ["vendor"], "US", Signer.from_label("acme")))
    register(world, "buyer", Party("gulf-cloud", ["buyer"], "AE", Signer.from_label("gulf")))
    register(
        world,
        "buyer-2",
        Party("desert-ai", ["buyer"], "AE", Signer.from_label("desert"), hq_country="US"),
    )
    register(world, "carrier", Party("fast-freight", ["carrier"], "NL", Signer.from_label("ff")))
    register(
        world,
        "investigator",
        Party("audit-office", ["investigator"], "US", Signer.from_label("audit")),
    )
    bis_key, ofac_key = world.signer("bis"), world.signer("ofac")
    acme_2, acme_3 = Signer.from_label("acme-2"), Signer.from_label("acme-3")
    world.keys["acme-2"], world.keys["acme-3"] = acme_2, acme_3
    world.accept(
        "key-added",
        make_event("party.key_added", "bis", party="acme-chips", key=acme_2.public_key_b64),
        [bis_key, acme_2],
    )
    world.accept(
        "key-revoked",
        make_event("party.key_revoked", "bis", party="acme-chips", keyid=acme_2.keyid),
        [bis_key],
    )
    world.accept(
        "key-added-by-another-authority",
        make_event("party.key_added", "ofac", party="acme-chips", key=acme_3.public_key_b64),
        [ofac_key, acme_3],
    )
    world.accept(
        "key-revoked-as-compromised",
        make_event(
            "party.key_revoked",
            "ofac",
            party="acme-chips",
            keyid=acme_3.keyid,
            compromised_since=format_time(now() - timedelta(hours=1)),
        ),
        [ofac_key],
    )
    world.accept(
        "listed",
        make_event("party.listed", "bis", party="desert-ai", list="entity", reason="Diversion."),
        [bis_key],
    )
    world.accept(
        "delisted",
        make_event("party.delisted", "bis", party="desert-ai", list="entity"),
        [bis_key],
    )
    world.accept(
        "listed-unverified",
        make_event(
            "party.listed", "bis", party="desert-ai", list="unverified", reason="End use unchecked."
        ),
        [bis_key],
    )
    world.accept(
        "site-by-operator",
        make_event(
            "site.registered",
            "gulf-cloud",
            site={"id": "dxb-1", "operator": "gulf-cloud", "country": "AE", "name": "Dubai 1"},
        ),
        [world.signer("gulf-cloud")],
    )
    world.accept(
        "site-by-authority",
        make_event(
            "site.registered",
            "bis",
            site={"id": "fab-1", "operator": "acme-chips", "country": "US", "name": "Fab 1"},
        ),
        [bis_key],
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("independent")
    bis = Party("bis", ["authority"], "US", Signer.from_label("bis"), "Bureau of Industry")
    store, log_key = init_ledger(directory, bis.signer)
    server = ServerProcess(store, log_key, open_reads=True)
    server.start()
    world = World(directory, server, parties={"bis": bis})
    try:
        populate(world)
        yield world
    finally:
        world.close()
        server.stop()


def refused_without_storing(
    world: World, body: bytes, status: int | None, codes: Collection[str], path: str = "/v1/events"
) -> JSONObject:
    """Post `body`; it must be refused with `status` (None: any 4xx) and one of `codes`, and
    leave the ledger's size as it was."""
    size = world.client.size()
    response = world.client.post_raw(path, body)
    if status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    error: JSONObject = response.json()["error"]
    assert error["code"] in codes, response.text
    assert_sentence(error["message"])
    assert world.client.size() == size
    return error


def assert_sentence(message: object) -> None:
    assert isinstance(message, str)
    assert message.strip(), "an error message must say what is wrong"
    assert " " in message.strip(), f"not a sentence for a person: {message!r}"


def assert_receipt(receipt: JSONObject, event: JSONObject, envelope: JSONObject, seq: int) -> None:
    assert set(receipt) == RECEIPT_FIELDS
    assert receipt["seq"] == seq
    assert receipt["id"] == event["id"]
    assert receipt["type"] == event["type"]
    assert RFC3339_UTC.match(receipt["recorded_at"]), receipt["recorded_at"]
    assert receipt["envelope_hash"] == envelope_hash(envelope)
    assert receipt["leaf_hash"] == leaf_hash(envelope)
    assert isinstance(receipt["findings"], list)


# --- accepted -------------------------------------------------------------------------------


def test_genesis_signed_by_the_trust_root_key_is_accepted_as_seq_0(world: World) -> None:
    receipt = world.receipts["genesis"]
    assert_receipt(receipt, world.events["genesis"], world.sent[0], seq=0)
    assert receipt["findings"] == []


def test_ledger_names_its_origin_log_key_trust_root_size_and_version(world: World) -> None:
    info = world.client.ledger()
    assert set(info) == {"origin", "log_key", "authority", "size", "version"}
    assert info["origin"] == DEFAULT_ORIGIN
    log_public_key = Signer.from_key_file(world.server.log_key).public_key
    assert info["log_key"] == verifier_key(DEFAULT_ORIGIN, log_public_key)
    assert world.client.get("/v1/log/key").text.strip() == info["log_key"]
    assert info["authority"] == {"party": "bis", "key": world.signer("bis").public_key_b64}
    assert isinstance(info["size"], int)
    assert info["size"] >= len(world.sent)
    assert info["version"] == 1


def test_registry_events_get_dense_seqs_in_the_order_they_were_accepted(world: World) -> None:
    names = list(world.receipts)
    assert [world.receipts[n]["seq"] for n in names] == list(range(len(names)))
    for seq, name in enumerate(names):
        assert_receipt(world.receipts[name], world.events[name], world.sent[seq], seq)


def test_each_registry_event_type_is_accepted_from_the_parties_allowed_to_sign_it(
    world: World,
) -> None:
    types = {name: receipt["type"] for name, receipt in world.receipts.items()}
    assert types == {
        "genesis": "party.registered",
        "ofac": "party.registered",
        "vendor": "party.registered",
        "buyer": "party.registered",
        "buyer-2": "party.registered",
        "carrier": "party.registered",
        "investigator": "party.registered",
        "key-added": "party.key_added",
        "key-revoked": "party.key_revoked",
        "key-added-by-another-authority": "party.key_added",
        "key-revoked-as-compromised": "party.key_revoked",
        "listed": "party.listed",
        "delisted": "party.delisted",
        "listed-unverified": "party.listed",
        "site-by-operator": "site.registered",
        "site-by-authority": "site.registered",
    }


def test_receipt_hashes_are_sha256_of_the_canonical_envelope_and_of_the_leaf(
    world: World,
) -> None:
    for seq, envelope in enumerate(world.sent):
        receipt = next(r for r in world.receipts.values() if r["seq"] == seq)
        body = canonical(envelope)
        assert receipt["envelope_hash"] == hashlib.sha256(body).hexdigest()
        assert receipt["leaf_hash"] == hashlib.sha256(b"\x00" + body).hexdigest()
        assert HEX64.match(receipt["envelope_hash"])


def test_log_entries_return_the_envelopes_exactly_as_they_were_sent(world: World) -> None:
    response = world.client.get(f"/v1/log/entries?start=0&limit={len(world.sent)}")
    assert response.status_code == 200, response.text
    entries = response.json()["entries"]
    assert [e["seq"] for e in entries] == list(range(len(world.sent)))
    assert [canonical(e["envelope"]) for e in entries] == [canonical(e) for e in world.sent]


def test_an_open_reads_ledger_says_so_on_every_response(world: World) -> None:
    for response in (
        world.client.get("/v1/ledger"),
        world.client.get("/v1/log/entries"),
        world.client.post_raw("/v1/events", b"{"),
    ):
        assert response.headers.get("X-Chipledger-Open-Reads") == "true", response.url


def test_without_open_reads_the_log_entries_need_a_token_401(tmp_path: Path) -> None:
    store, log_key = init_ledger(tmp_path, Signer.from_label("closed-ledger-authority"))
    server = ServerProcess(store, log_key)
    server.start()
    try:
        with LedgerClient(server.url) as client:
            public = client.get("/v1/ledger")
            assert public.status_code == 200, public.text
            assert "X-Chipledger-Open-Reads" not in public.headers
            for token in (None, "not-a-token-this-ledger-issued"):
                response = client.get("/v1/log/entries", token=token)
                assert response.status_code == 401, f"token {token!r}: {response.text}"
                assert response.json()["error"]["code"] == "unauthenticated"
                assert_sentence(response.json()["error"]["message"])
    finally:
        server.stop()


def test_a_key_made_by_keygen_signs_for_the_party_it_is_added_to(
    world: World, tmp_path: Path
) -> None:
    made = run_cli("keygen", "courier", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    key_file, pub_file = tmp_path / "courier.key", tmp_path / "courier.pub"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    signer = Signer.from_key_file(key_file)
    public_key = b64decode_strict(pub_file.read_text().strip())
    assert signer.public_key == public_key
    assert made.stdout.strip() == key_id(public_key)

    event = make_event("party.key_added", "bis", party="fast-freight", key=signer.public_key_b64)
    envelope = sign(event, [world.signer("bis"), signer])
    size = world.client.size()
    response = world.client.post_event(envelope)
    assert response.status_code == 201, response.text
    assert_receipt(response.json(), event, envelope, seq=size)


def test_init_refuses_to_touch_an_existing_ledger(world: World) -> None:
    size = world.client.size()
    again = run_cli(
        "init",
        "--store",
        str(world.server.store),
        "--authority-key",
        world.signer("ofac").public_key_b64,
        "--log-key",
        str(world.directory / "another-log.key"),
    )
    assert again.returncode == 1, again.stdout + again.stderr
    assert_sentence(again.stderr)
    assert world.client.size() == size
    assert world.client.ledger()["authority"]["party"] == "bis"


# --- repeated -------------------------------------------------------------------------------


def test_a_repeat_gets_the_original_receipt_with_200_whatever_its_signatures(
    world: World,
) -> None:
    event, key = world.registration(["buyer"])
    bis, ofac = world.signer("bis"), world.signer("ofac")
    first = world.client.post_event(sign(event, [bis, key]))
    assert first.status_code == 201, first.text
    size = world.client.size()

    reordered = sign(event, [key, bis])
    other_authority = sign(event, [ofac, key])
    garbage = sign(event, [bis, key])
    garbage["signatures"][0]["sig"] = b64encode(bytes(64))
    for envelope in (reordered, other_authority, garbage):
        again = world.client.post_event(envelope)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
    assert world.client.size() == size


def test_the_same_event_id_with_other_payload_bytes_is_409_conflict(world: World) -> None:
    event, key = world.registration(["buyer"])
    bis = world.signer("bis")
    first = world.client.post_event(sign(event, [bis, key]))
    assert first.status_code == 201, first.text

    altered = json.loads(json.dumps(event))
    altered["party"]["name"] = "Another name"
    refused_without_storing(world, canonical(sign(altered, [bis, key])), 409, {"conflict"})


# --- refused --------------------------------------------------------------------------------


def noncanonical_base64(data: bytes) -> str:
    """Base64 of `data` with its unused trailing bits set: decodes leniently, never strictly."""
    text = b64encode(data)
    assert text.endswith("="), "needs a length that is not a multiple of 3"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = text.rstrip("=")
    last = alphabet[alphabet.index(body[-1]) | 1]
    altered = body[:-1] + last + text[len(body) :]
    assert base64.b64decode(altered) == data
    return altered


def with_padded_payload(event: JSONObject) -> JSONObject:
    """Lengthen the party's name until the payload's base64 needs padding."""
    while len(canonical(event)) % 3 == 0:
        event["party"]["name"] += "."
    return event


@dataclass(frozen=True)
class Refusal:
    name: str
    status: int | None  # None: any 4xx (PROTOCOL says only "refused")
    codes: frozenset[str]
    body: Callable[[World], bytes]


def env_body(envelope: JSONObject) -> bytes:
    return canonical(envelope)


def _registration_envelope(world: World) -> JSONObject:
    event, key = world.registration(["buyer"])
    return sign(event, [world.signer("bis"), key])


def _mutated_event(mutate: Callable[[JSONObject], None]) -> Callable[[World], bytes]:
    def build(world: World) -> bytes:
        event, key = world.registration(["buyer"])
        mutate(event)
        return env_body(sign(event, [world.signer("bis"), key]))

    return build


def _mutated_envelope(mutate: Callable[[JSONObject], None]) -> Callable[[World], bytes]:
    def build(world: World) -> bytes:
        envelope = _registration_envelope(world)
        mutate(envelope)
        return env_body(envelope)

    return build


def _payload_bytes(make: Callable[[JSONObject], bytes]) -> Callable[[World], bytes]:
    """An envelope, properly signed, over payload bytes made from a valid event."""

    def build(world: World) -> bytes:
        event, key = world.registration(["buyer"])
        return env_body(envelope_for_payload(make(event), [world.signer("bis"), key]))

    return build


def _duplicated_key_in_payload(event: JSONObject) -> bytes:
    payload = canonical(event)
    assert payload.startswith(b'{"actor":"bis",')
    return b'{"actor":"bis",' + payload[1:]


def _duplicated_key_in_envelope(world: World) -> bytes:
    envelope = _registration_envelope(world)
    body = canonical(envelope)
    field_text = b'"payloadType":' + json.dumps(PAYLOAD_TYPE).encode()
    assert field_text in body
    return body.replace(field_text, field_text + b"," + field_text)


def _duplicated_key_in_signature(world: World) -> bytes:
    envelope = _registration_envelope(world)
    body = canonical(envelope)
    keyid = envelope["signatures"][0]["keyid"]
    field_text = b'"keyid":"' + keyid.encode() + b'"'
    return body.replace(field_text, field_text + b"," + field_text)


def _noncanonical_payload_base64(world: World) -> bytes:
    event, key = world.registration(["buyer"])
    envelope = sign(with_padded_payload(event), [world.signer("bis"), key])
    envelope["payload"] = noncanonical_base64(payload_bytes(envelope))
    return env_body(envelope)


def _unpadded_payload_base64(world: World) -> bytes:
    event, key = world.registration(["buyer"])
    envelope = sign(with_padded_payload(event), [world.signer("bis"), key])
    envelope["payload"] = envelope["payload"].rstrip("=")
    return env_body(envelope)


def _noncanonical_sig_base64(world: World) -> bytes:
    envelope = _registration_envelope(world)
    signature = envelope["signatures"][0]
    signature["sig"] = noncanonical_base64(b64decode_strict(signature["sig"]))
    return env_body(envelope)


def _sig_of_length(length: int) -> Callable[[World], bytes]:
    def build(world: World) -> bytes:
        envelope = _registration_envelope(world)
        raw = b64decode_strict(envelope["signatures"][0]["sig"])
        envelope["signatures"][0]["sig"] = b64encode((raw + bytes(8))[:length])
        return env_body(envelope)

    return build


def _seventeen_signatures(world: World) -> bytes:
    event, key = world.registration(["buyer"])
    strangers = [Signer.from_label(f"stranger-{n}") for n in range(15)]
    return env_body(sign(event, [world.signer("bis"), key, *strangers]))


def _same_keyid_twice(world: World) -> bytes:
    event, key = world.registration(["buyer"])
    return env_body(sign(event, [world.signer("bis"), world.signer("bis"), key]))


def _fabrication(quantity: str) -> Callable[[World], bytes]:
    """A `batch.fabricated` whose payload carries `quantity` as this exact JSON number text."""

    def build(world: World) -> bytes:
        event = make_event(
            "batch.fabricated",
            "acme-chips",
            batch=world.fresh_name("B"),
            model="H200",
            quantity=7777777,
            country="US",
        )
        payload = canonical(event)
        assert payload.count(b'"quantity":7777777,') == 1
        payload = payload.replace(b'"quantity":7777777,', f'"quantity":{quantity},'.encode())
        return env_body(envelope_for_payload(payload, [world.signer("acme-chips")]))

    return build


def _set_party(key: str, value: Any) -> Callable[[JSONObject], None]:
    def mutate(event: JSONObject) -> None:
        event["party"][key] = value

    return mutate


def _set_event(key: str, value: Any) -> Callable[[JSONObject], None]:
    def mutate(event: JSONObject) -> None:
        event[key] = value

    return mutate


def _bad_signature(world: World) -> bytes:
    event, key = world.registration(["buyer"])
    payload = canonical(event)
    envelope = envelope_for_payload(payload, [key])
    forged = world.signer("bis").signature(payload + b" ")
    envelope["signatures"].insert(0, forged)
    return env_body(envelope)


def _listing(world: World, signers: list[Signer], actor: str = "bis", party: str = "") -> bytes:
    event = make_event(
        "party.listed", actor, party=party or "gulf-cloud", list="denied", reason="Test."
    )
    return env_body(sign(event, signers))


def _site(world: World, actor: str, operator: str, signers: list[Signer], site: str = "") -> bytes:
    event = make_event(
        "site.registered",
        actor,
        site={
            "id": site or world.fresh_name("site"),
            "operator": operator,
            "country": "AE",
            "name": "A site",
        },
    )
    return env_body(sign(event, signers))


def _registration_by(actor: str, roles: list[str]) -> Callable[[World], bytes]:
    def build(world: World) -> bytes:
        event, key = world.registration(roles, actor=actor)
        return env_body(sign(event, [world.signer(actor), key]))

    return build


def _key_added(party: str, actor: str = "bis", existing: str = "") -> Callable[[World], bytes]:
    def build(world: World) -> bytes:
        key = world.signer(existing) if existing else world.fresh_key()
        event = make_event("party.key_added", actor, party=party, key=key.public_key_b64)
        return env_body(sign(event, [world.signer(actor), key]))

    return build


def _reused_party_id(world: World) -> bytes:
    key = world.fresh_key()
    party = Party("gulf-cloud", ["buyer"], "AE", key)
    event = make_event("party.registered", "bis", party=party.record())
    return env_body(sign(event, [world.signer("bis"), key]))


def _key_of_another_party(world: World) -> bytes:
    gulf = world.signer("gulf-cloud")
    party = Party(world.fresh_name("party"), ["buyer"], "AE", gulf)
    event = make_event("party.registered", "bis", party=party.record())
    return env_body(sign(event, [world.signer("bis"), gulf]))


def _revoke_again(world: World) -> bytes:
    event = make_event(
        "party.key_revoked", "bis", party="acme-chips", keyid=world.keys["acme-2"].keyid
    )
    return env_body(sign(event, [world.signer("bis")]))


def _list_again(world: World) -> bytes:
    event = make_event(
        "party.listed", "bis", party="desert-ai", list="unverified", reason="Still unchecked."
    )
    return env_body(sign(event, [world.signer("bis")]))


def _oversized(world: World) -> bytes:
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": "A" * (MIB + 4), "signatures": []}
    return env_body(envelope)


def _drop(key: str) -> Callable[[JSONObject], None]:
    def mutate(envelope: JSONObject) -> None:
        del envelope[key]

    return mutate


def _future(minutes: int) -> str:
    return format_time(now() + timedelta(minutes=minutes))


BAD_REQUEST, INVALID = frozenset({"bad_request"}), frozenset({"invalid_event"})
DUPLICATE_KEY_CODES = frozenset({"bad_request", "invalid_event"})
NOT_AUTHORIZED, NOT_FOUND = frozenset({"not_authorized"}), frozenset({"not_found"})
CONFLICT = frozenset({"conflict"})
STATE_CONFLICT = frozenset({"conflict", "invalid_transition"})
SIGNATURE = frozenset({"bad_signature"})

REFUSALS = [
    Refusal("body-not-json", 400, BAD_REQUEST, lambda w: b'{"payloadType": '),
    Refusal("body-a-json-array", 422, INVALID, lambda w: b"[]"),
    Refusal("envelope-unknown-field", 422, INVALID, _mutated_envelope(_set_event("note", "x"))),
    Refusal("envelope-missing-payloadType", 422, INVALID, _mutated_envelope(_drop("payloadType"))),
    Refusal("envelope-missing-signatures", 422, INVALID, _mutated_envelope(_drop("signatures"))),
    Refusal(
        "envelope-wrong-payloadType",
        422,
        INVALID,
        lambda w: env_body(
            envelope_for_payload(
                canonical(w.registration(["buyer"])[0]), [w.signer("bis")], "application/json"
            )
        ),
    ),
    Refusal(
        "signature-object-unknown-field",
        422,
        INVALID,
        _mutated_envelope(lambda e: e["signatures"][0].update(alg="ed25519")),
    ),
    Refusal(
        "payload-keys-out-of-order",
        422,
        INVALID,
        _payload_bytes(lambda e: json.dumps(e, separators=(",", ":")).encode()),
    ),
    Refusal(
        "payload-with-whitespace",
        422,
        INVALID,
        _payload_bytes(lambda e: json.dumps(e, sort_keys=True).encode()),
    ),
    Refusal(
        "payload-with-a-duplicated-key",
        None,
        DUPLICATE_KEY_CODES,
        _payload_bytes(_duplicated_key_in_payload),
    ),
    Refusal(
        "envelope-with-a-duplicated-key", None, DUPLICATE_KEY_CODES, _duplicated_key_in_envelope
    ),
    Refusal(
        "signature-object-with-a-duplicated-key",
        None,
        DUPLICATE_KEY_CODES,
        _duplicated_key_in_signature,
    ),
    Refusal("payload-base64-trailing-bits", 422, INVALID, _noncanonical_payload_base64),
    Refusal("payload-base64-unpadded", 422, INVALID, _unpadded_payload_base64),
    Refusal("sig-base64-trailing-bits", 422, INVALID, _noncanonical_sig_base64),
    Refusal("signature-of-63-bytes", 422, INVALID, _sig_of_length(63)),
    Refusal("signature-of-65-bytes", 422, INVALID, _sig_of_length(65)),
    Refusal("seventeen-signatures", 422, INVALID, _seventeen_signatures),
    Refusal("the-same-keyid-twice", 422, INVALID, _same_keyid_twice),
    Refusal(
        "unknown-event-type", 422, INVALID, _mutated_event(_set_event("type", "party.renamed"))
    ),
    Refusal("unknown-field-in-the-event", 422, INVALID, _mutated_event(_set_event("note", "x"))),
    Refusal("unknown-field-in-the-party", 422, INVALID, _mutated_event(_set_party("web", "x"))),
    Refusal("null-optional-field", 422, INVALID, _mutated_event(_set_party("hq_country", None))),
    Refusal("float-quantity", 422, INVALID, _fabrication("2.5")),
    Refusal("zero-quantity", 422, INVALID, _fabrication("0")),
    Refusal("quantity-of-2-to-the-53", 422, INVALID, _fabrication(str(2**53))),
    Refusal("country-XX", 422, INVALID, _mutated_event(_set_party("country", "XX"))),
    Refusal("country-lower-case", 422, INVALID, _mutated_event(_set_party("country", "ae"))),
    Refusal("party-id-bad-pattern", 422, INVALID, _mutated_event(_set_party("id", "-bad id"))),
    Refusal("party-id-of-65-characters", 422, INVALID, _mutated_event(_set_party("id", "p" * 65))),
    Refusal("event-id-not-a-uuid", 422, INVALID, _mutated_event(_set_event("id", "not-a-uuid"))),
    Refusal(
        "event-id-upper-case",
        422,
        INVALID,
        _mutated_event(lambda e: e.update(id=e["id"].upper())),
    ),
    Refusal(
        "at-without-Z",
        422,
        INVALID,
        _mutated_event(lambda e: e.update(at=e["at"].replace("Z", "+00:00"))),
    ),
    Refusal(
        "at-ten-minutes-in-the-future",
        422,
        INVALID,
        _mutated_event(lambda e: e.update(at=_future(10))),
    ),
    Refusal(
        "ledger-names-another-origin",
        422,
        INVALID,
        _mutated_event(_set_event("ledger", "other.example/ledger")),
    ),
    Refusal("signature-that-does-not-verify", 401, SIGNATURE, _bad_signature),
    Refusal(
        "unknown-key-id",
        401,
        SIGNATURE,
        lambda w: _listing(w, [Signer.from_label("stranger")]),
    ),
    Refusal(
        "revoked-key",
        401,
        SIGNATURE,
        lambda w: _site(w, "acme-chips", "acme-chips", [w.keys["acme-2"]]),
    ),
    Refusal("no-signatures", 403, NOT_AUTHORIZED, lambda w: _listing(w, [])),
    Refusal(
        "buyer-registers-a-party", 403, NOT_AUTHORIZED, _registration_by("gulf-cloud", ["buyer"])
    ),
    Refusal(
        "investigator-registers-a-site",
        403,
        NOT_AUTHORIZED,
        lambda w: _site(w, "audit-office", "gulf-cloud", [w.signer("audit-office")]),
    ),
    Refusal(
        "carrier-registers-a-site-it-does-not-operate",
        403,
        NOT_AUTHORIZED,
        lambda w: _site(w, "fast-freight", "gulf-cloud", [w.signer("fast-freight")]),
    ),
    Refusal(
        "missing-proof-of-possession-of-the-new-key",
        403,
        NOT_AUTHORIZED,
        lambda w: env_body(sign(w.registration(["buyer"])[0], [w.signer("bis")])),
    ),
    Refusal(
        "extra-signature-from-an-uninvolved-party",
        403,
        NOT_AUTHORIZED,
        lambda w: _listing(w, [w.signer("bis"), w.signer("acme-chips")]),
    ),
    Refusal(
        "non-genesis-authority-registers-an-authority",
        403,
        NOT_AUTHORIZED,
        _registration_by("ofac", ["authority"]),
    ),
    Refusal(
        "non-genesis-authority-adds-a-key-to-an-authority",
        403,
        NOT_AUTHORIZED,
        _key_added("bis", actor="ofac"),
    ),
    Refusal(
        "listing-an-unknown-party",
        404,
        NOT_FOUND,
        lambda w: _listing(w, [w.signer("bis")], party="nobody-here"),
    ),
    Refusal("adding-a-key-to-an-unknown-party", 404, NOT_FOUND, _key_added("nobody-here")),
    Refusal(
        "site-of-an-unknown-operator",
        404,
        NOT_FOUND,
        lambda w: _site(w, "bis", "nobody-here", [w.signer("bis")]),
    ),
    Refusal("reusing-a-party-id", 409, CONFLICT, _reused_party_id),
    Refusal(
        "reusing-a-site-id",
        409,
        CONFLICT,
        lambda w: _site(w, "gulf-cloud", "gulf-cloud", [w.signer("gulf-cloud")], site="dxb-1"),
    ),
    Refusal("registering-a-key-of-another-party", 409, CONFLICT, _key_of_another_party),
    Refusal(
        "adding-a-key-of-another-party",
        409,
        CONFLICT,
        _key_added("desert-ai", existing="gulf-cloud"),
    ),
    Refusal("revoking-a-revoked-key", 409, STATE_CONFLICT, _revoke_again),
    Refusal("listing-a-party-already-on-that-list", 409, STATE_CONFLICT, _list_again),
    Refusal("body-over-1-MiB", 413, frozenset({"too_large"}), _oversized),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[r.name for r in REFUSALS])
def test_a_refused_envelope_gets_its_status_and_code_and_stores_nothing(
    world: World, case: Refusal
) -> None:
    refused_without_storing(world, case.body(world), case.status, case.codes)


def test_a_delivery_signed_by_a_key_nobody_registered_is_refused_401(world: World) -> None:
    event = make_event(
        "batch.delivered",
        "gulf-cloud",
        batch="no-such-batch",
        prev="0" * 64,
        site="dxb-1",
        quantity=1,
    )
    body = canonical(sign(event, [Signer.from_label("nobody")]))
    refused_without_storing(world, body, 401, {"bad_signature"})


# --- batches --------------------------------------------------------------------------------


def test_a_batch_of_envelopes_is_accepted_in_one_go_with_201(world: World) -> None:
    envelopes = [_registration_envelope(world) for _ in range(3)]
    size = world.client.size()
    response = world.client.post_batch(envelopes)
    assert response.status_code == 201, response.text
    receipts = response.json()["receipts"]
    assert [r["seq"] for r in receipts] == [size, size + 1, size + 2]
    for receipt, envelope in zip(receipts, envelopes, strict=True):
        event = json.loads(payload_bytes(envelope))
        assert_receipt(receipt, event, envelope, receipt["seq"])
    assert world.client.size() == size + 3


def _bad_third_by_schema(world: World) -> JSONObject:
    envelope = _registration_envelope(world)
    envelope["note"] = "x"
    return envelope


def _bad_third_by_signature(world: World) -> JSONObject:
    envelope = _registration_envelope(world)
    envelope["signatures"][0]["sig"] = b64encode(bytes(64))
    return envelope


@pytest.mark.parametrize(
    ("bad", "status", "code"),
    [(_bad_third_by_schema, 422, "invalid_event"), (_bad_third_by_signature, 401, "bad_signature")],
    ids=["schema", "signature"],
)
def test_a_batch_whose_third_envelope_is_bad_stores_nothing_and_names_index_2(
    world: World, bad: Callable[[World], JSONObject], status: int, code: str
) -> None:
    good = [_registration_envelope(world) for _ in range(2)]
    size = world.client.size()
    response = world.client.post_batch([*good, bad(world), _registration_envelope(world)])
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert_sentence(body["error"]["message"])
    assert body.get("index", body["error"].get("index")) == 2, response.text
    assert world.client.size() == size
    for envelope in good:  # never stored: each is new when sent alone
        assert world.client.post_event(envelope).status_code == 201


def test_repeats_in_a_batch_get_their_original_receipts(world: World) -> None:
    fresh = _registration_envelope(world)
    size = world.client.size()
    response = world.client.post_batch([world.sent[0], fresh])
    assert response.status_code == 201, response.text
    receipts = response.json()["receipts"]
    assert receipts[0] == world.receipts["genesis"]
    assert receipts[1]["seq"] == size
    assert world.client.size() == size + 1


# --- restart --------------------------------------------------------------------------------


def test_a_restarted_server_keeps_its_size_and_continues_the_seq(world: World) -> None:
    before = world.client.ledger()
    world.server.restart()
    after = world.client.ledger()
    assert after == before

    again = world.client.post_event(world.sent[0])
    assert again.status_code == 200, again.text
    assert again.json() == world.receipts["genesis"]

    envelope = _registration_envelope(world)
    response = world.client.post_event(envelope)
    assert response.status_code == 201, response.text
    assert response.json()["seq"] == before["size"]
    assert world.client.size() == before["size"] + 1
