"""The read models as rows: what one batch change writes to the store's `rm_*` tables.

A batch's change becomes a `BatchRow` (its state now, with what allocations, the threshold
rules and the time-judged rules read) and a row of its history keyed by `seq` and `at`; the
parties newly involved with it; the serials it gained or lost; and the moves of the site and
owner counters. `Changes` gathers them for one unit of work (or one page of a rebuild), to be
written in the transaction that stores the entries. Everything here is pure: the store's
reads and writes are in `ledger.readstore`, and the rebuild from the log in `ledger.rebuild`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.batch import Batch
from ledger.wire import LicenseSpec

HELD = ("delivered", "installed")
TOTAL = "*"
COVERED = "covered"
MODEL = "model:"  # site counters by model: "model:H200"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """A time as whole microseconds since 1970 (exact, unlike a float timestamp)."""
    return (at - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


@dataclass(frozen=True)
class BatchRow:
    """A batch's state after its latest change (`seq`, `at` in µs), as the read models need it.

    `arrived_*` is the change that brought it to its current site (None when at none);
    `share_party` the party whose allocation counts it; `site_covered` / `entity_covered`
    whether its license covers it for the site and entity thresholds (PROTOCOL.md section 7).
    """

    batch: str
    seq: int
    at: int
    status: str
    owner: str
    holder: str
    to_party: str | None
    destination: str | None
    country: str | None
    site: str | None
    model: str
    quantity: int
    license: str | None
    arrived_seq: int | None
    arrived_at: int | None
    share_party: str | None
    site_covered: bool
    entity_covered: bool

    @property
    def held(self) -> bool:
        """Delivered or installed at a site: counted by the site and entity counters."""
        return self.status in HELD and self.site is not None and self.country is not None

    @property
    def parties(self) -> set[str]:
        return {p for p in (self.owner, self.holder, self.to_party) if p is not None}


COLUMNS = tuple(BatchRow.__dataclass_fields__)


def share_party(status: str, owner: str, to: str | None, dest: str | None, country: str | None
                ) -> str | None:  # fmt: skip
    """Whose allocation counts a batch: the consignee's while in transit (under its
    destination), the owner's while delivered or installed (PROTOCOL.md section 6)."""
    if status == "in_transit" and to and dest:
        return to
    if status in HELD and country:
        return owner
    return None


Terms = Callable[[str, int], LicenseSpec | None]  # license id, as of seq -> its terms if granted


def row_of(batch: Batch, before: BatchRow | None, operator: str | None, terms: Terms) -> BatchRow:
    """The row of a batch after its latest event, given its row before it (None if new)."""
    held = batch.status in HELD and batch.site is not None and batch.country is not None
    arrived: tuple[int | None, int | None] = (None, None)
    if held and before is not None and before.held and before.site == batch.site:
        arrived = (before.arrived_seq, before.arrived_at)
    elif held:
        arrived = (batch.last_seq, micros(batch.last_at))
    found = terms(batch.license, batch.last_seq) if held and batch.license else None
    site_covered = (
        found is not None
        and batch.country in found.destinations
        and operator is not None
        and operator in found.consignees
    )
    entity_covered = (
        found is not None
        and found.conditions.security_guarantee
        and found.conditions.us_investment_commitment
    )
    return BatchRow(
        batch.batch_id, batch.last_seq, micros(batch.last_at), batch.status, batch.owner,
        batch.holder, batch.to, batch.destination, batch.country, batch.site, batch.model,
        batch.quantity, batch.license, *arrived,
        share_party(batch.status, batch.owner, batch.to, batch.destination, batch.country),
        site_covered, entity_covered,
    )  # fmt: skip


