"""Aggregates of the registry and the ledger: each rebuilt from its own stored events.

Appliers (`when`) only assign: they re-run on every replay, so they read no clock and cannot
fail. Commands that decide whether an event may happen live in `ledger.registry`; these
classes only hold state. Ids are UUIDv5 of a typed name, so a party, site or claim has one
stream, and creating it twice is refused by the event store itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, singledispatchmethod
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

from eventsourcing.domain import BaseAggregate

from ledger import events, wire
from ledger.crypto import decode_public_key, key_id
from ledger.models import built

NAMESPACE = UUID("6f0f1f0e-6c1b-5d2e-9a57-636869706c65")


@lru_cache(maxsize=65536)
def stream_id(kind: str, name: str) -> UUID:
    """The stream of a named object: `party:bis`, `site:dxb-2`, `event:<uuid>`, `key:<hex>`."""
    return uuid5(NAMESPACE, f"{kind}:{name}")


LOG_ID = stream_id("ledger", "log")
LEDGER_ID = stream_id("ledger", "info")
FLAGS_ID = stream_id("ledger", "flags")


class Aggregate(BaseAggregate[UUID]):
    """Explicit trigger-and-apply: events come from `ledger.events`, `when` assigns them."""

    def record(self, event_class: type[events.AggregateEvent], **fields: Any) -> None:
        """`trigger_event` for values the ledger has checked: the event is built, not
        validated again, then applied and kept pending, as `trigger_event` does."""
        event = built(
            event_class, originator_id=self.id, originator_version=self.version + 1, **fields
        )
        event.mutate(self)
        self._pending_events.append(event)

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)  # a programming error, not input


class LedgerInfo(Aggregate):
    """What `chipledger init` fixed: the origin, the trust-root key, the log's public key."""

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)

    @when.register
    def _(self, event: events.LedgerInitialised) -> None:
        self.origin = event.origin
        self.authority_key = event.authority_key
        self.log_key = event.log_key


class Claim(Aggregate):
    """A unique name taken once, ever: an event id (with its payload digest) or a key id."""

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)

    @when.register
    def _(self, event: events.Claimed) -> None:
        self.name = event.name
        self.owner = event.owner
        self.digest = event.digest
        self.seq = event.seq


@dataclass
class Key:
    public_key: str
    added_seq: int
    revoked_seq: int | None = None
    compromised_since: datetime | None = None
    raw: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.raw = decode_public_key(self.public_key)

    @property
    def active(self) -> bool:
        return self.revoked_seq is None


@dataclass
class Listing:
    reason: str
    seq: int


class Party(Aggregate):
    """A registered party: its roles, countries, keys (with revocations) and listings."""

    def has_role(self, *roles: str) -> bool:
        return any(role in self.roles for role in roles)

    @property
    def active_keys(self) -> list[str]:
        return [kid for kid, key in self.keys.items() if key.active]

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)

    @when.register
    def _(self, event: events.PartyRegistered) -> None:
        spec = event.fact.party
        self.party_id = spec.id
        self.name = spec.name
        self.roles = list(spec.roles)
        self.country = spec.country
        self.headquarters = spec.headquarters
        self.registered_seq = event.accepted.seq
        self.keys: dict[str, Key] = {}
        self.lists: dict[str, Listing] = {}
        for text in spec.keys:
            self.keys[key_id(decode_public_key(text))] = Key(text, event.accepted.seq)

    @when.register
    def _(self, event: events.PartyKeyAdded) -> None:
        self.keys[key_id(decode_public_key(event.fact.key))] = Key(
            event.fact.key, event.accepted.seq
        )

    @when.register
    def _(self, event: events.PartyKeyRevoked) -> None:
        key = self.keys[event.fact.keyid]
        key.revoked_seq = event.accepted.seq
        key.compromised_since = event.fact.compromised_since

    @when.register
    def _(self, event: events.PartyListed) -> None:
        self.lists[event.fact.list] = Listing(event.fact.reason, event.accepted.seq)

    @when.register
    def _(self, event: events.PartyDelisted) -> None:
        self.lists.pop(event.fact.list, None)


class Site(Aggregate):
    """A registered site: who operates it and in which country."""

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)

    @when.register
    def _(self, event: events.SiteRegistered) -> None:
        spec = event.fact.site
        self.site_id = spec.id
        self.operator = spec.operator
        self.country = spec.country
        self.name = spec.name
        self.registered_seq = event.accepted.seq
        self.last_attested: datetime | None = None  # the latest `at` of its attestations
        self.last_attested_seq: int | None = None
        self.inspections: list[tuple[int, dict[str, int]]] = []

    @when.register
    def _(self, event: events.SiteAttested) -> None:
        at = event.fact.at
        if self.last_attested is None or at >= self.last_attested:
            self.last_attested, self.last_attested_seq = at, event.accepted.seq

    @when.register
    def _(self, event: events.SiteInspected) -> None:
        self.inspections = [*self.inspections, (event.accepted.seq, dict(event.fact.observed))]


class License(Aggregate):
    if TYPE_CHECKING:
        terms: wire.LicenseSpec
        granted_seq: int
        granted_at: datetime
        revoked_seq: int | None
        revoked_at: datetime | None
        revoked_reason: str | None
        used_quantity: int

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)

    @when.register
    def _(self, event: events.LicenseGranted) -> None:
        self.terms = event.fact.license
        self.granted_seq = event.accepted.seq
        self.granted_at = event.fact.at
        self.revoked_seq = self.revoked_at = None
        self.revoked_reason = None
        self.used_quantity = 0

    @when.register
    def _(self, event: events.LicenseRevoked) -> None:
        self.revoked_seq = event.accepted.seq
        self.revoked_at = event.fact.at
        self.revoked_reason = event.fact.reason

    @when.register
    def _(self, event: events.LicenseCited) -> None:
        self.used_quantity += event.quantity

    def status(self, at: datetime, revoked: bool | None = None) -> str:
        """`revoked`, `pending`, `expired` or `active` at time `at` (revoked: as `revoked`
        says, else if revoked so far)."""
        if self.revoked_seq is not None if revoked is None else revoked:
            return "revoked"
        if at < self.terms.valid_from:
            return "pending"
        if at >= self.terms.valid_until:
            return "expired"
        return "active"

    def valid_at(self, at: datetime) -> bool:
        return self.revoked_seq is None and self.terms.valid_from <= at < self.terms.valid_until
