"""Ed25519 and the DSSE pre-authentication encoding: the one module that imports `nacl`.

Signatures are made and checked over bytes only (`pae` output or a note's text), never over
objects. Verification is libsodium's strict Ed25519 (PROTOCOL.md section 2). Key ids are the
protocol's (SHA-256 of the raw public key), not C2SP note key ids, which live in `ledger.notes`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from ledger.canonical import b64decode_strict, b64encode
from ledger.errors import InvalidEvent

PAYLOAD_TYPE = "application/vnd.chipledger.event.v1+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key: bytes) -> str:
    """Lowercase hex SHA-256 of the raw 32-byte public key (PROTOCOL.md section 1)."""
    return hashlib.sha256(public_key).hexdigest()


def decode_public_key(text: str, what: str = "public key") -> bytes:
    """A raw 32-byte Ed25519 public key from its strict base64 text."""
    raw = b64decode_strict(text, what)
    if len(raw) != 32:
        raise InvalidEvent(f"{what} must be 32 bytes of Ed25519 key, got {len(raw)}")
    return raw


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Strict Ed25519 verification; False for any signature that does not verify."""
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 key pair held in memory, made from a 32-byte seed."""

    seed: bytes

    @classmethod
    def generate(cls) -> Signer:
        return cls(bytes(SigningKey.generate()))

    @property
    def public_key(self) -> bytes:
        return bytes(SigningKey(self.seed).verify_key)

    @property
    def public_key_b64(self) -> str:
        return b64encode(self.public_key)

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return SigningKey(self.seed).sign(message).signature
