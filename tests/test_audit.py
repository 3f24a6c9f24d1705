"""`chipledger audit` (PROTOCOL.md section 10) re-verifies a whole store and names the first bad
`seq`.

The story: the registry of `tests.support.populate`, a second key for nvidia that signs a
fabrication and an export and is then revoked, a delivery, a split and an installation, two
fabrications in one batch, and an export that raises a flag. It audits clean on SQLite and
PostgreSQL; then each edit in the table below, made to bytes inside the SQLite file, is named
precisely: what was changed, where, and the first bad seq.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ledger import merkle
from ledger.aggregates import stream_id
from ledger.application import Ledger
from ledger.audit import AuditReport, Problem, audit
from ledger.canonical import b64encode, canonical
from ledger.crypto import PAYLOAD_TYPE, Signer, pae
from ledger.errors import LedgerError, NotFound
from ledger.notes import verifier_key
from ledger.signing import write_secret
from tests.support import LOG_SEED, ORIGIN, Clock, World, new_ledger, populate, signer
from tools.cli import main

NEW_KEY = signer("nvidia#2")
# The story's seqs, after populate's 0..7 (genesis, five parties, sites dxb-1 and tsmc-f18).
SEQ = {"key": 8, "fabricated": 9, "exported": 10, "revoked": 11, "delivered": 12, "split": 13,
       "installed": 14, "late": 15, "other": 16, "flagged": 17}  # fmt: skip
SIZE = 18


@dataclass
class Story:
    ledger: Ledger
    world: World
    heads: dict[str, str] = field(default_factory=dict)

    def send(self, kind: str, actor: str, *keys: str, **fields: Any) -> int:
        return self.commit([self.envelope(kind, actor, *keys, **fields)])[0]

    def envelope(self, kind: str, actor: str, *keys: str, **fields: Any) -> dict[str, Any]:
        if kind != "batch.fabricated" and "batch" in fields:
            fields.setdefault("prev", self.heads[fields["batch"]])
        return self.world.envelope(self.world.event(kind, actor, **fields), *(keys or (actor,)))

    def commit(self, envelopes: list[dict[str, Any]]) -> list[int]:
        self.world.clock.advance(minutes=1)
        outcomes = self.ledger.submit_batch({"envelopes": envelopes})
        for envelope, outcome in zip(envelopes, outcomes, strict=True):
            event = json.loads(base64.b64decode(envelope["payload"]))
            for part in [event, *event.get("into", [])]:
                if "batch" in part:
                    self.heads[part["batch"]] = outcome.receipt.envelope_hash
        return [outcome.receipt.seq for outcome in outcomes]


def tell(ledger: Ledger, world: World) -> None:
    populate(ledger, world)
    story = Story(ledger, world)
    sent = [
        story.send("party.key_added", "bis", "bis", "nvidia#2", party="nvidia",
                   key=NEW_KEY.public_key_b64),
        story.send("batch.fabricated", "nvidia", "nvidia#2", batch="H200-1", model="H200",
                   quantity=100, country="TW"),
        story.send("batch.exported", "nvidia", "nvidia#2", batch="H200-1", to="gulf-cloud",
                   destination="AE"),
        story.send("party.key_revoked", "bis", party="nvidia", keyid=NEW_KEY.key_id),
        story.send("batch.delivered", "gulf-cloud", batch="H200-1", site="dxb-1", quantity=100),
        story.send("batch.split", "gulf-cloud", batch="H200-1",
                   into=[{"batch": "H200-1-a", "quantity": 60},
                         {"batch": "H200-1-b", "quantity": 40}]),
        story.send("batch.installed", "gulf-cloud", batch="H200-1-a", site="dxb-1"),
        *story.commit([
            story.envelope("batch.fabricated", "nvidia", batch=name, model="H200", quantity=10,
                           country="TW")
            for name in ("H200-2", "H200-3")
        ]),
        story.send("batch.exported", "nvidia", batch="H200-2", to="gulf-cloud",
                   destination="CN"),
    ]  # fmt: skip
    assert sent == list(SEQ.values())


@pytest.fixture
def told(any_store: str, clock: Clock, world: World) -> str:
    ledger = new_ledger(any_store, clock)
    tell(ledger, world)
    ledger.close()
    return any_store


@pytest.fixture
def sqlite_told(store: str, clock: Clock, world: World) -> str:
    ledger = new_ledger(store, clock)
    tell(ledger, world)
    ledger.close()
    return store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def kinds(report: AuditReport) -> set[str]:
    return set(report.counts)


def found(report: AuditReport, what: str, **where: Any) -> list[Problem]:
    return [
        p for p in report.problems
        if p.what == what and all(getattr(p, k) == v for k, v in where.items())
    ]  # fmt: skip


# -- a clean store --------------------------------------------------------------------------


def test_a_clean_store_audits_clean_through_the_api_and_the_command_line(
    told: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = audit(told, workers=0)
    assert report.ok, report.problems
    assert (report.entries, report.first_bad_seq, report.rebuilt) == (SIZE, None, SIZE)
    assert report.signatures == SIZE + 6  # two for each of five parties registered and a key added
    assert (report.checkpoints, report.covered) == (SIZE - 1, SIZE)  # one per commit
    assert report.stored_events > SIZE * 2
    assert report.log_key_from_store
    code, out, err = run(capsys, "audit", "--store", told)
    assert (code, err) == (0, "")
    assert f"{SIZE} entries" in out
    assert "everything holds" in out


def test_entries_no_checkpoint_covers_yet_are_audited_and_said(
    sqlite_told: str, clock: Clock, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    keyless = Ledger(sqlite_told, clock=clock)  # a writer without the log key signs nothing
    keyless.submit(world.party("late-buyer", ["buyer"]))
    keyless.close()
    report = audit(sqlite_told, workers=0, allow_uncovered=True)
    assert (report.ok, report.entries, report.covered) == (True, SIZE + 1, SIZE)
    code, out, _ = run(capsys, "audit", "--store", sqlite_told, "--allow-uncovered")
    assert code == 0
    assert f"no good checkpoint covers the entries from seq {SIZE} on" in out
    strict = audit(sqlite_told, workers=0)
    assert (strict.ok, strict.counts, strict.first_bad_seq) == (False, {"checkpoint": 1}, SIZE)
    code, out, _ = run(capsys, "audit", "--store", sqlite_told)
    assert code == 1
    assert f"seq {SIZE}: checkpoint: no checkpoint is stored for the entries from seq {SIZE}" in out


def test_a_store_whose_checkpoints_were_deleted_is_not_vouched_for(
    sqlite_told: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.closing(sqlite3.connect(sqlite_told)) as db, db:
        db.execute("DELETE FROM ledger_checkpoints")
    report = audit(sqlite_told, workers=0)
    assert (report.ok, report.counts, report.first_bad_seq) == (False, {"checkpoint": 1}, 0)


def test_a_damaged_record_of_the_ledger_itself_is_reported_not_raised(
    sqlite_told: str,
) -> None:
    with contextlib.closing(sqlite3.connect(sqlite_told)) as db, db:
        db.execute(
            "UPDATE stored_events SET state = replace(state, CAST('+' AS BLOB), CAST('-' AS BLOB))"
            " WHERE topic = 'ledger.events:LedgerInitialised'"
        )
    report = audit(sqlite_told, workers=0)
    assert not report.ok
    assert "ledger" in report.counts
    assert any("own record is damaged" in p.message for p in report.problems)


def test_a_verifier_key_too_long_to_be_a_path_is_read_as_a_key(sqlite_told: str) -> None:
    long = "x" * 300 + "+00000000+AAAA"
    with pytest.raises(LedgerError, match="verifier key"):
        audit(sqlite_told, long, workers=0)


def test_a_store_with_more_entries_than_a_chunk_is_audited_by_worker_processes_alike(
    store: str, clock: Clock, world: World
) -> None:
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    ledger.submit_batch({"envelopes": [world.party(f"buyer-{i}", ["buyer"]) for i in range(150)]})
    ledger.close()
    report = audit(store, workers=2)
    assert (report.ok, report.workers, report.entries) == (True, 2, 158)
    flip_in_entry(store, 100, '\\"sig\\":\\"', 10)
    inline, pooled = audit(store, workers=0), audit(store, workers=2)
    assert pooled.workers == 2
    assert pooled.problems == inline.problems
    assert (pooled.first_bad_seq, found(pooled, "signature")[0].seq) == (100, 100)


def test_a_given_log_key_is_checked_against_the_store_and_every_checkpoint(
    sqlite_told: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "log.key"
    write_secret(key_file, Signer(LOG_SEED))
    vkey = verifier_key(ORIGIN, Signer(LOG_SEED).public_key)
    for given in (str(key_file), vkey):
        report = audit(sqlite_told, log_key=given, workers=0)
        assert (report.ok, report.log_key_from_store) == (True, False)
    other = verifier_key(ORIGIN, signer("nvidia").public_key)
    report = audit(sqlite_told, log_key=other, workers=0)
    assert report.counts == {"ledger": 1, "checkpoint": SIZE - 1}
    assert report.first_bad_seq is None
    code, out, _ = run(capsys, "audit", "--store", sqlite_told, "--log-key", other)
    assert code == 1
    assert "does not open under the log key" in out


def test_no_ledger_is_a_refusal_in_one_sentence_and_an_empty_one_audits_clean(
    tmp_path: Path, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "audit", "--store", str(tmp_path / "none.db"))
    assert (code, err) == (1, f"chipledger: there is no ledger store at {tmp_path / 'none.db'}\n")
    empty = str(tmp_path / "empty.db")
    Ledger(empty, clock=clock).close()  # the tables, and no ledger in them
    with pytest.raises(NotFound, match="holds no ledger"):
        audit(empty)
    ledger = new_ledger(empty, clock)
    ledger.checkpoint()  # of the empty tree
    ledger.close()
    report = audit(empty)
    assert (report.ok, report.entries, report.checkpoints, report.stored_events) == (True, 0, 1, 1)


# -- edits made to the SQLite file ----------------------------------------------------------


def flip(text: str, at: int) -> str:
    """`text` with the base64 character at `at` changed."""
    return text[:at] + ("B" if text[at] == "A" else "A") + text[at + 1 :]


Statements = tuple[str, str]  # read one text at a key, write it back
ENTRY_STATE = (
    "SELECT state FROM stored_events WHERE topic = 'ledger.events:EntryRecorded' "
    "AND originator_version = ?",
    "UPDATE stored_events SET state = ? WHERE topic = 'ledger.events:EntryRecorded' "
    "AND originator_version = ?",
)
EVENT_STATE = (
    "SELECT state FROM stored_events WHERE originator_id = ? AND originator_version = ?",
    "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
)
CHECKPOINT_NOTE = (
    "SELECT note FROM ledger_checkpoints WHERE size = ?",
    "UPDATE ledger_checkpoints SET note = ? WHERE size = ?",
)


def rewrite(
    store: str, statements: Statements, key: tuple[Any, ...], change: Callable[[str], str]
) -> None:
    """Change the one text (or UTF-8 blob) found at `key`, and write it back."""
    with sqlite3.connect(store) as db:
        (found,) = db.execute(statements[0], key).fetchone()
        text = found.decode() if isinstance(found, bytes) else found
        changed = change(text)
        assert changed != text
        db.execute(statements[1], (changed.encode() if isinstance(found, bytes) else changed, *key))


def flip_in_entry(store: str, seq: int, marker: str, offset: int) -> None:
    """Change one character of entry `seq`'s stored state, `offset` after `marker`."""
    rewrite(store, ENTRY_STATE, (seq,), lambda t: flip(t, t.index(marker) + len(marker) + offset))


