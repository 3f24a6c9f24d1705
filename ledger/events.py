"""The stored domain events: facts the ledger has accepted, as frozen pydantic models.

Class names here are stored as topics (`ledger.events:PartyRegistered`) and are a published
API: renaming one is a migration. Each aggregate event carries the accepted wire object
(`fact`), its log position `seq` and its `envelope_hash`. `EntryRecorded` is the log itself:
one per accepted envelope, at version `seq` of the log stream.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache, singledispatchmethod
from typing import Any
from uuid import UUID

from eventsourcing.domain import CanInitAggregate, CanMutateAggregate
from pydantic import BaseModel, ConfigDict

from ledger import wire


class DomainEvent(BaseModel):
    """What every stored event has: the library's originator id, version and timestamp."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    originator_id: UUID
    originator_version: int
    timestamp: datetime


class AggregateEvent(DomainEvent, CanMutateAggregate[UUID]):
    """An event that changes one aggregate; the aggregate's `when` assigns its effect."""

    def apply(self, aggregate: Any) -> None:
        _applier(type(aggregate), type(self))(aggregate, self)  # type: ignore[arg-type]  # classes hash


@cache
def _applier(aggregate_class: Any, event_class: Any) -> Any:
    """The `when` registered for this event class (looked up once, not on every replay)."""
    for cls in aggregate_class.__mro__:
        when = cls.__dict__.get("when")
        if isinstance(when, singledispatchmethod):
            return when.dispatcher.dispatch(event_class)
    raise NotImplementedError(f"{aggregate_class.__name__} has no appliers")


class AggregateCreated(AggregateEvent, CanInitAggregate[UUID]):
    originator_topic: str


class Accepted(BaseModel):
    """Where an accepted envelope sits in the log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    envelope_hash: str


# -- The ledger itself ------------------------------------------------------------------------


class LedgerInitialised(AggregateCreated):
    origin: str
    authority_key: str
    log_key: str


class EntryRecorded(DomainEvent):
    """One accepted envelope, exactly as accepted, with its receipt."""

    seq: int
    event_id: str
    event_type: str
    actor: str
    envelope: str
    envelope_hash: str
    leaf_hash: str
    recorded_at: str
    findings: list[dict[str, Any]]


class Claimed(AggregateCreated):
    """A unique name (an event id, a key id) taken by the entry at `seq`."""

    name: str
    owner: str
    digest: str
    seq: int


# -- The registry -------------------------------------------------------------------------------


class PartyRegistered(AggregateCreated):
    fact: wire.PartyRegistered
    accepted: Accepted


class PartyKeyAdded(AggregateEvent):
    fact: wire.PartyKeyAdded
    accepted: Accepted


class PartyKeyRevoked(AggregateEvent):
    fact: wire.PartyKeyRevoked
    accepted: Accepted


class PartyListed(AggregateEvent):
    fact: wire.PartyListed
    accepted: Accepted


class PartyDelisted(AggregateEvent):
    fact: wire.PartyDelisted
    accepted: Accepted


class SiteRegistered(AggregateCreated):
    fact: wire.SiteRegistered
    accepted: Accepted


# -- Chip batches -------------------------------------------------------------------------------


class BatchSnapshot(BaseModel):
    """A batch's whole state at one moment: what a split child starts from, what reads show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: str
    model: str
    quantity: int
    missing: int
    status: str
    owner: str
    holder: str
    to: str | None = None
    destination: str | None = None
    country: str | None = None
    site: str | None = None
    license: str | None = None
    parent: str | None = None
    children: list[str] = []
    serials: list[str] | None = None
    head: str
    last_seq: int
    last_at: datetime
    history: list[int]


class BatchFabricated(AggregateCreated):
    fact: wire.BatchFabricated
    accepted: Accepted


class BatchSplitFrom(AggregateCreated):
    """A split child comes into being with its parent's state and history."""

    fact: wire.BatchSplit
    accepted: Accepted
    parent: BatchSnapshot
    part: wire.SplitPart


class BatchExported(AggregateEvent):
    fact: wire.BatchExported
    accepted: Accepted


class BatchDelivered(AggregateEvent):
    fact: wire.BatchDelivered
    accepted: Accepted
    site_country: str


class BatchInstalled(AggregateEvent):
    fact: wire.BatchInstalled
    accepted: Accepted


class BatchRelocated(AggregateEvent):
    fact: wire.BatchRelocated
    accepted: Accepted
    site_country: str


class BatchTransferred(AggregateEvent):
    fact: wire.BatchTransferred
    accepted: Accepted
    site_country: str | None = None


class BatchSplit(AggregateEvent):
    fact: wire.BatchSplit
    accepted: Accepted


class BatchDecommissioned(AggregateEvent):
    fact: wire.BatchDecommissioned
    accepted: Accepted


class BatchReportedLost(AggregateEvent):
    fact: wire.BatchReportedLost
    accepted: Accepted


# -- Licenses, rule packs, monitoring ----------------------------------------------------------


class LicenseGranted(AggregateCreated):
    fact: wire.LicenseGranted
    accepted: Accepted


class LicenseRevoked(AggregateEvent):
    fact: wire.LicenseRevoked
    accepted: Accepted


class LicenseCited(AggregateEvent):
    """An export or transfer moved `quantity` chips under this license."""

    accepted: Accepted
    at: datetime
    quantity: int


class PolicyBookOpened(AggregateCreated):
    """The first rule pack adopted: the book of adopted packs begins."""

    fact: wire.PolicyAdopted
    accepted: Accepted


class PolicyAdopted(AggregateEvent):
    fact: wire.PolicyAdopted
    accepted: Accepted


class SiteAttested(AggregateEvent):
    fact: wire.SecurityAttested
    accepted: Accepted


class SiteInspected(AggregateEvent):
    fact: wire.SiteInspected
    accepted: Accepted


class FindingsRecorded(DomainEvent):
    """The findings of the entry at `seq` (only entries that have some): the flags stream,
    at version `seq`, read back to rebuild the flags projection."""

    seq: int
    at: datetime
    findings: list[dict[str, Any]]