@dataclass
class Changes:
    """Everything a unit of work (or a page of a rebuild) changes in the read models."""

    rows: dict[str, BatchRow] = field(default_factory=dict)  # the latest, by batch
    history: list[BatchRow] = field(default_factory=list)
    involved: set[tuple[str, str]] = field(default_factory=set)  # party, batch
    serials: dict[tuple[str, int], tuple[int, str | None]] = field(default_factory=dict)
    sites: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    owners: defaultdict[tuple[str, str], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    flags: list[tuple[Any, ...]] = field(default_factory=list)
    uses: list[tuple[str, int, int, int]] = field(default_factory=list)  # license, seq, at, n
    position: int | None = None  # the log size these changes bring the read models to

    def on_batch(
        self, row: BatchRow, before: BatchRow | None, serials: tuple[list[str], list[str]]
    ) -> None:
        """Take a batch's new row; `serials` = (serials it holds now, those it held before)."""
        self.rows[row.batch] = row
        self.history.append(row)
        known = before.parties if before is not None else set()
        self.involved.update((party, row.batch) for party in row.parties - known)
        if before is not None:
            self._count(before, -1)
        self._count(row, +1)
        now, then = serials
        for serial in set(then) - set(now):
            self.serials.setdefault((serial, row.seq), (row.at, None))
        for serial in set(now) - set(then):  # within one seq, a gain beats a loss (a split)
            self.serials[(serial, row.seq)] = (row.at, row.batch)

    def _count(self, row: BatchRow, sign: int) -> None:
        if not row.held:
            return
        assert row.site is not None
        assert row.country is not None
        quantity = sign * row.quantity
        site = self.sites[row.site]
        site[TOTAL] += quantity
        site[MODEL + row.model] += quantity
        if row.site_covered:
            site[COVERED] += quantity
        owner = self.owners[(row.owner, row.country)]
        owner[TOTAL] += quantity
        if row.entity_covered:
            owner[COVERED] += quantity

    def on_cited(self, license_id: str, seq: int, at: datetime, quantity: int) -> None:
        self.uses.append((license_id, seq, micros(at), quantity))

    def on_findings(self, seq: int, at: datetime, findings: list[dict[str, Any]]) -> None:
        for order, flag in enumerate(findings):
            self.flags.append(flag_row(seq, order, micros(at), flag))

    def site_counts(self, site: str, base: Counter[str]) -> Counter[str]:
        """A site's counters: the committed ones, moved by these changes."""
        found = Counter(base)
        found.update(self.sites.get(site, {}))
        return found

    def owner_counts(self, owner: str, country: str, base: Counter[str]) -> Counter[str]:
        found = Counter(base)
        found.update(self.owners.get((owner, country), {}))
        return found

    def site_deltas(self) -> list[tuple[str, str, int]]:
        return [(site, name, d) for site, moved in self.sites.items() for name, d in moved.items()]

    def owner_deltas(self) -> list[tuple[str, str, str, int]]:
        return [(*key, name, d) for key, moved in self.owners.items() for name, d in moved.items()]


@dataclass(frozen=True)
class Held:
    """A batch at a site, with the clocks the time-judged rules read (PROTOCOL.md section 7)."""

    batch: str
    status: str
    owner: str
    site: str
    license: str | None
    arrived_seq: int  # the event that brought it to this site
    arrived_at: datetime
    last_seq: int  # its latest event
    last_at: datetime

    @classmethod
    def of(cls, row: BatchRow) -> Held:
        assert row.site is not None
        assert row.arrived_seq is not None
        assert row.arrived_at is not None
        return cls(
            row.batch, row.status, row.owner, row.site, row.license, row.arrived_seq,
            from_micros(row.arrived_at), row.seq, from_micros(row.at),
        )  # fmt: skip


FLAG_FIELDS = ("batch", "party", "license", "site")


def flag_row(seq: int, order: int, at: int, flag: dict[str, Any]) -> tuple[Any, ...]:
    """A stored flag as a row: its key, `at`, the fields it is filtered by, and its JSON."""
    about = [flag.get(name) for name in FLAG_FIELDS]
    body = json.dumps(flag, separators=(",", ":"), sort_keys=True)
    return (seq, order, at, flag["rule"], *about, body)


@dataclass
class Tally:
    """One party's allocation, counted from the batches it is allocated."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_country: Counter[str] = field(default_factory=Counter)
    by_site: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    batches: set[str] = field(default_factory=set)

    def add(self, row: BatchRow) -> None:
        country = row.destination if row.status == "in_transit" else row.country
        assert country is not None
        self.total += row.quantity
        self.by_status[row.status] += row.quantity
        self.by_country[country] += row.quantity
        if row.status != "in_transit" and row.site is not None:
            self.by_site[row.site] += row.quantity
        self.by_model[row.model] += row.quantity
        self.batches.add(row.batch)


def tally(rows: list[BatchRow], party: str) -> Tally:
    """A party's allocation from batch rows (those allocated to another party are skipped)."""
    found = Tally()
    for row in rows:
        if row.share_party == party:
            found.add(row)
    return found