def edit_event(store: str, stream: str, version: int, old: str, new: str) -> None:
    key = (stream_id(*stream.split(":")).hex, version)
    rewrite(store, EVENT_STATE, key, lambda text: text.replace(old, new))


def flip_checkpoint(store: str, size: int, line: int) -> None:
    def change(note: str) -> str:
        lines = note.split("\n")
        lines[line] = flip(lines[line], len(lines[line]) // 2)
        return "\n".join(lines)

    rewrite(store, CHECKPOINT_NOTE, (size,), change)


def sql(statement: str, *params: Any) -> Callable[[str], None]:
    def edit(store: str) -> None:
        with sqlite3.connect(store) as db:
            assert db.execute(statement, params).rowcount == 1

    return edit


LEAF_12 = merkle.stored_hash_index(0, 12)
NODE_4_7 = merkle.stored_hash_index(2, 1)  # the subtree over seqs 4..7
SIG = '\\"sig\\":\\"'
QUANTITY = '"quantity":100'
NVIDIA_KEY, OTHER_KEY = signer("nvidia").public_key_b64, signer("someone").public_key_b64
DELETE_ENTRY = (
    "DELETE FROM stored_events WHERE topic = 'ledger.events:EntryRecorded' "
    "AND originator_version = ?"
)
PAYLOAD = '\\"payload\\":\\"'
# id, the edit, the problem it must raise (kind, and where), every kind raised, first bad seq
EDITS: list[tuple[str, Callable[[str], None], tuple[str, dict[str, Any]], set[str], int | None]] = [
    ("envelope-signature", lambda s: flip_in_entry(s, 12, SIG, 20), ("signature", {"seq": 12}),
     {"signature", "tree", "checkpoint", "rebuild", "prev"}, 12),
    ("envelope-payload", lambda s: flip_in_entry(s, 12, PAYLOAD, 40), ("envelope", {"seq": 12}),
     {"envelope", "tree", "checkpoint", "rebuild", "prev"}, 12),
    ("stored-batch-event", lambda s: edit_event(s, "batch:H200-1", 3, QUANTITY, '"quantity":99'),
     ("state", {"seq": 12, "stream": stream_id("batch", "H200-1").hex, "version": 3}),
     {"state"}, 12),
    # The store's registry no longer names nvidia's key: phase 1 cannot check nvidia's
    # signatures, phase 2 finds the key in the entries and checks them here.
    ("stored-party-event", lambda s: edit_event(s, "party:nvidia", 1, NVIDIA_KEY, OTHER_KEY),
     ("state", {"seq": 1, "stream": stream_id("party", "nvidia").hex, "version": 1}),
     {"state"}, 1),
    ("checkpoint-root", lambda s: flip_checkpoint(s, 13, 2), ("checkpoint", {"size": 13}),
     {"checkpoint"}, None),
    ("checkpoint-signature", lambda s: flip_checkpoint(s, 13, 4), ("checkpoint", {"size": 13}),
     {"checkpoint"}, None),
    ("tree-leaf", sql("UPDATE ledger_tree SET hash = zeroblob(32) WHERE idx = ?", LEAF_12),
     ("tree", {"index": LEAF_12, "seq": 12}), {"tree"}, 12),
    ("tree-node", sql("UPDATE ledger_tree SET hash = zeroblob(32) WHERE idx = ?", NODE_4_7),
     ("tree", {"index": NODE_4_7, "seq": 4}), {"tree"}, 4),
    ("event-id-row", sql("UPDATE ledger_event_ids SET digest = '0' WHERE seq = 12"),
     ("index", {"seq": 12}), {"index"}, 12),
    ("signatures-index-row", sql("DELETE FROM ledger_signatures WHERE seq = 12"),
     ("index", {"seq": 12}), {"index"}, 12),
    ("read-model-batch-row", sql("UPDATE rm_batch_log SET quantity = 99 WHERE seq = 12"),
     ("read model", {"seq": 12}), {"read model"}, 12),
    ("read-model-involvement",
     sql("DELETE FROM rm_involved WHERE party = 'nvidia' AND batch = 'H200-1'"),
     ("read model", {}), {"read model"}, None),
    ("deleted-entry", sql(DELETE_ENTRY, 12),
     ("entry", {"seq": 12}), {"entry", "tree", "checkpoint", "rebuild", "prev"}, 12),
    ("deleted-last-entry", sql(DELETE_ENTRY, 17),
     ("checkpoint", {"seq": 17, "size": 18}),
     {"tree", "checkpoint", "state", "index", "read model"}, 17),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "expected", "raised", "first"),
                         [pytest.param(*case[1:], id=case[0]) for case in EDITS])  # fmt: skip
