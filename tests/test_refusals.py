"""What the ledger refuses, with which status and code, and that a refusal stores nothing.

PROTOCOL.md sections 1-5 as one table: each row builds a bad envelope from a good one and
names the answer `POST /v1/events` must give. The rows follow the order of checks of section 5
(size, JSON, schema, the event id, signatures, signers and roles, references, state), and the
last group shows that order where two faults meet in one envelope.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from ledger.canonical import canonical
from ledger.crypto import PAYLOAD_TYPE, pae
from ledger.views import Receipt
from tests.support import START, World, signer, stamp

Json = dict[str, Any]
Build = Callable[["Kit"], bytes]
DROP = object()  # a field value that means: leave the field out


@pytest.fixture
def api(populated: Ledger) -> TestClient:
    """The HTTP API over the populated ledger, served with open reads (PROTOCOL.md section 6)."""
    return TestClient(create_app(populated, open_reads=True), raise_server_exceptions=False)


@dataclass
class Kit:
    """What a row needs to build its envelope: the world's ids and the ledger, for set-up."""

    world: World
    ledger: Ledger

    def accept(self, envelope: Json) -> Receipt:
        outcome = self.ledger.submit(envelope)
        assert not outcome.repeated
        return outcome.receipt

    def event(self, kind: str, actor: str, **fields: Any) -> Json:
        return self.world.event(kind, actor, **fields)


@pytest.fixture
def kit(populated: Ledger, world: World) -> Kit:
    return Kit(world, populated)


# -- building blocks --------------------------------------------------------------------------


def body(envelope: Json) -> bytes:
    return json.dumps(envelope).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sign_bytes(payload: bytes, *names: str) -> Json:
    """An envelope over exactly these payload bytes, correctly signed by each name's key."""
    message = pae(PAYLOAD_TYPE, payload)
    signatures = [{"keyid": signer(n).key_id, "sig": b64(signer(n).sign(message))} for n in names]
    return {"payloadType": PAYLOAD_TYPE, "payload": b64(payload), "signatures": signatures}


def newcomer(kit: Kit, **party: Any) -> Json:
    """A good event: the genesis authority registers the vendor `tsmc` (signers bis, tsmc)."""
    spec = {
        "id": "tsmc",
        "name": "Taiwan Semiconductor",
        "roles": ["vendor"],
        "country": "TW",
        "keys": [signer("tsmc").public_key_b64],
    }
    return kit.event("party.registered", "bis", party=_changed(spec, party))


