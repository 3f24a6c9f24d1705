"""C2SP signed notes, and the two texts the log key signs: checkpoints and head statements.

A signed note (c2sp.org/signed-note) is a text ending in a newline, a blank line, and signature
lines `— <key name> <base64(4-byte note key id || 64-byte Ed25519 signature)>`. Note key ids
are SHA-256(name || 0x0A || 0x01 || public key)[:4] (C2SP signed-note), not the protocol's key
ids. Opening follows `Open` of golang.org/x/mod/sumdb/note, the reference implementation.

Checkpoints (c2sp.org/tlog-checkpoint, PROTOCOL.md section 8) and head statements (section 9)
are note texts. Both are made and parsed strictly, so that one value has exactly one text.
Refusals of untrusted input are `BadNote` (or `BadVerifierKey` for a key); making a note or a
text from bad values is a bug of the caller and raises ValueError.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ledger.canonical import b64decode_strict, b64encode
from ledger.crypto import Signer, verify
from ledger.errors import BadRequest, BadSignature, InvalidEvent
from ledger.wire.types import HEX64_PATTERN, ID_PATTERN

ED25519_ALGORITHM = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # as golang.org/x/mod/sumdb/note; c2sp.org/signed-note asks for >= 16
MAX_TREE_SIZE = 2**63 - 1  # golang.org/x/mod/sumdb/tlog holds tree sizes in an int64
HEAD_HEADER = "chipledger-head/v1"

_FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\ud800-\udfff]")  # controls but \n; lone surrogates
_DECIMAL = re.compile("0|[1-9][0-9]{0,18}")


class BadNote(BadSignature):
    """A signed note, checkpoint or head statement that is malformed or not signed by the key."""


class BadVerifierKey(BadRequest):
    """A verifier key text that is not `<name>+<8 hex key id>+<base64 of 0x01 || key>`."""


def note_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519_ALGORITHM + public_key).digest()[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """`<name>+<8 hex key id>+<base64 of 0x01 || public key>`."""
    key_hash = note_key_id(name, public_key).hex()
    return f"{name}+{key_hash}+{b64encode(ED25519_ALGORITHM + public_key)}"


def _text_problem(text: str) -> str | None:
    """What makes `text` unfit for a note (c2sp.org/signed-note), or None if nothing does."""
    bad = _FORBIDDEN.search(text)
    if bad is None:
        return None
    char = bad.group()
    if "\ud800" <= char <= "\udfff":
        return "holds a lone surrogate, which is not UTF-8 text"
    return f"holds the control character U+{ord(char):04X} (only newline is allowed)"


def _name_problem(name: str) -> str | None:
    """Why `name` is no key name (non-empty, no Unicode space, no '+'), or None."""
    if not name:
        return "a key name must not be empty"
    if "+" in name or any(char.isspace() for char in name):
        return f"the key name {name!r} holds a space or a '+'"
    if _text_problem(name):
        return f"the key name {name!r} holds a control character or a lone surrogate"
    return None


def sign_note(text: str, name: str, signer: Signer) -> str:
    """`text`, a blank line, and one signature line by `signer` under the key name `name`.

    The text must end in a newline and hold no control character but newline; it may hold
    blank lines, since the last blank line of a note is the one that ends the text. Whatever
    `open_note` would refuse is a ValueError here, so no unopenable note is ever made.
    """
    if not text.endswith("\n"):
        raise ValueError("a note text must be non-empty and end in a newline")
    problem = _text_problem(text)
    if problem:
        raise ValueError(f"the note text {problem}")
    problem = _name_problem(name)
    if problem:
        raise ValueError(problem)
    signature = signer.sign(text.encode("utf-8"))
    key_id = note_key_id(name, signer.public_key)
    return f"{text}\n{SIGNATURE_PREFIX}{name} {b64encode(key_id + signature)}\n"


@dataclass(frozen=True)
class VerifierKey:
    """A parsed verifier key: the key name, its 4-byte note key id and Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: bytes

    @property
    def text(self) -> str:
        return verifier_key(self.name, self.public_key)


def _b64(text: str) -> bytes | None:
    """Strict standard base64 (it must re-encode to `text`), or None."""
    try:
        return b64decode_strict(text, "base64")
    except InvalidEvent:
        return None


