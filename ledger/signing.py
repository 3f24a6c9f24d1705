"""Making envelopes and key files: what a client of the ledger does before it submits.

`envelope(event, signers)` signs the canonical bytes of an event object (PROTOCOL.md section
2). Key files follow section 10: `NAME.key` holds a 32-byte seed in base64 (mode 0600),
`NAME.pub` the public key in base64. Used by the CLI, the demo, the tests and the benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.canonical import b64decode_strict, b64encode, canonical
from ledger.crypto import PAYLOAD_TYPE, Signer, decode_public_key, pae
from ledger.errors import Conflict, InvalidEvent, NotFound


def envelope(event: dict[str, Any], signers: Sequence[Signer]) -> dict[str, Any]:
    """A DSSE envelope over the RFC 8785 bytes of `event`, one signature per signer."""
    payload = canonical(event)
    message = pae(PAYLOAD_TYPE, payload)
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": b64encode(payload),
        "signatures": [{"keyid": s.key_id, "sig": b64encode(s.sign(message))} for s in signers],
    }


def write_key_pair(directory: Path, name: str, signer: Signer | None = None) -> Signer:
    """Write `NAME.key` (mode 0600) and `NAME.pub`; never overwrite either."""
    signer = signer or Signer.generate()
    directory.mkdir(parents=True, exist_ok=True)
    secret, public = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (secret, public):
        if path.exists():
            raise Conflict(f"{path} exists; keys are never overwritten, choose another name")
    write_secret(secret, signer)
    public.write_text(signer.public_key_b64 + "\n")
    return signer


def write_secret(path: Path, signer: Signer) -> None:
    """Write a `.key` file readable by its owner only; refuse to replace one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict(f"{path} exists; keys are never overwritten") from None
    with os.fdopen(fd, "w") as out:
        out.write(b64encode(signer.seed) + "\n")


def read_signer(path: Path) -> Signer:
    """A signer from a `.key` file."""
    if not path.is_file():
        raise NotFound(f"no key file at {path}")
    seed = b64decode_strict(path.read_text().strip(), f"the key in {path}")
    if len(seed) != 32:
        raise InvalidEvent(f"{path} must hold a 32-byte seed in base64")
    return Signer(seed)


def read_public_key(text_or_path: str) -> str:
    """A public key in base64: read from a `.pub` file if that path exists, else the text."""
    path = Path(text_or_path)
    text = path.read_text().strip() if path.is_file() else text_or_path.strip()
    decode_public_key(text, "the public key")
    return text


def is_file(path: Path) -> bool:
    """Whether `path` names a file; a text too long to be a path (a verifier key) does not."""
    try:
        return path.is_file()
    except OSError:
        return False
