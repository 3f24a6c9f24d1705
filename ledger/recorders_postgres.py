"""The PostgreSQL recorder of `ledger.recorders`' tables (that module says what each holds),
apart so that a server of a SQLite store never imports psycopg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from ledger import readstore
from ledger.readmodels import Changes
from ledger.recorders import (
    EVENT_IDS_TABLE,
    CheckpointRow,
    EventIdRow,
    LedgerRecorderBase,
    SessionTokenRow,
    SignatureRow,
    StoredKey,
    StoredRow,
    TreeRow,
)


class PostgresLedgerRecorder(PostgresApplicationRecorder, LedgerRecorderBase):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.dialect = readstore.Dialect(postgres=True, schema=datastore.schema)
        table = Identifier(datastore.schema, EVENT_IDS_TABLE)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {table} (event_id text PRIMARY KEY, "
                "seq bigint NOT NULL, digest text NOT NULL)"
            ).format(table=table)
        )
        self._insert_event_ids = SQL("INSERT INTO {table} VALUES (%s, %s, %s)").format(table=table)
        signed = Identifier(datastore.schema, "ledger_signatures")
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {table} (keyid text NOT NULL, at bigint NOT NULL, "
                "seq bigint NOT NULL, PRIMARY KEY (keyid, at, seq))"
            ).format(table=signed)
        )
        self._insert_signature = SQL(
            "INSERT INTO {table} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
        ).format(table=signed)
        self._select_signed = SQL(
            "SELECT seq FROM {table} WHERE keyid = %s AND at > %s ORDER BY seq"
        ).format(table=signed)
        self._has_signature = SQL(
            "SELECT 1 FROM {table} WHERE keyid = %s AND at = %s AND seq = %s"
        ).format(table=signed)
        self._backfill_event_ids = SQL(
            "INSERT INTO {table} VALUES (%s, %s, %s) ON CONFLICT (event_id) DO NOTHING"
        ).format(table=table)
        self._select_event_ids = SQL(
            "SELECT event_id, seq, digest FROM {table} WHERE event_id = ANY(%s)"
        ).format(table=table)
        tree, checkpoints = (Identifier(datastore.schema, name)
                             for name in ("ledger_tree", "ledger_checkpoints"))  # fmt: skip
        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {table} (idx bigint PRIMARY KEY, hash bytea NOT NULL)"
            ).format(table=tree),
            SQL(
                "CREATE TABLE IF NOT EXISTS {table} (size bigint PRIMARY KEY, note text NOT NULL)"
            ).format(table=checkpoints),
        ]
        self._insert_tree = SQL("INSERT INTO {t} VALUES (%s, %s)").format(t=tree)
        self._backfill_tree = SQL("INSERT INTO {t} VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
            t=tree
        )
        self._select_tree = SQL("SELECT idx, hash FROM {t} WHERE idx = ANY(%s)").format(t=tree)
        self._count_tree = SQL("SELECT COALESCE(MAX(idx) + 1, 0) AS n FROM {t}").format(t=tree)
        self._count_tree_rows = SQL("SELECT COUNT(*) AS n FROM {t}").format(t=tree)
        self._insert_checkpoint = SQL("INSERT INTO {t} VALUES (%s, %s)").format(t=checkpoints)
        self._backfill_checkpoint = SQL(
            "INSERT INTO {t} VALUES (%s, %s) ON CONFLICT DO NOTHING"
        ).format(t=checkpoints)
        self._select_checkpoints = SQL(
            "SELECT size, note FROM {t} WHERE size > %s ORDER BY size LIMIT %s"
        ).format(t=checkpoints)
        self._latest_checkpoint = SQL(
            "SELECT size, note FROM {t} ORDER BY size DESC LIMIT 1"
        ).format(t=checkpoints)
        session_ids, sessions = (Identifier(datastore.schema, name)
                                 for name in ("ledger_session_ids", "ledger_sessions"))  # fmt: skip
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {t} (event_id text PRIMARY KEY)").format(t=session_ids),
            SQL(
                "CREATE TABLE IF NOT EXISTS {t} (token_hash text PRIMARY KEY, party text NOT "
                "NULL, keyid text NOT NULL, expires bigint NOT NULL)"
            ).format(t=sessions),
        ]
        self._insert_session_id = SQL("INSERT INTO {t} VALUES (%s)").format(t=session_ids)
        self._insert_session = SQL("INSERT INTO {t} VALUES (%s, %s, %s, %s)").format(t=sessions)
        self._select_session = SQL(
            "SELECT party, keyid, expires FROM {t} WHERE token_hash = %s"
        ).format(t=sessions)
        self._session_id_used = SQL("SELECT 1 FROM {t} WHERE event_id = %s").format(t=session_ids)
        self.sql_create_statements += [SQL(s) for s in self.dialect.ddl()]  # type: ignore[misc]  # our own text

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        # Servers opening one store at once would race on the library's CREATE OR REPLACE
        # FUNCTION and fail to start ("tuple concurrently updated"): one at a time per schema,
        # the lock held until this transaction ends.
        curs.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"chipledger {self.datastore.schema}",)
        )
        super()._create_table(curs)

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        event_ids: Sequence[EventIdRow] = (),
        signatures: Sequence[SignatureRow] = (),
        tree: Sequence[TreeRow] = (),
        checkpoint: CheckpointRow | None = None,
        reads: Changes | None = None,
        **kwargs: Any,
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        # The library locks its events table before its insert; take that lock first, so
        # that every writer holds it before touching these tables and none deadlocks.
        self._lock_table(curs)
        if event_ids:
            curs.executemany(self._insert_event_ids, event_ids)
        if signatures:
            curs.executemany(self._insert_signature, signatures)
        if tree:
            curs.executemany(self._insert_tree, tree)
        if checkpoint is not None:
            curs.execute(self._insert_checkpoint, checkpoint)
        if reads is not None:
            readstore.write(curs, self.dialect, reads)

    def backfill_event_ids(
        self, rows: Sequence[EventIdRow], signatures: Sequence[SignatureRow] = ()
    ) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(self._backfill_event_ids, rows)
            if signatures:
                curs.executemany(self._insert_signature, signatures)

    def signed_after(self, keyid: str, after: int) -> list[int]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_signed, (keyid, after))
            return [row["seq"] for row in curs.fetchall()]

    def has_signature(self, row: SignatureRow) -> bool:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._has_signature, row)
            return curs.fetchone() is not None

    def select_event_ids(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        if not ids:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_event_ids, (list(ids),))
            return {row["event_id"]: (row["seq"], row["digest"]) for row in curs.fetchall()}

    def select_tree(self, indexes: Sequence[int]) -> dict[int, bytes]:
        if not indexes:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_tree, (list(indexes),))
            return {row["idx"]: bytes(row["hash"]) for row in curs.fetchall()}

    def tree_size_stored(self, exact: bool = False) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._count_tree_rows if exact else self._count_tree)
            row = curs.fetchone()
            assert row is not None
            return int(row["n"])

    def write_log(self, tree: Sequence[TreeRow], checkpoint: CheckpointRow | None) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)  # the writers' lock order (see _insert_events)
            if tree:
                curs.executemany(self._backfill_tree, tree)
            if checkpoint is not None:
                curs.execute(self._backfill_checkpoint, checkpoint)

    def checkpoints(self, after: int = -1, limit: int = 1_000) -> list[CheckpointRow]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_checkpoints, (after, limit))
            return [(row["size"], row["note"]) for row in curs.fetchall()]

    def latest_checkpoint(self) -> CheckpointRow | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._latest_checkpoint)
            row = curs.fetchone()
            return None if row is None else (row["size"], row["note"])

    # -- reads for `ledger.audit`, page by page in key order; they change nothing ------------

    def _page(self, query: Composed, params: Sequence[Any]) -> list[DictRow]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(query, params)
            return curs.fetchall()

    def stored_events_after(self, after: StoredKey | None, limit: int) -> list[StoredRow]:
        """Stored events ordered by (originator id, version), from after `after`; a uuid
        orders as its hex text does."""
        events = Identifier(self.datastore.schema, self.events_table_name)
        where = SQL("WHERE (originator_id, originator_version) > (%s, %s) " if after else "")
        query = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {t} {where}"
            "ORDER BY originator_id, originator_version LIMIT %s"
        ).format(t=events, where=where)
        params = [] if after is None else [UUID(after[0]), after[1]]
        rows = self._page(query, [*params, limit])
        return [
            (UUID(str(r["originator_id"])).hex, r["originator_version"], r["topic"],
             bytes(r["state"]))
            for r in rows
        ]  # fmt: skip

    def tree_rows(self, start: int, limit: int) -> list[TreeRow]:
        tree = Identifier(self.datastore.schema, "ledger_tree")
        query = SQL("SELECT idx, hash FROM {t} WHERE idx >= %s ORDER BY idx LIMIT %s")
        rows = self._page(query.format(t=tree), (start, limit))
        return [(row["idx"], bytes(row["hash"])) for row in rows]

    def event_id_rows(self, after: str, limit: int) -> list[EventIdRow]:
        ids = Identifier(self.datastore.schema, EVENT_IDS_TABLE)
        query = SQL(
            "SELECT event_id, seq, digest FROM {t} WHERE event_id > %s ORDER BY event_id LIMIT %s"
        )
        rows = self._page(query.format(t=ids), (after, limit))
        return [(row["event_id"], row["seq"], row["digest"]) for row in rows]

    def signature_rows(self, after: SignatureRow | None, limit: int) -> list[SignatureRow]:
        signed = Identifier(self.datastore.schema, "ledger_signatures")
        where = SQL("WHERE (keyid, at, seq) > (%s, %s, %s) " if after else "")
        query = SQL("SELECT keyid, at, seq FROM {t} {where}ORDER BY keyid, at, seq LIMIT %s")
        rows = self._page(query.format(t=signed, where=where), [*(after or ()), limit])
        return [(row["keyid"], row["at"], row["seq"]) for row in rows]

    def open_session(self, event_id: str, token_hash: str, row: SessionTokenRow) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._insert_session_id, (event_id,))
            curs.execute(self._insert_session, (token_hash, *row))

    def select_session(self, token_hash: str) -> SessionTokenRow | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._select_session, (token_hash,))
            found = curs.fetchone()
            return None if found is None else (found["party"], found["keyid"], found["expires"])

    def session_id_used(self, event_id: str) -> bool:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._session_id_used, (event_id,))
            return curs.fetchone() is not None
