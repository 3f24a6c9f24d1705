"""Tables of the audited store compared, row by row, with the same tables of the rebuild.

Each table in `TABLES` is read from both databases a page at a time in the order of its key,
and the two ordered streams are merged: a row only the store holds, a row only the rebuild
makes, and a row that differs are each reported with the table, the key and, where the
table has a `seq` column, that seq. Nothing is held but a page of each side, whatever the
table's size. The SQL runs on SQLite and on PostgreSQL (tables qualified with the store's
schema); text keys are ordered by their bytes on both (`COLLATE "C"` on PostgreSQL), as
Python orders them.

To compare another table, list it in `TABLES` with the columns of its primary key: the key
must be unique and never NULL, a text key in SQLite's default (bytewise) collation, and the
store and the rebuild must have the same columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from psycopg.sql import SQL, Composed, Identifier

from ledger.audit_report import AuditReport
from ledger.readstore import KEYS
from ledger.readstore import TABLES as READ_MODEL_TABLES

Datastore = SQLiteDatastore | PostgresDatastore
Row = tuple[Any, ...]
Covers = Callable[[int | None], bool]
"""Whether the rebuild says what the entry at a seq wrote (None: a row naming no entry)."""
PAGE = 2000
_PG_TEXT = {"text", "character varying", "character"}
_PG_COLUMNS = (
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"
)


@dataclass(frozen=True)
class Table:
    """A table compared with the rebuild's: its name, its key's columns, the kind of problem
    a difference in it is, and what reports call it."""

    name: str
    key: tuple[str, ...]
    what: str = "table"
    title: str = ""

    @property
    def called(self) -> str:
        return self.title or f"table {self.name}"


TABLES: tuple[Table, ...] = (
    Table("ledger_event_ids", ("event_id",), "index", "event-id table"),
    Table("ledger_signatures", ("keyid", "at", "seq"), "index", "signatures index"),
    # The read models (`ledger.readstore`), each by its primary key.
    *(Table(name, KEYS[name], "read model") for name in READ_MODEL_TABLES),
)


def compare_tables(
    store: Datastore,
    rebuilt: Datastore,
    covers: Covers,
    report: AuditReport,
    tables: Sequence[Table] = TABLES,
) -> None:
    """Each of `tables` in the store against the rebuild's."""
    for table in tables:
        compare_table(store, rebuilt, table, covers, report)


def compare_table(
    store: Datastore, rebuilt: Datastore, table: Table, covers: Covers, report: AuditReport
) -> None:
    """One table, merged in key order: a row beyond what the rebuild covers is left out."""
    columns, theirs = _columns(store, table.name), _columns(rebuilt, table.name)
    if not columns or list(columns) != list(theirs) or not set(table.key) <= set(columns):
        found, made = ", ".join(columns) or "none", ", ".join(theirs) or "none"
        message = f"the {table.called} has the columns ({found}), the rebuild's ({made})"
        report.add(table.what, f"{message}: it is not compared, by {', '.join(table.key)}")
        return
    order = [*table.key, *(name for name in columns if name not in table.key)]
    at = order.index("seq") if "seq" in order else None
    rows = (_rows(store, table, order, columns), _rows(rebuilt, table, order, theirs))
    for difference in merged(*rows, len(table.key)):
        pair = (difference.stored, difference.rebuilt)
        seqs = [_seq(row, at) for row in pair if row is not None]
        if covers(seqs[0]):  # the store's row's, unless it has none
            seq = min((s for s in seqs if s is not None), default=None)
            report.add(table.what, _message(table, order, difference, seq), seq=seq)


@dataclass(frozen=True)
class Difference:
    """A row only the store holds (`rebuilt` None), only the rebuild makes (`stored` None),
    or one key whose rows differ."""

    stored: Row | None
    rebuilt: Row | None

    @property
    def kind(self) -> str:
        return "missing" if self.stored is None else "extra" if self.rebuilt is None else "differs"

    @property
    def row(self) -> Row:
        found = self.stored if self.stored is not None else self.rebuilt
        assert found is not None
        return found


def merged(theirs: Iterator[Row], ours: Iterator[Row], width: int) -> Iterator[Difference]:
    """The differences of two row streams, the store's and the rebuild's, each ordered by
    its first `width` values (the key)."""
    a, b = next(theirs, None), next(ours, None)
    while a is not None or b is not None:
        first = _first(a, b, width)
        if first < 0:
            yield Difference(a, None)
            a = next(theirs, None)
        elif first > 0:
            yield Difference(None, b)
            b = next(ours, None)
        else:
            if a != b:
                yield Difference(a, b)
            a, b = next(theirs, None), next(ours, None)


def _seq(row: Row, at: int | None) -> int | None:
    value = None if at is None else row[at]
    return value if isinstance(value, int) else None


def _first(a: Row | None, b: Row | None, width: int) -> int:
    """-1 if `a` comes first (or `b` is done), 1 if `b` does, 0 for one key."""
    if a is None or b is None:
        return -1 if b is None else 1
    left, right = a[:width], b[:width]
    if left == right:
        return 0
    if any(type(x) is not type(y) or x is None for x, y in zip(left, right, strict=True)):
        left, right = _ordered(left), _ordered(right)
    return -1 if left < right else 1


