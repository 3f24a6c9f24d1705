"""The ledger application: the one use-case API that the HTTP API and the CLI both call.

Every envelope takes one path, `_accept`, in the order of PROTOCOL.md section 5: decode
(schema), repeat, signatures, signers and roles, references and state, judge, then append to
the unit of work. `submit` and `submit_batch` commit the unit in one transaction; a refusal
stores nothing and uses no `seq`. `seq` is the version of the log stream, so two writers can
never both take the same one: the event store refuses the second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from ledger import events
from ledger.aggregates import LEDGER_ID, LOG_ID, LedgerInfo
from ledger.canonical import parse_json
from ledger.crypto import Signer, decode_public_key, key_id
from ledger.envelopes import Decoded, decode, verify_signatures
from ledger.errors import (
    BatchRefused,
    Conflict,
    InvalidEvent,
    LedgerError,
    NotAuthorized,
    NotFound,
    TooLarge,
)
from ledger.notes import verifier_key
from ledger.persistence import store_env
from ledger.registry import COMMANDS
from ledger.unit import UnitOfWork
from ledger.views import (
    Authority,
    LedgerInfoView,
    LogEntries,
    LogEntry,
    Outcome,
    Receipt,
)
from ledger.wire import format_time

PROTOCOL_VERSION = 1
MAX_BATCH = 1000
MAX_BATCH_BYTES = 16 << 20
MAX_ENVELOPE_BYTES = 1 << 20
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ledger(Application[UUID]):
    """chipledger: signed custody events in an eventsourcing store."""

    name = "Ledger"
    env = {  # noqa: RUF012 (the library reads this class attribute)
        "AGGREGATE_CACHE_MAXSIZE": "50000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
    }

    def __init__(self, store: str, clock: Clock = utc_now) -> None:
        super().__init__(env=store_env(store))
        self.store = store
        self.clock = clock
        self._lock = threading.RLock()
        self._info: LedgerInfo | None = None
        self._genesis: str | None = None
        self._next_seq = 0
        self._refresh()

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

    @property
    def info(self) -> LedgerInfo:
        if self._info is None:
            raise NotFound(f"{self.store} holds no ledger yet; run `chipledger init` first")
        return self._info

    def _sync(self) -> None:
        """Catch up with another writer of the same store, if the log moved on without us."""
        if self.size() != self._next_seq:
            self._refresh()

    def _refresh(self) -> None:
        """Read what other writers may have changed: the ledger, the log head, the genesis."""
        try:
            self._info = self.repository.get(LEDGER_ID)
        except AggregateNotFoundError:
            self._info = None
        last = list(self.events.get(LOG_ID, desc=True, limit=1))
        self._next_seq = last[0].originator_version + 1 if last else 0
        first = self._entries(0, 1)
        self._genesis = self._actor(first[0]) if first else None
        self._repository = self.construct_repository()  # a fresh aggregate cache

    # -- writing --------------------------------------------------------------------------------

    def submit(self, body: bytes | dict[str, Any]) -> Outcome:
        """Accept one envelope (raw JSON bytes, or already-parsed JSON)."""
        value = self._parse(body, MAX_ENVELOPE_BYTES)
        with self._lock:
            return self._commit(lambda unit: [self._accept(unit, value)])[0]

    def submit_batch(self, body: bytes | dict[str, Any]) -> list[Outcome]:
        """Accept every envelope of `{"envelopes": [...]}` in one transaction, or none."""
        value = self._parse(body, MAX_BATCH_BYTES)
        envelopes = _batch_envelopes(value)
        with self._lock:
            return self._commit(lambda unit: self._accept_all(unit, envelopes))

    def _accept_all(self, unit: UnitOfWork, envelopes: Sequence[Any]) -> list[Outcome]:
        outcomes = []
        for index, value in enumerate(envelopes):
            try:
                outcomes.append(self._accept(unit, value))
            except LedgerError as exc:
                raise BatchRefused(index, exc) from None
        return outcomes

    def _commit(self, work: Callable[[UnitOfWork], list[Outcome]]) -> list[Outcome]:
        for _attempt in range(3):
            self._sync()
            unit = self._unit()
            outcomes = work(unit)
            try:
                if unit.entries:
                    self.save(*unit.pending())
            except IntegrityError:
                self._refresh()  # another writer moved the log on: judge again on fresh state
                continue
            self._next_seq = unit.next_seq
            self._genesis = unit.genesis
            return outcomes
        raise Conflict("the ledger is busy with another writer; send the envelope again")

    def _unit(self) -> UnitOfWork:
        return UnitOfWork(
            self.repository,
            next_seq=self._next_seq,
            now=self.clock(),
            genesis=self._genesis,
            trust_root=self.info.authority_key,
        )

    @staticmethod
    def _parse(body: bytes | dict[str, Any], limit: int) -> Any:
        if isinstance(body, dict):
            return body
        if len(body) > limit:
            raise TooLarge(f"the body is {len(body)} bytes; the limit is {limit} bytes")
        return parse_json(body)

    # -- the acceptance pipeline (PROTOCOL.md section 5) -----------------------------------

    def _accept(self, unit: UnitOfWork, value: Any) -> Outcome:
        decoded = decode(value, self.info.origin, unit.now)
        event = decoded.event
        repeat = self._repeat(unit, decoded)
        if repeat is not None:
            return Outcome(receipt=repeat, repeated=True)
        command = COMMANDS[event.type]
        signers = verify_signatures(decoded, unit.active_key, command.introduced(event))
        self._check_signers(decoded, signers, command.cosigners(event, unit), unit)
        command.authorize(event, unit)
        command.check(event, unit)
        findings: list[dict[str, Any]] = []  # the rules of section 7 judge here
        accepted = events.Accepted(seq=unit.next_seq, envelope_hash=decoded.envelope_hash)
        command.apply(event, unit, accepted)
        return Outcome(receipt=self._append(unit, decoded, findings), repeated=False)

    def _repeat(self, unit: UnitOfWork, decoded: Decoded) -> Receipt | None:
        claim = unit.claim(f"event:{decoded.event.id}")
        if claim is None:
            return None
        if claim.digest != decoded.payload_digest:
            raise Conflict(
                f"event id {decoded.event.id} was accepted with other payload bytes; "
                "an event id names one event: choose a new id"
            )
        entry = unit.recorded(claim.seq) or self._entries(claim.seq, 1)[0]
        return _receipt(entry)

    @staticmethod
    def _check_signers(
        decoded: Decoded, signers: dict[str, str], cosigners: set[str], unit: UnitOfWork
    ) -> None:
        event = decoded.event
        if not signers:
            raise NotAuthorized(f"the envelope has no signatures; {event.actor!r} must sign it")
        parties = set(signers.values())
        introduced = set(COMMANDS[event.type].introduced(event).values())
        required = {event.actor} | cosigners | introduced
        if missing := sorted(required - parties):
            raise NotAuthorized(f"{event.type} must be signed by {', '.join(map(repr, missing))}")
        if extra := sorted(parties - required):
            raise NotAuthorized(
                f"only {', '.join(map(repr, sorted(required)))} may sign this {event.type}; "
                f"remove the signature of {', '.join(map(repr, extra))}"
            )
        unsigned = [k for k in COMMANDS[event.type].introduced(event) if not _signed_by(k, signers)]
        if unsigned:
            raise NotAuthorized(
                f"every new key must sign (proof of possession); {unsigned[0]} did not"
            )

    def _append(
        self, unit: UnitOfWork, decoded: Decoded, findings: list[dict[str, Any]]
    ) -> Receipt:
        event = decoded.event
        entry = events.EntryRecorded(
            originator_id=LOG_ID,
            originator_version=unit.next_seq,
            timestamp=unit.now,
            seq=unit.next_seq,
            event_id=event.id,
            event_type=event.type,
            actor=event.actor,
            envelope=decoded.canonical.decode("utf-8"),
            envelope_hash=decoded.envelope_hash,
            leaf_hash=decoded.leaf_hash,
            recorded_at=format_time(unit.now),
            findings=findings,
        )
        unit.take(f"event:{event.id}", event.actor, decoded.payload_digest)
        unit.entries.append(entry)
        unit.next_seq += 1
        return _receipt(entry)

    # -- reading --------------------------------------------------------------------------------

    def ledger_info(self) -> LedgerInfoView:
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
        last = list(self.events.get(LOG_ID, desc=True, limit=1))
        return last[0].originator_version + 1 if last else 0

    def log_entries(self, start: int = 0, limit: int = 100) -> LogEntries:
        if start < 0 or not 1 <= limit <= 1000:
            raise InvalidEvent("start must be >= 0 and limit between 1 and 1000")
        entries = [
            LogEntry(seq=e.seq, envelope=parse_json(e.envelope.encode()))
            for e in self._entries(start, limit)
        ]
        return LogEntries(entries=entries)

    def _entries(self, start: int, limit: int) -> list[events.EntryRecorded]:
        found = self.events.get(LOG_ID, gt=start - 1, lte=start + limit - 1)
        return [e for e in found if isinstance(e, events.EntryRecorded)]

    @staticmethod
    def _actor(entry: events.EntryRecorded) -> str:
        return entry.actor


def _signed_by(public_key: str, signers: dict[str, str]) -> bool:
    return key_id(decode_public_key(public_key)) in signers


def _receipt(entry: events.EntryRecorded) -> Receipt:
    return Receipt(
        seq=entry.seq,
        id=entry.event_id,
        type=entry.event_type,
        recorded_at=entry.recorded_at,
        envelope_hash=entry.envelope_hash,
        leaf_hash=entry.leaf_hash,
        findings=entry.findings,
    )


def _batch_envelopes(value: Any) -> list[Any]:
    if not isinstance(value, dict) or set(value) != {"envelopes"}:
        raise InvalidEvent('a batch must be {"envelopes": [envelope, ...]} and nothing else')
    envelopes = value["envelopes"]
    if not isinstance(envelopes, list) or not 1 <= len(envelopes) <= MAX_BATCH:
        raise InvalidEvent(f"'envelopes' must be a list of 1 to {MAX_BATCH} envelopes")
    return envelopes
