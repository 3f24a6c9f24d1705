"""The transparency log inside the ledger (PROTOCOL.md section 8), on SQLite and PostgreSQL.

Every accepted envelope is leaf `seq` of an RFC 6962 tree whose stored hashes, and a checkpoint
signed by the log key, are written in the transaction that accepts it: a refused envelope or
batch leaves neither. Every checkpoint is kept, and any two are consistent. Roots and proofs
are checked with the independent verifier of tests/independent/tlog.py, never with the
ledger's own `ledger.merkle`.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from ledger.canonical import canonical
from ledger.crypto import Signer
from ledger.errors import BatchRefused, NotAuthorized, NotFound
from tests.independent import tlog
from tests.support import LOG_SEED, ORIGIN, Clock, World, new_ledger, populate, signer

OpenLedger = Callable[..., Ledger]
VKEY = tlog.vkey_for(ORIGIN, Signer(LOG_SEED).public_key)


@pytest.fixture
def open_ledger(any_store: str, clock: Clock) -> Iterator[OpenLedger]:
    opened: list[Ledger] = []

    def open_(init: bool = False, key: bool = True) -> Ledger:
        ledger = new_ledger(any_store, clock) if init else Ledger(any_store, clock=clock)
        if key and not init:
            ledger.use_log_key(Signer(LOG_SEED))
        opened.append(ledger)
        return ledger

    yield open_
    for ledger in opened:
        ledger.close()


def leaves(ledger: Ledger) -> list[bytes]:
    """Each entry's canonical envelope bytes, in seq order."""
    return [canonical(e.envelope) for e in ledger.log_entries(0, 1000).entries]


def opened(note: str) -> tlog.Checkpoint:
    return tlog.open_checkpoint(note, VKEY, origin=ORIGIN)


def test_each_commit_writes_its_leaves_and_a_checkpoint_covering_them(
    open_ledger: OpenLedger, world: World
) -> None:
    ledger = open_ledger(init=True)
    seen: list[tlog.Checkpoint] = []
    registry = [world.genesis(), world.party("nvidia", ["vendor"], "US")]
    registry += [world.party("gulf-cloud", ["buyer"]), world.site("dxb-1", "gulf-cloud")]
    for envelope in registry:
        receipt = ledger.submit(envelope).receipt
        checkpoint = opened(ledger.checkpoint())
        data = leaves(ledger)
        assert receipt.leaf_hash == tlog.leaf_hash(data[receipt.seq]).hex()
        assert checkpoint.size == receipt.seq + 1
        assert checkpoint.root == tlog.root_of(data)
        seen.append(checkpoint)
    kept = [opened(note) for _, note in ledger.checkpoints()]
    assert kept == seen  # one per commit, every one kept


def test_a_batch_commits_one_checkpoint_and_proofs_verify_at_every_kept_size(
    open_ledger: OpenLedger, world: World
) -> None:
    ledger = open_ledger(init=True)
    populate(ledger, world)
    envelopes = [world.party(f"buyer-{i}", ["buyer"]) for i in range(9)]
    ledger.submit_batch({"envelopes": envelopes})
    data = leaves(ledger)
    kept = [opened(note) for _, note in ledger.checkpoints()]
    assert [c.size for c in kept] == [*range(1, len(data) - 8), len(data)]
    for checkpoint in kept:
        assert checkpoint.root == tlog.root_of(data[: checkpoint.size])
        for seq in range(checkpoint.size):
            proof = ledger.inclusion(seq, checkpoint.size)
            hashes = [bytes.fromhex(h) for h in proof.hashes]
            assert proof.leaf_hash == tlog.leaf_hash(data[seq]).hex()
            assert hashes == tlog.inclusion_proof_of(data[: checkpoint.size], seq)
            assert tlog.verify_inclusion(
                bytes.fromhex(proof.leaf_hash), seq, checkpoint.size, hashes, checkpoint.root
            )
    for old in kept:
        for new in kept:
            if old.size <= new.size:
                hashes = [bytes.fromhex(h) for h in ledger.consistency(old.size, new.size).hashes]
                assert tlog.verify_consistency(old.size, new.size, hashes, old.root, new.root)