def _ordered(values: Row) -> tuple[tuple[int, Any], ...]:
    """Values as SQLite orders mixed types: NULL, numbers, text, then blobs."""
    rank = {type(None): 0, bool: 1, int: 1, float: 1, str: 2, bytes: 3}
    return tuple((rank.get(type(v), 4), 0 if v is None else v) for v in values)


def _message(table: Table, order: list[str], found: Difference, seq: int | None) -> str:
    width = len(table.key)
    key = ", ".join(f"{k} {_short(v)}" for k, v in zip(table.key, found.row[:width], strict=True))
    row = f"row {key}" + ("" if seq is None or "seq" in table.key else f" (seq {seq})")
    if found.rebuilt is None:
        return f"the {table.called} holds the {row}, which the rebuild does not make"
    if found.stored is None:
        return f"the {table.called} lacks the {row}, which the rebuild makes"
    changed = [
        f"{name} is {_short(mine)} in the store, {_short(theirs)} rebuilt"
        for name, mine, theirs in zip(order, found.stored, found.rebuilt, strict=True)
        if mine != theirs
    ]
    return f"the {table.called}'s {row}: {'; '.join(changed)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- reading, page by page ---------------------------------------------------------------------


def read_table(datastore: Datastore, table: Table) -> Iterator[Row]:
    """Every row of `table`, the key's columns first, in key order."""
    columns = _columns(datastore, table.name)
    order = [*table.key, *(name for name in columns if name not in table.key)]
    return _rows(datastore, table, order, columns)


def _rows(
    datastore: Datastore, table: Table, order: list[str], columns: dict[str, bool]
) -> Iterator[Row]:
    """Every row of `table`, its columns in `order`, in key order, a page at a time."""
    if isinstance(datastore, PostgresDatastore):
        return _streamed(datastore, table, order, columns)
    return _paged(datastore, table, order)


def _streamed(
    datastore: PostgresDatastore, table: Table, order: list[str], columns: dict[str, bool]
) -> Iterator[Row]:
    """PostgreSQL: one query, its rows fetched a page at a time from a server-side cursor.
    Text keys are sorted by their bytes (`COLLATE "C"`), whatever their own collation: that
    costs one sort of the table, where pages of a keyset read would each cost one."""
    keys = SQL(", ").join(
        SQL('{} COLLATE "C"').format(Identifier(k)) if columns[k] else Identifier(k)
        for k in table.key
    )
    query = SQL("SELECT {} FROM {} ORDER BY {}").format(
        SQL(", ").join(map(Identifier, order)), Identifier(datastore.schema, table.name), keys
    )
    with (
        datastore.get_connection() as connection,
        connection.transaction(force_rollback=True),
        connection.cursor(name="chipledger_audit") as cursor,
    ):
        cursor.execute(query)
        while page := cursor.fetchmany(PAGE):
            yield from (tuple(map(_plain, row.values())) for row in page)


def _paged(datastore: SQLiteDatastore, table: Table, order: list[str]) -> Iterator[Row]:
    """SQLite: pages read after the last key of the one before, along the table's primary key
    (its text in the default, bytewise collation, as Python orders it)."""
    keys = ", ".join(map(_quote, table.key))
    select = f"SELECT {', '.join(map(_quote, order))} FROM {_quote(table.name)} "  # noqa: S608
    after = f"WHERE ({keys}) > ({', '.join('?' * len(table.key))}) "
    # Names are quoted identifiers of the schema and of `TABLES`; values are parameters.
    params: list[Any] = []
    while True:
        query = f"{select}{after if params else ''}ORDER BY {keys} LIMIT ?"
        page = [tuple(row) for row in _fetch(datastore, query, [*params, PAGE])]
        yield from page
        if len(page) < PAGE:
            return
        params = list(page[-1][: len(table.key)])


def _plain(value: Any) -> Any:
    """A value as both databases' drivers give it back alike (SQLite's blobs are bytes)."""
    return bytes(value) if isinstance(value, memoryview | bytearray) else value


def _columns(datastore: Datastore, table: str) -> dict[str, bool]:
    """The table's columns in order, each with whether a key on it needs `COLLATE "C"`
    (PostgreSQL text); empty when there is no such table."""
    if isinstance(datastore, PostgresDatastore):
        rows = _fetch(datastore, _PG_COLUMNS, [datastore.schema, table])
        return {row["column_name"]: row["data_type"] in _PG_TEXT for row in rows}
    return {
        row["name"]: False for row in _fetch(datastore, f"PRAGMA table_info({_quote(table)})", [])
    }


def _fetch(datastore: Datastore, query: str | Composed, params: Sequence[Any]) -> list[Any]:
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(query, params)
        found: list[Any] = cursor.fetchall()
        return found


def _quote(name: str) -> str:
    """A SQLite identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'
