"""The RFC 6962 Merkle tree of the transparency log (PROTOCOL.md section 8), over stored hashes.

A port of golang.org/x/mod/sumdb/tlog: appending leaf n stores the hashes `stored_hashes` gives,
at consecutive indexes from `stored_hash_index(0, n)`; the root and the RFC 9162 proofs of any
size are then made from O(log n) stored hashes, fetched with one call of a `Reader`. Unlike
tlog, the empty tree's root is SHA-256 of the empty string (RFC 6962 2.1). Verification follows
RFC 9162 2.1.3.2 and 2.1.4.2 and answers False, never raises. Stdlib only; no I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Reader = Callable[[Sequence[int]], Sequence[bytes]]
"""Reads the stored hashes at the given indexes, in that order."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data) (RFC 6962 2.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 6962 2.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# -- stored hash numbering (Crosby and Wallach section 3.3, as tlog) -------------------------------


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def _need_natural(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} is {value}; it must be zero or more")


def stored_hash_index(level: int, n: int) -> int:
    """Where the n'th hash of `level` is stored: level L's n'th hash follows level L+1's
    (2n+1)'th, and level 0's n'th is at n + n/2 + n/4 + ... (tlog.StoredHashIndex)."""
    _need_natural("the level", level)
    _need_natural("the node number", n)
    n = ((n + 1) << level) - 1
    return 2 * n - n.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The (level, n) stored at `index`: the inverse of `stored_hash_index`."""
    _need_natural("the stored hash index", index)
    # StoredHashIndex(0, n) < 2n, so the leaf stored last before `index` is at least index/2.
    n = index // 2
    index_n = stored_hash_index(0, n)
    while (after := index_n + 1 + _trailing_zeros(n + 1)) <= index:
        n, index_n = n + 1, after
    level = index - index_n
    return level, n >> level


def stored_hash_count(n: int) -> int:
    """How many hashes a tree of n leaves has stored: 2n - popcount(n)."""
    _need_natural("the tree size", n)
    return stored_hash_index(0, n)


def _read(read: Reader, indexes: Sequence[int]) -> list[bytes]:
    hashes = list(read(indexes))
    if len(hashes) != len(indexes):
        raise ValueError(f"the reader returned {len(hashes)} hashes for {len(indexes)} indexes")
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError(f"the reader returned a hash that is not {HASH_SIZE} bytes long")
    return hashes


def _need_hashes(what: str, hashes: Sequence[bytes]) -> None:
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError(f"{what} must be {HASH_SIZE}-byte hashes (use leaf_hash)")


# -- writing -------------------------------------------------------------------------------------


def stored_hashes(n: int, leaf: bytes, read: Reader) -> list[bytes]:
    """The hashes to store, from `stored_hash_index(0, n)` on, when appending leaf hash `leaf`
    as leaf n: the leaf, then one hash per subtree it completes (tlog.StoredHashesForRecordHash).
    Reads one stored left sibling per completed subtree."""
    _need_natural("the leaf index", n)
    _need_hashes("the leaf", [leaf])
    # Each trailing 1 bit of n completes a subtree whose left half is already stored.
    m = _trailing_zeros(n + 1)
    indexes = [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(m))]
    old = _read(read, indexes) if indexes else []
    hashes = [leaf]
    for i in range(m):
        hashes.append(node_hash(old[m - 1 - i], hashes[-1]))
    return hashes


def append(start: int, leaves: Sequence[bytes], read: Reader) -> list[tuple[int, bytes]]:
    """The (stored index, hash) pairs to store when appending leaf hashes `leaves` as leaves
    `start`, `start`+1, ...: exactly `stored_hashes` of each, in one pass. Reads, in one call,
    only the complete subtrees of the tree of size `start` that the new leaves complete."""
    _need_natural("the first leaf index", start)
    _need_hashes("the leaves", leaves)
    end = start + len(leaves)
    # Peaks of the old tree (one per 1 bit of start), highest level first; the level-i peak
    # is needed only if the new leaves complete its right sibling.
    levels = [i for i in reversed(range(start.bit_length())) if start >> i & 1]
    needed = [i for i in levels if ((start >> i) + 1) << i <= end]
    indexes = [stored_hash_index(i, (start >> i) - 1) for i in needed]
    stack = _read(read, indexes) if indexes else []
    pairs: list[tuple[int, bytes]] = []
    index = stored_hash_count(start)
    for n, h in enumerate(leaves, start):
        pairs.append((index, h))
        index += 1
        for _ in range(_trailing_zeros(n + 1)):
            h = node_hash(stack.pop(), h)
            pairs.append((index, h))
            index += 1
        stack.append(h)
    return pairs


# -- reading: roots and proofs (tlog.TreeHash, ProveRecord, ProveTree) ---------------------------


def _maxpow2(n: int) -> tuple[int, int]:
    """k, the largest power of 2 smaller than n (n >= 2), and log2(k)."""
    level = max((n - 1).bit_length() - 1, 0)
    return 1 << level, level


def _subtree_index(lo: int, hi: int, need: list[int]) -> None:
    """Append the indexes of the complete subtrees that make up leaves [lo, hi)."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        need.append(stored_hash_index(level, lo >> level))
        lo += k