def test_a_refused_batch_leaves_no_leaf_and_no_checkpoint(
    open_ledger: OpenLedger, world: World
) -> None:
    ledger = open_ledger(init=True)
    populate(ledger, world)
    before = (ledger.checkpoint(), ledger.checkpoints())
    forged = world.envelope(world.event("party.registered", "bis", party={
        "id": "x", "name": "X", "roles": ["buyer"], "country": "AE",
        "keys": [signer("x").public_key_b64]}), "nvidia")  # fmt: skip
    with pytest.raises(BatchRefused):
        ledger.submit_batch({"envelopes": [world.party("fine", ["buyer"]), forged]})
    assert (ledger.checkpoint(), ledger.checkpoints()) == before
    receipt = ledger.submit(world.party("fine", ["buyer"])).receipt  # its seq is free
    assert opened(ledger.checkpoint()).root == tlog.root_of(leaves(ledger))
    assert opened(ledger.checkpoint()).size == receipt.seq + 1


def test_a_writer_without_the_log_key_leaves_the_checkpoint_to_one_with_it(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    signed = first.checkpoints()
    keyless = open_ledger(key=False)
    keyless.submit(world.party("late", ["buyer"]))
    assert keyless.checkpoints() == signed  # nothing signed without the key
    assert opened(keyless.checkpoint()).size == signed[-1][0]  # the latest there is
    keyed = open_ledger()
    checkpoint = opened(keyed.checkpoint())  # signed on demand, and kept
    assert checkpoint.size == keyed.size()
    assert checkpoint.root == tlog.root_of(leaves(keyed))
    assert keyed.checkpoints()[-1][0] == keyed.size()


def test_only_the_log_key_fixed_at_init_signs(open_ledger: OpenLedger) -> None:
    ledger = open_ledger(init=True)
    with pytest.raises(NotAuthorized, match="not this ledger's"):
        ledger.use_log_key(signer("nvidia"))


def test_two_writers_taking_turns_build_one_tree(open_ledger: OpenLedger, world: World) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    second = open_ledger()
    for i in range(6):
        (first if i % 2 else second).submit(world.party(f"p-{i}", ["buyer"]))
    data = leaves(first)
    for ledger in (first, second):
        checkpoint = opened(ledger.checkpoint())
        assert (checkpoint.size, checkpoint.root) == (len(data), tlog.root_of(data))
    kept = [opened(note) for _, note in first.checkpoints()]
    assert [c.size for c in kept] == list(range(1, len(data) + 1))
    for old, new in itertools.pairwise(kept):
        hashes = [bytes.fromhex(h) for h in first.consistency(old.size, new.size).hashes]
        assert tlog.verify_consistency(old.size, new.size, hashes, old.root, new.root)


def test_a_store_written_before_the_tree_existed_gets_it_from_its_log(
    store: str, clock: Clock, world: World
) -> None:
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    data = leaves(ledger)
    ledger.close()
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM ledger_tree")
        db.execute("DELETE FROM ledger_checkpoints")
    reopened = Ledger(store, clock=clock)
    reopened.use_log_key(Signer(LOG_SEED))
    checkpoint = opened(reopened.checkpoint())
    assert (checkpoint.size, checkpoint.root) == (len(data), tlog.root_of(data))
    proof = reopened.inclusion(3)
    hashes = [bytes.fromhex(h) for h in proof.hashes]
    assert tlog.verify_inclusion(tlog.leaf_hash(data[3]), 3, len(data), hashes, checkpoint.root)


# -- the HTTP face -----------------------------------------------------------------------------


def test_log_endpoints_answer_as_section_6_says(client: TestClient, populated: Ledger) -> None:
    note = client.get("/v1/log/checkpoint")
    assert note.status_code == 200
    assert note.headers["content-type"].startswith("text/plain")
    checkpoint = opened(note.text)
    assert client.get("/v1/log/key").text == VKEY + "\n"
    proof = client.get("/v1/log/inclusion", params={"seq": 2}).json()
    assert set(proof) == {"seq", "size", "leaf_hash", "hashes"}
    assert (proof["seq"], proof["size"]) == (2, checkpoint.size)
    hashes = [bytes.fromhex(h) for h in proof["hashes"]]
    leaf = bytes.fromhex(proof["leaf_hash"])
    assert tlog.verify_inclusion(leaf, 2, checkpoint.size, hashes, checkpoint.root)
    consistency = client.get("/v1/log/consistency", params={"from": 3, "to": checkpoint.size})
    assert consistency.json()["from"] == 3
    assert consistency.json()["to"] == checkpoint.size


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/v1/log/inclusion", {"seq": 8}, 404),  # the tree holds seqs 0..7
    ("/v1/log/inclusion", {"seq": 0, "size": 9}, 404),  # past the latest checkpoint
    ("/v1/log/inclusion", {"seq": 3, "size": 3}, 404),
    ("/v1/log/inclusion", {"seq": -1}, 400),
    ("/v1/log/inclusion", {}, 400),
    ("/v1/log/consistency", {"from": 0, "to": 3}, 400),
    ("/v1/log/consistency", {"from": 4, "to": 3}, 400),
    ("/v1/log/consistency", {"from": 1, "to": 9}, 404),
    ("/v1/log/consistency", {"to": 3}, 400),
])  # fmt: skip
def test_log_requests_that_cannot_be_answered_say_why(
    client: TestClient, populated: Ledger, path: str, params: dict[str, int], status: int
) -> None:
    assert populated.size() == 8
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    assert populated.size() == 8


