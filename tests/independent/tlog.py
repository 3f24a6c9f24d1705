"""A transparency-log verifier written from RFC 9162 and the C2SP signed-note/tlog-checkpoint texts.

It is a second, independent implementation: Merkle tree hashes and proofs follow the RFC's
recursive definitions (MTH, PATH, SUBPROOF) and its §2.1.3.2 / §2.1.4.2 verification loops
directly, and it imports nothing from the project (`ledger`, `api`, `tools`, `tests.support`).
The recursive builders are for cross-checking a server on small trees, not for large logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from typing import NamedTuple

import nacl.exceptions
import nacl.signing

HASH_SIZE = 32  # SHA-256, the RFC 6962 / RFC 9162 SHA-256 hash algorithm
ED25519_TYPE = b"\x01"  # C2SP signed-note signature type of Ed25519
EM_DASH_PREFIX = "\u2014 "
MAX_SIGNATURES = 100  # C2SP signed-note: verifiers bound this, but accept at least 16
DECIMAL = re.compile(r"0|[1-9][0-9]*")


class VerifierKey(NamedTuple):
    name: str
    key_id: bytes  # 4 bytes, big-endian uint32 as it appears in a signature
    public_key: bytes  # 32-byte Ed25519 public key


class Checkpoint(NamedTuple):
    origin: str
    size: int
    root: bytes


# --- RFC 9162 §2.1.1: the Merkle tree hash -------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaf data, by the RFC's recursion; SHA-256('') for the empty tree."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = _split(n)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


# --- RFC 6962 §2.1.1 / §2.1.2: proofs by their recursive definitions -----------------------


def inclusion_proof_of(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]): the audit path of leaf `index`, lowest level first."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is not in a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof_of(leaves[:k], index), root_of(leaves[k:])]
    return [*inclusion_proof_of(leaves[k:], index - k), root_of(leaves[:k])]


def consistency_proof_of(leaves: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m <= n (empty when m == n)."""
    if not 0 < m <= len(leaves):
        raise ValueError(f"no consistency proof from size {m} to size {len(leaves)}")
    return _subproof(leaves, m, True)


