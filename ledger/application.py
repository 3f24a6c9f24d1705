"""The ledger application: the one use-case API that the HTTP API and the CLI both call.

Writes: `submit` and `submit_batch` run every envelope through `ledger.acceptance.accept`
and commit the unit of work in one transaction; a refusal stores nothing and uses no `seq`.
`seq` is the version of the log stream, so two writers can never both take one: the event
store refuses the second, which catches up and judges again. Reads return typed views, now
or `as_of` a seq or a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    Repository,
)
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError

from ledger import access, events, merkle, sessions, timejudged
from ledger.acceptance import accept, created_streams
from ledger.access import EVERYONE, Reader, needs_all
from ledger.aggregates import LEDGER_ID, LOG_ID, LedgerInfo, License, stream_id
from ledger.ahead import ahead
from ledger.asof import AsOf
from ledger.batch import Batch
from ledger.bundles import Bundle, Source, make_bundle
from ledger.canonical import b64decode_strict, parse_json
from ledger.crypto import Signer, decode_public_key, verify
from ledger.envelopes import Decoded, decode
from ledger.errors import (
    BadRequest,
    BadSignature,
    BatchRefused,
    Conflict,
    InvalidEvent,
    LedgerError,
    NotAuthorized,
    NotFound,
    TooLarge,
    Unauthenticated,
)
from ledger.notes import verifier_key
from ledger.persistence import LedgerRepository, store_env
from ledger.policy import PolicyBook, in_force
from ledger.readmodels import micros, tally
from ledger.readqueries import ReadStore, bounds
from ledger.rebuild import rebuild
from ledger.recorders import Recorder, ours
from ledger.replay import PAGE, batch_as_of, fold
from ledger.rules import judge_now
from ledger.transparency import Log
from ledger.unit import UnitOfWork
from ledger.views import (
    AllocationView,
    Authority,
    BatchView,
    CheckView,
    ConsistencyView,
    FlagsView,
    HistoryEntry,
    HistoryView,
    InclusionView,
    LedgerInfoView,
    LicenseView,
    LogEntries,
    LogEntry,
    Outcome,
    PoliciesView,
    PolicyEntry,
    SerialView,
    SessionView,
)
from ledger.wire import format_time, parse_time

PROTOCOL_VERSION = 1
MAX_BATCH = 1000
MAX_BATCH_BYTES = 16 << 20
MAX_ENVELOPE_BYTES = 1 << 20
FORGET_AT_MOST = 10_000  # stored events written by others; past it the whole cache goes
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger(Application[UUID]):
    """chipledger: signed custody events in an eventsourcing store."""

    name = "Ledger"
    env = {  # noqa: RUF012 (the library reads this class attribute)
        "AGGREGATE_CACHE_MAXSIZE": "30000",  # bounded: memory must not grow with the log
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        # Units change cached aggregates in place, under the lock; a refused unit evicts
        # what it changed (`_discard`), so nothing uncommitted outlives it.
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
    }

    def __init__(self, store: str, clock: Clock = utc_now) -> None:
        super().__init__(env=store_env(store))
        self.store = store
        self.clock = clock
        self._lock = threading.RLock()
        self._info: LedgerInfo | None = None
        self._genesis: str | None = None
        self._next_seq = 0
        self._log_signer: Signer | None = None
        self.session_lifetime = sessions.LIFETIME
        self._log: Log | None = None
        self._position = 0  # the last notification id this process has seen
        recorder = self.ledger_recorder()
        self.reads = ReadStore(recorder.datastore, recorder.dialect, recorder.events_table_name)
        self.grants = timejudged.Grants(lambda: self.repository)
        self._refresh(opening=True)

    def construct_repository(self) -> Repository[UUID]:
        """The library's repository and cache, as `env` sets them, projecting with
        `ledger.persistence.project`."""
        made = super().construct_repository()
        return LedgerRepository(
            event_store=made.event_store,
            cache_maxsize=int(self.env["AGGREGATE_CACHE_MAXSIZE"]),
            fastforward=made.fastforward,
            deepcopy_from_cache=made.deepcopy_from_cache,
        )

    # -- setting up ---------------------------------------------------------------------------

    def initialise(self, origin: str, authority_key: str, log_public_key: bytes) -> None:
        """Fix the origin, trust root and log key of an empty ledger (`chipledger init`)."""
        decode_public_key(authority_key, "the authority key")
        if self._info is not None:
            raise Conflict(f"{self.store} already holds a ledger; it is never re-initialised")
        info = LedgerInfo._create(
            events.LedgerInitialised,
            id=LEDGER_ID,
            timestamp=self.clock(),
            origin=origin,
            authority_key=authority_key,
            log_key=verifier_key(origin, log_public_key),
        )
        try:
            self.save(info)
        except IntegrityError:
            raise Conflict(f"{self.store} already holds a ledger") from None
        self._refresh()

    @property
    def initialised(self) -> bool:
        return self._info is not None

    def check_log_key(self, signer: Signer) -> None:
        """Refuse to serve with a log key that is not the one fixed at `init`."""
        if verifier_key(self.info.origin, signer.public_key) != self.info.log_key:
            raise NotAuthorized(
                f"that log key is not this ledger's (it expects {self.info.log_key})"
            )

    def use_log_key(self, signer: Signer) -> None:
        """Sign a checkpoint with each commit from now on (the key fixed at `init` only)."""
        self.check_log_key(signer)
        with self._lock:
            self._log_signer = signer
            self.tlog.signer = signer

    @property
    def tlog(self) -> Log:
        if self._log is None:
            recorder = self.ledger_recorder()
            self._log = Log(recorder, self.info.origin, self._log_signer)
        return self._log

    @property
    def info(self) -> LedgerInfo:
        if self._info is None:
            raise NotFound(f"{self.store} holds no ledger yet; run `chipledger init` first")
        return self._info

    def _sync(self) -> None:
        """Catch up with another writer of the same store, if the log moved on without us:
        forget what it changed (read from the store), nothing more."""
        size = self.size()
        if size == self._next_seq:
            return
        if self._info is None or self._next_seq < 0:
            self._refresh()
            return
        try:
            self._forget_changed()
        except BaseException:
            self._next_seq = -1  # cut short by the store: the next read or write tries again
            raise
        self._next_seq = size
        if self._genesis is None:
            self._genesis = self._entries(0, 1)[0].actor

    def _refresh(self, opening: bool = False) -> None:
        """Read what other writers may have changed: the ledger, the log head, the genesis."""
        try:
            self._reread(opening)
        except BaseException:
            self._next_seq = -1  # cut short by the store: the next read or write refreshes again
            raise

    def _forget_changed(self) -> None:
        """Evict from the caches every aggregate stored since this process last looked: the
        notifications after its position, page by page (a fresh cache past `FORGET_AT_MOST`)."""
        self.reads.clear()
        self._log = None  # its cached right edge is of an older size
        cache = self.repository.cache
        last = self.recorder.max_notification_id() or 0
        if cache is None or last - self._position > FORGET_AT_MOST:
            self._repository = self.construct_repository()
        else:
            while page := self.recorder.select_notifications(self._position + 1, PAGE):
                for notification in page:
                    with contextlib.suppress(KeyError):
                        cache.get(UUID(str(notification.originator_id)), evict=True)
                self._position = page[-1].id
        self._position = max(self._position, last)

    def _reread(self, opening: bool) -> None:
        self._repository = self.construct_repository()  # a fresh aggregate cache
        self._position = self.recorder.max_notification_id() or 0
        self.reads.clear()
        try:
            self._info = self.repository.get(LEDGER_ID)
        except AggregateNotFoundError:
            self._info = None
        self._next_seq = self.size()
        first = self._entries(0, 1)
        self._genesis = first[0].actor if first else None
        self._log = None  # its cached right edge may be stale
        if opening:  # stores written by earlier releases get what they lack, once
            self._backfill_event_ids()
            self._backfill_tree()
            if self.reads.position() < self._next_seq:
                rebuild(self)  # a store written before the read models were kept in it

    def _backfill_event_ids(self) -> None:
        """Give a store written before the event-id table existed its rows, from its log.

        Rows are written with their entries since; a store whose first and last entries have
        theirs has them all. Otherwise every entry's id is added once, in pages."""
        if self._next_seq == 0:
            return
        recorder = self.ledger_recorder()
        ends = [*self._entries(0, 1), *self._entries(self._next_seq - 1, 1)]
        if len(self._select_event_ids([e.event_id for e in ends])) == len(
            {e.event_id for e in ends}
        ) and all(
            recorder.has_signature((kid, micros(at), ends[0].seq))
            for kid, at in _signed(ends[0].envelope)
        ):
            return
        for start in range(0, self._next_seq, PAGE):
            found = self._entries(start, PAGE)
            recorder.backfill_event_ids(
                [(e.event_id, e.seq, hashlib.sha256(_payload(e.envelope)).hexdigest())
                 for e in found],
                [(kid, micros(at), e.seq) for e in found for kid, at in _signed(e.envelope)],
            )  # fmt: skip

    def _backfill_tree(self, exact: bool = False) -> None:
        """Give a store written before the tree existed, or one that lost rows of it, its
        stored hashes, from its log. Opening and refreshes read only the highest index, which
        a lost row in the middle leaves as it is (the audit finds that row missing; `exact`,
        the offline `rebuild`, counts the rows one by one: a start must not grow with the log)."""
        size = self._next_seq
        recorder = self.ledger_recorder()
        if recorder.tree_size_stored(exact) >= merkle.stored_hash_count(size):
            return
        log = self.tlog
        for start in range(0, size, PAGE):
            found = self._entries(start, PAGE)
            tree, _ = log.rows(start, [entry.envelope for entry in found]) if found else ([], None)
            recorder.write_log(tree, None)
            log.committed(start + len(found), tree)

    def rebuild_read_models(self) -> int:
        """`chipledger rebuild`: recompute the read models from the log, and restore stored
        hashes of the tree that were lost; return the log's size."""
        with self._lock:
            self._backfill_tree(exact=True)
            size = rebuild(self)
            self._refresh()
            return size

    # -- writing --------------------------------------------------------------------------------

    def submit(self, body: bytes | dict[str, Any]) -> Outcome:
        """Accept one envelope (raw JSON bytes, or already-parsed JSON)."""
        value = _parse(body, MAX_ENVELOPE_BYTES)
        with self._lock:
            return self._commit(lambda unit: [self._accept(unit, value)])[0]

    def submit_batch(self, body: bytes | dict[str, Any]) -> list[Outcome]:
        """Accept every envelope of `{"envelopes": [...]}` in one transaction, or none."""
        envelopes = _batch_envelopes(_parse(body, MAX_BATCH_BYTES))
        with self._lock:
            return self._commit(lambda unit: self._accept_all(unit, envelopes), careful=False)

    def check(self, body: bytes | dict[str, Any], reader: Reader = EVERYONE) -> CheckView:
        """`POST /v1/checks`: judge one envelope exactly as acceptance would, store nothing.

        The acceptance pipeline runs on a unit that is then dropped (its commit step is the
        only one left out). An envelope with `"signatures": []` is judged as if the signers
        it needs had signed. A party that does not read everything checks only events it
        would sign (as their actor or receiver), on batches it sees: a batch hidden from it is
        judged as one that does not exist (section 6)."""
        value = _parse(body, MAX_ENVELOPE_BYTES)
        unsigned = isinstance(value, dict) and value.get("signatures") == []
        with self._lock:
            self._sync()
            unit = self._unit()
            try:
                decoded = decode(value, self.info.origin, unit.now)
                self._may_check(reader, decoded.event)
                outcome = accept(unit, decoded, self._stored_entry, assume_signed=unsigned)
            except LedgerError as exc:
                error = {"code": exc.code, "message": exc.message}
                return CheckView(accepted=False, error=error, findings=[])
            finally:
                self._discard(unit)
        return CheckView(accepted=True, findings=outcome.receipt.findings)

    def _may_check(self, reader: Reader, event: Any) -> None:
        if reader.sees_all:
            return
        if reader.party not in (event.actor, getattr(event, "to", None)):
            raise NotAuthorized(
                f"{reader.party!r} may check only events it would sign, as their actor or "
                f"receiver, not events of {event.actor!r}"
            )
        batch = getattr(event, "batch", None)
        if not isinstance(batch, str) or self.repository_get(stream_id("batch", batch)) is None:
            return  # a new batch (fabricated) or none: acceptance says what it says
        if not self._sees_batch(reader, batch):
            raise NotFound(f"no batch {batch!r} is recorded")

    def _accept(self, unit: UnitOfWork, value: Any) -> Outcome:
        return accept(unit, decode(value, self.info.origin, unit.now), self._stored_entry)

    def _accept_all(self, unit: UnitOfWork, envelopes: Sequence[Any]) -> list[Outcome]:
        """Judge the envelopes in order, chunk by chunk; the first refusal refuses the batch.

        The chunks come decoded, their signatures checked ahead on another core where there
        is one (`ledger.ahead`); a careful unit looks each chunk's event ids up in one query."""
        outcomes: list[Outcome] = []
        with ahead(envelopes, self.info.origin, unit.now) as batch:
            for chunk in batch.chunks(lambda kid: _public_key(unit, kid)):
                news = [d.event for d, _ in chunk if isinstance(d, Decoded)]
                for kind, names in created_streams(news).items():
                    unit.prefetch(kind, names)  # one query for the chunk, not one per name
                if unit.careful:
                    unit.prefetch_event_ids(d.event.id for d, _ in chunk if isinstance(d, Decoded))
                for item, verified in chunk:
                    try:
                        if isinstance(item, LedgerError):
                            raise item
                        outcomes.append(accept(unit, item, self._stored_entry, verified))
                    except LedgerError as exc:
                        if not unit.careful:
                            raise _Recheck from None  # a repeat may explain it: look ids up
                        raise BatchRefused(len(outcomes), exc) from None
        return outcomes

    def _stored_entry(self, seq: int) -> events.EntryRecorded:
        return self._entries(seq, 1)[0]

    def _commit(
        self, work: Callable[[UnitOfWork], list[Outcome]], careful: bool = True
    ) -> list[Outcome]:
        """Run `work` on a fresh unit and save it. An optimistic (not `careful`) unit does not
        look event ids up before judging: the store's key on them refuses a repeat at commit,
        and any refusal or conflict is judged again, carefully, before it is answered."""
        attempts = 0
        while attempts < 3:
            self._sync()
            unit = self._unit(careful)
            try:
                outcomes = work(unit)
                created = unit.created()
                position = self._save(unit) if unit.entries else None
            except IntegrityError:
                self._refresh()  # another writer moved the log on, or an event id is a repeat
                attempts += 1 if careful else 0  # an optimistic try does not use up one
                careful = True
                continue
            except _Recheck:
                self._discard(unit)
                careful = True
                continue
            except BaseException:
                self._discard(unit)
                raise
            self._committed(unit, created, position)
            self._position = position or self._position
            return outcomes
        raise Conflict("the ledger is busy with another writer; send the envelope again")

    def _save(self, unit: UnitOfWork) -> int:
        """`Application.save` for a unit, in one transaction: the stored events and the event
        ids; then the saved aggregates go to the repository's cache. The library's per-object
        runtime Protocol checks and per-event recording objects are left out (this is most of
        the write path's time); returns the last notification id."""
        aggregates = unit.aggregates()
        pending = [event for aggregate in aggregates for event in aggregate.collect_events()]
        to_store = cast(list[DomainEventProtocol[UUID]], [*pending, *unit.entries, *unit.findings])
        stored = [self.mapper.to_stored_event(event) for event in to_store]
        event_ids = [(event_id, seq, digest) for event_id, (seq, digest) in unit.event_ids.items()]
        unit.tree, checkpoint = self.tlog.rows(
            unit.entries[0].seq, [entry.envelope for entry in unit.entries]
        )
        reads = unit.read_changes
        for found in unit.findings:
            reads.on_findings(found.seq, found.at, found.findings)
        reads.position = unit.next_seq
        notification_ids = self.recorder.insert_events(
            stored, event_ids=event_ids, signatures=unit.signed, tree=unit.tree,
            checkpoint=checkpoint, reads=reads,
        )  # fmt: skip
        assert notification_ids, "an application recorder returns notification ids"
        if (cache := self.repository.cache) is not None:
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)
        return max(notification_ids)

    def _discard(self, unit: UnitOfWork) -> None:
        """Forget every cached aggregate a refused or failed unit touched: it may have changed
        them in place, and a failed save may already have collected their pending events."""
        cache = self.repository.cache
        for aggregate in unit.loaded():
            aggregate.collect_events()
            if cache is not None:
                with contextlib.suppress(KeyError):
                    cache.get(aggregate.id, evict=True)

    def _committed(self, unit: UnitOfWork, created: list[UUID], position: int | None) -> None:
        if position is None:
            return
        self._next_seq, self._genesis = unit.next_seq, unit.genesis
        self.tlog.committed(unit.next_seq, unit.tree)
        self.reads.committed(unit.read_changes, created)

    def _unit(self, careful: bool = True) -> UnitOfWork:
        return UnitOfWork(
            self.repository,
            self.reads,
            next_seq=self._next_seq,
            now=self.clock(),
            genesis=self._genesis,
            trust_root=self.info.authority_key,
            event_ids=self._select_event_ids,
            careful=careful,
            signed_after=self._signed_after,
        )

    def _signed_after(self, keyid: str, after: int) -> list[int]:
        return self.ledger_recorder().signed_after(keyid, after)

    def _select_event_ids(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        return self.ledger_recorder().select_event_ids(ids)

    # -- reading the ledger and its log --------------------------------------------------------

    def ledger_info(self) -> LedgerInfoView:
        with self._lock:
            self._sync()
        info = self.info
        return LedgerInfoView(
            origin=info.origin,
            log_key=info.log_key,
            authority=Authority(party=self._genesis, key=info.authority_key),
            size=self.size(),
            version=PROTOCOL_VERSION,
        )

    def size(self) -> int:
        last = self.recorder.select_events(LOG_ID, desc=True, limit=1)
        return last[0].originator_version + 1 if last else 0

    def log_entries(
        self, start: int = 0, limit: int = 100, reader: Reader = EVERYONE
    ) -> LogEntries:
        needs_all(reader, "the whole log")
        if start < 0 or not 1 <= limit <= 1000:
            raise InvalidEvent("start must be >= 0 and limit between 1 and 1000")
        if start >= self.size():
            return LogEntries(entries=[])  # and no query past SQLite's integers
        entries = [
            LogEntry(seq=e.seq, envelope=parse_json(e.envelope.encode()))
            for e in self._entries(start, limit)
        ]
        return LogEntries(entries=entries)

    # -- the transparency log (PROTOCOL.md section 8) ------------------------------------------

    def checkpoint(self) -> str:
        """The latest signed checkpoint, a C2SP signed note."""
        with self._lock:
            self._sync()
            return self.tlog.checkpoint(self._next_seq)[1]

    def checkpoints(self, after: int = -1, limit: int = 1_000) -> list[tuple[int, str]]:
        """Every checkpoint signed, by tree size, from above `after`."""
        return self.tlog.recorder.checkpoints(after, limit)

    def inclusion(self, seq: int, size: int | None = None) -> InclusionView:
        """Entry `seq`'s leaf hash and its inclusion proof in the tree of `size` (default: the
        latest checkpoint's), which a checkpoint must have covered."""
        with self._lock:
            self._sync()
            latest = self.tlog.checkpoint(self._next_seq)[0]
            size = latest if size is None else size
            _within(size, latest, "size")
            if not 0 <= seq < size:
                raise NotFound(f"seq {seq} is not in the tree of size {size}")
            leaf, proof = self.tlog.inclusion(seq, size)
        return InclusionView(
            seq=seq, size=size, leaf_hash=leaf.hex(), hashes=[h.hex() for h in proof]
        )

    def consistency(self, old: int, new: int) -> ConsistencyView:
        """The consistency proof between trees of sizes `old` and `new` (1 <= old <= new)."""
        with self._lock:
            self._sync()
            latest = self.tlog.checkpoint(self._next_seq)[0]
            _within(new, latest, "to")
            if not 1 <= old <= new:
                raise BadRequest(f"from {old} and to {new}: a proof needs 1 <= from <= to")
            proof = self.tlog.consistency(old, new)
        return ConsistencyView.model_validate(
            {"from": old, "to": new, "hashes": [h.hex() for h in proof]}
        )

    def _entries(self, start: int, limit: int) -> list[events.EntryRecorded]:
        found = self.events.get(LOG_ID, gt=start - 1, lte=start + limit - 1)
        return [e for e in found if isinstance(e, events.EntryRecorded)]

    # -- reading custody state (PROTOCOL.md section 6) ------------------------------------------

    def as_of(self, text: str | None) -> AsOf | None:
        """Parse an `as_of` query value against this ledger's size."""
        return AsOf.parse(text, self.size())

    # Reads take the writers' lock: units change cached aggregates in place until they commit.

    def batch(
        self, batch_id: str, as_of: AsOf | None = None, reader: Reader = EVERYONE
    ) -> BatchView:
        with self._lock:
            self._visible(reader, batch_id)
            return BatchView.of(self._batch(batch_id, as_of))

    def history(
        self, batch_id: str, as_of: AsOf | None = None, reader: Reader = EVERYONE
    ) -> HistoryView:
        with self._lock:
            self._visible(reader, batch_id)
            seqs = list(self._batch(batch_id, as_of).history)
        return HistoryView(batch=batch_id, entries=[self._history_entry(s) for s in seqs])

    def serial(
        self, serial: str, as_of: AsOf | None = None, reader: Reader = EVERYONE
    ) -> SerialView:
        with self._lock:
            self._sync()
            found = self.reads.serial(serial, as_of)
            if found is not None and not self._sees_batch(reader, found):
                found = None
        if found is None:
            raise NotFound(f"no batch holds serial {serial!r}")
        return SerialView(serial=serial, batch=found)

    def allocation(
        self, party: str, as_of: AsOf | None = None, reader: Reader = EVERYONE
    ) -> AllocationView:
        with self._lock:
            self._sync()
            hidden = not access.sees_party(reader, party)
            if hidden or self.repository_get(stream_id("party", party)) is None:
                raise NotFound(f"no party {party!r} is registered")
            return AllocationView.of(party, tally(self.reads.rows(("party", party), as_of), party))

    # -- licenses, rule packs, flags (PROTOCOL.md section 6) -------------------------------------

    def license(
        self, license_id: str, as_of: AsOf | None = None, reader: Reader = EVERYONE
    ) -> LicenseView:
        """A license's terms, and its use and status now or `as_of` (from `rm_license_uses`:
        the chips each citing entry moved, by seq and `at`)."""
        with self._lock:
            self._sync()
            found = self.repository_get(stream_id("license", license_id))
            seq, at = bounds(as_of)
            granted = isinstance(found, License) and (
                found.granted_seq <= seq and micros(found.granted_at) <= at
            )
            if not granted or not access.sees_party(reader, found.terms.holder):
                raise NotFound(f"no license {license_id!r} was granted")
            used = self.reads.license_used(license_id, as_of) if as_of else found.used_quantity
            revoked = found.revoked_at is not None and found.revoked_seq <= seq
            revoked = revoked and micros(found.revoked_at) <= at
            clock = as_of.at if as_of is not None and as_of.at is not None else self.clock()
        terms = found.terms.to_json()
        return LicenseView(**terms, used_quantity=used, status=found.status(clock, revoked))

    def policies(self) -> PoliciesView:
        with self._lock:
            self._sync()
            book = self.repository_get(stream_id("policy", "book"))
        packs = book.packs if isinstance(book, PolicyBook) else []
        return PoliciesView(
            policies=[
                PolicyEntry(id=p.id, effective_from=format_time(p.effective_from), seq=p.seq or 0)
                for p in packs
            ]
        )

    def current_policy(self, as_of: AsOf | None = None) -> dict[str, Any]:
        """The pack in force now, or at `as_of`, exactly as adopted or built in."""
        with self._lock:
            self._sync()
            sid = stream_id("policy", "book")
            book = self.repository_get(sid) if as_of is None else fold(self.events.get(sid), as_of)
            clock = as_of.at if as_of is not None and as_of.at is not None else self.clock()
        return in_force(book if isinstance(book, PolicyBook) else None, clock).raw

    def flags(
        self, where: dict[str, str], as_of: AsOf | None = None, reader: Reader = EVERYONE
    ) -> FlagsView:
        """Stored flags up to `as_of`, and the time-judged ones (section 7) with the clock of
        section 6: `as_of` a time T judges the state as of T at T; a seq, or none, judges at now.
        """
        with self._lock:
            self._sync()
            found = self.reads.flags(where, as_of)
            seen = timejudged.clocked(
                self.reads,
                self.repository_get,
                self.events.get,
                where,
                as_of,
                self.clock(),
                self.grants,
            )
            found += [
                flag
                for flag in judge_now(seen)
                if all(flag.get(key) == value for key, value in where.items())
            ]
            if not reader.sees_all:
                found = [
                    flag
                    for flag in found
                    if access.sees_flag(reader, flag, lambda b: self._sees_batch(reader, b))
                ]
        return FlagsView(flags=sorted(found, key=lambda flag: flag["seq"]))

    def repository_get(self, aggregate_id: UUID) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _batch(self, batch_id: str, as_of: AsOf | None) -> Batch:
        batch = self._batch_or_none(batch_id, as_of)
        if batch is None:
            raise NotFound(f"no batch {batch_id!r} is recorded")
        return batch

    def _batch_or_none(self, batch_id: str, as_of: AsOf | None) -> Batch | None:
        self._sync()
        if as_of is None:
            found = self.repository_get(stream_id("batch", batch_id))
            return found if isinstance(found, Batch) else None
        return batch_as_of(self.events.get(stream_id("batch", batch_id)), as_of)

    def _history_entry(self, seq: int) -> HistoryEntry:
        entry = self._entries(seq, 1)[0]
        envelope = parse_json(entry.envelope.encode())
        event = parse_json(b64decode_strict(envelope["payload"], "payload"))
        return HistoryEntry(seq=seq, recorded_at=entry.recorded_at, envelope=envelope, event=event)

    # -- read sessions (PROTOCOL.md section 6) -------------------------------------------------

    def open_session(self, body: bytes | dict[str, Any]) -> SessionView:
        """`POST /v1/sessions`: a token for the party one of whose active keys signed a fresh
        `session.requested` envelope with an id never used before; nothing enters the log."""
        value = _parse(body, MAX_ENVELOPE_BYTES)
        with self._lock:
            self._sync()
            now = self.clock()
            decoded = decode(value, self.info.origin, now, parse=sessions.parse_request)
            event = decoded.event
            sessions.check_fresh(event.at, now)
            unit = self._unit()
            keyid = None
            for kid, signature in decoded.signatures:
                found = unit.active_key(kid)
                if found is None or not verify(found[1], decoded.message, signature):
                    raise BadSignature(
                        f"the signature by key {kid} does not verify under an active key"
                    )
                if found[0] == event.actor:
                    keyid = keyid or kid
            if keyid is None:
                raise NotAuthorized(
                    f"a session for {event.actor!r} needs a signature by one of its active keys"
                )
            recorder = self.ledger_recorder()
            if self._select_event_ids([event.id]) or recorder.session_id_used(event.id):
                raise Conflict(
                    f"the id {event.id} was used before; a session request needs a new one"
                )
            token = sessions.new_token()
            expires = now + self.session_lifetime
            try:
                recorder.open_session(
                    event.id, sessions.token_digest(token), (event.actor, keyid, micros(expires))
                )
            except IntegrityError:
                raise Conflict(f"the id {event.id} was used before") from None
        return SessionView(token=token, party=event.actor, expires_at=format_time(expires))

    def session_party(self, token: str) -> str:
        """The party a bearer token reads as; Unauthenticated if it is unknown, expired, or
        the key that asked for it is no longer active."""
        found = self.ledger_recorder().select_session(sessions.token_digest(token))
        if found is None:
            raise Unauthenticated("that token is not one this ledger gave out")
        party, keyid, expires = found
        with self._lock:
            self._sync()
            if micros(self.clock()) >= expires:
                raise Unauthenticated("that token has expired; ask for a new session")
            active = self._unit().active_key(keyid)
        if active is None or active[0] != party:
            raise Unauthenticated("the key that asked for that token was revoked")
        return party

    def reader(self, token: str | None) -> Reader:
        """Who a request reads as: the party of its session token (section 6)."""
        if token is None:
            raise Unauthenticated(
                "this read needs a token: send Authorization: Bearer <token>; "
                "POST /v1/sessions gives one"
            )
        party = self.session_party(token)
        with self._lock:
            found = self.repository_get(stream_id("party", party))
        return Reader.of(party, found.roles if found is not None else ())

    def _sees_batch(self, reader: Reader, batch_id: str) -> bool:
        def parent_of(name: str) -> str | None:
            found = self.repository_get(stream_id("batch", name))
            return found.parent if isinstance(found, Batch) else None

        return access.sees_batch(reader, batch_id, self.reads.involved, parent_of)

    def _visible(self, reader: Reader, batch_id: str) -> None:
        """A batch the reader may not see is answered as one that does not exist."""
        self._sync()
        if not self._sees_batch(reader, batch_id):
            raise NotFound(f"no batch {batch_id!r} is recorded")

    def ledger_recorder(self) -> Recorder:
        return ours(self.recorder)  # the one place that narrows the library's recorder

    # -- evidence bundles (PROTOCOL.md section 9) ---------------------------------------------

    def bundle(self, batch_id: str, reader: Reader = EVERYONE) -> Bundle:
        """The evidence bundle of a batch's lineage at the latest checkpoint, its head
        statements and manifest signed by the log key (which the ledger must hold)."""
        with self._lock:
            self._sync()
            self._visible(reader, batch_id)
            self._batch(batch_id, None)  # an unknown batch is a 404 before anything else
            if self._log_signer is None:
                raise NotFound(
                    "no evidence bundle can be made: this ledger holds no log key to sign "
                    "head statements; serve it with --log-key"
                )
            size, note = self.tlog.checkpoint(self._next_seq)
            source = Source(
                origin=self.info.origin,
                size=size,
                checkpoint=note,
                signer=self._log_signer,
                stream=lambda kind, name: self.events.get(stream_id(kind, name)),
                entry=self._stored_entry,
                proof=lambda seq: self.tlog.inclusion(seq, size)[1],
            )
            return make_bundle(source, batch_id)


def _within(size: int, latest: int, name: str) -> None:
    if size > latest:
        raise NotFound(f"{name} {size} is past the latest checkpoint (tree size {latest})")


class _Recheck(Exception):
    """An optimistic unit met a refusal: judge the batch again with event ids looked up."""


def _fold(stored: Iterable[Any], as_of: AsOf, found: Any = None) -> Any:
    """An aggregate after its events that `as_of` includes (by their seq and their `at`)."""
    for event in stored:
        at = event.at if hasattr(event, "at") else event.fact.at
        if not as_of.includes(event.accepted.seq, at):
            break
        found = event.mutate(found)
    return found


def _signed(envelope: str) -> list[tuple[str, datetime]]:
    """(key id, the event's `at`) for each signature of a stored envelope."""
    value = parse_json(envelope.encode("utf-8"))
    at = parse_time(parse_json(_payload(envelope))["at"])
    return [(s["keyid"], at) for s in value["signatures"]]


def _payload(envelope: str) -> bytes:
    """The payload bytes of a stored (accepted, canonical) envelope."""
    return b64decode_strict(parse_json(envelope.encode("utf-8"))["payload"], "payload")


def _public_key(unit: UnitOfWork, kid: str) -> bytes | None:
    found = unit.active_key(kid)
    return found[1] if found else None


def _parse(body: bytes | dict[str, Any], limit: int) -> Any:
    if isinstance(body, dict):
        return body
    if len(body) > limit:
        raise TooLarge(f"the body is {len(body)} bytes; the limit is {limit} bytes")
    return parse_json(body)


def _batch_envelopes(value: Any) -> list[Any]:
    if not isinstance(value, dict) or set(value) != {"envelopes"}:
        raise InvalidEvent('a batch must be {"envelopes": [envelope, ...]} and nothing else')
    envelopes = value["envelopes"]
    if not isinstance(envelopes, list) or not 1 <= len(envelopes) <= MAX_BATCH:
        raise InvalidEvent(f"'envelopes' must be a list of 1 to {MAX_BATCH} envelopes")
    return envelopes