def test_each_edit_to_the_store_is_named_with_the_first_bad_seq(
    sqlite_told: str,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[str], None],
    expected: tuple[str, dict[str, Any]],
    raised: set[str],
    first: int | None,
) -> None:
    edit(sqlite_told)
    report = audit(sqlite_told, workers=0)
    assert found(report, expected[0], **expected[1]), report.problems
    assert (kinds(report), report.first_bad_seq) == (raised, first)
    code, out, _ = run(capsys, "audit", "--store", sqlite_told)
    assert code == 1
    assert f"the first bad seq: {'none' if first is None else first}" in out


def test_a_changed_stored_event_is_named_down_to_its_field(sqlite_told: str) -> None:
    edit_event(sqlite_told, "batch:H200-1", 3, QUANTITY, '"quantity":99')
    (problem,) = audit(sqlite_told, workers=0).problems
    assert "BatchDelivered" in problem.message
    assert "fact.quantity is 99 in the store, 100 rebuilt" in problem.message


# -- keys revoked ---------------------------------------------------------------------------


def resigned(envelope_text: str, key: Signer) -> str:
    """The same payload, signed by `key` alone, as canonical JSON."""
    payload = base64.b64decode(json.loads(envelope_text)["payload"])
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    value = {"payload": b64encode(payload), "payloadType": PAYLOAD_TYPE,
             "signatures": [{"keyid": key.key_id, "sig": b64encode(signature)}]}  # fmt: skip
    return canonical(value).decode()


