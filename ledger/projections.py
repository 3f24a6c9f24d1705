"""Read models fed with batch states in `seq` order: allocations, the serial index, and
which parties were ever involved with which batches.

Each is a function of the batch snapshots it is fed, never of a scan of history at query
time, and each can be rebuilt from the stored events (`Projections.catch_up`) with exactly
the live result. They are kept in memory and caught up from the notification log on start.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.counters import Counters
from ledger.events import BatchSnapshot, FindingsRecorded

HELD = ("delivered", "installed")


@dataclass(frozen=True)
class Share:
    """What one batch adds to one party's allocation (PROTOCOL.md section 6)."""

    party: str
    status: str
    country: str
    site: str | None
    model: str
    quantity: int


def share_of(batch: BatchSnapshot) -> Share | None:
    """Chips in transit to a party count under their destination; chips it owns at a site
    count where they are; anything else counts for nobody."""
    if batch.status == "in_transit" and batch.to and batch.destination:
        return Share(batch.to, batch.status, batch.destination, None, batch.model, batch.quantity)
    if batch.status in HELD and batch.country:
        return Share(batch.owner, batch.status, batch.country, batch.site, batch.model,
                     batch.quantity)  # fmt: skip
    return None


@dataclass
class Tally:
    """One party's counters, kept up to date share by share."""

    total: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_country: Counter[str] = field(default_factory=Counter)
    by_site: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    batches: set[str] = field(default_factory=set)

    def add(self, batch: str, share: Share, sign: int) -> None:
        quantity = sign * share.quantity
        self.total += quantity
        _move(self.by_status, share.status, quantity)
        _move(self.by_country, share.country, quantity)
        if share.site is not None:
            _move(self.by_site, share.site, quantity)
        _move(self.by_model, share.model, quantity)
        if sign > 0:
            self.batches.add(batch)
        else:
            self.batches.discard(batch)


def _move(counter: Counter[str], key: str, quantity: int) -> None:
    """Add to one counter; a count back at zero is dropped, as if never there."""
    if value := counter[key] + quantity:
        counter[key] = value
    else:
        counter.pop(key, None)


def tally(batches: list[BatchSnapshot], party: str) -> Tally:
    """A party's tally computed from batch states directly (for `as_of` reads)."""
    result = Tally()
    for batch in batches:
        share = share_of(batch)
        if share is not None and share.party == party:
            result.add(batch.batch, share, +1)
    return result


class Holdings:
    """Allocation per party: counters moved by each batch's change of share."""

    def __init__(self) -> None:
        self.shares: dict[str, Share] = {}
        self.tallies: defaultdict[str, Tally] = defaultdict(Tally)

    def on_batch(self, batch: BatchSnapshot) -> None:
        old, new = self.shares.pop(batch.batch, None), share_of(batch)
        if old is not None:
            self.tallies[old.party].add(batch.batch, old, -1)
        if new is not None:
            self.tallies[new.party].add(batch.batch, new, +1)
            self.shares[batch.batch] = new

    def tally(self, party: str) -> Tally:
        return self.tallies.get(party) or Tally()


class SerialIndex:
    """Serial -> the batch that holds it now (never a split parent), with its past."""

    def __init__(self) -> None:
        self.current: dict[str, str] = {}
        self.held: dict[str, tuple[str, ...]] = {}
        self.past: defaultdict[str, list[tuple[int, datetime, str | None]]] = defaultdict(list)

    def on_batch(self, batch: BatchSnapshot) -> None:
        now = tuple(batch.serials or ()) if batch.status != "split" else ()
        before = self.held.get(batch.batch, ())
        for serial in set(before) - set(now):
            if self.current.get(serial) == batch.batch:
                del self.current[serial]
                self.past[serial].append((batch.last_seq, batch.last_at, None))
        for serial in set(now) - set(before):
            self.current[serial] = batch.batch
            self.past[serial].append((batch.last_seq, batch.last_at, batch.batch))
        self.held[batch.batch] = now

    def holder_as_of(self, serial: str, seq: int | None, at: datetime | None) -> str | None:
        found: str | None = None
        for change_seq, change_at, batch in self.past.get(serial, []):
            if (seq is None or change_seq <= seq) and (at is None or change_at <= at):
                found = batch
        return found


class Involvement:
    """Party -> every batch it ever owned, held or was consignee of."""

    def __init__(self) -> None:
        self.batches: defaultdict[str, set[str]] = defaultdict(set)

    def on_batch(self, batch: BatchSnapshot) -> None:
        for party in {batch.owner, batch.holder, batch.to}:
            if party is not None:
                self.batches[party].add(batch.batch)


class Flags:
    """Every stored finding, in `seq` order, with the `at` of the event that raised it."""

    def __init__(self) -> None:
        self.flags: list[tuple[datetime, dict[str, Any]]] = []

    def on_findings(self, found: FindingsRecorded) -> None:
        self.flags.extend((found.at, flag) for flag in found.findings)

    def select(
        self, where: dict[str, str], seq: int | None = None, at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Flags matching every `where` field, raised by entries up to `seq` / dated by `at`."""
        return [
            flag
            for flag_at, flag in self.flags
            if (seq is None or flag["seq"] <= seq)
            and (at is None or flag_at <= at)
            and all(flag.get(key) == value for key, value in where.items())
        ]


@dataclass(frozen=True)
class Held:
    """A batch at a site, with the clocks the time-judged rules read."""

    batch: str
    status: str
    owner: str
    site: str
    license: str | None
    arrived_seq: int  # the event that brought it to this site
    arrived_at: datetime
    last_seq: int  # its latest event
    last_at: datetime


class AtSites:
    """Every batch delivered or installed now, for the time-judged rules (section 7)."""

    def __init__(self) -> None:
        self.held: dict[str, Held] = {}
        self.ever: set[str] = set()  # every batch ever at a site, for reads `as_of` the past

    def on_batch(self, batch: BatchSnapshot) -> None:
        before = self.held.pop(batch.batch, None)
        if batch.status not in HELD or batch.site is None:
            return
        self.ever.add(batch.batch)
        arrived = (
            (before.arrived_seq, before.arrived_at)
            if before is not None and before.site == batch.site
            else (batch.last_seq, batch.last_at)
        )
        self.held[batch.batch] = Held(
            batch.batch, batch.status, batch.owner, batch.site, batch.license, *arrived,
            batch.last_seq, batch.last_at,
        )  # fmt: skip


class Projections:
    """All read models, fed together; `position` is the last notification id applied.

    `streams` holds the id of every stream ever stored, so that looking up something that
    does not exist (a new event id, a new batch id) needs no database round trip.
    """

    def __init__(self) -> None:
        self.streams: set[int] = set()  # UUID.int: an int hashes in C, a UUID in Python
        self.holdings = Holdings()
        self.serials = SerialIndex()
        self.involvement = Involvement()
        self.flags = Flags()
        self.counters = Counters()
        self.at_sites = AtSites()
        self.position = 0

    def on_batch(self, batch: BatchSnapshot) -> None:
        self.holdings.on_batch(batch)
        self.serials.on_batch(batch)
        self.involvement.on_batch(batch)
        self.at_sites.on_batch(batch)
