"""The read models' tables (`rm_*`), in the store beside the events, one text for both SQL
dialects: their definitions, the writes of a unit's `Changes` (inside the transaction that
stores its entries, see `ledger.recorders`), and the reads the ledger answers from them.

- `rm_batch_log`: every change of each batch, keyed by `(batch, seq)` with its `at`: its
  latest row is its state now, and a batch, an allocation or the time-judged rules `as_of`
  seq N or time T are one lookup of that key per batch, never a replay.
- `rm_involved`: every party a batch ever had as owner, holder or consignee (who reads it).
- `rm_serials`: each serial's changes of batch, keyed by `(serial, seq)`.
- `rm_site_counts`, `rm_owner_counts`: the threshold rules' counters.
- `rm_flags`: every stored finding, with the fields it is filtered by.
- `rm_license_uses`: the chips each citing event moved under a license, by seq and `at`.
- `rm_position`: the log size the tables reflect.
SQLite takes `?` and PostgreSQL `%s`; PostgreSQL's tables are qualified with the store's
schema. Times are whole microseconds since 1970.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from ledger.readmodels import COLUMNS, BatchRow, Changes

TABLES = (
    "rm_batch_log", "rm_involved", "rm_serials", "rm_site_counts",
    "rm_owner_counts", "rm_flags", "rm_license_uses", "rm_position",
)  # fmt: skip
KEYS = {  # each table's key: the order its rows are compared in (rebuild, audit)
    "rm_batch_log": ("batch", "seq"),
    "rm_involved": ("party", "batch"),
    "rm_serials": ("serial", "seq"),
    "rm_site_counts": ("site", "name"),
    "rm_owner_counts": ("owner", "country", "name"),
    "rm_flags": ("seq", "ord"),
    "rm_license_uses": ("license", "seq"),
    "rm_position": ("name",),
}
_BATCH_COLUMNS = (
    "batch TEXT NOT NULL, seq BIGINT NOT NULL, at BIGINT NOT NULL, status TEXT NOT NULL, "
    "owner TEXT NOT NULL, holder TEXT NOT NULL, to_party TEXT, destination TEXT, country TEXT, "
    "site TEXT, model TEXT NOT NULL, quantity BIGINT NOT NULL, license TEXT, "
    "arrived_seq BIGINT, arrived_at BIGINT, share_party TEXT, site_covered INTEGER NOT NULL, "
    "entity_covered INTEGER NOT NULL"
)
_DDL = (
    f"CREATE TABLE IF NOT EXISTS {{rm_batch_log}} ({_BATCH_COLUMNS}, PRIMARY KEY (batch, seq))",
    "CREATE INDEX IF NOT EXISTS rm_batch_log_site ON {rm_batch_log} (site)",
    "CREATE INDEX IF NOT EXISTS rm_batch_log_license ON {rm_batch_log} (license)",
    "CREATE TABLE IF NOT EXISTS {rm_involved} (party TEXT NOT NULL, batch TEXT NOT NULL, "
    "PRIMARY KEY (party, batch))",
    "CREATE TABLE IF NOT EXISTS {rm_serials} (serial TEXT NOT NULL, seq BIGINT NOT NULL, "
    "at BIGINT NOT NULL, batch TEXT, PRIMARY KEY (serial, seq))",
    "CREATE TABLE IF NOT EXISTS {rm_site_counts} (site TEXT NOT NULL, name TEXT NOT NULL, "
    "value BIGINT NOT NULL, PRIMARY KEY (site, name))",
    "CREATE TABLE IF NOT EXISTS {rm_owner_counts} (owner TEXT NOT NULL, country TEXT NOT NULL, "
    "name TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (owner, country, name))",
    "CREATE TABLE IF NOT EXISTS {rm_flags} (seq BIGINT NOT NULL, ord INTEGER NOT NULL, "
    "at BIGINT NOT NULL, rule TEXT NOT NULL, batch TEXT, party TEXT, license TEXT, site TEXT, "
    "body TEXT NOT NULL, PRIMARY KEY (seq, ord))",
    *(
        f"CREATE INDEX IF NOT EXISTS rm_flags_{name} ON {{rm_flags}} ({name}, seq)"
        for name in ("rule", "batch", "party", "license", "site")
    ),
    "CREATE TABLE IF NOT EXISTS {rm_license_uses} (license TEXT NOT NULL, seq BIGINT NOT NULL, "
    "at BIGINT NOT NULL, quantity BIGINT NOT NULL, PRIMARY KEY (license, seq))",
    "CREATE TABLE IF NOT EXISTS {rm_position} (name TEXT NOT NULL PRIMARY KEY, "
    "seq BIGINT NOT NULL)",
)
_MARKS = ", ".join("?" * len(COLUMNS))
_WRITES = {
    "log": f"INSERT INTO {{rm_batch_log}} VALUES ({_MARKS})",  # noqa: S608
    "involved": "INSERT INTO {rm_involved} VALUES (?, ?) ON CONFLICT DO NOTHING",
    # A serial gained and lost at one seq (a split: the parent loses it, a child gains it)
    # is the child's, in whatever order the two arrive.
    "serial": "INSERT INTO {rm_serials} VALUES (?, ?, ?, ?) ON CONFLICT (serial, seq) DO "
    "UPDATE SET batch = COALESCE(excluded.batch, {rm_serials}.batch)",
    "site": "INSERT INTO {rm_site_counts} VALUES (?, ?, ?) ON CONFLICT (site, name) DO UPDATE "
    "SET value = {rm_site_counts}.value + excluded.value",
    "site0": "DELETE FROM {rm_site_counts} WHERE site = ? AND name = ? AND value = 0",
    "owner": "INSERT INTO {rm_owner_counts} VALUES (?, ?, ?, ?) ON CONFLICT (owner, country, "
    "name) DO UPDATE SET value = {rm_owner_counts}.value + excluded.value",
    "owner0": "DELETE FROM {rm_owner_counts} WHERE owner = ? AND country = ? AND name = ? "
    "AND value = 0",
    "flag": "INSERT INTO {rm_flags} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "use": "INSERT INTO {rm_license_uses} VALUES (?, ?, ?, ?)",
    "position": "INSERT INTO {rm_position} VALUES ('read_models', ?) ON CONFLICT (name) DO "
    "UPDATE SET seq = excluded.seq",
}


@dataclass(frozen=True)
class Dialect:
    """How one store spells the read models' SQL: placeholders and table names."""

    postgres: bool
    schema: str = ""

    def sql(self, text: str) -> str:
        names = {t: f'"{self.schema}".{t}' if self.postgres else t for t in TABLES}
        text = text.format(**names)
        return text.replace("?", "%s") if self.postgres else text

    def ddl(self) -> list[str]:
        # An index lives in its table's schema (PostgreSQL): it is named without one. SQLite
        # keeps each table in its primary key's b-tree (one write a row, not two).
        statements = [self.sql(s) for s in _DDL]
        if not self.postgres:
            statements = [s + " WITHOUT ROWID" if " TABLE " in s else s for s in statements]
        return statements


