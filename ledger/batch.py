"""The chip batch aggregate: its state (PROTOCOL.md section 4) rebuilt from its own events.

Appliers only assign. Every event moves the batch's `head`, `last_seq`, `last_at` and
`history` (the seqs of its entries, its ancestors' included); the rest is each event's own
effect. Whether an event may happen is decided in `ledger.custody`, before it is triggered.
"""

from __future__ import annotations

from datetime import datetime
from functools import singledispatchmethod
from typing import TYPE_CHECKING

from ledger import events
from ledger.aggregates import Aggregate
from ledger.models import built

AT_A_SITE = ("delivered", "installed")


class Batch(Aggregate):
    if TYPE_CHECKING:  # declared for the type checker only: the library builds __init__
        # from class annotations, and a batch is made by its first event, not by __init__.
        batch_id: str
        model: str
        quantity: int
        missing: int
        status: str
        owner: str
        holder: str
        to: str | None
        destination: str | None
        country: str | None
        site: str | None
        license: str | None
        parent: str | None
        children: list[str]
        serials: list[str] | None
        head: str
        last_seq: int
        last_at: datetime
        history: list[int]

    def snapshot(self) -> events.BatchSnapshot:
        return built(
            events.BatchSnapshot,
            batch=self.batch_id, model=self.model, quantity=self.quantity, missing=self.missing,
            status=self.status, owner=self.owner, holder=self.holder, to=self.to,
            destination=self.destination, country=self.country, site=self.site,
            license=self.license, parent=self.parent, children=list(self.children),
            serials=list(self.serials) if self.serials is not None else None, head=self.head,
            last_seq=self.last_seq, last_at=self.last_at, history=list(self.history),
        )  # fmt: skip

    def _moved(self, accepted: events.Accepted, at: datetime) -> None:
        self.head = accepted.envelope_hash
        self.last_seq = accepted.seq
        self.last_at = at
        self.history = [*self.history, accepted.seq]

    def _arrive(self, site: str, country: str) -> None:
        self.status = "delivered"
        self.site, self.country = site, country
        self.to = self.destination = None

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)

    @when.register
    def _(self, event: events.BatchFabricated) -> None:
        fact = event.fact
        self.batch_id, self.model, self.quantity, self.missing = (
            fact.batch,
            fact.model,
            fact.quantity,
            0,
        )
        self.status, self.owner, self.holder = "fabricated", fact.actor, fact.actor
        self.to = self.destination = self.site = self.license = self.parent = None
        self.country = fact.country
        self.children, self.serials, self.history = [], fact.serials, []
        self._moved(event.accepted, fact.at)

    @when.register
    def _(self, event: events.BatchSplitFrom) -> None:
        parent = event.parent
        for name in (
            "model",
            "status",
            "owner",
            "holder",
            "to",
            "destination",
            "country",
            "site",
            "license",
            "history",
        ):
            setattr(self, name, getattr(parent, name))
        self.batch_id, self.parent, self.children = event.part.batch, parent.batch, []
        self.quantity, self.missing, self.serials = event.part.quantity, 0, event.part.serials
        self._moved(event.accepted, event.fact.at)

    @when.register
    def _(self, event: events.BatchExported) -> None:
        fact = event.fact
        self.status, self.to, self.destination = "in_transit", fact.to, fact.destination
        self.site = self.country = None
        self.license = fact.license or self.license
        self._moved(event.accepted, fact.at)

    @when.register
    def _(self, event: events.BatchDelivered) -> None:
        fact = event.fact
        self.missing += self.quantity - fact.quantity
        if fact.serials is not None:
            self.serials = fact.serials
        elif fact.quantity != self.quantity:
            self.serials = None  # a short delivery naming no serials: which ones came is unknown
        self.quantity = fact.quantity
        self.owner = self.holder = fact.actor
        self._arrive(fact.site, event.site_country)
        self._moved(event.accepted, fact.at)

    @when.register
    def _(self, event: events.BatchInstalled) -> None:
        self.status = "installed"
        self._moved(event.accepted, event.fact.at)

    @when.register
    def _(self, event: events.BatchRelocated) -> None:
        self._arrive(event.fact.site, event.site_country)
        self._moved(event.accepted, event.fact.at)

    @when.register
    def _(self, event: events.BatchTransferred) -> None:
        fact = event.fact
        self.owner = fact.to
        self.license = fact.license or self.license
        if fact.site is not None and event.site_country is not None:
            self.holder = fact.to
            self._arrive(fact.site, event.site_country)
        self._moved(event.accepted, fact.at)

    @when.register
    def _(self, event: events.BatchSplit) -> None:
        self.status = "split"
        self.children = [part.batch for part in event.fact.into]
        self._moved(event.accepted, event.fact.at)

    @when.register
    def _(self, event: events.BatchDecommissioned) -> None:
        self.status = "decommissioned"
        self._moved(event.accepted, event.fact.at)

    @when.register
    def _(self, event: events.BatchReportedLost) -> None:
        self.status = "lost"
        self._moved(event.accepted, event.fact.at)
