"""Known answers for the independent transparency-log verifier in tests/independent/tlog.py.

The vectors are read from tests/vectors/ if it holds `rfc6962/tree-constants.json` (a copy of the
shared set), else straight from /work/shared/vectors/, the set PROTOCOL.md section 8 cites:
transparency-dev/merkle test data (RFC 6962 roots, inclusion and consistency cases) and
golang.org/x/mod/sumdb/note values plus a published sum.golang.org checkpoint (signed notes).
Like the verifier, nothing here imports the project's packages.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from tests.independent.tlog import (
    Checkpoint,
    b64decode_strict,
    consistency_proof_of,
    inclusion_proof_of,
    leaf_hash,
    node_hash,
    note_key_id,
    open_checkpoint,
    parse_checkpoint,
    parse_vkey,
    root_of,
    verify_consistency,
    verify_inclusion,
    verify_signed_note,
    vkey_for,
)


def _vector_dir() -> Path:
    local = Path(__file__).parent / "vectors"
    if (local / "rfc6962" / "tree-constants.json").is_file():
        return local
    return Path("/work/shared/vectors")


VECTORS = _vector_dir()
RFC6962 = VECTORS / "rfc6962"
TREE = json.loads((RFC6962 / "tree-constants.json").read_text())
CONSTANT_LEAVES = [bytes.fromhex(h) for h in TREE["leaf_inputs_hex"]]
CONSTANT_ROOTS = [bytes.fromhex(h) for h in TREE["root_hashes_hex_by_tree_size"]]
NOTES = {
    case["name"]: case for case in json.loads((VECTORS / "signed-note.json").read_text())["cases"]
}
INCLUSION_FILES = sorted(RFC6962.glob("inclusion/**/*.json"))
CONSISTENCY_FILES = sorted(RFC6962.glob("consistency/**/*.json"))

MAX_LEAVES = 40
LEAVES = [b""] + [b"chipledger leaf %d" % i for i in range(1, MAX_LEAVES)]
ROOTS = [root_of(LEAVES[:n]) for n in range(MAX_LEAVES + 1)]


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    case["proof"] = [_b64(h) for h in case["proof"] or []]
    return case


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(RFC6962)) for p in paths]


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def _with_flip(proof: list[bytes], j: int, bit: int) -> list[bytes]:
    return [_flip(h, bit) if k == j else h for k, h in enumerate(proof)]


# --- the vector set itself ------------------------------------------------------------------


def test_the_vector_set_is_present_and_not_empty() -> None:
    assert len(CONSTANT_ROOTS) == len(CONSTANT_LEAVES) + 1 == 9
    assert len(INCLUSION_FILES) > 50
    assert len(CONSISTENCY_FILES) > 50
    assert set(NOTES) == {"go-note-TestSign", "sum.golang.org-checkpoint"}


# --- RFC 9162 2.1.1: hashing ----------------------------------------------------------------


def test_leaf_hash_is_sha256_of_a_zero_byte_then_the_data() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()


@pytest.mark.parametrize("size", range(len(CONSTANT_ROOTS)))
def test_root_of_each_prefix_of_the_constant_leaves_is_the_known_answer(size: int) -> None:
    assert root_of(CONSTANT_LEAVES[:size]) == CONSTANT_ROOTS[size]


# --- RFC 9162 2.1.3.2 / 2.1.4.2: every known-answer case -----------------------------------


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=_ids(INCLUSION_FILES))
def test_inclusion_vector_verifies_exactly_when_expected(path: Path) -> None:
    case = _load(path)
    ok = verify_inclusion(
        _b64(case["leafHash"]), case["leafIdx"], case["treeSize"], case["proof"], _b64(case["root"])
    )
    assert ok is not case["wantErr"], case["desc"]


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=_ids(CONSISTENCY_FILES))
def test_consistency_vector_verifies_exactly_when_expected(path: Path) -> None:
    case = _load(path)
    ok = verify_consistency(
        case["size1"], case["size2"], case["proof"], _b64(case["root1"]), _b64(case["root2"])
    )
    assert ok is not case["wantErr"], case["desc"]


HAPPY_INCLUSION = [p for p in INCLUSION_FILES if p.parent.name.isdigit() and "happy" in p.name]
HAPPY_CONSISTENCY = [p for p in CONSISTENCY_FILES if p.parent.name.isdigit() and "happy" in p.name]


@pytest.mark.parametrize("path", HAPPY_INCLUSION, ids=_ids(HAPPY_INCLUSION))
def test_recursive_path_reproduces_the_happy_inclusion_vector(path: Path) -> None:
    case = _load(path)
    leaves, index = CONSTANT_LEAVES[: case["treeSize"]], case["leafIdx"]
    assert leaf_hash(leaves[index]) == _b64(case["leafHash"])
    assert root_of(leaves) == _b64(case["root"])
    assert inclusion_proof_of(leaves, index) == case["proof"]


@pytest.mark.parametrize("path", HAPPY_CONSISTENCY, ids=_ids(HAPPY_CONSISTENCY))
def test_recursive_subproof_reproduces_the_happy_consistency_vector(path: Path) -> None:
    case = _load(path)
    leaves = CONSTANT_LEAVES[: case["size2"]]
    assert root_of(leaves[: case["size1"]]) == _b64(case["root1"])
    assert root_of(leaves) == _b64(case["root2"])
    assert consistency_proof_of(leaves, case["size1"]) == case["proof"]


# --- recursive proofs on every small tree ---------------------------------------------------


@pytest.mark.parametrize("n", range(1, MAX_LEAVES + 1))
def test_every_path_in_a_tree_of_n_verifies_and_no_tampering_does(n: int) -> None:
    for i in range(n):
        proof, hashed, root = inclusion_proof_of(LEAVES[:n], i), leaf_hash(LEAVES[i]), ROOTS[n]
        assert verify_inclusion(hashed, i, n, proof, root), (i, n)
        for j in range(len(proof)):
            assert not verify_inclusion(hashed, i, n, _with_flip(proof, j, i + 37 * j), root)
        assert not verify_inclusion(_flip(hashed, i), i, n, proof, root)
        assert not verify_inclusion(hashed, i, n, proof, _flip(root, n + i))
        assert not verify_inclusion(hashed, i, n, [*proof, root], root)
        # RFC 9162 2.1.3.2 step 4a: a path running past the top proves nothing above it
        assert not verify_inclusion(hashed, i, n, [*proof, root], node_hash(root, root))
        if proof:
            assert not verify_inclusion(hashed, i, n, proof[:-1], root)
        for other in (i - 1, i + 1):
            assert not verify_inclusion(hashed, other, n, proof, root), (i, other, n)


@pytest.mark.parametrize("n", range(1, MAX_LEAVES + 1))
def test_every_subproof_into_a_tree_of_n_verifies_and_no_tampering_does(n: int) -> None:
    for m in range(1, n + 1):
        proof, old, new = consistency_proof_of(LEAVES[:n], m), ROOTS[m], ROOTS[n]
        assert verify_consistency(m, n, proof, old, new), (m, n)
        for j in range(len(proof)):
            assert not verify_consistency(m, n, _with_flip(proof, j, m + 37 * j), old, new)
        assert not verify_consistency(m, n, proof, _flip(old, m), new)
        assert not verify_consistency(m, n, proof, old, _flip(new, n))
        assert not verify_consistency(m, n, [*proof, new], old, new)
        # RFC 9162 2.1.4.2 step 6a: a proof running past the top proves nothing above it
        above_old, above_new = node_hash(new, old), node_hash(new, new)
        assert not verify_consistency(m, n, [*proof, new], above_old, above_new)
        if proof:
            assert not verify_consistency(m, n, proof[:-1], old, new)
        assert not verify_consistency(0, n, proof, ROOTS[0], new)


def test_no_single_flipped_bit_anywhere_in_an_inclusion_check_verifies() -> None:
    n, i = 37, 21
    proof, hashed, root = inclusion_proof_of(LEAVES[:n], i), leaf_hash(LEAVES[i]), ROOTS[n]
    assert verify_inclusion(hashed, i, n, proof, root)
    for bit in range(256):
        assert not verify_inclusion(_flip(hashed, bit), i, n, proof, root)
        assert not verify_inclusion(hashed, i, n, proof, _flip(root, bit))
        for j in range(len(proof)):
            assert not verify_inclusion(hashed, i, n, _with_flip(proof, j, bit), root)


def test_no_single_flipped_bit_anywhere_in_a_consistency_check_verifies() -> None:
    m, n = 13, 38
    proof, old, new = consistency_proof_of(LEAVES[:n], m), ROOTS[m], ROOTS[n]
    assert verify_consistency(m, n, proof, old, new)
    for bit in range(256):
        assert not verify_consistency(m, n, proof, _flip(old, bit), new)
        assert not verify_consistency(m, n, proof, old, _flip(new, bit))
        for j in range(len(proof)):
            assert not verify_consistency(m, n, _with_flip(proof, j, bit), old, new)


GOOD_PROOF = inclusion_proof_of(LEAVES[:5], 2)
JUNK_INCLUSION: list[tuple[str, tuple[Any, ...]]] = [
    ("negative index", (leaf_hash(LEAVES[2]), -1, 5, GOOD_PROOF, ROOTS[5])),
    ("boolean index", (leaf_hash(LEAVES[1]), True, 5, GOOD_PROOF, ROOTS[5])),
    ("string size", (leaf_hash(LEAVES[2]), 2, "5", GOOD_PROOF, ROOTS[5])),
    ("proof is None", (leaf_hash(LEAVES[2]), 2, 5, None, ROOTS[5])),
    ("proof is bytes", (leaf_hash(LEAVES[2]), 2, 5, b"".join(GOOD_PROOF), ROOTS[5])),
    ("hex proof", (leaf_hash(LEAVES[2]), 2, 5, [h.hex() for h in GOOD_PROOF], ROOTS[5])),
    ("short proof hash", (leaf_hash(LEAVES[2]), 2, 5, [GOOD_PROOF[0][:31]], ROOTS[5])),
    ("leaf hash is None", (None, 2, 5, GOOD_PROOF, ROOTS[5])),
    ("root is a string", (leaf_hash(LEAVES[2]), 2, 5, GOOD_PROOF, ROOTS[5].hex())),
]


@pytest.mark.parametrize(
    ("args"), [a for _, a in JUNK_INCLUSION], ids=[k for k, _ in JUNK_INCLUSION]
)
def test_inclusion_verifier_answers_false_to_junk_instead_of_raising(args: tuple[Any, ...]) -> None:
    assert verify_inclusion(*args) is False


GOOD_CONSISTENCY = consistency_proof_of(LEAVES[:7], 3)
JUNK_CONSISTENCY: list[tuple[str, tuple[Any, ...]]] = [
    ("negative old size", (-1, 7, GOOD_CONSISTENCY, ROOTS[3], ROOTS[7])),
    ("float new size", (3, 7.0, GOOD_CONSISTENCY, ROOTS[3], ROOTS[7])),
    ("proof is None", (3, 7, None, ROOTS[3], ROOTS[7])),
    ("proof holds None", (3, 7, [None, *GOOD_CONSISTENCY], ROOTS[3], ROOTS[7])),
    ("long proof hash", (3, 7, [GOOD_CONSISTENCY[0] + b"\0"], ROOTS[3], ROOTS[7])),
    ("roots are None", (3, 3, [], None, None)),
    ("old root is hex", (3, 7, GOOD_CONSISTENCY, ROOTS[3].hex(), ROOTS[7])),
]


@pytest.mark.parametrize(
    ("args"), [a for _, a in JUNK_CONSISTENCY], ids=[k for k, _ in JUNK_CONSISTENCY]
)
def test_consistency_verifier_answers_false_to_junk_instead_of_raising(
    args: tuple[Any, ...],
) -> None:
    assert verify_consistency(*args) is False


@pytest.mark.parametrize(("size", "index"), [(0, 0), (3, 3), (3, -1)])
def test_no_path_is_built_for_a_leaf_outside_the_tree(size: int, index: int) -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof_of(LEAVES[:size], index)


@pytest.mark.parametrize(("m", "n"), [(0, 0), (0, 4), (5, 4)])
def test_no_subproof_is_built_outside_one_to_n(m: int, n: int) -> None:
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof_of(LEAVES[:n], m)


# --- C2SP signed-note and tlog-checkpoint ---------------------------------------------------

SUMDB = NOTES["sum.golang.org-checkpoint"]
PETER = NOTES["go-note-TestSign"]


def _go_private_key(text: str) -> tuple[str, nacl.signing.SigningKey]:
    """Name and key of golang.org/x/mod/sumdb/note's `PRIVATE+KEY+<name>+<id>+<0x01 || seed>`."""
    _, _, name, _, key_b64 = text.split("+", 4)
    key_data = b64decode_strict(key_b64)
    assert key_data[:1] == b"\x01"
    return name, nacl.signing.SigningKey(key_data[1:])