def write(cursor: Any, dialect: Dialect, changes: Changes) -> None:
    """Write a unit's changes with `cursor`, inside the transaction that stores its entries."""
    run = _Runner(cursor, dialect)
    run.many("log", [_values(row) for row in changes.history])
    run.many("involved", sorted(changes.involved))
    run.many("serial", [(s, seq, at, b) for (s, seq), (at, b) in changes.serials.items()])
    sites, owners = changes.site_deltas(), changes.owner_deltas()
    run.many("site", [row for row in sites if row[-1]])
    run.many("site0", [row[:-1] for row in sites])
    run.many("owner", [row for row in owners if row[-1]])
    run.many("owner0", [row[:-1] for row in owners])
    run.many("flag", changes.flags)
    run.many("use", changes.uses)
    if changes.position is not None:
        run.many("position", [(changes.position,)])


@dataclass
class _Runner:
    cursor: Any
    dialect: Dialect

    def many(self, name: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(self.dialect.sql(_WRITES[name]), rows)


_VALUES = attrgetter(*COLUMNS)


def _values(row: BatchRow) -> tuple[Any, ...]:
    """A row's values as both dialects take them (booleans as 0 and 1)."""
    values: tuple[Any, ...] = _VALUES(row)
    return (*values[:-2], int(row.site_covered), int(row.entity_covered))


def batch_row(row: Any) -> BatchRow:
    """A `BatchRow` from a database row of `rm_batch_log`."""
    values = {name: row[name] for name in COLUMNS}
    values["site_covered"] = bool(values["site_covered"])
    values["entity_covered"] = bool(values["entity_covered"])
    return BatchRow(**values)
