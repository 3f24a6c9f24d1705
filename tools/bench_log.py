"""The transparency log's share of `chipledger bench`: what a proof costs as the log grows.

Two SQLite stores get the stored hashes of trees of 1,000 and of 1,000,000 leaves, written by
`ledger.merkle.append` exactly as commits write them (the leaves are hashes of their index:
signing and accepting a million envelopes would time the ingest, not the proofs). Inclusion
and consistency proofs are then made through `ledger.transparency.Log`, the code behind
`GET /v1/log/inclusion` and `/consistency`, at random positions, alternating between the two
stores so that both see the same machine.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ledger import merkle
from ledger.application import Ledger
from ledger.recorders import ours
from ledger.transparency import Log, right_edge

ORIGIN = "chipledger.local/bench"
CHUNK = 50_000


@dataclass(frozen=True)
class ProofCosts:
    small: int  # leaves
    large: int
    inclusion_small_s: float  # median seconds per proof
    inclusion_large_s: float
    consistency_small_s: float
    consistency_large_s: float


def tree_log(path: Path, leaves: int, progress: Callable[[str], None]) -> tuple[Ledger, Log]:
    """A store holding the stored hashes of a tree of `leaves` leaves, and a `Log` on it (the
    ledger holds the store open: keep it while the log is used)."""
    ledger = Ledger(str(path))
    recorder = ours(ledger.recorder)
    edge: dict[int, bytes] = {}
    for start in range(0, leaves, CHUNK):
        end = min(start + CHUNK, leaves)
        hashes = [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(start, end)]
        rows = merkle.append(start, hashes, partial(_known, edge))
        recorder.write_log(rows, None)
        edge.update(rows)
        keep = set(right_edge(end))
        edge = {index: value for index, value in edge.items() if index in keep}
        if end % 200_000 == 0:
            progress(f"tree of {leaves:,} leaves: {end:,} written")
    return ledger, Log(recorder, ORIGIN)


def _known(edge: dict[int, bytes], wanted: Sequence[int]) -> list[bytes]:
    return [edge[index] for index in wanted]


def proof_costs(
    directory: Path,
    progress: Callable[[str], None],
    sizes: tuple[int, int] = (1_000, 1_000_000),
    rounds: int = 7,
    per_round: int = 300,
) -> ProofCosts:
    opened = [tree_log(directory / f"tree_{size}.db", size, progress) for size in sizes]
    logs = [log for _, log in opened]
    rng = random.Random(6962)
    roots = [merkle.tree_hash(size, log.read) for size, log in zip(sizes, logs, strict=True)]
    times: list[list[float]] = [[], [], [], []]  # inclusion small, large; consistency small, large
    for _ in range(rounds):
        for k, (size, log, root) in enumerate(zip(sizes, logs, roots, strict=True)):
            seqs = [rng.randrange(size) for _ in range(per_round)]
            start = time.perf_counter()
            proofs = [log.inclusion(seq, size) for seq in seqs]
            times[k].append((time.perf_counter() - start) / per_round)
            leaf, proof = proofs[0]
            assert merkle.verify_inclusion(leaf, seqs[0], size, proof, root), "a bad proof"
            olds = [rng.randrange(1, size + 1) for _ in range(per_round)]
            start = time.perf_counter()
            for old in olds:
                log.consistency(old, size)
            times[2 + k].append((time.perf_counter() - start) / per_round)
    digest = hashlib.sha256(b"".join(roots)).hexdigest()[:8]
    progress(f"proofs timed on both trees (roots {digest})")
    for ledger, _ in opened:
        ledger.close()
    small, large = sizes
    inc_s, inc_l, con_s, con_l = (statistics.median(t) for t in times)
    return ProofCosts(small, large, inc_s, inc_l, con_s, con_l)
