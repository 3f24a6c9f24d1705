"""The shared worked examples, reproduced byte for byte from their seeds (PROTOCOL.md section 2).

The data under tests/vectors/ are verbatim copies of /work/shared/vectors/envelope.json and
/work/shared/vectors/jcs/ (the JCS pairs are the RFC 8785 reference test data). Tests read
only these copies, so the suite does not depend on anything outside the repository; when the
shared vectors change, copy them again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger.canonical import b64decode_strict, canonical, parse_json
from ledger.crypto import PAYLOAD_TYPE, Signer, key_id, pae, verify
from ledger.envelopes import decode
from ledger.signing import envelope
from tests.support import ORIGIN, Clock, new_ledger, signer

VECTORS = Path(__file__).parent / "vectors"
CASES: list[dict[str, Any]] = json.loads((VECTORS / "envelope.json").read_text())["cases"]
JCS_INPUTS = sorted((VECTORS / "jcs" / "input").glob("*.json"))
GENESIS = CASES[0]
AFTER_GENESIS = datetime(2026, 3, 6, 9, 0, 30, tzinfo=UTC)


def _signers(case: dict[str, Any]) -> list[Signer]:
    return [Signer(bytes.fromhex(s["seed_hex"])) for s in case["signers"]]


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


def test_the_copied_vectors_hold_both_envelope_cases_and_every_jcs_pair() -> None:
    assert _ids(CASES) == [
        "genesis, self-signed by the authority",
        "two-party transfer: owner then receiver",
    ]
    outputs = sorted(p.name for p in (VECTORS / "jcs" / "output").glob("*.json"))
    assert [p.name for p in JCS_INPUTS] == outputs
    assert len(outputs) == 6


# -- envelope.json --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_signer_seeds_give_the_vector_public_keys_and_key_ids(case: dict[str, Any]) -> None:
    for spec, made in zip(case["signers"], _signers(case), strict=True):
        assert made.public_key_b64 == spec["public_key"]
        assert made.key_id == spec["keyid"]
        assert key_id(b64decode_strict(spec["public_key"], "public key")) == spec["keyid"]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_event_payload_is_the_vector_canonical_bytes(case: dict[str, Any]) -> None:
    payload = canonical(case["event"])
    assert payload == case["payload_utf8"].encode("utf-8")
    assert b64decode_strict(case["envelope"]["payload"], "payload") == payload


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_pae_is_the_vector_pre_authentication_encoding(case: dict[str, Any]) -> None:
    payload = case["payload_utf8"].encode("utf-8")
    assert pae(PAYLOAD_TYPE, payload) == case["pae_utf8"].encode("utf-8")


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_signing_the_event_with_the_seeds_gives_the_vector_envelope(case: dict[str, Any]) -> None:
    made = envelope(case["event"], _signers(case))
    assert made == case["envelope"]
    assert canonical(made) == case["envelope_canonical_utf8"].encode("utf-8")


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_every_vector_signature_verifies_over_the_pae(case: dict[str, Any]) -> None:
    message = case["pae_utf8"].encode("utf-8")
    for spec, sig in zip(case["signers"], case["envelope"]["signatures"], strict=True):
        public = b64decode_strict(spec["public_key"], "public key")
        assert sig["keyid"] == spec["keyid"]
        assert verify(public, message, b64decode_strict(sig["sig"], "sig"))


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_envelope_and_leaf_hashes_are_the_vector_hashes(case: dict[str, Any]) -> None:
    whole = canonical(envelope(case["event"], _signers(case)))
    assert hashlib.sha256(whole).hexdigest() == case["envelope_hash"]
    assert hashlib.sha256(b"\x00" + whole).hexdigest() == case["leaf_hash"]


def test_decoding_the_genesis_vector_gives_its_canonical_bytes_and_hashes() -> None:
    decoded = decode(GENESIS["envelope"], ORIGIN, AFTER_GENESIS)
    assert decoded.canonical == GENESIS["envelope_canonical_utf8"].encode("utf-8")
    assert decoded.payload == GENESIS["payload_utf8"].encode("utf-8")
    assert decoded.envelope_hash == GENESIS["envelope_hash"]
    assert decoded.leaf_hash == GENESIS["leaf_hash"]


@pytest.mark.parametrize(
    ("name", "index", "role"),
    [("bis", 0, 0), ("gulf-cloud", 1, 0), ("desert-ai", 1, 1)],
    ids=["bis-is-the-authority", "gulf-cloud-is-the-owner", "desert-ai-is-the-receiver"],
)
def test_test_support_keys_are_the_vector_keys(name: str, index: int, role: int) -> None:
    spec = CASES[index]["signers"][role]
    assert signer(name).seed == bytes.fromhex(spec["seed_hex"])
    assert signer(name).public_key_b64 == spec["public_key"]


@pytest.mark.parametrize("form", ["canonical-bytes", "parsed-json"])
def test_a_fresh_ledger_accepts_the_genesis_vector_with_its_hashes(
    tmp_path: Path, form: str
) -> None:
    ledger = new_ledger(str(tmp_path / "ledger.db"), Clock(AFTER_GENESIS))
    body = GENESIS["envelope_canonical_utf8"].encode("utf-8")
    outcome = ledger.submit(body if form == "canonical-bytes" else json.loads(body))
    assert not outcome.repeated
    assert outcome.receipt.seq == 0
    assert outcome.receipt.id == GENESIS["event"]["id"]
    assert outcome.receipt.type == "party.registered"
    assert outcome.receipt.envelope_hash == GENESIS["envelope_hash"]
    assert outcome.receipt.leaf_hash == GENESIS["leaf_hash"]
    assert ledger.size() == 1
    stored = ledger.log_entries(0, 1).entries[0]
    assert stored.seq == 0
    assert canonical(stored.envelope) == body


# -- RFC 8785 reference pairs (jcs/input -> jcs/output) -------------------------------------


@pytest.mark.parametrize("source", JCS_INPUTS, ids=[p.stem for p in JCS_INPUTS])
def test_canonical_form_of_each_jcs_input_is_its_reference_output(source: Path) -> None:
    expected = (VECTORS / "jcs" / "output" / source.name).read_bytes()
    assert canonical(parse_json(source.read_bytes())) == expected


@pytest.mark.parametrize("source", JCS_INPUTS, ids=[p.stem for p in JCS_INPUTS])
def test_jcs_reference_outputs_are_fixed_points_of_canonical(source: Path) -> None:
    expected = (VECTORS / "jcs" / "output" / source.name).read_bytes()
    assert canonical(parse_json(expected)) == expected
