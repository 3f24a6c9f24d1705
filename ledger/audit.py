"""`chipledger audit` (PROTOCOL.md section 10): re-derive what a store holds from its log and
compare it, byte for byte, with what the store holds. Nothing is written to the audited store.

1. Each entry, on every usable core: its envelope passes acceptance's schema stage (`decode`,
   with the entry's `recorded_at` as the clock) and is stored in canonical form, and each
   signature verifies under the key its key id names.
2. In seq order: the log has no gap; each signing key was registered and not revoked when the
   entry was accepted (or the entry introduces it); each batch event's `prev` is its batch's
   head. The RFC 6962 tree recomputed from the entries must equal every stored hash, and each
   stored checkpoint must open under the log key with the recomputed root at its size (any two
   are then consistent: both are roots of the one recomputed tree).
3. The rebuild, alongside 1 and 2: a fresh in-memory ledger accepts the entries again, in
   order, at the clock of their `recorded_at` (signatures found good in 1 are not verified
   again); then every stored event, event-id row and signatures-index row is compared with the
   rebuild's. A refused entry ends the rebuild: what later entries wrote is then not compared.
Roles, signers and custody rules are acceptance's, so 3 judges them. `audit` returns a report
naming every problem and the first bad `seq`; it raises only when there is no ledger to audit.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, TypeVar

from eventsourcing.persistence import InfrastructureFactory, PersistenceError
from eventsourcing.utils import Environment, get_topic

from ledger import events, merkle, wire
from ledger.acceptance import COMMANDS, accept
from ledger.aggregates import LEDGER_ID, LOG_ID
from ledger.ahead import usable_cores
from ledger.application import Ledger
from ledger.canonical import canonical_text, parse_json
from ledger.crypto import decode_public_key, key_id, verify
from ledger.envelopes import Decoded, decode
from ledger.errors import LedgerError, NotFound
from ledger.notes import Checkpoint, open_note, parse_checkpoint, parse_verifier_key, verifier_key
from ledger.persistence import JsonTranscoder, PydanticMapper, store_env
from ledger.recorders import PostgresLedgerRecorder, SQLiteLedgerRecorder, StoredRow
from ledger.replay import SetClock
from ledger.signing import is_file, read_signer
from ledger.unit import UnitOfWork
from ledger.views import Outcome
from ledger.wire import parse_time

Recorder = SQLiteLedgerRecorder | PostgresLedgerRecorder
Progress = Callable[[str, int, int], None]
"""Told the phase ("entries", "checkpoints", "stored events"), how much is done, of how much."""
Verified = frozenset[tuple[str, bytes]]  # (key id, public key) of signatures that verify
Row = tuple[int, bytes]  # a stored log entry: seq, state
T = TypeVar("T")
PAGE = 1000
NICE = 10
LISTED = 10  # problems listed per kind; the others are counted
_MAPPER = PydanticMapper(JsonTranscoder())
_KEY_TOPICS = (get_topic(events.PartyRegistered), get_topic(events.PartyKeyAdded))
_NO_LEAF = merkle.leaf_hash(b"")
_MISSING = object()
_TREE = {
    "differs": "differs from the hash recomputed from the entries{more}",
    "missing": "is missing from the tree{more}",
    "extra": "is beyond the tree of the log's {size} entries{more}: entries are missing",
}


@dataclass(frozen=True)
class Problem:
    """One thing that does not hold, where it is, and a sentence saying what."""

    what: str  # entry, envelope, signature, key, prev, tree, checkpoint, rebuild, state, index
    message: str
    seq: int | None = None
    index: int | None = None  # a stored-hash index of the tree
    size: int | None = None  # a checkpoint's tree size
    stream: str | None = None  # a stored event's originator id (hex) and version
    version: int | None = None

    @property
    def where(self) -> str:
        named = (("seq", self.seq), ("stored hash", self.index), ("checkpoint", self.size))
        found = [f"{name} {value}" for name, value in named if value is not None]
        return ", ".join(found) or self.what


@dataclass
class AuditReport:
    """What was checked, how long it took, and the problems (the first `LISTED` of each kind)."""

    store: str
    log_key: str
    log_key_from_store: bool  # no key was given: the one the store records is trusted
    cores: int  # usable
    workers: int  # processes that ran phase 1, besides this one
    entries: int = 0
    signatures: int = 0  # verified
    checkpoints: int = 0
    covered: int = 0  # entries covered by a good checkpoint (the ones after it, by none)
    signed_through: int = 0  # the largest tree size of a stored checkpoint, good or not
    stored_events: int = 0  # compared with the rebuild's
    rebuilt: int | None = None  # the rebuild accepted seqs below this one (None: no rebuild)
    seconds: dict[str, float] = field(default_factory=dict)  # by phase, and "total"
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # problems found, by kind
    first_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def unlisted(self) -> int:
        return sum(self.counts.values()) - len(self.problems)

    @property
    def rate(self) -> float:
        """Entries audited per second, every phase included."""
        total = self.seconds.get("total", 0.0)
        return self.entries / total if total else 0.0

    def add(self, what: str, message: str, **where: Any) -> None:
        problem = Problem(what, message, **where)
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.counts[what] <= LISTED:
            self.problems.append(problem)
        seq = problem.seq
        if seq is not None and (self.first_bad_seq is None or seq < self.first_bad_seq):
            self.first_bad_seq = seq


def audit(
    store: str,
    log_key: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    rebuild: bool = True,
    allow_uncovered: bool = False,
) -> AuditReport:
    """Audit the ledger in `store` (a SQLite path or a postgresql:// URL).

    `log_key`: the log's `.key` file, a file holding its verifier key, or that key; without
    it the key the store records is trusted. `workers`: processes for phase 1 (default one
    per usable core; 0: all here). `rebuild=False` leaves out the rebuild and comparisons.
    Entries no stored checkpoint covers are a problem (the log key vouches for nothing after
    the last one: entries dropped or rolled back with their checkpoints would look whole)
    unless `allow_uncovered` (a store a writer without the log key added to); a stored
    checkpoint that fails is reported as itself."""
    started = time.perf_counter()
    if "://" not in store and not Path(store).is_file():
        raise NotFound(f"there is no ledger store at {store}")
    # The ledger's own names (its PostgreSQL table is named after it), and nothing created.
    env = Environment(Ledger.name, {**store_env(store), "CREATE_TABLE": "n"})
    factory = InfrastructureFactory.construct(env)
    try:
        recorder = factory.application_recorder()
        assert isinstance(recorder, SQLiteLedgerRecorder | PostgresLedgerRecorder)
        report = _Audit(store, recorder, log_key, progress or _quiet, workers, rebuild).run()
        if report.signed_through < report.entries and not allow_uncovered:
            report.add(
                "checkpoint",
                f"no checkpoint is stored for the entries from seq {report.signed_through} on, "
                "so the log key vouches for none of them (a ledger holding the key signs one "
                "when asked; --allow-uncovered accepts them as they are)",
                seq=report.signed_through,
            )
    finally:
        factory.close()
    report.seconds["total"] = time.perf_counter() - started
    return report


def _quiet(phase: str, done: int, total: int) -> None:
    """No progress shown."""


# -- 1. each entry, on a worker process ------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What phase 2 reads of an entry's event."""

    envelope_hash: str
    signers: tuple[str, ...]  # key ids
    introduced: tuple[tuple[str, str], ...]  # (public key, party) of keys the event introduces
    revoked: tuple[str, str] | None  # (party, key id)
    batch: str | None  # the batch a batch event is about
    prev: str | None  # its `prev` (None: a fabrication)
    children: tuple[str, ...]  # the batches a split makes


@dataclass(frozen=True)
class Checked:
    """One entry as phase 1 found it; `decoded` only when the rebuild asked for it."""

    seq: int
    leaf: bytes
    recorded_at: datetime | None = None
    summary: Summary | None = None  # None: the envelope does not decode
    decoded: Decoded | None = None
    verified: Verified = frozenset()
    unknown: tuple[str, ...] = ()  # key ids phase 1 had no key for
    problems: tuple[tuple[str, str], ...] = ()


def check_entries(
    origin: str, keys: dict[str, bytes], rows: list[Row], keep: bool = False
) -> list[Checked]:
    """Phase 1 of stored log entries, with `keys` by key id; `keep` the decoded envelopes."""
    return [check_entry(origin, keys, seq, state, keep) for seq, state in rows]


def check_entry(origin: str, keys: dict[str, bytes], seq: int, state: bytes, keep: bool) -> Checked:
    """Phase 1 of one stored entry: its envelope decoded as acceptance decodes it, at the clock
    of the entry's `recorded_at`, stored in canonical form, and its signatures verified."""
    try:
        entry = json.loads(state)
        data, recorded_at = entry["envelope"].encode(), parse_time(entry["recorded_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return Checked(seq, _NO_LEAF, problems=(("entry", "the stored entry is unreadable"),))
    leaf = merkle.leaf_hash(data)
    problems = [] if entry.get("seq") == seq else [("entry", f"it says seq {entry.get('seq')}")]
    try:  # a canonical text needs no check for duplicated keys: it would not re-encode
        value = canonical_text(data)
        decoded = decode(parse_json(data) if value is None else value, origin, recorded_at)
    except LedgerError as exc:
        problems.append(("envelope", f"acceptance refuses the stored envelope: {exc.message}"))
        return Checked(seq, leaf, recorded_at, problems=tuple(problems))
    if decoded.canonical != data:
        problems.append(("envelope", "the stored envelope is not in its canonical JSON form"))
    summary = _summary(decoded)
    verified, unknown = _verify(decoded, summary, keys, problems)
    kept = decoded if keep else None
    return Checked(seq, leaf, recorded_at, summary, kept, verified, unknown, tuple(problems))


def _verify(
    decoded: Decoded, summary: Summary, keys: dict[str, bytes], problems: list[tuple[str, str]]
) -> tuple[Verified, tuple[str, ...]]:
    """The signatures that verify under the keys their key ids name (known, or introduced
    by the event itself), and the key ids of no key known; a failure is a problem."""
    new = {key_id(k): k for k in (decode_public_key(text) for text, _ in summary.introduced)}
    verified: set[tuple[str, bytes]] = set()
    unknown: list[str] = []
    message = decoded.message
    for kid, signature in decoded.signatures:
        key = keys.get(kid) or new.get(kid)
        if key is None:
            unknown.append(kid)
        elif verify(key, message, signature):
            verified.add((kid, key))
        else:
            problems.append(("signature", f"the signature by key {kid} does not verify"))
    return frozenset(verified), tuple(unknown)


def _summary(decoded: Decoded) -> Summary:
    event = decoded.event
    batch = event.batch if isinstance(event, wire.BatchFabricated | wire.BatchEventBase) else None
    return Summary(
        decoded.envelope_hash,
        tuple(kid for kid, _ in decoded.signatures),
        tuple(COMMANDS[event.type].introduced(event).items()),
        (event.party, event.keyid) if isinstance(event, wire.PartyKeyRevoked) else None,
        batch,
        event.prev if isinstance(event, wire.BatchEventBase) else None,
        tuple(p.batch for p in event.into) if isinstance(event, wire.BatchSplit) else (),
    )


def open_checkpoints(vkey: str, rows: list[tuple[int, str]]) -> list[tuple[int, Checkpoint | str]]:
    """Stored checkpoints (size, note) opened under `vkey`: (size, checkpoint or why not)."""
    out: list[tuple[int, Checkpoint | str]] = []
    for size, note in rows:
        try:
            out.append((size, parse_checkpoint(open_note(note, vkey))))
        except LedgerError as exc:
            out.append((size, exc.message))
    return out


# -- 2. in seq order, here -------------------------------------------------------------------


@dataclass
class _Key:
    party: str
    raw: bytes
    revoked_seq: int | None = None


class _Audit:
    def __init__(
        self,
        store: str,
        recorder: Recorder,
        log_key: str | None,
        progress: Progress,
        workers: int | None,
        rebuild: bool,
    ) -> None:
        self.recorder, self.progress, self.rebuild = recorder, progress, rebuild
        self.info = _read_info(recorder, store)
        cores = usable_cores()
        self.report = AuditReport(
            store,
            _log_key(log_key, self.info),  # a bad key given is the caller's error: raised
            log_key is None,
            cores,
            cores if workers is None else max(workers, 0),
        )
        last = recorder.select_events(LOG_ID, desc=True, limit=1)
        self.size = last[0].originator_version + 1 if last else 0
        self.chunk = max(64, min(500, -(-self.size // (16 * max(self.report.workers, 1)))))
        self.keys: dict[str, _Key] = {}
        self.heads: dict[str, tuple[str, int]] = {}  # batch -> (envelope hash, seq) of its head
        self.leaves: list[bytes] = []

    def run(self) -> AuditReport:
        report = self.report
        if report.log_key != self.info.log_key:
            message = f"the store records the log key {self.info.log_key}, not the one given"
            report.add("ledger", message)
        with self._pool() as pool, contextlib.ExitStack() as stack:
            replay = self._replay() if self.rebuild else None
            if replay is not None:
                stack.callback(replay.ledger.close)
            self._timed("entries", lambda: self._entries(pool, replay))
            tree = self._timed("tree", self._tree)
            self._timed("checkpoints", lambda: self._checkpoints(pool, tree))
            if replay is not None:
                self._timed("compare", lambda: replay.compare(self.recorder, report, self.progress))
                report.seconds["rebuild"], report.rebuilt = replay.seconds, replay.through
        return report

    def _replay(self) -> _Replay | None:
        """The rebuild's ledger, made from the store's record; none if that record cannot
        make a ledger (then the record is the problem reported)."""
        try:
            return _Replay(self.info)
        except LedgerError as exc:
            self.report.add("ledger", f"no rebuild: the ledger's own record is damaged: "
                            f"{exc.message}")  # fmt: skip
            return None

    def _timed(self, phase: str, work: Callable[[], T]) -> T:
        mark = time.perf_counter()
        try:
            return work()
        finally:
            self.report.seconds[phase] = time.perf_counter() - mark

    @contextlib.contextmanager
    def _pool(self) -> Iterator[Pool | None]:
        if self.report.workers == 0 or self.size <= self.chunk:
            self.report.workers = 0
            yield None
            return
        fork = "fork" in multiprocessing.get_all_start_methods()  # no re-import: fast
        context = multiprocessing.get_context("fork" if fork else None)
        # While this process rebuilds, it is the slowest step: the workers yield it the CPU.
        niceness = (NICE if self.rebuild else 0,)
        with context.Pool(self.report.workers, initializer=os.nice, initargs=niceness) as pool:
            yield pool

    def _entries(self, pool: Pool | None, replay: _Replay | None) -> None:
        keys = self._candidate_keys()
        with _collector_paused():
            for rows, chunk in self._checked(pool, keys, keep=replay is not None):
                judged = [
                    (c, self._judge(c, row, keys)) for c, row in zip(chunk, rows, strict=True)
                ]
                if replay is not None:
                    replay.accept(judged, self.report)
                self.progress("entries", rows[-1][0] + 1, self.size)
        self.report.entries = self.size

    def _candidate_keys(self) -> dict[str, bytes]:
        """Public keys by key id, from the store's registry events and the trust root: only a
        hint for phase 1 (a key id names one key, so no key found here can stand for another;
        whether it was in force is judged in seq order from the entries themselves)."""
        texts = [self.info.authority_key]
        start = 1
        while page := self.recorder.select_notifications(start, PAGE, topics=_KEY_TOPICS):
            for stored in page:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    fact = json.loads(stored.state)["fact"]
                    party = fact["party"]
                    texts += list(party["keys"]) if isinstance(party, dict) else [fact["key"]]
            start = page[-1].id + 1
        keys = {}
        for text in texts:
            with contextlib.suppress(LedgerError, TypeError):
                raw = decode_public_key(text)
                keys[key_id(raw)] = raw
        return keys

    def _checked(
        self, pool: Pool | None, keys: dict[str, bytes], keep: bool
    ) -> Iterator[tuple[list[Row], list[Checked]]]:
        """Phase 1 of every stored entry, chunk by chunk, in seq order; the workers are kept
        two chunks each ahead of this process."""
        pending: deque[tuple[list[Row], Any]] = deque()
        after = -1
        while stored := self.recorder.select_events(LOG_ID, gt=after, limit=self.chunk):
            rows = [(event.originator_version, event.state) for event in stored]
            after = rows[-1][0]
            if pool is None:
                yield rows, check_entries(self.info.origin, keys, rows, keep)
                continue
            job = pool.apply_async(check_entries, (self.info.origin, keys, rows, keep))
            pending.append((rows, job))
            if len(pending) > 2 * self.report.workers:
                rows, job = pending.popleft()
                yield rows, job.get()
        for rows, job in pending:
            yield rows, job.get()

    def _judge(self, checked: Checked, row: Row, keys: dict[str, bytes]) -> Verified:
        """Phase 2 of one entry; the signatures found to verify."""
        report, seq, summary = self.report, checked.seq, checked.summary
        for missing in range(len(self.leaves), seq):
            report.add("entry", "the log has no entry here: its row is missing", seq=missing)
            self.leaves.append(_NO_LEAF)
        self.leaves.append(checked.leaf)
        for what, message in checked.problems:
            report.add(what, message, seq=seq)
        if summary is None:
            return checked.verified
        new = {key_id(decode_public_key(text)) for text, _ in summary.introduced}
        for kid in summary.signers:
            if kid not in new:
                self._key_in_force(seq, kid, self.keys.get(kid))
        verified = checked.verified
        if any(kid in self.keys for kid in checked.unknown):  # the store hid a key: check again
            keys.update((kid, key.raw) for kid, key in self.keys.items())
            again = check_entry(self.info.origin, keys, seq, row[1], False)
            for what, message in set(again.problems) - set(checked.problems):
                report.add(what, message, seq=seq)
            verified = again.verified
        report.signatures += len(verified)
        self._follow(seq, summary)
        return verified

    def _key_in_force(self, seq: int, kid: str, key: _Key | None) -> None:
        if key is None:
            self.report.add("key", f"key {kid} signs it, but no party held that key", seq=seq)
        elif key.revoked_seq is not None:
            self.report.add(
                "key",
                f"key {kid} of {key.party!r} signs it, but that key was "
                f"revoked at seq {key.revoked_seq}, before it",
                seq=seq,
            )

    def _follow(self, seq: int, summary: Summary) -> None:
        """The keys registered and revoked, and each batch's head, after this entry."""
        for text, party in summary.introduced:
            raw = decode_public_key(text)
            self.keys.setdefault(key_id(raw), _Key(party, raw))
        if summary.revoked is not None:
            key = self.keys.get(summary.revoked[1])
            if key is not None and key.party == summary.revoked[0] and key.revoked_seq is None:
                key.revoked_seq = seq
        if summary.batch is None:
            return
        head = self.heads.get(summary.batch)
        if summary.prev is not None and (head is None or summary.prev != head[0]):
            latest = f"seq {head[1]}, envelope hash {head[0]}" if head else "none"
            self.report.add(
                "prev",
                f"its prev {summary.prev} is not the envelope hash of the "
                f"latest entry of batch {summary.batch!r} ({latest})",
                seq=seq,
            )
        for batch in (summary.batch, *summary.children):
            self.heads[batch] = (summary.envelope_hash, seq)

    def _tree(self) -> merkle.Reader:
        """Recompute the tree from the leaves and compare it with the stored one; its reader."""
        self.leaves += [_NO_LEAF] * (self.size - len(self.leaves))
        computed = b"".join(h for _, h in merkle.append(0, self.leaves, lambda _: []))
        count = len(computed) // merkle.HASH_SIZE
        found: dict[str, list[int]] = {}  # kind -> [first index, how many]
        expect = 0
        while rows := self.recorder.tree_rows(expect, PAGE):
            for index, stored in rows:
                if expect < min(index, count):
                    _tally(found, "missing", expect, min(index, count) - expect)
                if index >= count:
                    _tally(found, "extra", index)
                elif stored != computed[index * 32 : index * 32 + 32]:
                    _tally(found, "differs", index)
                expect = index + 1
        if expect < count:
            _tally(found, "missing", expect, count - expect)
        for kind, (index, many) in found.items():
            level, n = merkle.split_stored_hash_index(index)
            first, last = n << level, ((n + 1) << level) - 1
            over = f"seq {first}" if level == 0 else f"seqs {first}-{last}"
            more = f", and {many - 1} more" if many > 1 else ""
            message = _TREE[kind].format(more=more, size=self.size)
            self.report.add("tree", f"it (over {over}) {message}", seq=first, index=index)
        return lambda indexes: [computed[i * 32 : i * 32 + 32] for i in indexes]

    def _checkpoints(self, pool: Pool | None, tree: merkle.Reader) -> None:
        after, vkey = -1, self.report.log_key
        while rows := self.recorder.checkpoints(after, PAGE):
            after = rows[-1][0]
            parts = [(vkey, rows[i : i + 100]) for i in range(0, len(rows), 100)]
            opened = (
                pool.starmap(open_checkpoints, parts) if pool else [open_checkpoints(vkey, rows)]
            )
            for size, found in (item for part in opened for item in part):
                self._checkpoint(size, found, tree)
            self.report.checkpoints += len(rows)
            self.report.signed_through = max(self.report.signed_through, after)
            self.progress("checkpoints", self.report.checkpoints, self.report.checkpoints)

    def _checkpoint(self, size: int, found: Checkpoint | str, tree: merkle.Reader) -> None:
        add = self.report.add
        if isinstance(found, str):
            add("checkpoint", f"it does not open under the log key: {found}", size=size)
        elif (found.origin, found.size) != (self.info.origin, size):
            add("checkpoint", f"it is for {found.origin} at size {found.size}", size=size)
        elif size > self.size:
            add(
                "checkpoint",
                f"it covers {size} entries, but the log holds {self.size}: the "
                "entries from this seq on are missing",
                seq=self.size,
                size=size,
            )
        elif found.root != merkle.tree_hash(size, tree):
            add("checkpoint", "its root is not the root recomputed from the entries", size=size)
        else:
            self.report.covered = max(self.report.covered, size)


def _read_info(recorder: Recorder, store: str) -> events.LedgerInitialised:
    try:
        stored = recorder.select_events(LEDGER_ID, limit=1)
    except PersistenceError:  # no tables: a database, but no ledger
        stored = []
    if not stored:
        raise NotFound(f"{store} holds no ledger")
    try:
        info = _MAPPER.to_domain_event(stored[0])
    except ValueError:
        raise NotFound(f"the ledger's own record in {store} is unreadable") from None
    assert isinstance(info, events.LedgerInitialised)
    return info


def _log_key(given: str | None, info: events.LedgerInitialised) -> str:
    """The verifier key text `--log-key` gives, else the store's own."""
    if given is None:
        return info.log_key
    path = Path(given)
    if not is_file(path):
        return parse_verifier_key(given).text  # says what is wrong with a bad one
    with contextlib.suppress(LedgerError):
        return parse_verifier_key(path.read_text()).text
    return verifier_key(info.origin, read_signer(path).public_key)


def _tally(found: dict[str, list[int]], kind: str, index: int, many: int = 1) -> None:
    found.setdefault(kind, [index, 0])[1] += many


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The rebuild holds every aggregate of the ledger in its cache, and the garbage
    collector's passes over them cost it about a fifth of its time; it makes no cyclic
    garbage of note (the peak memory of a 20,000-entry audit is the same without them)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- 3. the rebuild, and the comparisons -----------------------------------------------------


class _Refused(Exception):
    """The rebuild refused the `index`th envelope of a commit."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index, self.message = index, message


Judged = list[tuple[Checked, Verified]]


class _Replay:
    """A fresh in-memory ledger that accepts the stored entries again, in order."""

    def __init__(self, info: events.LedgerInitialised) -> None:
        self.clock = SetClock(info.timestamp)
        self.ledger = Ledger(":memory:", clock=self.clock)
        public = parse_verifier_key(info.log_key).public_key
        self.ledger.initialise(info.origin, info.authority_key, public)
        self.through = 0  # seqs below this one are accepted
        self.stopped = False
        self.seconds = 0.0

    def accept(self, judged: Judged, report: AuditReport) -> None:
        """Accept a chunk, one commit per run of entries recorded at the same time."""
        start = 0
        while start < len(judged) and not self.stopped:
            end = start + 1
            while end < len(judged) and judged[end][0].recorded_at == judged[start][0].recorded_at:
                end += 1
            mark = time.perf_counter()
            self._commit(judged[start:end], report)
            self.seconds += time.perf_counter() - mark
            start = end

    def _commit(self, run: Judged, report: AuditReport) -> None:
        for index, (checked, _) in enumerate(run):
            if checked.decoded is None or checked.seq != self.through + index:
                gap = checked.seq != self.through + index
                why = "it is missing" if gap else "it or its envelope does not decode"
                return self._stop(run[:index], self.through + index, why, report)
        self.clock.now = run[0][0].recorded_at or self.clock.now
        try:
            self.ledger._commit(lambda unit: _accept_all(unit, run, self.ledger), careful=False)
        except _Refused as refused:
            return self._stop(
                run[: refused.index],
                run[refused.index][0].seq,
                f"acceptance refuses it: {refused.message}",
                report,
            )
        except LedgerError as exc:
            return self._stop([], run[0][0].seq, exc.message, report)
        self.through += len(run)
        return None

    def _stop(self, before: Judged, seq: int, why: str, report: AuditReport) -> None:
        if before:
            self._commit(before, report)
        self.stopped = True
        report.add(
            "rebuild",
            f"the rebuild stops here, {why}; what later entries wrote is not compared",
            seq=seq,
        )

    def covers(self, seq: int | None) -> bool:
        """Whether the rebuild says what the entry at `seq` wrote (None: no entry did)."""
        return seq is None or not self.stopped or seq < self.through

    def compare(self, source: Recorder, report: AuditReport, progress: Progress) -> None:
        rebuilt = self.ledger.recorder
        assert isinstance(rebuilt, SQLiteLedgerRecorder)
        _compare_events(source, rebuilt, self, report, progress)
        for name, theirs, ours in zip(
            ("event-id table", "signatures index"),
            _index_rows(source),
            _index_rows(rebuilt),
            strict=True,
        ):
            _compare_index(name, theirs, ours, self, report)


def _accept_all(unit: UnitOfWork, run: Judged, ledger: Ledger) -> list[Outcome]:
    if unit.careful:  # a retry: the store refused an event id twice
        unit.prefetch_event_ids(c.decoded.event.id for c, _ in run if c.decoded)
    outcomes: list[Outcome] = []
    for checked, verified in run:
        assert checked.decoded is not None
        try:
            outcome = accept(unit, checked.decoded, ledger._stored_entry, verified)
        except LedgerError as exc:
            raise _Refused(len(outcomes), exc.message) from None
        if outcome.repeated:
            raise _Refused(len(outcomes), f"it repeats the event id of seq {outcome.receipt.seq}")
        outcomes.append(outcome)
    return outcomes


def _paged(
    fetch: Callable[[Any, int], list[Any]], after: Any, last: Callable[[Any], Any]
) -> Iterator[Any]:
    """Every row `fetch(after, limit)` gives, page after page."""
    while page := fetch(after, PAGE):
        yield from page
        after = last(page[-1])


def _compare_events(
    source: Recorder, rebuilt: Recorder, replay: _Replay, report: AuditReport, progress: Progress
) -> None:
    """Merge the two stores' events, both in key order (a uuid orders as its hex text)."""
    total = source.max_notification_id() or 0
    theirs, ours = (
        _paged(r.stored_events_after, None, lambda row: row[:2]) for r in (source, rebuilt)
    )
    a, b = next(theirs, None), next(ours, None)
    while a is not None or b is not None:
        if a is not None and (b is None or a[:2] < b[:2]):
            if replay.covers(seq := _seq_of(a[3])):
                _state(report, a, "the store holds it, but the rebuild makes no such event", seq)
            a = next(theirs, None)
        elif b is not None and (a is None or b[:2] < a[:2]):
            _state(report, b, "the store lacks it, but the rebuild makes it", _seq_of(b[3]))
            b = next(ours, None)
        elif a is not None and b is not None:
            if a[2:] != b[2:]:
                _state(report, a, _difference(a, b), _seq_of(b[3]))
            report.stored_events += 1
            if report.stored_events % 10_000 == 0:
                progress("stored events", report.stored_events, total)
            a, b = next(theirs, None), next(ours, None)
    progress("stored events", report.stored_events, report.stored_events)


def _state(report: AuditReport, row: StoredRow, message: str, seq: int | None) -> None:
    what = f"{row[2].rpartition(':')[2]} event {row[0]} version {row[1]}: {message}"
    report.add("state", what, seq=seq, stream=row[0], version=row[1])


def _seq_of(state: bytes) -> int | None:
    """The seq of the entry that wrote a stored event (None for the ledger's own record)."""
    try:
        value = json.loads(state)
        seq = value["accepted"]["seq"] if "accepted" in value else value.get("seq")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None


def _difference(stored: StoredRow, rebuilt: StoredRow) -> str:
    if stored[2] != rebuilt[2]:
        return f"its topic is {stored[2]}, the rebuild's {rebuilt[2]}"
    try:
        path, mine, theirs = _first_difference(json.loads(stored[3]), json.loads(rebuilt[3]), "")
    except ValueError:
        return "it is not JSON, the rebuild's is"
    return f"{path or 'its state'} is {_short(mine)} in the store, {_short(theirs)} rebuilt"


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if a.get(key, _MISSING) != b.get(key, _MISSING):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}".lstrip("."))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return path, a, b


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


IndexRow = tuple[tuple[Any, ...], str, int, str]  # key, what it names, seq, the rest


def _index_rows(recorder: Recorder) -> tuple[Iterator[IndexRow], Iterator[IndexRow]]:
    """The rows of the event-id table and of the signatures index, in one form."""
    ids = _paged(recorder.event_id_rows, "", lambda row: row[0])
    signed = _paged(recorder.signature_rows, None, lambda row: row)
    return (
        ((event_id,), f"event id {event_id}", seq, f"digest {digest}")
        for event_id, seq, digest in ids
    ), (((kid, seq), f"key {kid}", seq, f"at {at}") for kid, at, seq in signed)


def _compare_index(
    name: str,
    theirs: Iterator[IndexRow],
    ours: Iterator[IndexRow],
    replay: _Replay,
    report: AuditReport,
) -> None:
    """One of the ledger's own tables against the rebuild's: each row the entries give."""
    expected = {key: (label, seq, rest) for key, label, seq, rest in ours}
    for key, label, seq, rest in theirs:
        want = expected.pop(key, None)
        if want is None and replay.covers(seq):
            report.add(
                "index", f"the {name} holds {label} at seq {seq}, which no entry gives", seq=seq
            )
        elif want is not None and want[1:] != (seq, rest):
            report.add(
                "index",
                f"the {name} says seq {seq}, {rest} for {label}; its entry gives "
                f"seq {want[1]}, {want[2]}",
                seq=min(seq, want[1]),
            )
    for label, seq, _ in sorted(expected.values(), key=lambda row: row[1]):
        report.add("index", f"the {name} lacks {label} of seq {seq}", seq=seq)
