"""The Merkle tree of the transparency log (`ledger.merkle`, PROTOCOL.md section 8).

Known answers come from tests/vectors/rfc6962/, copies of transparency-dev/merkle's test data
(`testonly/constants.go` roots, and the `testdata/` inclusion and consistency probes written by
its `cmd/proofgen`; Apache-2.0; see the README there). Beyond them: every proof of trees up to
70 leaves verifies and no tampered one does, batches store what single appends store, and proofs
of million-leaf trees read O(log n) stored hashes in one call.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Reader,
    append,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

# transparency-dev/merkle testonly/constants.go and testdata/ (cmd/proofgen), Apache-2.0.
VECTORS = Path(__file__).parent / "vectors" / "rfc6962"
CONSTANTS: dict[str, Any] = json.loads((VECTORS / "tree-constants.json").read_text())
CONSTANT_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in CONSTANTS["leaf_inputs_hex"]]
INCLUSION_FILES = sorted(VECTORS.glob("inclusion/**/*.json"))
CONSISTENCY_FILES = sorted(VECTORS.glob("consistency/**/*.json"))


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    vector["proof"] = [base64.b64decode(p) for p in vector["proof"] or []]
    for key in ("root", "root1", "root2", "leafHash"):
        if key in vector:
            vector[key] = base64.b64decode(vector[key])
    return vector


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS).with_suffix(""))


class Store(dict[int, bytes]):
    """Stored hashes by index, as the ledger's table holds them."""

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        return [self[index] for index in indexes]


def built(leaves: Sequence[bytes]) -> Store:
    store = Store()
    store.update(append(0, leaves, store.read))
    return store


def built_one_by_one(leaves: Sequence[bytes]) -> Store:
    store = Store()
    for n, leaf in enumerate(leaves):
        first = stored_hash_index(0, n)
        for offset, h in enumerate(stored_hashes(n, leaf, store.read)):
            store[first + offset] = h
    return store


def reference_root(leaves: Sequence[bytes]) -> bytes:
    """MTH of RFC 6962 2.1, straight from its definition."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def flipped(proof: Sequence[bytes], i: int) -> list[bytes]:
    tampered = list(proof)
    tampered[i] = bytes([tampered[i][0] ^ 1]) + tampered[i][1:]
    return tampered


LEAVES_70 = [leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
STORE_70 = built(LEAVES_70)
ROOTS_70 = [tree_hash(n, STORE_70.read) for n in range(71)]


# -- known answers -------------------------------------------------------------------------------


def test_hashes_are_rfc6962_with_domain_separation() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


@pytest.mark.parametrize("n", range(len(CONSTANTS["root_hashes_hex_by_tree_size"])))
def test_root_of_every_tree_size_is_the_known_answer(n: int) -> None:
    expected = bytes.fromhex(CONSTANTS["root_hashes_hex_by_tree_size"][n])
    store = built(CONSTANT_LEAVES)
    assert tree_hash(n, store.read) == expected
    assert tree_hash(n, built(CONSTANT_LEAVES[:n]).read) == expected
    assert reference_root(CONSTANT_LEAVES[:n]) == expected


@pytest.mark.parametrize("path", INCLUSION_FILES, ids=_id)
def test_inclusion_vector_verifies_exactly_when_it_should(path: Path) -> None:
    v = _load(path)
    got = verify_inclusion(v["leafHash"], v["leafIdx"], v["treeSize"], v["proof"], v["root"])
    assert got is not v["wantErr"]


@pytest.mark.parametrize("path", CONSISTENCY_FILES, ids=_id)
def test_consistency_vector_verifies_exactly_when_it_should(path: Path) -> None:
    v = _load(path)
    got = verify_consistency(v["size1"], v["size2"], v["proof"], v["root1"], v["root2"])
    assert got is not v["wantErr"]


def _happy(files: list[Path]) -> list[Path]:
    return [p for p in files if p.parent.name.isdigit() and p.name == "happy-path.json"]


@pytest.mark.parametrize("path", _happy(INCLUSION_FILES), ids=_id)
def test_inclusion_proofs_we_make_are_the_known_answers(path: Path) -> None:
    v = _load(path)
    assert v["leafHash"] == CONSTANT_LEAVES[v["leafIdx"]]
    store = built(CONSTANT_LEAVES[: v["treeSize"]])
    assert inclusion_proof(v["treeSize"], v["leafIdx"], store.read) == v["proof"]


@pytest.mark.parametrize("path", _happy(CONSISTENCY_FILES), ids=_id)
def test_consistency_proofs_we_make_are_the_known_answers(path: Path) -> None:
    v = _load(path)
    store = built(CONSTANT_LEAVES[: v["size2"]])
    assert consistency_proof(v["size1"], v["size2"], store.read) == v["proof"]
    assert tree_hash(v["size1"], store.read) == v["root1"]
    assert tree_hash(v["size2"], store.read) == v["root2"]


# -- stored hash numbering -----------------------------------------------------------------------


def tlog_stored_hash_index(level: int, n: int) -> int:
    """tlog.StoredHashIndex, loop for loop."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def test_stored_hash_index_is_tlogs_numbering_and_splits_back() -> None:
    for level in range(12):
        for n in range(300):
            index = stored_hash_index(level, n)
            assert index == tlog_stored_hash_index(level, n)
            assert split_stored_hash_index(index) == (level, n)
    seen = sorted(split_stored_hash_index(i) for i in range(5000))
    assert len(set(seen)) == 5000


