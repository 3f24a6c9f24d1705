"""C2SP signed-note keys: the note key id and the verifier key text of the log key.

Note key ids are SHA-256(name || 0x0A || 0x01 || public key)[:4] (C2SP signed-note), not the
protocol's key ids. Signing and verifying notes and checkpoints come with the log (issue 5).
"""

from __future__ import annotations

import hashlib

from ledger.canonical import b64encode

ED25519_ALGORITHM = b"\x01"


def note_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_ALGORITHM + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """`<name>+<8 hex key id>+<base64 of 0x01 || public key>`."""
    key_hash = note_key_id(name, public_key).hex()
    return f"{name}+{key_hash}+{b64encode(ED25519_ALGORITHM + public_key)}"
