"""C2SP signed notes, checkpoints and head statements (PROTOCOL.md sections 8 and 9).

The vector values come from tests/vectors/signed-note.json, a verbatim copy of
/work/shared/vectors/signed-note.json, which transcribes them from the tests of
golang.org/x/mod/sumdb/note (TestSign, the PeterNeumann key) and from a checkpoint published
by sum.golang.org. The rest are round trips with fixed-seed keys and a table of refusals.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import b64encode
from ledger.crypto import Signer
from ledger.errors import BadRequest, BadSignature
from ledger.notes import (
    BadNote,
    BadVerifierKey,
    Checkpoint,
    Head,
    VerifierKey,
    checkpoint_text,
    head_text,
    note_key_id,
    open_note,
    parse_checkpoint,
    parse_head,
    parse_verifier_key,
    sign_note,
    verifier_key,
)

VECTORS = Path(__file__).parent / "vectors"
CASES: dict[str, dict[str, Any]] = {
    case["name"]: case
    for case in json.loads((VECTORS / "signed-note.json").read_text(encoding="utf-8"))["cases"]
}
GO_SIGN = CASES["go-note-TestSign"]
SUMDB = CASES["sum.golang.org-checkpoint"]

ORIGIN = "chipledger.local/ledger"
LOG = Signer(bytes(32))
OTHER = Signer(b"\x07" * 32)
VKEY = verifier_key(ORIGIN, LOG.public_key)
TEXT = "first line\nsecond line\n"
ROOT = bytes(range(32))
HASH = "ab" * 32


def _signer_from_private_key_text(skey: str) -> tuple[str, Signer]:
    """`PRIVATE+KEY+<name>+<hex id>+<base64 of 0x01 || seed>` as golang.org/x/mod writes it."""
    private, key, name, hash16, key64 = skey.split("+", 4)
    assert (private, key) == ("PRIVATE", "KEY")
    raw = base64.b64decode(key64, validate=True)
    assert raw[:1] == b"\x01"
    signer = Signer(raw[1:])
    assert note_key_id(name, signer.public_key).hex() == hash16
    return name, signer


def _signature_line(note: str) -> str:
    return note[note.rindex("\n\n") + 2 :]


# The vectors


def test_go_test_sign_vector_gives_the_very_same_signature_line() -> None:
    name, signer = _signer_from_private_key_text(GO_SIGN["private_key_text"])
    note = sign_note(GO_SIGN["note_text"], name, signer)
    assert note == GO_SIGN["note_text"] + "\n" + GO_SIGN["expected_signature_line"]
    assert open_note(note, verifier_key(name, signer.public_key)) == GO_SIGN["note_text"]


def test_go_vector_verifier_key_is_the_one_of_the_go_documentation() -> None:
    name, signer = _signer_from_private_key_text(GO_SIGN["private_key_text"])
    # The verifier key golang.org/x/mod/sumdb/note's package documentation gives for this key.
    expected = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    assert verifier_key(name, signer.public_key) == expected
    assert parse_verifier_key(expected) == VerifierKey(
        name, bytes.fromhex("c74f20a3"), signer.public_key
    )


def test_sum_golang_org_checkpoint_verifies_and_parses() -> None:
    text = open_note(SUMDB["signed_note"], SUMDB["vkey"])
    checkpoint = parse_checkpoint(text)
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == 6476701
    assert b64encode(checkpoint.root) == "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
    assert checkpoint_text(checkpoint.origin, checkpoint.size, checkpoint.root) == text


# Signing and opening


def test_a_note_signed_with_a_fixed_seed_opens_with_its_key_as_text_or_parsed() -> None:
    note = sign_note(TEXT, ORIGIN, LOG)
    assert note.startswith(TEXT + "\n\u2014 " + ORIGIN + " ")
    assert sign_note(TEXT, ORIGIN, LOG) == note  # Ed25519 is deterministic
    assert open_note(note, VKEY) == TEXT
    assert open_note(note, parse_verifier_key(VKEY)) == TEXT
    assert parse_verifier_key(VKEY).text == VKEY


@pytest.mark.parametrize(
    "text",
    ["\n", "a\n", "a\n\nb\n", "ends blank\n\n", "— looks like a signature\n\nx\n", "é ü 漢\n"],
)
def test_texts_with_blank_lines_and_unicode_round_trip(text: str) -> None:
    assert open_note(sign_note(text, ORIGIN, LOG), VKEY) == text


def test_other_signatures_on_the_note_are_ignored() -> None:
    note = sign_note(TEXT, ORIGIN, LOG)
    foreign = _signature_line(sign_note(TEXT, "witness.example/w1", OTHER))
    same_name_other_key = _signature_line(sign_note(TEXT, ORIGIN, OTHER))
    cosigned = note + foreign + same_name_other_key
    assert open_note(cosigned, VKEY) == TEXT
    assert open_note(cosigned, verifier_key("witness.example/w1", OTHER.public_key)) == TEXT
    assert open_note(note + note[note.rindex("\n\n") + 2 :], VKEY) == TEXT  # a repeated line


def test_a_second_signature_by_the_same_key_that_fails_refuses_the_note() -> None:
    note = sign_note(TEXT, ORIGIN, LOG)
    forged = _signature_line(sign_note("another text\n", ORIGIN, LOG))
    with pytest.raises(BadNote, match="bad signature"):
        open_note(note + forged, VKEY)


def test_up_to_100_signature_lines_are_read_and_101_are_refused() -> None:
    foreign = _signature_line(sign_note(TEXT, "witness.example/w1", OTHER))
    note = sign_note(TEXT, ORIGIN, LOG)
    assert open_note(note + foreign * 99, VKEY) == TEXT
    with pytest.raises(BadNote, match="more than 100"):
        open_note(note + foreign * 100, VKEY)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("no final newline", ORIGIN),
        ("", ORIGIN),
        ("tab\there\n", ORIGIN),
        ("carriage\r\n", ORIGIN),
        ("surrogate \ud800\n", ORIGIN),
        (TEXT, ""),
        (TEXT, "a+b"),
        (TEXT, "a b"),
        (TEXT, "no\u00a0break"),
        (TEXT, "ideographic\u3000space"),
        (TEXT, "bell\x07"),
    ],
)
def test_sign_note_refuses_what_could_not_be_opened(text: str, name: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        sign_note(text, name, LOG)


def _flip_text(note: str) -> str:
    return "F" + note[1:]


def _flip_signature(note: str) -> str:
    text, _, line = note.rpartition("\n\u2014 ")
    name, b64 = line[:-1].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x01  # inside the Ed25519 signature, after the 4-byte key id
    return f"{text}\n\u2014 {name} {b64encode(bytes(raw))}\n"


def _flip_key_id(note: str) -> str:
    text, _, line = note.rpartition("\n\u2014 ")
    name, b64 = line[:-1].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 0x01
    return f"{text}\n\u2014 {name} {b64encode(bytes(raw))}\n"


SIGNED = sign_note(TEXT, ORIGIN, LOG)
LINE = _signature_line(SIGNED)
REFUSED_NOTES: list[tuple[str, str, str]] = [
    ("flipped byte in the text", _flip_text(SIGNED), "bad signature"),
    ("flipped byte in the signature", _flip_signature(SIGNED), "bad signature"),
    ("flipped key id", _flip_key_id(SIGNED), "no signature by the key"),
    ("signed under another name", sign_note(TEXT, "other.example/log", LOG), "no signature by"),
    ("signed by another key", sign_note(TEXT, ORIGIN, OTHER), "no signature by the key"),
    ("missing final newline", SIGNED[:-1], "malformed note: the last signature line"),
    ("hyphen for the em dash", SIGNED.replace("\u2014 ", "- "), "malformed note: signature line"),
    ("en dash for the em dash", SIGNED.replace("\u2014", "\u2013"), "malformed note"),
    ("no blank line", SIGNED.replace("\n\n", "\n"), "malformed note: no blank line"),
    ("no signature line", TEXT + "\n", "malformed note: no signature line"),
    ("two spaces after the name", SIGNED.replace(ORIGIN + " ", ORIGIN + "  "), "malformed"),
    ("signature not base64", TEXT + "\n\u2014 " + ORIGIN + " ***\n", "malformed note"),
    ("signature of 4 bytes", TEXT + "\n\u2014 " + ORIGIN + " AAAAAA==\n", "malformed note"),
    ("a control character", "\x01" + SIGNED, "malformed note: it holds the control"),
    ("a carriage return", SIGNED.replace("\n", "\r\n"), "malformed note"),
    ("a lone surrogate", "\udc80" + SIGNED, "malformed note: it holds a lone surrogate"),
    ("a blank line among signatures", SIGNED + "\n" + LINE, "bad signature"),
]


@pytest.mark.parametrize(
    ("note", "message"),
    [(note, message) for _, note, message in REFUSED_NOTES],
    ids=[case for case, _, _ in REFUSED_NOTES],
)
def test_open_note_refuses(note: str, message: str) -> None:
    with pytest.raises(BadNote, match=message):
        open_note(note, VKEY)


def test_a_key_with_the_right_name_and_id_but_another_public_key_finds_a_bad_signature() -> None:
    impostor = VerifierKey(ORIGIN, note_key_id(ORIGIN, LOG.public_key), OTHER.public_key)
    with pytest.raises(BadNote, match="bad signature"):
        open_note(SIGNED, impostor)


def test_refusals_are_ledger_errors_with_the_bad_signature_code() -> None:
    with pytest.raises(BadSignature) as caught:
        open_note(_flip_text(SIGNED), VKEY)
    assert caught.value.code == "bad_signature"


# Verifier keys


def _vkey(name: str, key_id: str, key: bytes) -> str:
    return f"{name}+{key_id}+{b64encode(key)}"


LOG_ID = note_key_id(ORIGIN, LOG.public_key).hex()
REFUSED_VKEYS: list[tuple[str, str, str]] = [
    ("wrong key id", _vkey(ORIGIN, "00000000", b"\x01" + LOG.public_key), "does not match"),
    ("key id of 7 hex", _vkey(ORIGIN, LOG_ID[:7], b"\x01" + LOG.public_key), "not 8 hex"),
    ("key id not hex", _vkey(ORIGIN, "zzzzzzzz", b"\x01" + LOG.public_key), "not 8 hex"),
    ("bad base64", f"{ORIGIN}+{LOG_ID}+AQ*=", "not standard padded base64"),
    ("truncated base64", VKEY[:-1], "not standard padded base64"),
    ("wrong algorithm byte", _vkey(ORIGIN, LOG_ID, b"\x02" + LOG.public_key), "algorithm byte"),
    ("no key", f"{ORIGIN}+{LOG_ID}+", "algorithm byte is nothing"),
    ("31-byte key", _vkey(ORIGIN, LOG_ID, b"\x01" + LOG.public_key[:31]), "32 bytes"),
    ("one '+' only", f"{ORIGIN}+{LOG_ID}", "no two"),
    ("empty name", _vkey("", LOG_ID, b"\x01" + LOG.public_key), "must not be empty"),
    ("space in name", _vkey("a b", LOG_ID, b"\x01" + LOG.public_key), "space"),
]


@pytest.mark.parametrize(
    ("vkey", "message"),
    [(vkey, message) for _, vkey, message in REFUSED_VKEYS],
    ids=[case for case, _, _ in REFUSED_VKEYS],
)
def test_parse_verifier_key_refuses(vkey: str, message: str) -> None:
    with pytest.raises(BadVerifierKey, match=message):
        parse_verifier_key(vkey)
    with pytest.raises(BadRequest):
        open_note(SIGNED, vkey)


def test_a_verifier_key_splits_on_the_first_two_plus_signs_only() -> None:
    # The Go vector's key holds a '+' in its base64, after the first two.
    key = parse_verifier_key(SUMDB["vkey"])
    assert key.name == "sum.golang.org"
    assert key.key_id == bytes.fromhex("033de0ae")
    upper = SUMDB["vkey"].replace("033de0ae", "033DE0AE")
    assert parse_verifier_key(upper) == key  # hex of either case, as golang.org/x/mod
    assert parse_verifier_key(VKEY + "\n") == parse_verifier_key(VKEY)  # as read from a file


# Checkpoints


def test_checkpoint_text_is_the_three_lines_of_tlog_checkpoint() -> None:
    text = checkpoint_text(ORIGIN, 7, ROOT)
    assert text == f"{ORIGIN}\n7\n{b64encode(ROOT)}\n"
    assert parse_checkpoint(text) == Checkpoint(ORIGIN, 7, ROOT)
    assert checkpoint_text(ORIGIN, 0, bytes(32)).splitlines()[1] == "0"


def test_a_signed_checkpoint_opens_and_parses() -> None:
    note = sign_note(checkpoint_text(ORIGIN, 42, ROOT), ORIGIN, LOG)
    assert parse_checkpoint(open_note(note, VKEY)) == Checkpoint(ORIGIN, 42, ROOT)


ROOT64 = b64encode(ROOT)
REFUSED_CHECKPOINTS: list[tuple[str, str, str]] = [
    ("size with leading zeros", f"{ORIGIN}\n007\n{ROOT64}\n", "without leading zeros"),
    ("negative size", f"{ORIGIN}\n-1\n{ROOT64}\n", "decimal"),
    ("signed size", f"{ORIGIN}\n+1\n{ROOT64}\n", "decimal"),
    ("size with a space", f"{ORIGIN}\n 1\n{ROOT64}\n", "decimal"),
    ("size not ASCII", f"{ORIGIN}\n\u0661\n{ROOT64}\n", "decimal"),
    ("size past int64", f"{ORIGIN}\n{2**63}\n{ROOT64}\n", "decimal"),
    ("empty size", f"{ORIGIN}\n\n{ROOT64}\n", "decimal"),
    ("root of 31 bytes", f"{ORIGIN}\n1\n{b64encode(ROOT[:31])}\n", "32 bytes"),
    ("root in hex", f"{ORIGIN}\n1\n{ROOT.hex()}\n", "32 bytes|base64"),
    ("root unpadded", f"{ORIGIN}\n1\n{ROOT64.rstrip('=')}\n", "base64"),
    ("root line missing", f"{ORIGIN}\n1\n", "2 lines, not 3"),
    ("only the origin", f"{ORIGIN}\n", "1 lines, not 3"),
    ("empty text", "", "does not end in a newline"),
    ("no final newline", f"{ORIGIN}\n1\n{ROOT64}", "does not end in a newline"),
    ("an extension line", f"{ORIGIN}\n1\n{ROOT64}\nextension\n", "4 lines, not 3"),
    ("empty origin", f"\n1\n{ROOT64}\n", "origin must not be empty"),
    ("control character in origin", f"a\x00b\n1\n{ROOT64}\n", "control character"),
]


@pytest.mark.parametrize(
    ("text", "message"),
    [(text, message) for _, text, message in REFUSED_CHECKPOINTS],
    ids=[case for case, _, _ in REFUSED_CHECKPOINTS],
)
def test_parse_checkpoint_refuses(text: str, message: str) -> None:
    with pytest.raises(BadNote, match=message):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [
        ("", 1, ROOT),
        ("two\nlines", 1, ROOT),
        (ORIGIN, -1, ROOT),
        (ORIGIN, 2**63, ROOT),
        (ORIGIN, True, ROOT),
        (ORIGIN, 1, ROOT[:31]),
    ],
)
def test_checkpoint_text_refuses_bad_values(origin: str, size: int, root: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        checkpoint_text(origin, size, root)


ORIGINS = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=80)


@given(origin=ORIGINS, size=st.integers(0, 2**63 - 1), root=st.binary(min_size=32, max_size=32))
def test_checkpoints_round_trip(origin: str, size: int, root: bytes) -> None:
    text = checkpoint_text(origin, size, root)
    assert parse_checkpoint(text) == Checkpoint(origin, size, root)
    assert open_note(sign_note(text, ORIGIN, LOG), VKEY) == text


# Head statements


def test_head_text_is_the_six_lines_of_section_9() -> None:
    text = head_text(ORIGIN, "B-7.a_1", 12, HASH, 40)
    assert text == f"chipledger-head/v1\n{ORIGIN}\nB-7.a_1\n12\n{HASH}\n40\n"
    assert parse_head(text) == Head(ORIGIN, "B-7.a_1", 12, HASH, 40)
    note = sign_note(text, ORIGIN, LOG)
    assert parse_head(open_note(note, VKEY)) == Head(ORIGIN, "B-7.a_1", 12, HASH, 40)


@given(
    batch=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    seq=st.integers(0, 2**63 - 2),
    envelope_hash=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    extra=st.integers(1, 2**40),
)
def test_head_statements_round_trip(batch: str, seq: int, envelope_hash: str, extra: int) -> None:
    tree_size = min(seq + extra, 2**63 - 1)
    head = Head(ORIGIN, batch, seq, envelope_hash, tree_size)
    assert parse_head(head_text(ORIGIN, batch, seq, envelope_hash, tree_size)) == head


def _head(**lines: str) -> str:
    fields = {
        "header": "chipledger-head/v1",
        "origin": ORIGIN,
        "batch": "B1",
        "seq": "3",
        "hash": HASH,
        "size": "4",
    }
    fields.update(lines)
    return "".join(f"{value}\n" for value in fields.values())


REFUSED_HEADS: list[tuple[str, str, str]] = [
    ("another header", _head(header="chipledger-head/v2"), "starts with the line"),
    ("a checkpoint", checkpoint_text(ORIGIN, 1, ROOT), "3 lines, not 6"),
    ("a seventh line", _head() + "extra\n", "7 lines, not 6"),
    ("no final newline", _head()[:-1], "does not end in a newline"),
    ("seq with leading zeros", _head(seq="03"), "without leading zeros"),
    ("negative seq", _head(seq="-1"), "decimal"),
    ("seq outside the tree", _head(seq="4"), "seq 4 is not in a tree of size 4"),
    ("empty tree", _head(seq="0", size="0"), "not in a tree of size 0"),
    ("upper-case hash", _head(hash=HASH.upper()), "64 lowercase hex"),
    ("short hash", _head(hash=HASH[:62]), "64 lowercase hex"),
    ("batch id with a space", _head(batch="B 1"), "batch id"),
    ("batch id starting with a dot", _head(batch=".B1"), "batch id"),
    ("empty origin", _head(origin=""), "origin must not be empty"),
    ("size with leading zeros", _head(size="04"), "without leading zeros"),
]


@pytest.mark.parametrize(
    ("text", "message"),
    [(text, message) for _, text, message in REFUSED_HEADS],
    ids=[case for case, _, _ in REFUSED_HEADS],
)
def test_parse_head_refuses(text: str, message: str) -> None:
    with pytest.raises(BadNote, match=message):
        parse_head(text)


@pytest.mark.parametrize(
    ("origin", "batch", "seq", "envelope_hash", "tree_size"),
    [
        ("", "B1", 0, HASH, 1),
        (ORIGIN, "B 1", 0, HASH, 1),
        (ORIGIN, "B1", -1, HASH, 1),
        (ORIGIN, "B1", 1, HASH, 1),
        (ORIGIN, "B1", 0, HASH.upper(), 1),
        (ORIGIN, "B1", 0, HASH + "\n", 1),
    ],
)
def test_head_text_refuses_bad_values(
    origin: str, batch: str, seq: int, envelope_hash: str, tree_size: int
) -> None:
    with pytest.raises(ValueError, match=r"."):
        head_text(origin, batch, seq, envelope_hash, tree_size)
