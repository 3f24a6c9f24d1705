"""A second opinion on our DSSE envelopes from in-toto's securesystemslib (PROTOCOL.md section 2).

Both directions: envelopes made by `ledger.signing.envelope` verify under securesystemslib's
`dsse.Envelope` and `SSlibKey`, and envelopes that securesystemslib builds and signs are accepted
by our `decode` + `verify_signatures` path and by a ledger. A tampered payload fails in both.

The vector cases come from tests/vectors/envelope.json, a verbatim copy of
/work/shared/vectors/envelope.json.

securesystemslib's own `CryptoSigner` needs pyca/cryptography, which the project does not
install. Without it securesystemslib verifies Ed25519 with its vendored pure-Python reference
implementation, and our securesystemslib `Signer` below signs with that same vendored code,
so no byte of either direction passes through PyNaCl. The `CryptoSigner` test runs only where
pyca/cryptography is importable.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import (  # type: ignore[attr-defined]  # re-exported, no __all__
    Key,
    SecretsHandler,
    Signature,
    SSlibKey,
)
from securesystemslib.signer import Signer as SSlibSigner  # type: ignore[attr-defined]

from ledger.canonical import b64decode_strict, b64encode, canonical
from ledger.crypto import PAYLOAD_TYPE, Signer, pae, verify
from ledger.envelopes import decode, verify_signatures
from ledger.errors import BadSignature
from ledger.signing import envelope
from tests.support import ORIGIN, Clock, World, new_ledger, signer

VECTORS = Path(__file__).parent / "vectors"
CASES: list[dict[str, Any]] = json.loads((VECTORS / "envelope.json").read_text())["cases"]
GENESIS = CASES[0]
AFTER_GENESIS = datetime(2026, 3, 6, 9, 0, 30, tzinfo=UTC)


def sslib_key(ours: Signer) -> SSlibKey:
    """Our public key as securesystemslib sees it, under the protocol's key id."""
    return SSlibKey(ours.key_id, "ed25519", "ed25519", {"public": ours.public_key.hex()})


