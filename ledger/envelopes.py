"""From untrusted envelope JSON to a decoded event, and from signatures to signers.

`decode` runs the schema stage of PROTOCOL.md section 5 (envelope fields, strict base64,
canonical payload, event schema, `ledger`, bounds on `at`) and returns the canonical bytes it
checked. `verify_signatures` runs the signature stage and returns who signed: nothing
downstream re-parses unverified bytes. Neither looks at custody state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ledger import wire
from ledger.canonical import b64decode_strict, canonical, canonical_text, parse_json
from ledger.crypto import PAYLOAD_TYPE, decode_public_key, key_id, pae, verify
from ledger.errors import BadRequest, BadSignature, InvalidEvent, TooLarge

MAX_ENVELOPE_BYTES = 1 << 20
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Decoded:
    """An envelope whose shape, payload and event have been checked; not yet its signatures.

    Its digests are computed once, here (by the worker of `ledger.ahead` where there is
    one): `envelope_hash` and `leaf_hash` of the canonical envelope, `payload_digest`."""

    event: wire.Event
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]
    canonical: bytes
    envelope_hash: str
    leaf_hash: str
    payload_digest: str

    @property
    def message(self) -> bytes:
        """What the signatures sign: the DSSE pre-authentication encoding of the payload."""
        return pae(PAYLOAD_TYPE, self.payload)


def decode(
    value: Any, origin: str, now: datetime, parse: Callable[[Any], Any] = wire.parse_event
) -> Decoded:
    """Check an envelope's schema and its event's (PROTOCOL.md sections 1-3); `parse` reads
    the event (a session request is read by its own, `ledger.sessions.parse_request`)."""
    envelope = wire.parse_envelope(value)
    text = _envelope_text(envelope)
    texts = (envelope.payload, *(s.sig for s in envelope.signatures))
    size = len(text) if not any(t.strip(_BASE64) for t in texts) else len(canonical(value))
    if size > MAX_ENVELOPE_BYTES:
        raise TooLarge(f"the envelope is {size} bytes; the limit is 1 MiB")
    signatures = _signatures(envelope)
    payload = b64decode_strict(envelope.payload, "payload")
    whole = text.encode("ascii")  # canonical: every string in it is base64 or hex
    event = parse(_payload_json(payload))
    if event.ledger != origin:
        raise InvalidEvent(
            f"the event is for ledger {event.ledger!r}, but this ledger is {origin!r}"
        )
    if event.at > now + CLOCK_SKEW:
        raise InvalidEvent(
            f"'at' {wire.format_time(event.at)} is more than 5 minutes after the ledger's "
            f"clock ({wire.format_time(now)}); check the signer's clock"
        )
    return Decoded(
        event,
        payload,
        signatures,
        whole,
        envelope_hash=hashlib.sha256(whole).hexdigest(),
        leaf_hash=hashlib.sha256(b"\x00" + whole).hexdigest(),
        payload_digest=hashlib.sha256(payload).hexdigest(),
    )


_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def _envelope_text(envelope: wire.Envelope) -> str:
    """The envelope written sorted and compact, its strings as they are.

    This is its canonical form (RFC 8785) once its strings are known to be base64 text (key
    ids are hex by the schema; `decode` checks the rest next), which needs no escaping.
    """
    signatures = ",".join(f'{{"keyid":"{s.keyid}","sig":"{s.sig}"}}' for s in envelope.signatures)
    return (
        f'{{"payload":"{envelope.payload}","payloadType":"{PAYLOAD_TYPE}",'
        f'"signatures":[{signatures}]}}'
    )


def _signatures(envelope: wire.Envelope) -> tuple[tuple[str, bytes], ...]:
    seen: set[str] = set()
    out = []
    for index, signature in enumerate(envelope.signatures):
        if signature.keyid in seen:
            raise InvalidEvent(f"key id {signature.keyid} signs twice; key ids must be distinct")
        seen.add(signature.keyid)
        raw = b64decode_strict(signature.sig, f"signatures[{index}].sig")
        if len(raw) != 64:
            raise InvalidEvent(f"signatures[{index}].sig must be 64 bytes, got {len(raw)}")
        out.append((signature.keyid, raw))
    return tuple(out)


def _payload_json(payload: bytes) -> Any:
    if (value := canonical_text(payload)) is not None:
        return value
    try:
        value = parse_json(payload, "payload")
    except BadRequest as exc:
        raise InvalidEvent(exc.message) from None
    if canonical(value) != payload:
        raise InvalidEvent(
            "the payload is not in canonical JSON form (RFC 8785: sorted keys, no spaces, "
            "shortest escapes); sign the canonical bytes"
        )
    return value


def verify_signatures(
    decoded: Decoded,
    registered: Callable[[str], tuple[str, bytes] | None],
    introduced: Mapping[str, str],
    verified: Collection[tuple[str, bytes]] = (),
) -> dict[str, str]:
    """Verify every signature; return key id -> signing party.

    `registered(keyid)` gives (party, public key) for a key that is registered and not
    revoked, or None. `introduced` maps the public keys an event introduces to the party
    they are for. A signature under any other key, or one that does not verify, is refused.
    `verified` holds (key id, public key) pairs already seen to verify over this payload
    (`ledger.ahead`): such a signature is not checked twice.
    """
    new_keys = {key_id(decode_public_key(k)): (party, k) for k, party in introduced.items()}
    signers: dict[str, str] = {}
    for kid, sig in decoded.signatures:
        if kid in new_keys:
            party, text = new_keys[kid]
            public = decode_public_key(text)
        elif (known := registered(kid)) is not None:
            party, public = known
        else:
            raise BadSignature(f"key {kid} is not a registered, unrevoked key of any party")
        if (kid, public) not in verified and not verify(public, decoded.message, sig):
            raise BadSignature(f"the signature by key {kid} does not verify over this payload")
        signers[kid] = party
    return signers
