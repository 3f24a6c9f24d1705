"""Reads of the read models (`ledger.readstore`'s tables), now or `as_of` a seq or a time.

An `as_of` read takes, for each batch it may concern, the batch's latest change at or before
the bounds (`seq` ≤ N and `at` ≤ T) from `rm_batch_log`'s primary key: its cost is that of a
read of now, whatever the size of the log. The candidates come from an index (a party's
batches from `rm_involved`, a site's or a license's from their indexes). Rows the write path
reads on every envelope (a batch's row, a site's or an owner's counters) are kept in bounded
caches, emptied whenever another writer moved the log on (`clear`).
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

from ledger.asof import AsOf
from ledger.readmodels import BatchRow, Changes, micros
from ledger.readstore import Dialect, batch_row

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
FOREVER = 1 << 62  # no bound on seq or `at`
FLAG_FILTERS = ("rule", "batch", "party", "license", "site")
_LATEST = (
    "SELECT h.* FROM {{rm_batch_log}} h WHERE h.batch IN ({candidates}) AND h.seq = "
    "(SELECT MAX(x.seq) FROM {{rm_batch_log}} x WHERE x.batch = h.batch AND x.seq <= ? "
    "AND x.at <= ?)"
)
_HELD = " AND h.status IN ('delivered', 'installed') AND h.site IS NOT NULL"
_CANDIDATES = {
    "party": "SELECT batch FROM {rm_involved} WHERE party = ?",
    "batch": "?",
    "site": "SELECT batch FROM {rm_batch_log} WHERE site = ?",
    "license": "SELECT batch FROM {rm_batch_log} WHERE license = ?",
    None: "SELECT batch FROM {rm_batch_log}",
}


class LRU(Generic[K, V]):
    """A cache of at most `size` items, the least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


def bounds(as_of: AsOf | None) -> tuple[int, int]:
    """(highest seq, latest `at` in µs) that a read `as_of` includes."""
    if as_of is None:
        return FOREVER, FOREVER
    seq = as_of.seq if as_of.seq is not None else FOREVER
    return seq, micros(as_of.at) if as_of.at is not None else FOREVER