def parse_verifier_key(vkey: str) -> VerifierKey:
    """Check and parse `<name>+<8 hex key id>+<base64 of 0x01 || 32-byte Ed25519 key>`.

    Split on the first two '+' only (base64 holds '+'). The key id is recomputed from the name
    and key and must match; hex digits may be of either case, as golang.org/x/mod accepts.
    Surrounding whitespace (the newline of a key file) is ignored.
    """
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise BadVerifierKey(
            "a verifier key is <name>+<8 hex key id>+<base64 key>; this one has no two '+'"
        )
    name, hash16, key64 = parts
    problem = _name_problem(name)
    if problem:
        raise BadVerifierKey(f"bad verifier key: {problem}")
    if not re.fullmatch("[0-9a-fA-F]{8}", hash16):
        raise BadVerifierKey(f"bad verifier key: the key id {hash16!r} is not 8 hex digits")
    key = _b64(key64)
    if key is None:
        raise BadVerifierKey("bad verifier key: the key is not standard padded base64")
    if key[:1] != ED25519_ALGORITHM:
        found = f"0x{key[0]:02x}" if key else "nothing"
        raise BadVerifierKey(
            f"bad verifier key: the algorithm byte is {found}; only 0x01 (Ed25519) is known"
        )
    public_key = key[1:]
    if len(public_key) != 32:
        raise BadVerifierKey(
            f"bad verifier key: an Ed25519 key is 32 bytes, this one is {len(public_key)}"
        )
    key_id = note_key_id(name, public_key)
    if key_id != bytes.fromhex(hash16):
        raise BadVerifierKey(
            f"bad verifier key: the key id {hash16} does not match the name and key "
            f"(they give {key_id.hex()})"
        )
    return VerifierKey(name, key_id, public_key)


def _signature_line(line: str, number: int) -> tuple[str, bytes, bytes]:
    """The key name, key id and signature of one signature line; BadNote if malformed."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise BadNote(
            f"malformed note: signature line {number} does not start with an em dash and a space"
        )
    name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    raw = _b64(b64) if b64 else None
    if _name_problem(name) or raw is None or len(raw) < 5:
        raise BadNote(
            f"malformed note: signature line {number} is not "
            "'— <key name> <base64 of key id and signature>'"
        )
    return name, raw[:4], raw[4:]


def open_note(note: str, vkey: VerifierKey | str) -> str:
    """The text of `note` once a signature by `vkey` verifies on it.

    As `Open` of golang.org/x/mod/sumdb/note: the note must be UTF-8 with no control character
    but newline, end in a newline, and have at most 100 well-formed signature lines after its
    last blank line. Signatures by other keys (another name or key id) are ignored. Unlike
    `Open`, every signature claiming the key's name and id is verified, not the first only: any
    that fails refuses the note (c2sp.org/signed-note: verifiers must verify those).
    """
    key = parse_verifier_key(vkey) if isinstance(vkey, str) else vkey
    problem = _text_problem(note)
    if problem:
        raise BadNote(f"malformed note: it {problem}")
    split = note.rfind("\n\n")
    if split < 0:
        raise BadNote("malformed note: no blank line separates the text from signature lines")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise BadNote("malformed note: no signature line follows the blank line")
    if not block.endswith("\n"):
        raise BadNote("malformed note: the last signature line does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise BadNote(f"malformed note: more than {MAX_SIGNATURES} signature lines")
    signatures = [_signature_line(line, number) for number, line in enumerate(lines, 1)]
    message = text.encode("utf-8")
    wanted = f"{key.name}+{key.key_id.hex()}"
    verified = False
    for name, key_id, signature in signatures:
        if name != key.name or key_id != key.key_id:
            continue
        if not verify(key.public_key, message, signature):
            raise BadNote(f"bad signature: the signature by {wanted} does not verify")
        verified = True
    if not verified:
        found = ", ".join(f"{name}+{key_id.hex()}" for name, key_id, _ in signatures[:5])
        raise BadNote(f"no signature by the key {wanted}: the note is signed by {found}")
    return text


def _line_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be a line of a checkpoint or head statement, or None."""
    if not value:
        return f"the {what} must not be empty"
    if "\n" in value:
        return f"the {what} must be one line"
    problem = _text_problem(value)
    return f"the {what} {problem}" if problem else None


def _count_problem(value: int, what: str) -> str | None:
    if isinstance(value, bool) or not 0 <= value <= MAX_TREE_SIZE:
        return f"the {what} must be an integer from 0 to 2^63 - 1, not {value!r}"
    return None


