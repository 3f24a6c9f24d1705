"""The library's application recorders, each with one table of its own: accepted event ids.

A second table, `ledger_signatures`, indexes every accepted envelope by the key ids that
signed it and its `at`, so that revoking a compromised key finds what that key signed since
without reading the log (`signed_after`).

Two more tables hold the transparency log of PROTOCOL.md section 8: `ledger_tree`, the stored
hashes of the RFC 6962 tree (`ledger.merkle`, one row per stored-hash index), and
`ledger_checkpoints`, every checkpoint signed, by tree size. Both are written in the
transaction that accepts the entries they cover.

An event id names one event forever (PROTOCOL.md section 5, "repeat"). Each accepted
envelope writes a row `(event_id, seq, digest)` in the same transaction as its stored events:
`Application.save(..., event_ids=[...])` hands the rows to `_insert_events`, which the library
calls inside that transaction. The primary key refuses a second row for an id, so two writers
can never both accept it; a lookup of many ids is one query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from ledger import readstore
from ledger.readmodels import Changes

if TYPE_CHECKING:
    from ledger.recorders_postgres import PostgresLedgerRecorder

EventIdRow = tuple[str, int, str]  # event id, the seq that accepted it, its payload digest
EVENT_IDS_TABLE = "ledger_event_ids"
_INSERT_ID = "INSERT INTO ledger_event_ids VALUES (?,?,?)"
_BACKFILL_ID = "INSERT OR IGNORE INTO ledger_event_ids VALUES (?,?,?)"
_SELECT_IDS = "SELECT event_id, seq, digest FROM ledger_event_ids WHERE event_id IN "
SignatureRow = tuple[str, int, int]  # key id, the signed event's `at` (µs since 1970), seq
_INSERT_SIGNATURE = "INSERT OR IGNORE INTO ledger_signatures VALUES (?,?,?)"
_SELECT_SIGNED = "SELECT seq FROM ledger_signatures WHERE keyid=? AND at>? ORDER BY seq"
TreeRow = tuple[int, bytes]  # stored-hash index, hash
SessionTokenRow = tuple[str, str, int]  # party, key id, expiry (µs since 1970)
CheckpointRow = tuple[int, str]  # tree size, the signed note
_INSERT_TREE = "INSERT INTO ledger_tree VALUES (?,?)"
_SELECT_TREE = "SELECT idx, hash FROM ledger_tree WHERE idx IN "
_INSERT_CHECKPOINT = "INSERT INTO ledger_checkpoints VALUES (?,?)"
StoredKey = tuple[str, int]  # originator id (32 lowercase hex), version
StoredRow = tuple[str, int, str, bytes]  # originator id, version, topic, state
_AFTER_KEY = "WHERE (originator_id, originator_version) > (?, ?) "


class LedgerRecorderBase:
    """What both of the ledger's recorders are (`PostgresLedgerRecorder`, in
    `ledger.recorders_postgres`, and `SQLiteLedgerRecorder`): `ours` tells them apart from the
    library's own at run time, without importing psycopg."""


Recorder: TypeAlias = "SQLiteLedgerRecorder | PostgresLedgerRecorder"


def ours(recorder: object) -> Recorder:
    """`recorder`, which must be one of the ledger's (the store's factory makes no other)."""
    assert isinstance(recorder, LedgerRecorderBase), f"{type(recorder).__name__} is not ours"
    return cast("Recorder", recorder)