def test_a_revoked_key_leaves_earlier_entries_valid_and_is_named_where_it_signs_after(
    sqlite_told: str,
) -> None:
    assert audit(sqlite_told, workers=0).ok  # seqs 9 and 10, signed before the revocation

    def swap(state: str) -> str:
        entry = json.loads(state)
        entry["envelope"] = resigned(entry["envelope"], NEW_KEY)  # by nvidia#2, revoked at 11
        return json.dumps(entry, separators=(",", ":"))

    rewrite(sqlite_told, ENTRY_STATE, (SEQ["late"],), swap)
    report = audit(sqlite_told, workers=0)
    (key,) = found(report, "key")
    assert key.seq == report.first_bad_seq == SEQ["late"]
    assert f"{NEW_KEY.key_id} of 'nvidia'" in key.message
    assert f"revoked at seq {SEQ['revoked']}" in key.message
    assert "signature" not in report.counts  # it verifies: only the key was not in force
    assert found(report, "rebuild", seq=SEQ["late"])


# -- the ledger's own tables, on both databases ---------------------------------------------


def execute(store: str, *statements: str) -> None:
    """Run statements on the store's tables, bypassing the ledger (PostgreSQL: its schema)."""
    if "://" not in store:
        with contextlib.closing(sqlite3.connect(store)) as db, db:
            for statement in statements:
                assert db.execute(statement).rowcount == 1
        return
    import psycopg

    url, _, schema = store.partition("?schema=")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        for statement in statements:
            assert conn.execute(statement).rowcount == 1