class ReadStore:
    """The read models of one store, as the ledger reads them."""

    def __init__(self, datastore: Any, dialect: Dialect, events_table: str) -> None:
        self.datastore = datastore
        self.dialect = dialect
        self.events_table = events_table
        self.batches: LRU[str, BatchRow] = LRU(20_000)
        self.sites: LRU[str, Counter[str]] = LRU(5_000)
        self.owners: LRU[tuple[str, str], Counter[str]] = LRU(5_000)
        # Streams (UUID.int) the store was seen not to hold: looked up once, not per envelope.
        self.absent: LRU[int, bool] = LRU(100_000)

    def _rows(self, text: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self.dialect.sql(text), list(params))
            return list(cursor.fetchall())

    def create_tables(self) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            for statement in self.dialect.ddl():
                cursor.execute(statement)

    def position(self) -> int:
        """The log size the read models reflect (0 for tables never written)."""
        found = self._rows("SELECT seq FROM {rm_position} WHERE name = 'read_models'", ())
        return int(found[0]["seq"]) if found else 0

    # -- what the write path reads ------------------------------------------------------------

    def batch_row(self, batch: str) -> BatchRow | None:
        found = self.batches.get(batch)
        if found is None:
            rows = self._rows(
                "SELECT * FROM {rm_batch_log} WHERE batch = ? ORDER BY seq DESC LIMIT 1", (batch,)
            )
            if rows:
                found = batch_row(rows[0])
                self.batches.put(batch, found)
        return found

    def site_counts(self, site: str) -> Counter[str]:
        found = self.sites.get(site)
        if found is None:
            rows = self._rows("SELECT name, value FROM {rm_site_counts} WHERE site = ?", (site,))
            found = Counter({row["name"]: int(row["value"]) for row in rows})
            self.sites.put(site, found)
        return found

    def owner_counts(self, owner: str, country: str) -> Counter[str]:
        found = self.owners.get((owner, country))
        if found is None:
            rows = self._rows(
                "SELECT name, value FROM {rm_owner_counts} WHERE owner = ? AND country = ?",
                (owner, country),
            )
            found = Counter({row["name"]: int(row["value"]) for row in rows})
            self.owners.put((owner, country), found)
        return found

    def existing_streams(self, ids: Sequence[UUID]) -> set[UUID]:
        """Which of these event streams hold any event (one query). Each id is one probe of
        the events' primary key that stops at its first row: a `DISTINCT ... IN` let
        PostgreSQL, without statistics (autovacuum off), plan a parallel scan of the whole
        table, 92 ms at 10^6 entries against 1.3 ms."""
        if not ids:
            return set()
        with self.datastore.transaction(commit=False) as cursor:
            if self.dialect.postgres:
                table = f'"{self.dialect.schema}".{self.events_table}'
                probe = f"SELECT 1 FROM {table} e WHERE e.originator_id = t.id LIMIT 1"  # noqa: S608
                cursor.execute(
                    "SELECT t.id AS originator_id FROM unnest(%s::uuid[]) AS t(id), "  # noqa: S608
                    f"LATERAL ({probe}) AS hit",
                    (list(ids),),
                )
            else:
                marks = ",".join(["(?)"] * len(ids))
                cursor.execute(
                    f"WITH t(id) AS (VALUES {marks}) SELECT id AS originator_id FROM t "  # noqa: S608
                    f"WHERE EXISTS (SELECT 1 FROM {self.events_table} WHERE originator_id = t.id)",
                    [i.hex for i in ids],
                )
            return {UUID(str(row["originator_id"])) for row in cursor.fetchall()}

    def committed(self, changes: Changes, created: Sequence[UUID] = ()) -> None:
        """Keep the caches equal to the store once `changes` and the streams `created` are
        committed."""
        for stream in created:
            self.absent.items.pop(stream.int, None)
        for batch, row in changes.rows.items():
            self.batches.put(batch, row)
        for site, name, delta in changes.site_deltas():
            if (counts := self.sites.get(site)) is not None:
                _move(counts, name, delta)
        for owner, country, name, delta in changes.owner_deltas():
            if (counts := self.owners.get((owner, country))) is not None:
                _move(counts, name, delta)

    def clear(self) -> None:
        """Another writer moved the log on: read everything from the tables again."""
        self.batches = LRU(self.batches.size)
        self.sites = LRU(self.sites.size)
        self.owners = LRU(self.owners.size)
        self.absent = LRU(self.absent.size)

    # -- what reads ask ---------------------------------------------------------------------------

    def serial(self, serial: str, as_of: AsOf | None = None) -> str | None:
        """The batch that holds a serial (now, or as of), never a split parent."""
        seq, at = bounds(as_of)
        rows = self._rows(
            "SELECT batch FROM {rm_serials} WHERE serial = ? AND seq <= ? AND at <= ? "
            "ORDER BY seq DESC LIMIT 1",
            (serial, seq, at),
        )
        return rows[0]["batch"] if rows else None

    def rows(
        self, about: tuple[str | None, str], as_of: AsOf | None = None, held: bool = False
    ) -> list[BatchRow]:
        """The rows, now or as of, of the batches `about` names: ("party", id) the batches it
        was ever involved with, ("batch"|"site"|"license", id), or (None, "") every batch;
        `held`: only those delivered or installed then."""
        kind, value = about
        params: list[Any] = [value] if kind is not None else []
        text = _LATEST.format(candidates=_CANDIDATES[kind]) + (_HELD if held else "")
        return [batch_row(r) for r in self._rows(text, [*params, *bounds(as_of)])]

    def license_used(self, license_id: str, as_of: AsOf | None) -> int:
        """The chips moved under a license by the entries `as_of` includes."""
        rows = self._rows(
            "SELECT COALESCE(SUM(quantity), 0) AS used FROM {rm_license_uses} "
            "WHERE license = ? AND seq <= ? AND at <= ?",
            (license_id, *bounds(as_of)),
        )
        return int(rows[0]["used"])

    def involved(self, party: str, batches: Sequence[str]) -> bool:
        """Whether the party was ever owner, holder or consignee of any of `batches`."""
        if not batches:
            return False
        marks = ",".join("?" * len(batches))
        return bool(
            self._rows(
                f"SELECT 1 FROM {{rm_involved}} WHERE party = ? AND batch IN ({marks}) "  # noqa: S608
                "LIMIT 1",  # placeholders only
                [party, *batches],
            )
        )

    def flags(self, where: dict[str, str], as_of: AsOf | None = None) -> list[dict[str, Any]]:
        """Stored flags matching every `where` field, raised by entries `as_of` includes."""
        names = [name for name in FLAG_FILTERS if name in where]
        tests = "".join(f"{name} = ? AND " for name in names)
        rows = self._rows(
            f"SELECT body FROM {{rm_flags}} WHERE {tests}seq <= ? AND at <= ? "  # noqa: S608
            "ORDER BY seq, ord",  # `tests` names only columns of FLAG_FILTERS
            [*(where[name] for name in names), *bounds(as_of)],
        )
        return [json.loads(row["body"]) for row in rows]


def _move(counts: Counter[str], name: str, delta: int) -> None:
    if value := counts[name] + delta:
        counts[name] = value
    else:
        counts.pop(name, None)
