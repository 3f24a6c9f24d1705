"""`ledger.audit_tables` compares any table of a store with the rebuild's, merging two reads
in key order: a row only the store holds, a row only the rebuild makes and a row that differs
are each named with the table, the key and its seq, on SQLite and on PostgreSQL (where a text
key ordered by a collation other than its bytes must still merge)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresDatastore, PostgresFactory
from eventsourcing.sqlite import SQLiteFactory
from eventsourcing.utils import Environment

from ledger import audit_tables
from ledger.application import Ledger
from ledger.audit_report import AuditReport
from ledger.audit_scratch import ScratchDatastore
from ledger.audit_tables import Datastore, Table, compare_table, compare_tables
from ledger.persistence import store_env

DEMO = Table("rm_demo", ("name",))
# Byte order, which Python's is: an ICU collation puts "B" last and "a b" before "a-b".
REBUILT = [("B", 5, "v"), ("a", 1, "x"), ("a b", 2, "y"), ("a-b", 3, "z"), ("ab", 4, "w")]
STORED = [("B", 5, "v"), ("a", 1, "x"), ("a b", 2, "changed"), ("a-b", 3, "z"), ("zz", 9, "u")]


@pytest.fixture
def store_datastore(any_store: str) -> Iterator[Datastore]:
    """The datastore of a SQLite file or of a PostgreSQL schema, as the audit reads it."""
    factory = InfrastructureFactory.construct(Environment(Ledger.name, store_env(any_store)))
    assert isinstance(factory, SQLiteFactory | PostgresFactory)
    yield factory.datastore
    factory.close()


def make(datastore: Datastore, rows: list[tuple[Any, ...]], seq: bool = True) -> None:
    """The table rm_demo holding `rows`; on PostgreSQL its key ordered by an ICU collation
    when the server has one."""
    if isinstance(datastore, PostgresDatastore):
        collate = ' COLLATE "und-x-icu"' if has_icu(datastore) else ""
        name, marks = f'"{datastore.schema}".rm_demo', "%s, %s, %s"
    else:
        collate, name, marks = "", "rm_demo", "?, ?, ?"
    second = "seq bigint NOT NULL" if seq else "position bigint NOT NULL"
    with datastore.transaction(commit=True) as cursor:
        cursor.execute(
            f"CREATE TABLE {name} (name text{collate} PRIMARY KEY, {second}, note text NOT NULL)"
        )
        cursor.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)  # noqa: S608 (no input)


def has_icu(datastore: PostgresDatastore) -> bool:
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'")
        return cursor.fetchone() is not None


def report() -> AuditReport:
    return AuditReport("store", "key", True, 1, 0)


def test_a_row_only_the_store_holds_only_the_rebuild_makes_or_changed_is_named(
    store_datastore: Datastore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_tables, "PAGE", 2)  # pages end inside the table
    rebuilt = ScratchDatastore(str(tmp_path / "rebuilt.db"))
    make(store_datastore, STORED)
    make(rebuilt, REBUILT)
    found = report()
    compare_tables(store_datastore, rebuilt, lambda seq: True, found, [DEMO])
    assert found.counts == {"table": 3}
    assert [(p.seq, p.message) for p in found.problems] == [
        (2, "the table rm_demo's row name 'a b' (seq 2): note is 'changed' in the store, "
            "'y' rebuilt"),
        (4, "the table rm_demo lacks the row name 'ab' (seq 4), which the rebuild makes"),
        (9, "the table rm_demo holds the row name 'zz' (seq 9), which the rebuild does not make"),
    ]  # fmt: skip
    rebuilt.close()


def test_rows_the_rebuild_does_not_cover_are_left_out_and_a_table_without_seq_with_them(
    tmp_path: Path,
) -> None:
    store, rebuilt = (ScratchDatastore(str(tmp_path / f"{n}.db")) for n in ("store", "rebuilt"))
    make(store, STORED)
    make(rebuilt, REBUILT)
    found = report()
    compare_table(store, rebuilt, DEMO, lambda seq: seq is not None and seq < 5, found)
    assert [p.seq for p in found.problems] == [2, 4]  # seq 9 is past the rebuild's end
    other, again = (ScratchDatastore(str(tmp_path / f"{n}.db")) for n in ("other", "again"))
    make(other, STORED, seq=False)
    make(again, REBUILT, seq=False)
    found = report()
    compare_table(other, again, DEMO, lambda seq: seq is not None, found)
    assert found.ok  # no row names its entry: after a refused entry, none is compared
    for datastore in (store, rebuilt, other, again):
        datastore.close()


def test_tables_whose_columns_differ_are_named_and_not_merged(tmp_path: Path) -> None:
    store, rebuilt = (ScratchDatastore(str(tmp_path / f"{n}.db")) for n in ("store", "rebuilt"))
    make(store, STORED)
    make(rebuilt, REBUILT, seq=False)
    found = report()
    compare_tables(store, rebuilt, lambda seq: True, found, [DEMO, Table("rm_none", ("id",))])
    assert [p.message for p in found.problems] == [
        "the table rm_demo has the columns (name, seq, note), the rebuild's (name, position, "
        "note): it is not compared, by name",
        "the table rm_none has the columns (none), the rebuild's (none): it is not compared, by id",
    ]
    store.close()
    rebuilt.close()


def test_the_ledgers_own_tables_are_listed_by_their_primary_keys() -> None:
    assert [(t.name, t.key, t.what) for t in audit_tables.TABLES[:2]] == [
        ("ledger_event_ids", ("event_id",), "index"),
        ("ledger_signatures", ("keyid", "at", "seq"), "index"),
    ]
