"""The bench's proof rows: the trees it builds are the trees commits build, and it times
proofs that verify (the numbers themselves are the bench's business, not a test's)."""

from __future__ import annotations

from pathlib import Path

from ledger import merkle
from tests.independent import tlog
from tools.bench_log import proof_costs, tree_log


def test_the_bench_tree_is_the_rfc_6962_tree_of_its_leaves(tmp_path: Path) -> None:
    ledger, log = tree_log(tmp_path / "t.db", 37, lambda _: None)
    leaves = [i.to_bytes(8, "big") for i in range(37)]
    assert merkle.tree_hash(37, log.read) == tlog.root_of(leaves)
    leaf, proof = log.inclusion(20, 37)
    assert tlog.verify_inclusion(leaf, 20, 37, proof, tlog.root_of(leaves))
    ledger.close()


def test_proof_costs_are_measured_on_both_trees(tmp_path: Path) -> None:
    costs = proof_costs(tmp_path, lambda _: None, sizes=(16, 3000), rounds=1, per_round=5)
    assert (costs.small, costs.large) == (16, 3000)
    times = [costs.inclusion_small_s, costs.inclusion_large_s]
    times += [costs.consistency_small_s, costs.consistency_large_s]
    assert all(t > 0 for t in times)