def test_stored_hash_count_is_what_appending_stores() -> None:
    assert [stored_hash_count(n) for n in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]
    assert len(STORE_70) == stored_hash_count(70)
    assert sorted(STORE_70) == list(range(stored_hash_count(70)))


# -- appending -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 64, 100, 300])
def test_batches_store_exactly_what_single_appends_store(batch: int) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    store = Store()
    for start in range(0, len(leaves), batch):
        rows = append(start, leaves[start : start + batch], store.read)
        assert [index for index, _ in rows] == list(
            range(stored_hash_count(start), stored_hash_count(min(start + batch, 300)))
        )
        store.update(rows)
    assert store == built_one_by_one(leaves)


def test_appending_nothing_stores_and_reads_nothing() -> None:
    def read(indexes: Sequence[int]) -> list[bytes]:
        raise AssertionError("read called")

    assert append(12345, [], read) == []


# -- every proof of small trees ------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 71))
def test_every_inclusion_proof_verifies_and_no_tampered_one_does(n: int) -> None:
    root = ROOTS_70[n]
    assert root == reference_root(LEAVES_70[:n])
    for index in range(n):
        leaf, proof = LEAVES_70[index], inclusion_proof(n, index, STORE_70.read)
        assert verify_inclusion(leaf, index, n, proof, root)
        assert not any(
            verify_inclusion(leaf, index, n, flipped(proof, i), root) for i in range(len(proof))
        )
        assert not verify_inclusion(leaf, index, n, [*proof, root], root)
        if proof:
            assert not verify_inclusion(leaf, index, n, proof[:-1], root)
            assert not verify_inclusion(leaf, index ^ 1, n, proof, root)


@pytest.mark.parametrize("n", range(1, 71))
def test_every_consistency_proof_verifies_and_no_tampered_one_does(n: int) -> None:
    new = ROOTS_70[n]
    for m in range(1, n + 1):
        old, proof = ROOTS_70[m], consistency_proof(m, n, STORE_70.read)
        assert verify_consistency(m, n, proof, old, new)
        assert not any(
            verify_consistency(m, n, flipped(proof, i), old, new) for i in range(len(proof))
        )
        assert not verify_consistency(m, n, [*proof, new], old, new)
        if m < n:
            assert not verify_consistency(m, n, proof[:-1], old, new)
            assert not verify_consistency(m, n, proof, new, old)
            assert not verify_consistency(m + 1, n, proof, old, new)
    assert consistency_proof(0, n, STORE_70.read) == []


class OldHashReader:
    """Reads `store`, but only hashes stored before `before`; records each call."""

    def __init__(self, store: Store, before: int) -> None:
        self.store, self.before = store, before
        self.calls: list[Sequence[int]] = []

    def __call__(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls.append(indexes)
        assert all(index < self.before for index in indexes)
        return self.store.read(indexes)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=6), max_size=90), st.data())
def test_any_split_into_batches_builds_the_rfc6962_tree(
    data: list[bytes], draw: st.DataObject
) -> None:
    leaves = [leaf_hash(d) for d in data]
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(leaves)), max_size=6)))
    store, start = Store(), 0
    for end in [*cuts, len(leaves)]:
        read = OldHashReader(store, stored_hash_count(start))
        store.update(append(start, leaves[start:end], read))
        assert len(read.calls) <= 1
        assert all(len(set(asked)) == len(asked) for asked in read.calls)
        assert tree_hash(end, store.read) == reference_root(leaves[:end])
        start = end
    assert store == built_one_by_one(leaves)
    if leaves:
        n = draw.draw(st.integers(1, len(leaves)))
        index, m = draw.draw(st.integers(0, n - 1)), draw.draw(st.integers(1, n))
        root = tree_hash(n, store.read)
        proof = inclusion_proof(n, index, store.read)
        assert verify_inclusion(leaves[index], index, n, proof, root)
        proof = consistency_proof(m, n, store.read)
        assert verify_consistency(m, n, proof, tree_hash(m, store.read), root)


# -- cost ----------------------------------------------------------------------------------------