def _subtree_hash(lo: int, hi: int, hashes: Iterator[bytes]) -> bytes:
    """The hash of leaves [lo, hi) from the hashes `_subtree_index(lo, hi)` asked for."""
    parts: list[bytes] = []
    while lo < hi:
        parts.append(next(hashes))
        lo += _maxpow2(hi - lo + 1)[0]
    h = parts.pop()
    while parts:
        h = node_hash(parts.pop(), h)
    return h


def tree_hash(n: int, read: Reader) -> bytes:
    """The root of the tree of the first n leaves (EMPTY_ROOT for n = 0), from one read of at
    most log2(n) + 1 stored hashes."""
    _need_natural("the tree size", n)
    if n == 0:
        return EMPTY_ROOT
    need: list[int] = []
    _subtree_index(0, n, need)
    return _subtree_hash(0, n, iter(_read(read, need)))


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> None:
    if lo + 1 == hi:
        return
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        _subtree_index(lo + k, hi, need)
    else:
        _subtree_index(lo, lo + k, need)
        _leaf_proof_index(lo + k, hi, n, need)


def _leaf_proof(lo: int, hi: int, n: int, hashes: Iterator[bytes]) -> list[bytes]:
    """The path from leaf n up to the root of leaves [lo, hi), sibling of the leaf first."""
    if lo + 1 == hi:
        return []  # the verifier has the leaf hash
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        proof = _leaf_proof(lo, lo + k, n, hashes)
        sibling = _subtree_hash(lo + k, hi, hashes)
    else:
        sibling = _subtree_hash(lo, lo + k, hashes)
        proof = _leaf_proof(lo + k, hi, n, hashes)
    proof.append(sibling)
    return proof


def inclusion_proof(n: int, index: int, read: Reader) -> list[bytes]:
    """The RFC 9162 2.1.3.1 inclusion proof of leaf `index` in the tree of size n."""
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of size {n}: need 0 <= index < size")
    need: list[int] = []
    _leaf_proof_index(0, n, index, need)
    if not need:
        return []
    return _leaf_proof(0, n, index, iter(_read(read, need)))


def _tree_proof_index(lo: int, hi: int, m: int, need: list[int]) -> None:
    if m == hi:
        if lo != 0:
            _subtree_index(lo, hi, need)
        return
    k, _ = _maxpow2(hi - lo)
    if m <= lo + k:
        _tree_proof_index(lo, lo + k, m, need)
        _subtree_index(lo + k, hi, need)
    else:
        _subtree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, m, need)


def _tree_proof(lo: int, hi: int, m: int, hashes: Iterator[bytes]) -> list[bytes]:
    """The sub-proof, for leaves [lo, hi), that the first m leaves are a prefix."""
    if m == hi:
        # The whole old tree is known to the verifier; any other common subtree is sent.
        return [] if lo == 0 else [_subtree_hash(lo, hi, hashes)]
    k, _ = _maxpow2(hi - lo)
    if m <= lo + k:
        proof = _tree_proof(lo, lo + k, m, hashes)
        other = _subtree_hash(lo + k, hi, hashes)
    else:
        other = _subtree_hash(lo, lo + k, hashes)
        proof = _tree_proof(lo + k, hi, m, hashes)
    proof.append(other)
    return proof


def consistency_proof(m: int, n: int, read: Reader) -> list[bytes]:
    """The RFC 9162 2.1.4.1 proof that the tree of size m is a prefix of the tree of size n;
    empty when m is 0 or n."""
    if not 0 <= m <= n:
        raise ValueError(f"no consistency proof from size {m} to size {n}: need 0 <= m <= n")
    if m in (0, n):
        return []
    need: list[int] = []
    _tree_proof_index(0, n, m, need)
    return _tree_proof(0, n, m, iter(_read(read, need)))


# -- verifying -----------------------------------------------------------------------------------


def _shift_to_set_bit(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift both until LSB(fn) is set or fn is 0 (RFC 9162 2.1.3.2 step 4.b.ii)."""
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(leaf: bytes, index: int, n: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether `proof` shows leaf hash `leaf` at `index` in the tree of size n with `root`
    (RFC 9162 2.1.3.2)."""
    if not 0 <= index < n or len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, n - 1, leaf
    for p in proof:
        if sn == 0:
            return False  # the proof is longer than the path
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_to_set_bit(fn, sn)
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    m: int, n: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """Whether `proof` shows the tree of size m with `old_root` is a prefix of the tree of
    size n with `new_root` (RFC 9162 2.1.4.2). Equal sizes need an empty proof and equal
    roots; m = 0 is always False: a proof from the empty tree proves nothing."""
    if not 0 < m <= n:
        return False
    if m == n:
        return len(proof) == 0 and old_root == new_root
    if not proof or len(old_root) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if m & (m - 1) == 0:
        path.insert(0, old_root)  # step 2: the old tree is a complete subtree
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False  # the proof is longer than the path
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            fn, sn = _shift_to_set_bit(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