def test_no_checkpoint_without_a_key_and_no_entries_is_a_404(store: str, clock: Clock) -> None:
    ledger = Ledger(store, clock=clock)
    ledger.initialise(ORIGIN, signer("bis").public_key_b64, Signer(LOG_SEED).public_key)
    with pytest.raises(NotFound, match="no checkpoint"):
        ledger.checkpoint()
    ledger.use_log_key(Signer(LOG_SEED))
    empty = opened(ledger.checkpoint())
    assert (empty.size, empty.root) == (0, tlog.root_of([]))
    ledger.close()


def test_the_api_serves_what_the_ledger_signs(populated: Ledger) -> None:
    client = TestClient(create_app(populated, open_reads=True))
    assert client.get("/v1/log/checkpoint").text == populated.checkpoint()


@pytest.mark.parametrize(
    ("lost", "written_after"),  # rows lost at the end are restored by opening; any, by rebuild
    [("idx < 10", True), ("idx = 14", True), ("idx >= 0", True), ("idx >= 0", False),
     ("idx >= 20", False)],
)  # fmt: skip
def test_a_tree_that_lost_rows_is_rebuilt_from_the_log(
    store: str, clock: Clock, world: World, lost: str, written_after: bool
) -> None:
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    for i in range(12):
        ledger.submit(world.party(f"p-{i}", ["buyer"]))
    with sqlite3.connect(store) as db:
        db.execute(f"DELETE FROM ledger_tree WHERE {lost}")  # noqa: S608 (the test's own text)
    if written_after:  # writes its rows on the cached edge: the rows lost are in the middle
        ledger.submit(world.party("after", ["buyer"]))
    ledger.close()
    reopened = Ledger(store, clock=clock)
    if written_after:  # opening reads only the highest index: `chipledger rebuild` repairs
        reopened.rebuild_read_models()
    data = leaves(reopened)
    root = tlog.root_of(data)
    for seq in range(len(data)):
        proof = [bytes.fromhex(h) for h in reopened.inclusion(seq, len(data)).hashes]
        assert tlog.verify_inclusion(tlog.leaf_hash(data[seq]), seq, len(data), proof, root)
    reopened.use_log_key(Signer(LOG_SEED))
    reopened.submit(world.party("later", ["buyer"]))
    assert opened(reopened.checkpoint()).root == tlog.root_of(leaves(reopened))
    reopened.close()


def test_a_missing_stored_hash_while_serving_is_a_server_fault_not_a_404(
    store: str, clock: Clock, world: World
) -> None:
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    with sqlite3.connect(store) as db:
        db.execute("DELETE FROM ledger_tree WHERE idx = 0")
    client = TestClient(create_app(ledger, open_reads=True), raise_server_exceptions=False)
    response = client.get("/v1/log/inclusion", params={"seq": 0})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"


def test_entries_far_past_the_end_are_none(client: TestClient) -> None:
    for start in (8, 2**63 - 2, 2**63):
        response = client.get("/v1/log/entries", params={"start": start})
        assert response.status_code == 200, response.text
        assert response.json() == {"entries": []}


def test_postgres_writes_the_tree_even_when_the_environment_asks_for_db_functions(
    pg_store: str, clock: Clock, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_ENABLE_DB_FUNCTIONS", "y")
    ledger = new_ledger(pg_store, clock)
    populate(ledger, world)
    data = leaves(ledger)
    proof = [bytes.fromhex(h) for h in ledger.inclusion(2).hashes]
    root = opened(ledger.checkpoint()).root
    assert tlog.verify_inclusion(tlog.leaf_hash(data[2]), 2, len(data), proof, root)
    assert [size for size, _ in ledger.checkpoints()] == list(range(1, len(data) + 1))
    ledger.close()