class CountingReader:
    """Answers any index with a made-up hash and counts what was asked."""

    def __init__(self) -> None:
        self.calls: list[Sequence[int]] = []

    def __call__(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls.append(list(indexes))
        return [hashlib.sha256(index.to_bytes(8, "big")).digest() for index in indexes]

    def check(self, n: int, most: int) -> None:
        assert len(self.calls) == 1
        (asked,) = self.calls
        assert len(asked) == len(set(asked)) <= most
        assert all(0 <= index < stored_hash_count(n) for index in asked)
        self.calls.clear()


SIZES = [1_000_000, 999_999, 2**20 - 1, 2**20, 2**20 + 1, 1_234_567]


@pytest.mark.parametrize("n", SIZES)
def test_roots_and_proofs_of_a_million_leaves_read_log_n_hashes_in_one_call(n: int) -> None:
    log_n = n.bit_length()
    read = CountingReader()
    tree_hash(n, read)
    read.check(n, log_n)
    for index in [0, 1, n // 3, n // 2, n - 2, n - 1]:
        assert len(inclusion_proof(n, index, read)) <= log_n
        read.check(n, 2 * log_n)
    for m in [1, 2, 3, n // 3, n // 2 + 1, n - 2, n - 1]:
        assert len(consistency_proof(m, n, read)) <= 2 * log_n
        read.check(n, 2 * log_n)


@pytest.mark.parametrize("start", SIZES)
def test_appending_a_hundred_reads_each_old_hash_once_in_one_call(start: int) -> None:
    read = CountingReader()
    rows = append(start, LEAVES_70 + LEAVES_70[:30], read)
    assert len(rows) == stored_hash_count(start + 100) - stored_hash_count(start)
    assert len(read.calls) <= 1
    if read.calls:
        read.check(start, start.bit_length())


# -- refusals ------------------------------------------------------------------------------------

LEAF = LEAVES_70[0]

BAD_ARGUMENTS: list[tuple[str, Callable[[Reader], object], str]] = [
    ("negative level", lambda r: stored_hash_index(-1, 0), "level is -1"),
    ("negative node", lambda r: stored_hash_index(0, -1), "node number is -1"),
    ("negative stored index", lambda r: split_stored_hash_index(-1), "index is -1"),
    ("negative count", lambda r: stored_hash_count(-1), "tree size is -1"),
    ("negative leaf index", lambda r: stored_hashes(-1, LEAF, r), "leaf index is -1"),
    ("short leaf", lambda r: stored_hashes(0, b"short", r), "32-byte hashes"),
    ("negative start", lambda r: append(-1, [LEAF], r), "first leaf index is -1"),
    ("unhashed leaf", lambda r: append(0, [LEAF, b"data"], r), "32-byte hashes"),
    ("negative tree size", lambda r: tree_hash(-1, r), "tree size is -1"),
    ("index at size", lambda r: inclusion_proof(5, 5, r), "leaf 5 is not in a tree of size 5"),
    ("negative index", lambda r: inclusion_proof(5, -1, r), "leaf -1 is not in"),
    ("empty tree", lambda r: inclusion_proof(0, 0, r), "tree of size 0"),
    ("old after new", lambda r: consistency_proof(6, 5, r), "from size 6 to size 5"),
    ("negative old", lambda r: consistency_proof(-1, 5, r), "from size -1"),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in BAD_ARGUMENTS], ids=[i for i, _, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_are_refused_with_a_reason(
    call: Callable[[Reader], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(STORE_70.read)


def test_a_reader_that_loses_hashes_is_refused() -> None:
    with pytest.raises(ValueError, match="returned 0 hashes for 3 indexes"):
        tree_hash(7, lambda indexes: [])
    with pytest.raises(ValueError, match="not 32 bytes"):
        inclusion_proof(7, 0, lambda indexes: [b"x"] * len(indexes))


GARBAGE: list[tuple[str, Callable[[], bool]]] = [
    ("inclusion, negative size", lambda: verify_inclusion(LEAF, 0, -1, [], LEAF)),
    ("inclusion, negative index", lambda: verify_inclusion(LEAF, -1, 1, [], LEAF)),
    ("inclusion, huge index", lambda: verify_inclusion(LEAF, 2**64 - 1, 2**64, [], LEAF)),
    ("inclusion, short proof hash", lambda: verify_inclusion(LEAF, 0, 2, [b"\x00"], LEAF)),
    ("consistency, negative sizes", lambda: verify_consistency(-2, -1, [], LEAF, LEAF)),
    ("consistency, zero to zero", lambda: verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)),
    ("consistency, from empty", lambda: verify_consistency(0, 3, [], EMPTY_ROOT, LEAF)),
    ("consistency, short hashes", lambda: verify_consistency(3, 4, [b"", b""], b"", b"")),
    ("consistency, huge sizes", lambda: verify_consistency(2**64 - 1, 2**64, [LEAF], LEAF, LEAF)),
]


@pytest.mark.parametrize("check", [c for _, c in GARBAGE], ids=[i for i, _ in GARBAGE])
def test_garbage_never_verifies_and_never_raises(check: Callable[[], bool]) -> None:
    assert check() is False


def test_hash_size_is_sha256() -> None:
    assert HASH_SIZE == len(EMPTY_ROOT) == len(leaf_hash(b"x")) == 32