def _signature_line(text: str, name: str, key: nacl.signing.SigningKey) -> str:
    key_id = note_key_id(name, bytes(key.verify_key))
    signature = key.sign(text.encode()).signature
    return f"\u2014 {name} {base64.b64encode(key_id + signature).decode()}\n"


PETER_NAME, PETER_KEY = _go_private_key(PETER["private_key_text"])
PETER_VKEY = vkey_for(PETER_NAME, bytes(PETER_KEY.verify_key))
PETER_NOTE = PETER["note_text"] + "\n" + PETER["expected_signature_line"]
STRANGER = nacl.signing.SigningKey(hashlib.sha256(b"stranger").digest())


def test_sum_golang_org_checkpoint_verifies_with_its_key_and_parses() -> None:
    text = verify_signed_note(SUMDB["signed_note"], SUMDB["vkey"])
    checkpoint = parse_checkpoint(text)
    assert checkpoint == Checkpoint(
        "go.sum database tree",
        6476701,
        _b64("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="),
    )
    assert text == SUMDB["signed_note"].split("\n\n")[0] + "\n"
    assert open_checkpoint(SUMDB["signed_note"], SUMDB["vkey"], "go.sum database tree").size == (
        6476701
    )


def test_sum_golang_org_checkpoint_is_refused_for_another_origin() -> None:
    with pytest.raises(ValueError, match=r"not 'chipledger\.local/ledger'"):
        open_checkpoint(SUMDB["signed_note"], SUMDB["vkey"], "chipledger.local/ledger")