def _changed(value: Json, changes: dict[str, Any]) -> Json:
    out = {**value, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


def good_envelope(kit: Kit) -> Json:
    return World.envelope(newcomer(kit), "bis", "tsmc")


def padded_envelope(kit: Kit) -> Json:
    """A good envelope whose payload's base64 has padding and a `+` (from the run of `~`)."""
    for suffix in ("", "~", "~~"):
        event = newcomer(kit, name="Taiwan Semiconductor ~~~~~" + suffix)
        if len(canonical(event)) % 3:
            return World.envelope(event, "bis", "tsmc")
    raise AssertionError("no padded payload")


def with_event(**changes: Any) -> Build:
    """The good event with top-level fields changed (DROP removes one), correctly signed."""
    return lambda kit: body(World.envelope(_changed(newcomer(kit), changes), "bis", "tsmc"))


def with_party(**changes: Any) -> Build:
    """The good event with fields of its `party` object changed, correctly signed."""
    return lambda kit: body(World.envelope(newcomer(kit, **changes), "bis", "tsmc"))


def non_ascii_payload(kit: Kit) -> bytes:
    """The canonical bytes of a good event whose name is not ASCII."""
    return canonical(newcomer(kit, name="Société Taiwan"))


def with_payload(transform: Callable[[bytes], bytes]) -> Build:
    """The good event's canonical bytes transformed, then correctly signed as they are."""

    def build(kit: Kit) -> bytes:
        payload = non_ascii_payload(kit)
        changed = transform(payload)
        assert changed != payload, "the row must change the payload"
        return body(sign_bytes(changed, "bis", "tsmc"))

    return build


def with_envelope(transform: Callable[[Json], None]) -> Build:
    """The good envelope changed in place by `transform`."""

    def build(kit: Kit) -> bytes:
        envelope = padded_envelope(kit)
        transform(envelope)
        return body(envelope)

    return build


def with_text(field: str, transform: Callable[[str], str]) -> Build:
    """A text field of the envelope (`payload`, or `sig` of every signature) transformed."""

    def build(kit: Kit) -> bytes:
        envelope = padded_envelope(kit)
        texts = [envelope] if field == "payload" else envelope["signatures"]
        changed = False
        for holder in texts:
            new = transform(holder[field])
            changed |= new != holder[field]
            holder[field] = new
        assert changed, "the row must change the text"
        return body(envelope)

    return build


def signed_as(event: Callable[[Kit], Json], *names: str) -> Build:
    return lambda kit: body(World.envelope(event(kit), *names))


# -- base64 that decodes but is not the one standard form (PROTOCOL.md section 1) -------------

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def url_safe(text: str) -> str:
    return text.replace("+", "-").replace("/", "_")


def nonzero_pad_bits(text: str) -> str:
    """Set a padding bit of the last character before `=`: lenient decoders ignore it."""
    data = text.rstrip("=")
    assert data != text, "needs a padded text"
    return data[:-1] + ALPHABET[ALPHABET.index(data[-1]) | 1] + text[len(data) :]


def line_breaks(text: str) -> str:
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def resized_sig(size: int) -> Callable[[Json], None]:
    def transform(envelope: Json) -> None:
        envelope["signatures"][0]["sig"] = b64(b"\x07" * size)

    return transform


# -- envelope shape ------------------------------------------------------------------------------


def _set(key: str, value: Any) -> Callable[[Json], None]:
    def transform(envelope: Json) -> None:
        envelope[key] = value

    return transform


def _drop(key: str) -> Callable[[Json], None]:
    def transform(envelope: Json) -> None:
        del envelope[key]

    return transform


def _on_signature(key: str, value: Any) -> Callable[[Json], None]:
    def transform(envelope: Json) -> None:
        if value is DROP:
            del envelope["signatures"][0][key]
        else:
            envelope["signatures"][0][key] = value

    return transform


def envelope_in_a_list(kit: Kit) -> bytes:
    return json.dumps([good_envelope(kit)]).encode()


def envelope_duplicate_key(kit: Kit) -> bytes:
    envelope = good_envelope(kit)
    payload = json.dumps(envelope["payload"])
    text = body(envelope).decode()
    return text.replace("{", '{"payload": ' + payload + ", ", 1).encode()


def signature_duplicate_key(kit: Kit) -> bytes:
    envelope = good_envelope(kit)
    keyid = envelope["signatures"][0]["keyid"]
    text = body(envelope).decode()
    return text.replace('{"keyid"', '{"keyid": "' + keyid + '", "keyid"', 1).encode()


def seventeen_signatures(kit: Kit) -> bytes:
    extra = [f"extra-{i}" for i in range(15)]
    return body(World.envelope(newcomer(kit), "bis", "tsmc", *extra))


def duplicate_keyid(kit: Kit) -> bytes:
    envelope = good_envelope(kit)
    envelope["signatures"].append(dict(envelope["signatures"][0]))
    return body(envelope)


# -- payload bytes ---------------------------------------------------------------------------------


def reordered_keys(payload: bytes) -> bytes:
    event = json.loads(payload)
    return json.dumps(dict(reversed(event.items())), separators=(",", ":")).encode()


def with_whitespace(payload: bytes) -> bytes:
    return json.dumps(json.loads(payload), sort_keys=True, ensure_ascii=False).encode()


def escaped_letter(payload: bytes) -> bytes:
    return payload.replace(b'"bis"', b'"\\u0062is"', 1)


def escaped_solidus(payload: bytes) -> bytes:
    return payload.replace(b"/", b"\\/", 1)


def escaped_non_ascii(payload: bytes) -> bytes:
    return payload.replace("é".encode(), b"\\u00e9", 1)


def duplicate_top_key(payload: bytes) -> bytes:
    return payload.replace(b"{", b'{"actor":"bis",', 1)


def duplicate_nested_key(payload: bytes) -> bytes:
    return payload.replace(b'"party":{', b'"party":{"country":"TW",', 1)


def replaced(payload: bytes) -> Callable[[bytes], bytes]:
    return lambda _: payload


# -- events other than the newcomer --------------------------------------------------------------


def fabricated_with_float_quantity(kit: Kit) -> Json:
    return kit.event(
        "batch.fabricated", "nvidia", batch="b-1", model="H200", quantity=1.5, country="TW"
    )


def revocation(**fields: Any) -> Callable[[Kit], Json]:
    def event(kit: Kit) -> Json:
        default = {"party": "gulf-cloud", "keyid": signer("gulf-cloud").key_id}
        return kit.event("party.key_revoked", "bis", **{**default, **fields})

    return event


def listing(party: str = "gulf-cloud", actor: str = "bis", **fields: Any) -> Callable[[Kit], Json]:
    def event(kit: Kit) -> Json:
        default = {"party": party, "list": "entity", "reason": "diversion risk"}
        return kit.event("party.listed", actor, **{**default, **fields})

    return event


def delisting(party: str) -> Callable[[Kit], Json]:
    return lambda kit: kit.event("party.delisted", "bis", party=party, list="entity")


def key_added(party: str, key: str, actor: str = "bis") -> Callable[[Kit], Json]:
    return lambda kit: kit.event(
        "party.key_added", actor, party=party, key=signer(key).public_key_b64
    )


def site(site_id: str, operator: str, actor: str | None = None) -> Callable[[Kit], Json]:
    spec = {"id": site_id, "operator": operator, "country": "AE", "name": site_id}
    return lambda kit: kit.event("site.registered", actor or operator, site=spec)


def party(party_id: str, roles: list[str], key: str, actor: str = "bis") -> Callable[[Kit], Json]:
    spec = {
        "id": party_id,
        "name": party_id.title(),
        "roles": roles,
        "country": "US",
        "keys": [signer(key).public_key_b64],
    }
    return lambda kit: kit.event("party.registered", actor, party=spec)


# -- signatures and signers --------------------------------------------------------------------


def no_signatures(kit: Kit) -> bytes:
    envelope = good_envelope(kit)
    envelope["signatures"] = []
    return body(envelope)


def flip_first_signature(envelope: Json) -> Json:
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    envelope["signatures"][0]["sig"] = b64(bytes(sig))
    return envelope


def tampered(event: Callable[[Kit], Json], *names: str) -> Build:
    return lambda kit: body(flip_first_signature(World.envelope(event(kit), *names)))


def signature_over_other_payload(kit: Kit) -> bytes:
    envelope = good_envelope(kit)
    other = World.envelope(newcomer(kit), "bis", "tsmc")
    envelope["signatures"] = other["signatures"]
    return body(envelope)


ORDER_L = 2**252 + 27742317777372353535851937790883648493  # the Ed25519 group order
IDENTITY_POINT = b"\x01" + b"\x00" * 31  # a small-order public key


def malleated(envelope: Json) -> Json:
    """The first signature with S + L for S: the same signature to a lenient verifier."""
    sig = base64.b64decode(envelope["signatures"][0]["sig"])
    s = int.from_bytes(sig[32:], "little") + ORDER_L
    envelope["signatures"][0]["sig"] = b64(sig[:32] + s.to_bytes(32, "little"))
    return envelope


def small_order_key_forgery(kit: Kit) -> bytes:
    """A new key that is the identity point, 'proved' by R = identity, S = 0, which a
    non-strict verifier accepts for every message."""
    event = newcomer(kit, keys=[b64(IDENTITY_POINT)])
    envelope = World.envelope(event, "bis")
    forged = {
        "keyid": hashlib.sha256(IDENTITY_POINT).hexdigest(),
        "sig": b64(IDENTITY_POINT + bytes(32)),
    }
    envelope["signatures"].append(forged)
    return body(envelope)


def signed_over(message: Callable[[bytes], bytes]) -> Build:
    """The good event signed by its signers over `message(payload)` instead of the PAE."""

    def build(kit: Kit) -> bytes:
        payload = canonical(newcomer(kit))
        sigs = [
            {"keyid": signer(n).key_id, "sig": b64(signer(n).sign(message(payload)))}
            for n in ("bis", "tsmc")
        ]
        return body({"payloadType": PAYLOAD_TYPE, "payload": b64(payload), "signatures": sigs})

    return build


def revoked_signer(kit: Kit) -> bytes:
    kit.accept(World.envelope(revocation()(kit), "bis"))
    return body(World.envelope(site("dxb-2", "gulf-cloud")(kit), "gulf-cloud"))


def second_key_unsigned(kit: Kit) -> bytes:
    keys = [signer("tsmc").public_key_b64, signer("tsmc#2").public_key_b64]
    return body(World.envelope(newcomer(kit, keys=keys), "bis", "tsmc"))


def with_ofac(then: Callable[[Kit], Json], *names: str) -> Build:
    """A second, non-genesis authority `ofac` registered first; then `then` signed by names."""

    def build(kit: Kit) -> bytes:
        kit.accept(World.envelope(party("ofac", ["authority"], "ofac")(kit), "bis", "ofac"))
        return body(World.envelope(then(kit), *names))

    return build


def after(setup: Callable[[Kit], Json], setup_signers: tuple[str, ...], then: Build) -> Build:
    """Accept `setup` first (signed by setup_signers), then build the refused envelope."""

    def build(kit: Kit) -> bytes:
        kit.accept(World.envelope(setup(kit), *setup_signers))
        return then(kit)

    return build


def revoked_key_reused(kit: Kit) -> bytes:
    kit.accept(World.envelope(revocation()(kit), "bis"))
    return body(World.envelope(party("newco", ["buyer"], "gulf-cloud")(kit), "bis", "gulf-cloud"))


def genesis_last_key(kit: Kit) -> Json:
    return kit.event("party.key_revoked", "bis", party="bis", keyid=signer("bis").key_id)


# -- repeats and ids ------------------------------------------------------------------------------


def same_id_other_bytes(garble: Callable[[Json], Json]) -> Build:
    """An accepted event's id reused for other payload bytes, its signatures then garbled."""

    def build(kit: Kit) -> bytes:
        first = newcomer(kit)
        kit.accept(World.envelope(first, "bis", "tsmc"))
        second = {**first, "party": {**first["party"], "name": "Another Name"}}
        return body(garble(World.envelope(second, "bis", "tsmc")))

    return build


def no_sigs(envelope: Json) -> Json:
    return {**envelope, "signatures": []}


def repeat_with_seventeen_signatures(kit: Kit) -> bytes:
    event = newcomer(kit)
    kit.accept(World.envelope(event, "bis", "tsmc"))
    return body(World.envelope(event, "bis", "tsmc", *[f"extra-{i}" for i in range(15)]))


AHEAD = stamp(START.replace(minute=5, second=1))


def ahead(kit: Kit) -> Json:
    return {**newcomer(kit), "at": AHEAD}


def not_json(_: Kit) -> bytes:
    return b'{"payloadType": '


BAD_REQUEST = (400, "bad_request")
INVALID = (422, "invalid_event")
BAD_SIGNATURE = (401, "bad_signature")
FORBIDDEN = (403, "not_authorized")
NOT_FOUND = (404, "not_found")
CONFLICT = (409, "conflict")
TRANSITION = (409, "invalid_transition")


def row(build: Build, answer: tuple[int, str], name: str) -> Any:
    """One refusal: how to build it, the status and code it gets, a readable id."""
    return pytest.param(build, *answer, id=name)


REFUSALS = [
    # Section 5: JSON before anything else.
    row(not_json, BAD_REQUEST, "body-not-json"),
    # Section 2: exactly the DSSE envelope fields.
    row(with_envelope(_set("note", "x")), INVALID, "envelope-unknown-field"),
    row(with_envelope(_drop("signatures")), INVALID, "envelope-no-signatures-field"),
    row(with_envelope(_drop("payload")), INVALID, "envelope-no-payload"),
    row(with_envelope(_drop("payloadType")), INVALID, "envelope-no-payloadType"),
    row(envelope_in_a_list, INVALID, "envelope-not-an-object"),
    row(with_envelope(_set("signatures", {})), INVALID, "signatures-not-a-list"),
    row(with_envelope(_on_signature("alg", "ed25519")), INVALID, "signature-unknown-field"),
    row(with_envelope(_on_signature("sig", DROP)), INVALID, "signature-without-sig"),
    row(with_envelope(_on_signature("keyid", DROP)), INVALID, "signature-without-keyid"),
    row(envelope_duplicate_key, INVALID, "envelope-duplicate-key"),
    row(signature_duplicate_key, INVALID, "signature-duplicate-key"),
    # Section 2: payloadType.
    row(with_envelope(_set("payloadType", "application/json")), INVALID, "payloadType-other"),
    row(
        with_envelope(_set("payloadType", PAYLOAD_TYPE.upper())), INVALID, "payloadType-upper-case"
    ),
    # Section 2: the payload is the canonical bytes (RFC 8785), and no key twice.
    row(with_payload(reordered_keys), INVALID, "payload-reordered-keys"),
    row(with_payload(with_whitespace), INVALID, "payload-whitespace"),
    row(with_payload(escaped_letter), INVALID, "payload-escaped-letter"),
    row(with_payload(escaped_solidus), INVALID, "payload-escaped-solidus"),
    row(with_payload(escaped_non_ascii), INVALID, "payload-escaped-non-ascii"),
    row(with_payload(duplicate_top_key), INVALID, "payload-duplicate-key"),
    row(with_payload(duplicate_nested_key), INVALID, "payload-duplicate-nested-key"),
    row(with_payload(replaced(b"not json")), INVALID, "payload-not-json"),
    row(with_payload(replaced(b'{"name":"\xff"}')), INVALID, "payload-not-utf8"),
    row(with_payload(replaced(b"[]")), INVALID, "payload-not-an-object"),
    # Section 1: standard, padded base64 that re-encodes to the same text.
    row(with_text("payload", lambda t: t.rstrip("=")), INVALID, "payload-b64-no-padding"),
    row(with_text("payload", url_safe), INVALID, "payload-b64-url-safe"),
    row(with_text("payload", lambda t: t + "#"), INVALID, "payload-b64-trailing-garbage"),
    row(with_text("payload", lambda t: t + "===="), INVALID, "payload-b64-extra-padding"),
    row(with_text("payload", line_breaks), INVALID, "payload-b64-line-breaks"),
    row(with_text("payload", nonzero_pad_bits), INVALID, "payload-b64-nonzero-pad-bits"),
    row(with_text("sig", lambda t: t.rstrip("=")), INVALID, "sig-b64-no-padding"),
    row(with_text("sig", url_safe), INVALID, "sig-b64-url-safe"),
    row(with_text("sig", lambda t: t + "AAAA"), INVALID, "sig-b64-trailing-garbage"),
    row(with_text("sig", lambda t: " " + t), INVALID, "sig-b64-leading-space"),
    row(with_text("sig", nonzero_pad_bits), INVALID, "sig-b64-nonzero-pad-bits"),
    # Section 2: 64-byte signatures, key ids as lowercase hex, at most 16, distinct.
    row(with_envelope(resized_sig(63)), INVALID, "sig-63-bytes"),
    row(with_envelope(resized_sig(65)), INVALID, "sig-65-bytes"),
    row(
        with_envelope(_on_signature("keyid", signer("bis").key_id.upper())),
        INVALID,
        "keyid-upper-case",
    ),
    row(with_envelope(_on_signature("keyid", "ab" * 16)), INVALID, "keyid-too-short"),
    row(seventeen_signatures, INVALID, "seventeen-signatures"),
    row(duplicate_keyid, INVALID, "same-keyid-twice"),
    # Section 3: event types and exact fields; optional fields left out, never null.
    row(with_event(type="party.renamed"), INVALID, "unknown-event-type"),
    row(with_event(type=DROP), INVALID, "event-without-type"),
    row(with_event(note="hello"), INVALID, "event-unknown-field"),
    row(with_party(email="x@example.com"), INVALID, "party-unknown-field"),
    row(with_event(at=DROP), INVALID, "event-without-at"),
    row(with_event(ledger=DROP), INVALID, "event-without-ledger"),
    row(with_event(actor=DROP), INVALID, "event-without-actor"),
    row(with_event(id=DROP), INVALID, "event-without-id"),
    row(with_party(name=DROP), INVALID, "party-without-name"),
    row(with_party(hq_country=None), INVALID, "null-optional-field"),
    row(with_party(name=None), INVALID, "null-required-field"),
    row(signed_as(revocation(compromised_since=None), "bis"), INVALID, "null-compromised-since"),
    # Section 1: no floats; strings are strings.
    row(with_party(name=1.5), INVALID, "float-for-string"),
    row(with_event(at=1772798400.5), INVALID, "float-for-time"),
    row(signed_as(fabricated_with_float_quantity, "nvidia"), INVALID, "float-for-quantity"),
    row(with_party(roles="vendor"), INVALID, "string-for-list"),
    # Section 1: ids.
    row(with_party(id="-tsmc"), INVALID, "party-id-leading-dash"),
    row(with_party(id="ts mc"), INVALID, "party-id-with-space"),
    row(with_party(id="ts/mc"), INVALID, "party-id-with-slash"),
    row(with_party(id="t" * 65), INVALID, "party-id-65-chars"),
    row(with_party(id=""), INVALID, "party-id-empty"),
    row(with_party(id="tsmç"), INVALID, "party-id-non-ascii"),
    row(with_event(actor="bis!"), INVALID, "actor-bad-id"),
    row(signed_as(site("dxb 2", "gulf-cloud"), "gulf-cloud"), INVALID, "site-bad-id"),
    row(signed_as(listing(party="gulf cloud"), "bis"), INVALID, "referenced-party-bad-id"),
    row(signed_as(revocation(keyid="zz" * 32), "bis"), INVALID, "keyid-field-not-hex"),
    # Section 1: event ids are lowercase UUIDs.
    row(with_event(id="4000000-0000-4000-8000-000000000001"), INVALID, "event-id-short"),
    row(with_event(id="40000000-0000-4000-8000-00000000000A"), INVALID, "event-id-upper-case"),
    row(with_event(id="not-a-uuid"), INVALID, "event-id-not-a-uuid"),
    row(with_event(id="40000000000040008000000000000001"), INVALID, "event-id-without-dashes"),
    row(with_event(id="{40000000-0000-4000-8000-000000000001}"), INVALID, "event-id-in-braces"),
    # Section 1: countries are upper-case ISO 3166-1 alpha-2.
    row(with_party(country="XX"), INVALID, "country-unknown"),
    row(with_party(country="tw"), INVALID, "country-lower-case"),
    row(with_party(country="TWN"), INVALID, "country-alpha-3"),
    row(with_party(country="UK"), INVALID, "country-UK-is-not-iso"),
    row(with_party(hq_country="ZZ"), INVALID, "hq-country-unknown"),
    # Section 1 and 3: times in UTC with Z, at most 5 minutes after the ledger's clock.
    row(with_event(at="2026-03-06T12:00:00"), INVALID, "at-without-Z"),
    row(with_event(at="2026-03-06T12:00:00+00:00"), INVALID, "at-offset-zero"),
    row(with_event(at="2026-03-06T16:00:00+04:00"), INVALID, "at-offset"),
    row(with_event(at="2026-03-06T12:00:00z"), INVALID, "at-lower-case-z"),
    row(with_event(at="2026-03-06 12:00:00Z"), INVALID, "at-space-separator"),
    row(with_event(at="2026-03-06"), INVALID, "at-date-only"),
    row(with_event(at="2026-02-30T12:00:00Z"), INVALID, "at-no-such-day"),
    row(with_event(at=AHEAD), INVALID, "at-5min-1s-ahead"),
    row(with_event(at="2027-03-06T12:00:00Z"), INVALID, "at-a-year-ahead"),
    row(
        signed_as(revocation(compromised_since="2026-03-01T00:00:00+01:00"), "bis"),
        INVALID,
        "compromised-since-offset",
    ),
    # Section 3: an envelope made for one ledger is refused by another.
    row(with_event(ledger="other.example/ledger"), INVALID, "wrong-ledger"),
    row(with_event(ledger="chipledger.local/ledger/"), INVALID, "wrong-ledger-trailing-slash"),
    # Section 4: closed vocabularies and well-formed keys.
    row(with_party(roles=["smuggler"]), INVALID, "unknown-role"),
    row(with_party(roles=[]), INVALID, "no-roles"),
    row(with_party(roles=["vendor", "vendor"]), INVALID, "duplicate-roles"),
    row(with_party(keys=[]), INVALID, "no-keys"),
    row(with_party(keys=[b64(b"\x01" * 31)]), INVALID, "key-31-bytes"),
    row(
        with_party(keys=[signer("tsmc").public_key_b64.rstrip("=")]), INVALID, "key-b64-no-padding"
    ),
    row(signed_as(listing(list="grey"), "bis"), INVALID, "unknown-list"),
    # Section 2 and 5: signatures (401), and no signatures at all (403).
    row(no_signatures, FORBIDDEN, "no-signatures"),
    row(tampered(newcomer, "bis", "tsmc"), BAD_SIGNATURE, "bad-signature"),
    row(signature_over_other_payload, BAD_SIGNATURE, "signature-over-other-payload"),
    row(signed_as(newcomer, "bis", "tsmc", "stranger"), BAD_SIGNATURE, "unknown-key"),
    row(signed_as(listing(), "stranger"), BAD_SIGNATURE, "unknown-key-only"),
    row(revoked_signer, BAD_SIGNATURE, "revoked-key"),
    row(
        lambda kit: body(malleated(good_envelope(kit))),
        BAD_SIGNATURE,
        "malleated-signature-S-plus-L",
    ),
    row(small_order_key_forgery, BAD_SIGNATURE, "small-order-key-forgery"),
    row(signed_over(lambda p: p), BAD_SIGNATURE, "signature-over-raw-payload-not-pae"),
    row(
        signed_over(lambda p: pae("application/json", p)),
        BAD_SIGNATURE,
        "signature-pae-other-payloadType",
    ),
    # Section 2 and 4: exactly the required signers (403).
    row(signed_as(newcomer, "bis"), FORBIDDEN, "no-proof-of-possession"),
    row(second_key_unsigned, FORBIDDEN, "second-new-key-unsigned"),
    row(signed_as(key_added("gulf-cloud", "gulf-cloud#2"), "bis"), FORBIDDEN, "added-key-unsigned"),
    row(signed_as(newcomer, "bis", "tsmc", "nvidia"), FORBIDDEN, "extra-signer"),
    row(signed_as(site("dxb-2", "gulf-cloud"), "desert-ai"), FORBIDDEN, "actor-not-signing"),
    row(signed_as(listing(), "nvidia"), FORBIDDEN, "authority-event-signed-by-vendor"),
    row(signed_as(listing(actor="nvidia"), "nvidia"), FORBIDDEN, "vendor-lists-a-party"),
    row(
        signed_as(party("newco", ["buyer"], "newco", actor="gulf-cloud"), "gulf-cloud", "newco"),
        FORBIDDEN,
        "buyer-registers-a-party",
    ),
    row(
        signed_as(
            key_added("desert-ai", "desert-ai#2", actor="fastfreight"), "fastfreight", "desert-ai#2"
        ),
        FORBIDDEN,
        "carrier-adds-a-key",
    ),
    row(
        signed_as(listing(actor="audit-office"), "audit-office"),
        FORBIDDEN,
        "investigator-lists-a-party",
    ),
    row(
        signed_as(site("aud-1", "audit-office"), "audit-office"),
        FORBIDDEN,
        "investigator-registers-a-site",
    ),
    row(
        signed_as(site("aud-1", "audit-office", actor="bis"), "bis"),
        FORBIDDEN,
        "site-operated-by-investigator",
    ),
    row(
        signed_as(site("dxb-2", "gulf-cloud", actor="desert-ai"), "desert-ai"),
        FORBIDDEN,
        "site-for-another-operator",
    ),
    row(
        with_ofac(party("mofa", ["authority"], "mofa", actor="ofac"), "ofac", "mofa"),
        FORBIDDEN,
        "non-genesis-registers-authority",
    ),
    row(
        with_ofac(key_added("bis", "bis#2", actor="ofac"), "ofac", "bis#2"),
        FORBIDDEN,
        "non-genesis-adds-key-to-genesis",
    ),
    row(
        with_ofac(key_added("ofac", "ofac#2", actor="ofac"), "ofac", "ofac#2"),
        FORBIDDEN,
        "non-genesis-adds-key-to-itself",
    ),
    # Section 5: referenced objects exist (404).
    row(signed_as(listing(party="ghost"), "bis"), NOT_FOUND, "list-unknown-party"),
    row(signed_as(delisting("ghost"), "bis"), NOT_FOUND, "delist-unknown-party"),
    row(signed_as(key_added("ghost", "ghost"), "bis", "ghost"), NOT_FOUND, "key-for-unknown-party"),
    row(signed_as(revocation(party="ghost"), "bis"), NOT_FOUND, "revoke-for-unknown-party"),
    row(
        signed_as(revocation(keyid=signer("nvidia").key_id), "bis"),
        NOT_FOUND,
        "revoke-key-of-another-party",
    ),
    row(
        signed_as(site("gh-1", "ghost", actor="bis"), "bis"), NOT_FOUND, "site-for-unknown-operator"
    ),
    # Section 5: reused ids and keys (409 conflict).
    row(
        signed_as(party("nvidia", ["vendor"], "nvidia#2"), "bis", "nvidia#2"),
        CONFLICT,
        "reused-party-id",
    ),
    row(signed_as(site("dxb-1", "gulf-cloud"), "gulf-cloud"), CONFLICT, "reused-site-id"),
    row(
        signed_as(site("dxb-1", "desert-ai"), "desert-ai"),
        CONFLICT,
        "reused-site-id-other-operator",
    ),
    row(
        signed_as(party("newco", ["buyer"], "nvidia"), "bis", "nvidia"),
        CONFLICT,
        "register-party-with-taken-key",
    ),
    row(
        signed_as(key_added("desert-ai", "gulf-cloud"), "bis", "gulf-cloud"),
        CONFLICT,
        "add-taken-key",
    ),
    row(revoked_key_reused, CONFLICT, "register-party-with-revoked-key"),
    row(same_id_other_bytes(lambda e: e), CONFLICT, "same-id-other-bytes"),
    # Section 4 and 5: impossible registry state (409 invalid_transition).
    row(
        after(revocation(), ("bis",), signed_as(revocation(), "bis")),
        TRANSITION,
        "revoke-revoked-key",
    ),
    row(signed_as(genesis_last_key, "bis"), TRANSITION, "revoke-genesis-last-key"),
    row(after(listing(), ("bis",), signed_as(listing(), "bis")), TRANSITION, "double-listing"),
    row(signed_as(delisting("gulf-cloud"), "bis"), TRANSITION, "delist-not-listed"),
    # Section 5: the order of checks, where two faults meet.
    row(tampered(ahead, "bis", "tsmc"), INVALID, "order-schema-before-signature"),
    row(repeat_with_seventeen_signatures, INVALID, "order-schema-before-repeat"),
    row(same_id_other_bytes(no_sigs), CONFLICT, "order-same-id-before-no-signatures"),
    row(same_id_other_bytes(flip_first_signature), CONFLICT, "order-same-id-before-bad-signature"),
    row(
        tampered(listing(party="ghost"), "bis"),
        BAD_SIGNATURE,
        "order-bad-signature-before-unknown-party",
    ),
    row(
        signed_as(listing(party="ghost"), "stranger"),
        BAD_SIGNATURE,
        "order-unknown-key-before-unknown-party",
    ),
    row(
        signed_as(listing(party="ghost"), "nvidia"),
        FORBIDDEN,
        "order-wrong-signer-before-unknown-party",
    ),
    row(
        signed_as(listing(party="ghost", actor="nvidia"), "nvidia"),
        FORBIDDEN,
        "order-wrong-role-before-unknown-party",
    ),
    row(
        signed_as(site("gh-1", "ghost", actor="desert-ai"), "desert-ai"),
        FORBIDDEN,
        "order-not-operator-before-unknown-operator",
    ),
    row(
        tampered(party("nvidia", ["vendor"], "nvidia#2"), "bis", "nvidia#2"),
        BAD_SIGNATURE,
        "order-bad-signature-before-reused-id",
    ),
    row(
        signed_as(
            party("nvidia", ["vendor"], "nvidia#2", actor="gulf-cloud"), "gulf-cloud", "nvidia#2"
        ),
        FORBIDDEN,
        "order-wrong-role-before-reused-id",
    ),
    row(signed_as(delisting("ghost"), "bis"), NOT_FOUND, "order-unknown-party-before-not-listed"),
]


def snapshot(api: TestClient) -> tuple[int, Any]:
    """The ledger's size and every entry, as a client sees them."""
    size = api.get("/v1/ledger").json()["size"]
    entries = api.get("/v1/log/entries", params={"start": 0, "limit": 1000}).json()
    return size, entries


@pytest.mark.parametrize(("build", "status", "code"), REFUSALS)
def test_refused_envelope_gets_its_status_and_code_and_stores_nothing(
    api: TestClient, kit: Kit, build: Build, status: int, code: str
) -> None:
    request = build(kit)
    before = snapshot(api)

    response = api.post("/v1/events", content=request)

    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"].strip()
    assert snapshot(api) == before


# -- what is not refused -----------------------------------------------------------------------

BASES = [
    pytest.param(lambda kit: body(good_envelope(kit)), id="good-envelope"),
    pytest.param(lambda kit: body(padded_envelope(kit)), id="padded-envelope"),
    pytest.param(lambda kit: body(sign_bytes(non_ascii_payload(kit), "bis", "tsmc")), id="bytes"),
]


@pytest.mark.parametrize("build", BASES)
def test_the_envelopes_the_rows_start_from_are_accepted(
    api: TestClient, kit: Kit, build: Build
) -> None:
    """Every refusal above comes from its row's change, not from its starting point."""
    response = api.post("/v1/events", content=build(kit))

    assert response.status_code == 201, response.text


def garbage_signatures(envelope: Json) -> Json:
    return {**envelope, "signatures": [{"keyid": "ab" * 32, "sig": b64(b"\x00" * 64)}]}


def extra_valid_signer(envelope: Json) -> Json:
    extra = sign_bytes(base64.b64decode(envelope["payload"]), "nvidia")["signatures"]
    return {**envelope, "signatures": envelope["signatures"] + extra}


REPEATS = [
    pytest.param(lambda e: e, id="identical"),
    pytest.param(no_sigs, id="no-signatures"),
    pytest.param(flip_first_signature, id="bad-signature"),
    pytest.param(garbage_signatures, id="unknown-key-garbage-signature"),
    pytest.param(extra_valid_signer, id="extra-signer"),
]


@pytest.mark.parametrize("garble", REPEATS)
def test_repeat_gets_the_original_receipt_with_200_whatever_its_signatures(
    api: TestClient, kit: Kit, garble: Callable[[Json], Json]
) -> None:
    envelope = good_envelope(kit)
    first = api.post("/v1/events", content=body(envelope))
    assert first.status_code == 201, first.text
    before = snapshot(api)

    again = api.post("/v1/events", content=body(garble(json.loads(body(envelope)))))

    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert snapshot(api) == before


def test_repeat_signed_by_a_key_revoked_since_gets_the_original_receipt(
    api: TestClient, kit: Kit
) -> None:
    envelope = World.envelope(site("dxb-2", "gulf-cloud")(kit), "gulf-cloud")
    first = api.post("/v1/events", content=body(envelope))
    kit.accept(World.envelope(revocation()(kit), "bis"))
    before = snapshot(api)

    again = api.post("/v1/events", content=body(envelope))

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert snapshot(api) == before


def sixteen_signatures(kit: Kit) -> bytes:
    """The genesis authority and 15 new keys of one party: 16 signatures, the most allowed."""
    names = [f"tsmc#{i}" for i in range(15)]
    event = newcomer(kit, keys=[signer(n).public_key_b64 for n in names])
    return body(World.envelope(event, "bis", *names))


ACCEPTED_EDGES = [
    pytest.param(with_event(at=stamp(START.replace(minute=5))), id="at-exactly-5min-ahead"),
    pytest.param(with_event(at="2026-03-06T11:59:59.123456789Z"), id="at-nine-fraction-digits"),
    pytest.param(with_event(at="2020-01-01T00:00:00Z"), id="at-long-ago"),
    pytest.param(with_party(id="T" + "s" * 62 + "9"), id="party-id-64-chars"),
    pytest.param(with_party(id="tsmc.tw_f-18"), id="party-id-dot-underscore-dash"),
    pytest.param(with_party(hq_country="TW"), id="optional-field-present"),
    pytest.param(with_party(roles=["vendor", "buyer", "carrier"]), id="several-roles"),
    pytest.param(with_party(name="Société Taiwan — 台積電"), id="non-ascii-name"),
    pytest.param(sixteen_signatures, id="sixteen-signatures"),
]


@pytest.mark.parametrize("build", ACCEPTED_EDGES)
def test_envelope_at_the_edge_of_the_rules_is_accepted(
    api: TestClient, kit: Kit, build: Build
) -> None:
    size = api.get("/v1/ledger").json()["size"]

    response = api.post("/v1/events", content=build(kit))

    assert response.status_code == 201, response.text
    assert response.json()["seq"] == size
    assert api.get("/v1/ledger").json()["size"] == size + 1