def test_rows_of_the_event_id_table_and_the_signatures_index_are_named_with_key_and_seq(
    told: str,
) -> None:
    execute(
        told,
        "INSERT INTO ledger_event_ids VALUES ('4000-none', 5, 'feed')",
        "UPDATE ledger_signatures SET at = at + 1 WHERE seq = 13",
        "UPDATE ledger_event_ids SET seq = 3 WHERE seq = 14",
    )
    report = audit(told, workers=0)
    assert (kinds(report), report.first_bad_seq) == ({"index"}, 3)
    messages = {p.seq: p.message for p in report.problems}
    assert messages[5] == (
        "the event-id table holds the row event_id '4000-none' (seq 5), which the rebuild "
        "does not make"
    )
    assert "the event-id table's row event_id" in messages[3]
    assert "seq is 3 in the store, 14 rebuilt" in messages[3]
    changed = [p.message for p in found(report, "index", seq=13)]
    assert len(changed) == 2  # the store's key is not the rebuild's: one row each way
    assert any(m.startswith("the signatures index holds the row keyid") for m in changed)
    assert any(m.startswith("the signatures index lacks the row keyid") for m in changed)


# -- the scratch directory ------------------------------------------------------------------


class Interrupted(Exception):
    """Stands for anything that ends an audit half way (a ^C, a full disk)."""


def test_the_scratch_directory_is_left_empty_whether_the_audit_holds_fails_or_stops(
    sqlite_told: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen: set[str] = set()

    def look(phase: str, done: int, total: int) -> None:
        seen.update(p.name for d in scratch.iterdir() for p in d.iterdir())

    assert audit(sqlite_told, progress=look, workers=0, scratch=str(scratch)).ok
    assert {"audit.db", "rebuild.db"} <= seen  # the audit did work there
    assert list(scratch.iterdir()) == []

    def interrupt(phase: str, done: int, total: int) -> None:
        look(phase, done, total)
        raise Interrupted

    seen.clear()
    with pytest.raises(Interrupted):
        audit(sqlite_told, progress=interrupt, workers=0, scratch=str(scratch))
    assert {"audit.db", "rebuild.db"} <= seen
    assert list(scratch.iterdir()) == []
    flip_in_entry(sqlite_told, 12, SIG, 20)
    code, out, _ = run(capsys, "audit", "--store", sqlite_told, "--scratch", str(scratch))
    assert (code, "the first bad seq: 12" in out) == (1, True)
    assert list(scratch.iterdir()) == []
    code, _, err = run(capsys, "audit", "--store", sqlite_told, "--scratch", str(tmp_path / "no"))
    assert (code, err) == (1, f"chipledger: there is no directory at {tmp_path / 'no'} for "
                              "the audit's scratch files\n")  # fmt: skip