def _decimal(line: str, what: str) -> int:
    """ASCII decimal with no sign and no leading zero; BadNote otherwise."""
    if not _DECIMAL.fullmatch(line) or int(line) > MAX_TREE_SIZE:
        raise BadNote(
            f"the {what} {line[:40]!r} is not a decimal number from 0 to 2^63 - 1 "
            "without leading zeros"
        )
    return int(line)


def _lines(text: str, count: int, what: str) -> list[str]:
    """The `count` lines of `text`, which must end in a newline; BadNote otherwise."""
    if not text.endswith("\n"):
        raise BadNote(f"the {what} does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) != count:
        raise BadNote(f"the {what} has {len(lines)} lines, not {count}")
    return lines


@dataclass(frozen=True)
class Checkpoint:
    """A tree head of the log: its origin, tree size and RFC 6962 root hash."""

    origin: str
    size: int
    root: bytes


def _checkpoint_problem(origin: str, size: int, root: bytes) -> str | None:
    if len(root) != 32:
        return f"the root hash must be 32 bytes of SHA-256, not {len(root)}"
    return _line_problem(origin, "origin") or _count_problem(size, "tree size")


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """`<origin>\\n<size>\\n<base64 root>\\n`: a c2sp.org/tlog-checkpoint text, no extensions."""
    problem = _checkpoint_problem(origin, size, root)
    if problem:
        raise ValueError(problem)
    return f"{origin}\n{size}\n{b64encode(root)}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint of a (verified) note text, exactly as `checkpoint_text` writes it.

    c2sp.org/tlog-checkpoint makes extension lines optional and not recommended, and does not
    require clients to accept them; chipledger checkpoints carry none (PROTOCOL.md section 8),
    so a fourth line is refused. The size is decimal without leading zeros, the root 32 bytes
    of strict standard base64.
    """
    origin, size_line, root_line = _lines(text, 3, "checkpoint")
    size = _decimal(size_line, "tree size")
    root = _b64(root_line)
    if root is None:
        raise BadNote("the checkpoint's root hash is not standard padded base64")
    problem = _checkpoint_problem(origin, size, root)
    if problem:
        raise BadNote(f"bad checkpoint: {problem}")
    return Checkpoint(origin, size, root)


@dataclass(frozen=True)
class Head:
    """A head statement: the latest entry of a batch, as of the checkpoint at `tree_size`."""

    origin: str
    batch: str
    seq: int
    envelope_hash: str
    tree_size: int


def _head_problem(head: Head) -> str | None:
    if not re.fullmatch(ID_PATTERN, head.batch):
        return f"the batch id {head.batch[:80]!r} is not an id of PROTOCOL.md section 1"
    if not re.fullmatch(HEX64_PATTERN, head.envelope_hash):
        return "the envelope hash must be 64 lowercase hex digits"
    problem = (
        _line_problem(head.origin, "origin")
        or _count_problem(head.seq, "seq")
        or _count_problem(head.tree_size, "tree size")
    )
    if problem:
        return problem
    if head.seq >= head.tree_size:
        return f"seq {head.seq} is not in a tree of size {head.tree_size}"
    return None


def head_text(origin: str, batch: str, seq: int, envelope_hash: str, tree_size: int) -> str:
    """The six-line head statement text of PROTOCOL.md section 9, `chipledger-head/v1` first.

    `seq` must lie in the tree (seq < tree_size): the statement is checked against the
    checkpoint of that size.
    """
    problem = _head_problem(Head(origin, batch, seq, envelope_hash, tree_size))
    if problem:
        raise ValueError(problem)
    return f"{HEAD_HEADER}\n{origin}\n{batch}\n{seq}\n{envelope_hash}\n{tree_size}\n"


def parse_head(text: str) -> Head:
    """The head statement of a (verified) note text, exactly as `head_text` writes it."""
    header, origin, batch, seq, envelope_hash, tree_size = _lines(text, 6, "head statement")
    if header != HEAD_HEADER:
        raise BadNote(f"a head statement starts with the line {HEAD_HEADER!r}")
    head = Head(
        origin,
        batch,
        _decimal(seq, "seq"),
        envelope_hash,
        _decimal(tree_size, "tree size"),
    )
    problem = _head_problem(head)
    if problem:
        raise BadNote(f"bad head statement: {problem}")
    return head