def test_no_flipped_bit_in_the_sum_golang_org_checkpoint_verifies() -> None:
    raw = SUMDB["signed_note"].encode()
    for bit in range(len(raw) * 8):
        try:
            tampered = _flip(raw, bit).decode()
        except UnicodeDecodeError:
            continue  # not a string at all, so never a signed note
        with pytest.raises(ValueError):  # noqa: PT011 - each flip fails for its own reason
            verify_signed_note(tampered, SUMDB["vkey"])


def test_go_note_key_signs_the_known_signature_line_and_it_verifies() -> None:
    assert parse_vkey(PETER_VKEY).key_id.hex() == PETER["private_key_text"].split("+")[3]
    line = _signature_line(PETER["note_text"], PETER_NAME, PETER_KEY)
    assert line == PETER["expected_signature_line"]
    assert verify_signed_note(PETER["note_text"] + "\n" + line, PETER_VKEY) == PETER["note_text"]


def test_signatures_by_unknown_keys_are_ignored_beside_a_good_one() -> None:
    text = PETER["note_text"]
    note = text + "\n" + _signature_line(text, "someone.else", STRANGER)
    note += _signature_line(text, PETER_NAME, PETER_KEY)
    assert verify_signed_note(note, PETER_VKEY) == text


BAD_NOTES: list[tuple[str, str, str]] = [
    ("no blank line before signatures", PETER_NOTE.replace("\n\n", "\n"), "blank line"),
    ("no final newline", PETER_NOTE[:-1], "blank line"),
    ("control character", PETER_NOTE.replace("cryptography", "crypto\tgraphy"), "control"),
    ("hyphen instead of em dash", PETER_NOTE.replace("\u2014", "-"), "em dash"),
    ("empty signature block", PETER["note_text"] + "\n\n", "signature lines"),
    (
        "signature of an unknown key only",
        PETER["note_text"] + "\n" + _signature_line(PETER["note_text"], "PeterNeumann", STRANGER),
        "no signature by PeterNeumann",
    ),
    ("text changed", PETER_NOTE.replace("problem", "Problem", 1), "does not verify"),
    ("signature not base64", PETER_NOTE.replace("x08go/", "x08go_"), "base64"),
]


