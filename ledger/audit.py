"""`chipledger audit` (PROTOCOL.md section 10): re-derive what a store holds from its log and
compare it, byte for byte, with what the store holds. Nothing is written to the audited store.

1. Each entry, on every usable core (`ledger.audit_entries`): its envelope passes acceptance's
   schema stage and is stored in canonical form, and each signature verifies.
2. In seq order (`ledger.audit_sequence`): the log has no gap; each signing key was in force
   when the entry was accepted; each batch event's `prev` is its batch's head. Then
   (`ledger.audit_tree`) the RFC 6962 tree recomputed from the entries must equal every stored
   hash, and each stored checkpoint must open under the log key with the recomputed root.
3. The rebuild, alongside 1 and 2 (`ledger.audit_rebuild`): a fresh ledger accepts the entries
   again, in order; then every stored event, and every row of the tables `ledger.audit_tables`
   lists, is compared with the rebuild's.
Roles, signers and custody rules are acceptance's, so 3 judges them. `audit` returns a report
naming every problem and the first bad `seq`; it raises only when there is no ledger to audit.
What grows with the store (the rebuild, the tree, the batches' heads) is kept in SQLite files
of a scratch directory (`ledger.audit_scratch`), removed at the end: memory stays bounded.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any, TypeVar

from eventsourcing.persistence import InfrastructureFactory, PersistenceError
from eventsourcing.utils import Environment, get_topic

from ledger import events
from ledger.aggregates import LEDGER_ID, LOG_ID
from ledger.ahead import usable_cores
from ledger.application import Ledger
from ledger.audit_entries import NO_LEAF, Checked, Row, check_entries, check_in_worker, start_worker
from ledger.audit_rebuild import Replay
from ledger.audit_report import LISTED, AuditReport, Problem, Progress, quiet
from ledger.audit_scratch import ScratchDatastore, scratch_directory
from ledger.audit_sequence import Heads, InOrder
from ledger.audit_tree import Checkpoints, Tree
from ledger.crypto import decode_public_key, key_id
from ledger.errors import LedgerError, NotFound
from ledger.notes import parse_verifier_key, verifier_key
from ledger.persistence import JsonTranscoder, PydanticMapper, store_env
from ledger.recorders import Recorder, ours
from ledger.signing import is_file, read_signer

__all__ = ["LISTED", "AuditReport", "Problem", "Progress", "audit"]

T = TypeVar("T")
PAGE = 1000
NICE = 10
_MAPPER = PydanticMapper(JsonTranscoder())
_KEY_TOPICS = (get_topic(events.PartyRegistered), get_topic(events.PartyKeyAdded))


def audit(
    store: str,
    log_key: str | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    rebuild: bool = True,
    allow_uncovered: bool = False,
    scratch: str | None = None,
) -> AuditReport:
    """Audit the ledger in `store` (a SQLite path or a postgresql:// URL).

    `log_key`: the log's `.key` file, a file holding its verifier key, or that key; without
    it the key the store records is trusted. `workers`: processes for phase 1 (default one
    per usable core; 0: all here). `rebuild=False` leaves out the rebuild and comparisons.
    Entries no stored checkpoint covers are a problem (the log key vouches for nothing after
    the last one: entries dropped or rolled back with their checkpoints would look whole)
    unless `allow_uncovered` (a store a writer without the log key added to); a stored
    checkpoint that fails is reported as itself. `scratch`: the directory under which the
    audit's own files are made (default: the system's temporary directory)."""
    started = time.perf_counter()
    if "://" not in store and not Path(store).is_file():
        raise NotFound(f"there is no ledger store at {store}")
    # The ledger's own names (its PostgreSQL table is named after it), and nothing created.
    env = Environment(Ledger.name, {**store_env(store), "CREATE_TABLE": "n"})
    factory = InfrastructureFactory.construct(env)
    try:
        recorder = ours(factory.application_recorder())
        with scratch_directory(scratch) as directory:
            run = _Audit(store, recorder, log_key, progress or quiet, workers, rebuild)
            report = run.run(directory)
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

    def run(self, directory: Path) -> AuditReport:
        report, origin = self.report, self.info.origin
        if report.log_key != self.info.log_key:
            message = f"the store records the log key {self.info.log_key}, not the one given"
            report.add("ledger", message)
        keys = self._candidate_keys()
        with self._pool(keys) as pool, contextlib.ExitStack() as stack:
            scratch = ScratchDatastore(str(directory / "audit.db"))
            stack.callback(scratch.close)
            tree, order = Tree(scratch), InOrder(origin, report, Heads(scratch))
            replay = self._replay(directory) if self.rebuild else None
            if replay is not None:
                stack.callback(replay.ledger.close)
            self._timed("entries", lambda: self._entries(pool, keys, order, tree, replay))
            self._timed("tree", lambda: tree.compare(self.recorder.datastore, report))
            checkpoints = Checkpoints(self.recorder, tree, origin, report)
            self._timed("checkpoints", lambda: checkpoints.check(pool, self.progress))
            if replay is not None:
                self._timed("compare", lambda: replay.compare(self.recorder, report, self.progress))
                report.seconds["rebuild"], report.rebuilt = replay.seconds, replay.through
        return report

    def _replay(self, directory: Path) -> Replay | None:
        """The rebuild's ledger, made from the store's record; none if that record cannot
        make a ledger (then the record is the problem reported)."""
        try:
            return Replay(self.info, directory)
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
    def _pool(self, keys: dict[str, bytes]) -> Iterator[Pool | None]:
        """The workers of phase 1, each started with the candidate keys (sent once)."""
        if self.report.workers == 0 or self.size <= self.chunk:
            self.report.workers = 0
            yield None
            return
        fork = "fork" in multiprocessing.get_all_start_methods()  # no re-import: fast
        context = multiprocessing.get_context("fork" if fork else None)
        # While this process rebuilds, it is the slowest step: the workers yield it the CPU.
        start = (NICE if self.rebuild else 0, keys)
        with context.Pool(self.report.workers, initializer=start_worker, initargs=start) as pool:
            yield pool

    def _entries(
        self,
        pool: Pool | None,
        keys: dict[str, bytes],
        order: InOrder,
        tree: Tree,
        replay: Replay | None,
    ) -> None:
        with _collector_paused():
            for rows, chunk in self._checked(pool, keys, keep=replay is not None):
                judged, leaves = order.judge(chunk, rows, keys)
                tree.add(leaves)
                if replay is not None:
                    replay.accept(judged, self.report)
                self.progress("entries", rows[-1][0] + 1, self.size)
        tree.add([NO_LEAF] * (self.size - tree.size))  # entries missing at the end
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
        two chunks each ahead of this process, and no more."""
        pending: deque[tuple[list[Row], Any]] = deque()
        after = -1
        while stored := self.recorder.select_events(LOG_ID, gt=after, limit=self.chunk):
            rows = [(event.originator_version, event.state) for event in stored]
            after = rows[-1][0]
            if pool is None:
                yield rows, check_entries(self.info.origin, keys, rows, keep)
                continue
            pending.append(
                (rows, pool.apply_async(check_in_worker, (self.info.origin, rows, keep)))
            )
            if len(pending) > 2 * self.report.workers:
                rows, job = pending.popleft()
                yield rows, job.get()
        for rows, job in pending:
            yield rows, job.get()


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


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The garbage collector's passes over the rebuild's aggregates cost it about a fifth of
    its time, and it makes no cyclic garbage of note: the collector waits while entries are
    checked."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