class SQLiteLedgerRecorder(SQLiteApplicationRecorder, LedgerRecorderBase):
    dialect = readstore.Dialect(postgres=False)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *self.dialect.ddl(),
            f"CREATE TABLE IF NOT EXISTS {EVENT_IDS_TABLE} (event_id TEXT PRIMARY KEY, "
            "seq INTEGER NOT NULL, digest TEXT NOT NULL) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS ledger_signatures (keyid TEXT NOT NULL, "
            "at INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (keyid, at, seq)) "
            "WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS ledger_tree (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL)",
            "CREATE TABLE IF NOT EXISTS ledger_checkpoints (size INTEGER PRIMARY KEY, "
            "note TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS ledger_session_ids (event_id TEXT PRIMARY KEY) "
            "WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS ledger_sessions (token_hash TEXT PRIMARY KEY, "
            "party TEXT NOT NULL, keyid TEXT NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID",
        ]

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        event_ids: Sequence[EventIdRow] = (),
        signatures: Sequence[SignatureRow] = (),
        tree: Sequence[TreeRow] = (),
        checkpoint: CheckpointRow | None = None,
        reads: Changes | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # One executemany, not the library's execute per row: within the transaction's
        # write lock the new rows take consecutive rowids, ending at last_insert_rowid().
        c.executemany(
            self.insert_events_statement,
            [
                (s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                 s.originator_version, s.topic, s.state)
                for s in stored_events
            ],
        )  # fmt: skip
        c.execute("SELECT last_insert_rowid()")
        last = c.fetchone()[0]
        if event_ids:
            c.executemany(_INSERT_ID, event_ids)
        if signatures:
            c.executemany(_INSERT_SIGNATURE, signatures)
        if tree:
            c.executemany(_INSERT_TREE, tree)
        if checkpoint is not None:
            c.execute(_INSERT_CHECKPOINT, checkpoint)
        if reads is not None:
            readstore.write(c, self.dialect, reads)
        return list(range(last - len(stored_events) + 1, last + 1))

    def backfill_event_ids(
        self, rows: Sequence[EventIdRow], signatures: Sequence[SignatureRow] = ()
    ) -> None:
        """Rows for entries stored before these tables existed (one transaction; none twice)."""
        with self.datastore.transaction(commit=True) as c:
            c.executemany(_BACKFILL_ID, rows)
            c.executemany(_INSERT_SIGNATURE, signatures)

    def signed_after(self, keyid: str, after: int) -> list[int]:
        """The seqs of the entries signed by `keyid` whose `at` is after `after` (µs)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(_SELECT_SIGNED, (keyid, after))
            return [row["seq"] for row in c.fetchall()]

    def has_signature(self, row: SignatureRow) -> bool:
        """Whether the signatures index holds this row (one lookup of its key)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT 1 FROM ledger_signatures WHERE keyid=? AND at=? AND seq=?", row)
            return c.fetchone() is not None

    def select_event_ids(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """(seq, digest) of each of `ids` that was accepted."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))  # placeholders only: the ids are parameters
        with self.datastore.transaction(commit=False) as c:
            c.execute(_SELECT_IDS + f"({marks})", list(ids))
            return {row["event_id"]: (row["seq"], row["digest"]) for row in c.fetchall()}

    def select_tree(self, indexes: Sequence[int]) -> dict[int, bytes]:
        """The stored hashes at `indexes` that exist."""
        if not indexes:
            return {}
        marks = ",".join("?" * len(indexes))
        with self.datastore.transaction(commit=False) as c:
            c.execute(_SELECT_TREE + f"({marks})", list(indexes))
            return {row["idx"]: bytes(row["hash"]) for row in c.fetchall()}

    def tree_size_stored(self, exact: bool = False) -> int:
        """How many stored hashes the tree table holds: its highest index + 1, which a table
        with gaps overstates, or (`exact`) its rows counted one by one."""
        count = "COUNT(*)" if exact else "COALESCE(MAX(idx) + 1, 0)"
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT {count} AS n FROM ledger_tree")  # noqa: S608 (no input)
            return int(c.fetchone()["n"])

    def write_log(self, tree: Sequence[TreeRow], checkpoint: CheckpointRow | None) -> None:
        """Rows for a store written before the tree existed, or a checkpoint signed on
        demand (one transaction; a row already there is left as it is)."""
        with self.datastore.transaction(commit=True) as c:
            c.executemany("INSERT OR IGNORE INTO ledger_tree VALUES (?,?)", tree)
            if checkpoint is not None:
                c.execute("INSERT OR IGNORE INTO ledger_checkpoints VALUES (?,?)", checkpoint)

    def checkpoints(self, after: int = -1, limit: int = 1_000) -> list[CheckpointRow]:
        """Signed checkpoints of tree sizes above `after`, smallest first."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT size, note FROM ledger_checkpoints WHERE size > ? ORDER BY size LIMIT ?",
                (after, limit),
            )
            return [(row["size"], row["note"]) for row in c.fetchall()]

    def open_session(self, event_id: str, token_hash: str, row: SessionTokenRow) -> None:
        """Keep a session: its request's id (never to be used again) and its token's hash,
        in one transaction; IntegrityError if the id was used before."""
        with self.datastore.transaction(commit=True) as c:
            c.execute("INSERT INTO ledger_session_ids VALUES (?)", (event_id,))
            c.execute("INSERT INTO ledger_sessions VALUES (?,?,?,?)", (token_hash, *row))

    def select_session(self, token_hash: str) -> SessionTokenRow | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT party, keyid, expires FROM ledger_sessions WHERE token_hash = ?",
                (token_hash,),
            )
            found = c.fetchone()
            return None if found is None else (found["party"], found["keyid"], found["expires"])

    def session_id_used(self, event_id: str) -> bool:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT 1 FROM ledger_session_ids WHERE event_id = ?", (event_id,))
            return c.fetchone() is not None

    def latest_checkpoint(self) -> CheckpointRow | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT size, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
            row = c.fetchone()
            return None if row is None else (row["size"], row["note"])

    # -- reads for `ledger.audit`, page by page in key order; they change nothing ------------

    def stored_events_after(self, after: StoredKey | None, limit: int) -> list[StoredRow]:
        """Stored events ordered by (originator id, version), from after `after`."""
        where, params = ("", []) if after is None else (_AFTER_KEY, [after[0], after[1]])
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT originator_id, originator_version, topic, state FROM "  # noqa: S608
                f"{self.events_table_name} {where}ORDER BY originator_id, originator_version "
                "LIMIT ?",  # the table's name is the recorder's own, `where` one of two texts
                [*params, limit],
            )
            return [(str(r[0]), r[1], r[2], bytes(r[3])) for r in c.fetchall()]

    def tree_rows(self, start: int, limit: int) -> list[TreeRow]:
        """Stored hashes of the tree from index `start` on, by index."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT idx, hash FROM ledger_tree WHERE idx >= ? ORDER BY idx LIMIT ?",
                (start, limit),
            )
            return [(row[0], bytes(row[1])) for row in c.fetchall()]

    def event_id_rows(self, after: str, limit: int) -> list[EventIdRow]:
        """Rows of the event-id table, by event id, from after `after`."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT event_id, seq, digest FROM ledger_event_ids WHERE event_id > ? "
                "ORDER BY event_id LIMIT ?",
                (after, limit),
            )
            return [(row[0], row[1], row[2]) for row in c.fetchall()]

    def signature_rows(self, after: SignatureRow | None, limit: int) -> list[SignatureRow]:
        """Rows of the signatures index, by (key id, at, seq), from after `after`."""
        where = "" if after is None else "WHERE (keyid, at, seq) > (?, ?, ?) "
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT keyid, at, seq FROM ledger_signatures {where}"  # noqa: S608
                "ORDER BY keyid, at, seq LIMIT ?",  # `where` is one of two texts
                [*(after or ()), limit],
            )
            return [(row[0], row[1], row[2]) for row in c.fetchall()]