@pytest.mark.parametrize(
    ("note", "why"), [(n, w) for _, n, w in BAD_NOTES], ids=[k for k, _, _ in BAD_NOTES]
)
def test_a_malformed_or_unsigned_note_is_refused_saying_why(note: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        verify_signed_note(note, PETER_VKEY)


SUMDB_KEY = parse_vkey(SUMDB["vkey"])
BAD_VKEYS: list[tuple[str, str, str]] = [
    ("two parts", "sum.golang.org+033de0ae", "<name>"),
    ("key ID of another key", SUMDB["vkey"].replace("033de0ae", "033de0af"), "does not belong"),
    ("short key ID", SUMDB["vkey"].replace("033de0ae", "033de0a"), "8 hex"),
    ("empty name", SUMDB["vkey"].replace("sum.golang.org", ""), "key name"),
    ("name with a space", SUMDB["vkey"].replace("sum.golang.org", "sum golang"), "key name"),
    (
        "not Ed25519",
        "sum.golang.org+033de0ae+" + base64.b64encode(b"\x02" + SUMDB_KEY.public_key).decode(),
        "0x01",
    ),
    ("truncated key data", SUMDB["vkey"][:-1], "base64"),
]


@pytest.mark.parametrize(
    ("vkey", "why"), [(v, w) for _, v, w in BAD_VKEYS], ids=[k for k, _, _ in BAD_VKEYS]
)
def test_a_malformed_verifier_key_is_refused_saying_why(vkey: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_vkey(vkey)


ROOT_B64 = base64.b64encode(bytes(range(32))).decode()
BAD_CHECKPOINTS: list[tuple[str, str, str]] = [
    ("two lines", "example.com/log\n5\n", "three"),
    ("no final newline", f"example.com/log\n5\n{ROOT_B64}", "newline"),
    ("leading zero", f"example.com/log\n05\n{ROOT_B64}\n", "leading zeroes"),
    ("signed size", f"example.com/log\n+5\n{ROOT_B64}\n", "decimal"),
    ("empty origin", f"\n5\n{ROOT_B64}\n", "non-empty"),
    ("empty extension line", f"example.com/log\n5\n{ROOT_B64}\n\next\n", "non-empty"),
    ("short root", "example.com/log\n5\n" + base64.b64encode(bytes(31)).decode() + "\n", "32"),
    ("unpadded root", f"example.com/log\n5\n{ROOT_B64.rstrip('=')}\n", "base64"),
]


@pytest.mark.parametrize(
    ("text", "why"), [(t, w) for _, t, w in BAD_CHECKPOINTS], ids=[k for k, _, _ in BAD_CHECKPOINTS]
)
def test_a_malformed_checkpoint_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_checkpoint(text)


def test_a_checkpoint_may_carry_extension_lines_and_the_empty_tree() -> None:
    text = f"example.com/log\n0\n{ROOT_B64}\nextension\n"
    assert parse_checkpoint(text) == Checkpoint("example.com/log", 0, bytes(range(32)))
