"""The unit of work: what one acceptance (or one batch) reads, changes and appends.

Lookups see the store plus everything earlier envelopes of the same batch changed, so a batch
may register a party and then its site. Nothing reaches the store until the application saves
`aggregates()` and `entries` in one transaction; a refusal simply drops the unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository

from ledger import events
from ledger.aggregates import Aggregate, Claim, License, Party, Site, stream_id
from ledger.batch import Batch
from ledger.counters import Counts
from ledger.readmodels import BatchRow, Changes, micros, row_of
from ledger.readqueries import ReadStore
from ledger.wire import LicenseSpec

A = TypeVar("A", bound=Aggregate)


class UnitOfWork:
    def __init__(
        self,
        repository: Repository[UUID],
        store: ReadStore,
        next_seq: int,
        now: datetime,
        genesis: str | None,
        trust_root: str,
        event_ids: Callable[[Sequence[str]], dict[str, tuple[int, str]]] = lambda _: {},
        careful: bool = True,
        signed_after: Callable[[str, int], list[int]] = lambda _k, _a: [],
    ) -> None:
        self._repository = repository
        self.store = store
        self._loaded: dict[str, Aggregate | None] = {}  # by "kind:name" (str hashes in C)
        self._existing: set[str] = set()  # "kind:name" a prefetch found, not loaded
        self.first_seq = next_seq
        self.next_seq = next_seq
        self.now = now
        self.genesis = genesis
        self.trust_root = trust_root
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
        self.read_changes = Changes()  # what the read models take from this unit
        self.counters = Counts(store, self.read_changes)

    # -- reads ----------------------------------------------------------------------------------

    def _get(self, cls: type[A], kind: str, name: str) -> A | None:
        key = f"{kind}:{name}"
        if key in self._loaded:
            found = self._loaded[key]
        else:
            sid = stream_id(kind, name)
            found = None
            if not self.store.absent.get(sid.int):
                try:
                    found = self._repository.get(sid)
                except AggregateNotFoundError:
                    self.store.absent.put(sid.int, True)  # no query for it next time
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

    def prefetch(self, kind: str, names: Iterable[str]) -> None:
        """Learn in one query which of many named streams exist; the others read as absent
        without a query each (a fabrication naming 1,000 serials)."""
        wanted = {
            stream_id(kind, name): f"{kind}:{name}"
            for name in names
            if f"{kind}:{name}" not in self._loaded
        }
        asked = [sid for sid in wanted if not self.store.absent.get(sid.int)]
        existing = self.store.existing_streams(asked)
        self._existing.update(wanted[sid] for sid in existing)
        for sid in set(wanted) - existing:
            self._loaded[wanted[sid]] = None
            self.store.absent.put(sid.int, True)

    def exists(self, kind: str, name: str) -> bool:
        """Whether stream `kind:name` exists as this unit sees it, without loading it when a
        `prefetch` found it."""
        key = f"{kind}:{name}"
        if key in self._loaded:
            return self._loaded[key] is not None
        return key in self._existing or self._get(Aggregate, kind, name) is not None

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
        holder = self.store.serial(serial)
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

    def note_changes(self, batch_ids: list[str], before: events.BatchSnapshot | None) -> None:
        """Take the batches the envelope just accepted changed into the read models: the
        batch it moves (`before` it), then the children a split made."""
        for index, batch_id in enumerate(batch_ids):
            batch = self.batch(batch_id)
            if batch is None or batch.last_seq != self.next_seq:
                continue
            snapshot = batch.snapshot()
            self.changes.append(snapshot)
            then = before.serials if index == 0 and before is not None else None
            now = snapshot.serials if snapshot.status != "split" else None
            old = self.batch_row(batch)
            site = self.site(batch.site) if batch.site else None
            row = row_of(batch, old, site.operator if site else None, self.license_terms)
            self.read_changes.on_batch(row, old, (now or [], then or []))

    def batch_row(self, batch: Batch) -> BatchRow | None:
        """A batch's read-model row before this event (None for one this event creates)."""
        found = self.read_changes.rows.get(batch.batch_id)
        if found is None and batch.version > 1:
            found = self.store.batch_row(batch.batch_id)
        return found

    def license_terms(self, license_id: str, seq: int) -> LicenseSpec | None:
        """A license's terms if it was granted at or before `seq`."""
        found = self.get(License, "license", license_id)
        return found.terms if found is not None and found.granted_seq <= seq else None

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