def _subproof(leaves: Sequence[bytes], m: int, whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [root_of(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(leaves[:k], m, whole), root_of(leaves[k:])]
    return [*_subproof(leaves[k:], m - k, False), root_of(leaves[:k])]


# --- RFC 9162 §2.1.3.2 and §2.1.4.2: verification ------------------------------------------


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _hashes(values: object) -> list[bytes] | None:
    """The proof as a list of 32-byte hashes, or None if it is anything else."""
    if isinstance(values, bytes | str) or not isinstance(values, Sequence):
        return None
    hashes = list(values)
    if all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes):
        return hashes
    return None


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows `leaf_hash` at `index` in the tree of `tree_size` with `root`."""
    fn, sn, path = _size(index), _size(tree_size), _hashes(proof)
    if fn is None or sn is None or path is None or not isinstance(leaf_hash, bytes):
        return False
    if fn >= sn or len(leaf_hash) != HASH_SIZE:  # step 1
        return False
    sn -= 1  # step 2
    r = leaf_hash  # step 3
    for p in path:  # step 4
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root  # step 5


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """Whether `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    The RFC's loop covers 0 < old_size < new_size. Outside it: equal sizes (>= 1) hold exactly
    when the proof is empty and the roots are equal; an old size of 0 never verifies (nothing is
    proven about an empty tree, and the log's API asks `from >= 1`).
    """
    first, second, path = _size(old_size), _size(new_size), _hashes(proof)
    if first is None or second is None or path is None:
        return False
    if not isinstance(old_root, bytes) or not isinstance(new_root, bytes):
        return False
    if first == 0 or first > second:
        return False
    if first == second:
        return not path and old_root == new_root
    return _consistency_loop(first, second, path, old_root, new_root)


def _consistency_loop(
    first: int, second: int, path: list[bytes], first_hash: bytes, second_hash: bytes
) -> bool:
    if not path:  # step 1
        return False
    if first & (first - 1) == 0:  # step 2: first is an exact power of 2
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_hash and sr == second_hash and sn == 0  # step 7


# --- C2SP signed-note ----------------------------------------------------------------------


def b64decode_strict(text: str) -> bytes:
    """Standard padded base64 (RFC 4648 §4) that re-encodes to the same text, else ValueError."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"not standard base64: {text!r}") from exc
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError(f"base64 that does not re-encode to itself: {text!r}")
    return data


def note_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:4]


def _check_key_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise ValueError(f"not a key name (non-empty, no spaces, no '+'): {name!r}")


def vkey_for(name: str, public_key: bytes) -> str:
    """The verifier key text `<name>+<8 hex key ID>+<base64 of 0x01 || public key>`."""
    _check_key_name(name)
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    key_data = base64.b64encode(ED25519_TYPE + public_key).decode("ascii")
    return f"{name}+{note_key_id(name, public_key).hex()}+{key_data}"


def parse_vkey(vkey: str) -> VerifierKey:
    """(name, 4-byte key ID, public key) of an Ed25519 verifier key, or ValueError."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise ValueError("a verifier key is <name>+<key id>+<key data>")
    name, id_hex, key_b64 = parts
    _check_key_name(name)
    if not re.fullmatch(r"[0-9a-fA-F]{8}", id_hex):
        raise ValueError(f"a verifier key ID is 8 hex digits, not {id_hex!r}")
    key_data = b64decode_strict(key_b64)
    if len(key_data) != 33 or key_data[:1] != ED25519_TYPE:
        raise ValueError("verifier key data is not 0x01 followed by a 32-byte Ed25519 key")
    key_id, public_key = bytes.fromhex(id_hex), key_data[1:]
    if note_key_id(name, public_key) != key_id:
        raise ValueError(f"the key ID {id_hex} does not belong to key {name!r}")
    return VerifierKey(name, key_id, public_key)


def _split_note(note: str) -> tuple[str, list[str]]:
    """The note text (with its final newline) and its signature lines, or ValueError."""
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("a signed note is valid UTF-8") from exc
    if any(ch < " " and ch != "\n" for ch in note):
        raise ValueError("a signed note holds no control characters but newline")
    split = note.rfind("\n\n")  # the last empty line separates the text from the signatures
    if split < 0 or not note.endswith("\n"):
        raise ValueError("a signed note is text, a blank line, then signature lines")
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if not lines[0] or len(lines) > MAX_SIGNATURES:
        raise ValueError(f"a signed note carries 1 to {MAX_SIGNATURES} signature lines")
    return text, lines


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """(key name, key ID, signature) of `— <name> <base64(key ID || signature)>`."""
    if not line.startswith(EM_DASH_PREFIX):
        raise ValueError(f"a signature line starts with an em dash and a space: {line!r}")
    name, sep, sig_b64 = line[len(EM_DASH_PREFIX) :].partition(" ")
    if not sep:
        raise ValueError(f"a signature line is '— <name> <signature>': {line!r}")
    _check_key_name(name)
    blob = b64decode_strict(sig_b64)
    if len(blob) < 5:
        raise ValueError(f"a signature is a 4-byte key ID and at least one byte: {line!r}")
    return name, blob[:4], blob[4:]


def verify_signed_note(note: str, vkey: str) -> str:
    """The text of `note` if the key `vkey` signed it, else ValueError saying what is wrong.

    Signatures by other keys (another name or another key ID) are ignored; a signature that
    claims this key and does not verify rejects the whole note.
    """
    key = parse_vkey(vkey)
    text, lines = _split_note(note)
    verifier = nacl.signing.VerifyKey(key.public_key)
    verified = False
    for line in lines:
        name, key_id, signature = _parse_signature_line(line)
        if (name, key_id) != (key.name, key.key_id):
            continue
        try:
            verifier.verify(text.encode("utf-8"), signature)
        except (nacl.exceptions.BadSignatureError, ValueError) as exc:
            raise ValueError(f"the signature by {key.name} does not verify") from exc
        verified = True
    if not verified:
        raise ValueError(f"the note carries no signature by {key.name}")
    return text


# --- C2SP tlog-checkpoint ------------------------------------------------------------------


def parse_checkpoint(text: str) -> Checkpoint:
    """(origin, tree size, root hash) of a checkpoint's note text, or ValueError."""
    if not text.endswith("\n"):
        raise ValueError("checkpoint text ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise ValueError("a checkpoint is at least three non-empty lines")
    origin, size_text, root_b64 = lines[:3]
    if not DECIMAL.fullmatch(size_text):
        raise ValueError(f"a tree size is decimal with no leading zeroes: {size_text!r}")
    root = b64decode_strict(root_b64)
    if len(root) != HASH_SIZE:
        raise ValueError(f"a root hash is {HASH_SIZE} bytes, not {len(root)}")
    return Checkpoint(origin, int(size_text), root)


def open_checkpoint(note: str, vkey: str, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint with `vkey`, parse it and, if given, check its origin."""
    checkpoint = parse_checkpoint(verify_signed_note(note, vkey))
    if origin is not None and checkpoint.origin != origin:
        raise ValueError(f"the checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
