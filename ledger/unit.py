"""The unit of work: what one acceptance (or one batch) reads, changes and appends.

Lookups see the store plus everything earlier envelopes of the same batch changed, so a batch
may register a party and then its site. Nothing reaches the store until the application saves
`aggregates()` and `entries` in one transaction; a refusal simply drops the unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository

from ledger import events
from ledger.aggregates import Aggregate, Claim, License, Party, Site, stream_id
from ledger.batch import Batch
from ledger.counters import Counters, Overlay, Placed, placed

A = TypeVar("A", bound=Aggregate)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(at: datetime) -> int:
    """A time as whole microseconds since 1970 (exact, unlike a float timestamp)."""
    return (at - EPOCH) // timedelta(microseconds=1)


class UnitOfWork:
    def __init__(
        self,
        repository: Repository[UUID],
        known: set[int],
        next_seq: int,
        now: datetime,
        genesis: str | None,
        trust_root: str,
        serial_holder: Callable[[str], str | None] = lambda _: None,
        event_ids: Callable[[Sequence[str]], dict[str, tuple[int, str]]] = lambda _: {},
        careful: bool = True,
        counters: Counters | None = None,
        signed_after: Callable[[str, int], list[int]] = lambda _k, _a: [],
    ) -> None:
        self._repository = repository
        self._known = known
        self._loaded: dict[str, Aggregate | None] = {}  # by "kind:name" (str hashes in C)
        self.first_seq = next_seq
        self.next_seq = next_seq
        self.now = now
        self.genesis = genesis
        self.trust_root = trust_root
        self._serial_holder = serial_holder
        self._select_event_ids = event_ids
        self.careful = careful  # look event ids up; else only this unit's (see Ledger._commit)
        self._stored_ids: dict[str, tuple[int, str] | None] = {}
        self.event_ids: dict[str, tuple[int, str]] = {}  # accepted by this unit: (seq, digest)
        self.entries: list[events.EntryRecorded] = []
        self.findings: list[events.FindingsRecorded] = []
        self.signed: list[tuple[str, int, int]] = []  # key id, `at` in µs, seq: accepted here
        self._signed_after = signed_after
        self.changes: list[events.BatchSnapshot] = []
        self.tree: list[tuple[int, bytes]] = []  # the log's stored hashes, made when saved
        self.counters = Overlay(counters if counters is not None else Counters())

    # -- reads ----------------------------------------------------------------------------------

    def _get(self, cls: type[A], kind: str, name: str) -> A | None:
        key = f"{kind}:{name}"
        if key in self._loaded:
            found = self._loaded[key]
        else:
            sid = stream_id(kind, name)
            if sid.int not in self._known:
                return None  # no such stream was ever stored: no need to ask the database
            try:
                found = self._repository.get(sid)
            except AggregateNotFoundError:
                found = None
            self._loaded[key] = found
        return found if isinstance(found, cls) else None

    def get(self, cls: type[A], kind: str, name: str) -> A | None:
        """The aggregate of stream `kind:name` as this unit sees it, if it is a `cls`."""
        return self._get(cls, kind, name)

    def party(self, party_id: str) -> Party | None:
        return self._get(Party, "party", party_id)

    def site(self, site_id: str) -> Site | None:
        return self._get(Site, "site", site_id)

    def batch(self, batch_id: str) -> Batch | None:
        return self._get(Batch, "batch", batch_id)

    def claim(self, name: str) -> Claim | None:
        return self._get(Claim, "claim", name)

    def prefetch_event_ids(self, ids: Iterable[str]) -> None:
        """Look up many event ids in one query, before the envelopes naming them are judged."""
        wanted = [i for i in dict.fromkeys(ids) if i not in self._stored_ids]
        found = self._select_event_ids(wanted) if wanted else {}
        for event_id in wanted:
            self._stored_ids[event_id] = found.get(event_id)

    def accepted_id(self, event_id: str) -> tuple[int, str] | None:
        """(seq, payload digest) if an envelope with this event id was accepted already."""
        if event_id in self.event_ids:
            return self.event_ids[event_id]
        if event_id not in self._stored_ids:
            if not self.careful:
                return None
            self.prefetch_event_ids([event_id])
        return self._stored_ids[event_id]

    def signed_after(self, keyid: str, after: datetime) -> list[int]:
        """Seqs of the entries signed by `keyid` whose `at` is after `after` (this unit's too)."""
        since = micros(after)
        stored = self._signed_after(keyid, since)
        return [*stored, *(seq for kid, at, seq in self.signed if kid == keyid and at > since)]

    def serial_holder(self, serial: str) -> str | None:
        """The batch that holds a serial now, this unit's changes included."""
        seen: set[str] = set()
        for snapshot in reversed(self.changes):
            if snapshot.batch in seen:
                continue
            seen.add(snapshot.batch)
            if snapshot.status != "split" and serial in (snapshot.serials or ()):
                return snapshot.batch
        holder = self._serial_holder(serial)
        return holder if holder not in seen else None

    def active_key(self, kid: str) -> tuple[str, bytes] | None:
        """(party, raw public key) of a registered key that is not revoked."""
        claim = self.claim(f"key:{kid}")
        party = self.party(claim.owner) if claim else None
        key = party.keys.get(kid) if party else None
        if party is None or key is None or not key.active:
            return None
        return party.party_id, key.raw

    # -- writes ---------------------------------------------------------------------------------

    def add(self, aggregate: Aggregate, kind: str, name: str) -> None:
        """A new aggregate created by this unit."""
        self._loaded[f"{kind}:{name}"] = aggregate

    def take(self, name: str, owner: str, digest: str = "") -> None:
        """Claim a unique name for the entry being accepted."""
        claim = Claim._create(
            events.Claimed,
            id=stream_id("claim", name),
            timestamp=self.now,
            name=name,
            owner=owner,
            digest=digest,
            seq=self.next_seq,
        )
        self.add(claim, "claim", name)

    def note_changes(self, batch_ids: list[str]) -> None:
        """Snapshot the batches the envelope just accepted changed, for the projections."""
        for batch_id in batch_ids:
            batch = self.batch(batch_id)
            if batch is not None and batch.last_seq == self.next_seq:
                snapshot = batch.snapshot()
                self.changes.append(snapshot)
                self.counters.on_batch(batch_id, self.placed(snapshot))

    def placed(self, snapshot: events.BatchSnapshot) -> Placed | None:
        site = self.site(snapshot.site) if snapshot.site else None
        held = self.get(License, "license", snapshot.license) if snapshot.license else None
        return placed(snapshot, site.operator if site else None, held.terms if held else None)

    def loaded(self) -> list[Aggregate]:
        """Every aggregate this unit read or created."""
        return [a for a in self._loaded.values() if a is not None]

    def aggregates(self) -> list[Aggregate]:
        return [a for a in self._loaded.values() if a is not None and a.pending_events]

    def created(self) -> list[UUID]:
        """The streams this unit creates (their first event is pending)."""
        return [a.id for a in self.aggregates() if a.pending_events[0].originator_version == 1]

    def recorded(self, seq: int) -> events.EntryRecorded | None:
        index = seq - self.first_seq
        return self.entries[index] if 0 <= index < len(self.entries) else None

    def pending(self) -> list[Any]:
        return [*self.aggregates(), *self.entries, *self.findings]