class VendoredEd25519Signer(SSlibSigner):
    """A securesystemslib signer over its vendored reference Ed25519 (test keys only)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._key = sslib_key(Signer(seed))

    def sign(self, payload: bytes) -> Signature:
        from securesystemslib._vendor.ed25519 import ed25519

        public = bytes.fromhex(self._key.keyval["public"])
        raw: bytes = ed25519.signature_unsafe(payload, self._seed, public)  # type: ignore[no-untyped-call]
        return Signature(self._key.keyid, raw.hex())

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> VendoredEd25519Signer:
        raise NotImplementedError("test signer: construct it from a seed")

    @property
    def public_key(self) -> Key:
        return self._key


def sslib_envelope(value: dict[str, Any]) -> Envelope:
    # Envelope.from_dict rewrites the signature dicts it is given: hand it a copy.
    return Envelope.from_dict(copy.deepcopy(value))


def sslib_signed(event: dict[str, Any], seeds: list[bytes]) -> dict[str, Any]:
    """An envelope over the canonical event bytes, built and signed by securesystemslib."""
    made = Envelope(canonical(event), PAYLOAD_TYPE, {})
    for seed in seeds:
        made.sign(VendoredEd25519Signer(seed))
    result: dict[str, Any] = made.to_dict()
    return result


def tampered(value: dict[str, Any]) -> dict[str, Any]:
    """The same envelope and signatures over a payload whose `actor` was changed."""
    event = json.loads(b64decode_strict(value["payload"], "payload"))
    event["actor"] = event["actor"] + "x"
    return {**value, "payload": b64encode(canonical(event))}


def _signers(case: dict[str, Any]) -> list[Signer]:
    return [Signer(bytes.fromhex(s["seed_hex"])) for s in case["signers"]]


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


# -- ours, checked by securesystemslib ------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_securesystemslib_verifies_every_signature_of_our_vector_envelopes(
    case: dict[str, Any],
) -> None:
    signers = _signers(case)
    keys: list[Key] = [sslib_key(s) for s in signers]
    accepted = sslib_envelope(envelope(case["event"], signers)).verify(keys, len(signers))
    assert sorted(accepted) == sorted(s.key_id for s in signers)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_securesystemslib_computes_the_same_pae_as_ours(case: dict[str, Any]) -> None:
    parsed = sslib_envelope(envelope(case["event"], _signers(case)))
    assert parsed.payload_type == PAYLOAD_TYPE
    assert parsed.pae() == pae(PAYLOAD_TYPE, case["payload_utf8"].encode("utf-8"))
    assert parsed.pae() == case["pae_utf8"].encode("utf-8")


def test_securesystemslib_verifies_a_registration_signed_by_authority_and_new_party() -> None:
    registration = World(Clock()).party("gulf-cloud", ["buyer"])
    keys: list[Key] = [sslib_key(signer("bis")), sslib_key(signer("gulf-cloud"))]
    accepted = sslib_envelope(registration).verify(keys, 2)
    assert sorted(accepted) == sorted([signer("bis").key_id, signer("gulf-cloud").key_id])


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_securesystemslib_refuses_our_envelope_with_a_tampered_payload(
    case: dict[str, Any],
) -> None:
    signers = _signers(case)
    keys: list[Key] = [sslib_key(s) for s in signers]
    forged = sslib_envelope(tampered(envelope(case["event"], signers)))
    with pytest.raises(VerificationError):
        forged.verify(keys, 1)


def test_securesystemslib_refuses_a_signature_under_another_key() -> None:
    ours = envelope(GENESIS["event"], [signer("bis")])
    impostor: Key = SSlibKey(
        signer("bis").key_id, "ed25519", "ed25519", {"public": signer("nvidia").public_key.hex()}
    )
    with pytest.raises(VerificationError):
        sslib_envelope(ours).verify([impostor], 1)


# -- securesystemslib's, checked by us ------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_securesystemslib_signed_envelope_is_byte_identical_to_ours(case: dict[str, Any]) -> None:
    seeds = [bytes.fromhex(s["seed_hex"]) for s in case["signers"]]
    theirs = sslib_signed(case["event"], seeds)
    assert canonical(theirs) == case["envelope_canonical_utf8"].encode("utf-8")


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_every_securesystemslib_signature_verifies_under_our_verify_over_our_pae(
    case: dict[str, Any],
) -> None:
    signers = _signers(case)
    theirs = sslib_signed(case["event"], [s.seed for s in signers])
    message = pae(PAYLOAD_TYPE, b64decode_strict(theirs["payload"], "payload"))
    by_key = {s["keyid"]: b64decode_strict(s["sig"], "sig") for s in theirs["signatures"]}
    assert sorted(by_key) == sorted(s.key_id for s in signers)
    for ours in signers:
        assert verify(ours.public_key, message, by_key[ours.key_id])


def test_securesystemslib_signed_genesis_passes_our_decode_and_signature_stage() -> None:
    theirs = sslib_signed(GENESIS["event"], [signer("bis").seed])
    decoded = decode(theirs, ORIGIN, AFTER_GENESIS)
    introduced = {signer("bis").public_key_b64: "bis"}
    assert verify_signatures(decoded, lambda _kid: None, introduced) == {
        signer("bis").key_id: "bis"
    }


def test_a_ledger_accepts_a_securesystemslib_signed_genesis_and_party(tmp_path: Path) -> None:
    clock = Clock()
    world = World(clock)
    ledger = new_ledger(str(tmp_path / "ledger.db"), clock)
    genesis_event = json.loads(b64decode_strict(world.genesis()["payload"], "payload"))
    party_event = json.loads(
        b64decode_strict(world.party("gulf-cloud", ["buyer"])["payload"], "payload")
    )
    first = ledger.submit(sslib_signed(genesis_event, [signer("bis").seed]))
    second = ledger.submit(
        sslib_signed(party_event, [signer("bis").seed, signer("gulf-cloud").seed])
    )
    assert (first.receipt.seq, second.receipt.seq) == (0, 1)
    assert not first.repeated
    assert not second.repeated
    assert ledger.size() == 2


def test_our_verify_refuses_a_securesystemslib_signature_over_a_tampered_payload() -> None:
    forged = tampered(sslib_signed(GENESIS["event"], [signer("bis").seed]))
    message = pae(PAYLOAD_TYPE, b64decode_strict(forged["payload"], "payload"))
    sig = b64decode_strict(forged["signatures"][0]["sig"], "sig")
    assert not verify(signer("bis").public_key, message, sig)


@pytest.mark.parametrize("maker", ["ours", "securesystemslib"])
def test_a_ledger_refuses_a_signed_genesis_with_a_tampered_payload_as_a_bad_signature(
    tmp_path: Path, maker: str
) -> None:
    ledger = new_ledger(str(tmp_path / "ledger.db"), Clock(AFTER_GENESIS))
    signed = (
        envelope(GENESIS["event"], [signer("bis")])
        if maker == "ours"
        else sslib_signed(GENESIS["event"], [signer("bis").seed])
    )
    with pytest.raises(BadSignature):
        ledger.submit(tampered(signed))
    assert ledger.size() == 0


def test_securesystemslib_crypto_signer_envelope_is_accepted_by_a_ledger(tmp_path: Path) -> None:
    ed25519 = pytest.importorskip(
        "cryptography.hazmat.primitives.asymmetric.ed25519",
        reason="securesystemslib's CryptoSigner needs pyca/cryptography, not installed here",
    )
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

    bis = signer("bis")
    crypto = CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bis.seed), sslib_key(bis))
    made = Envelope(canonical(GENESIS["event"]), PAYLOAD_TYPE, {})
    made.sign(crypto)
    ledger = new_ledger(str(tmp_path / "ledger.db"), Clock(AFTER_GENESIS))
    receipt = ledger.submit(made.to_dict()).receipt
    assert receipt.envelope_hash == GENESIS["envelope_hash"]
