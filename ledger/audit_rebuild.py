"""Phase 3 of `chipledger audit`: a fresh ledger accepts the stored entries again, in order, at
the clock of their `recorded_at` (signatures found good in phase 1 are not verified again);
then every stored event and every row of the tables of `ledger.audit_tables` is compared
with the rebuild's. A refused entry ends the rebuild: what later entries wrote is then not
compared.

The rebuild's ledger lives in a SQLite file of the audit's scratch directory, with a bounded
aggregate cache (`REBUILD_CACHE`); each comparison merges two streams read page by page in
key order, so that memory does not grow with the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.sqlite import SQLiteFactory
from eventsourcing.utils import Environment

from ledger import events
from ledger.acceptance import accept
from ledger.application import Ledger
from ledger.audit_report import AuditReport, Progress
from ledger.audit_scratch import ScratchDatastore
from ledger.audit_sequence import Judged
from ledger.audit_tables import compare_tables
from ledger.errors import LedgerError
from ledger.notes import parse_verifier_key
from ledger.recorders import Recorder, SQLiteLedgerRecorder, StoredRow
from ledger.replay import SetClock
from ledger.unit import UnitOfWork
from ledger.views import Outcome

# Aggregates the rebuild keeps in memory, as many as a server does: the live batches, the
# licenses and the parties an entry touches must fit, or each entry reloads its aggregates from
# the scratch file (at 10^5 entries a cache of 200 made the rebuild 2.9 times slower than one
# of 30,000, 384 s against 132 s; the bench's live set grows with its customers).
REBUILD_CACHE = 30_000
PAGE = 1000
_MISSING = object()


class RebuildLedger(Ledger):
    """The ledger the rebuild writes: on a scratch file, with a bounded aggregate cache."""

    name = Ledger.name
    env = {**Ledger.env, "AGGREGATE_CACHE_MAXSIZE": str(REBUILD_CACHE)}  # noqa: RUF012

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        factory = super().construct_factory(env)
        assert isinstance(factory, SQLiteFactory)
        factory.datastore = ScratchDatastore(factory.datastore.pool.db_name)
        return factory


class _Refused(Exception):
    """The rebuild refused the `index`th envelope of a commit."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index, self.message = index, message


class Replay:
    """A fresh ledger, in `directory`, that accepts the stored entries again, in order."""

    def __init__(self, info: events.LedgerInitialised, directory: Path) -> None:
        self.clock = SetClock(info.timestamp)
        self.ledger = RebuildLedger(str(directory / "rebuild.db"), clock=self.clock)
        try:
            public = parse_verifier_key(info.log_key).public_key
            self.ledger.initialise(info.origin, info.authority_key, public)
        except BaseException:
            self.ledger.close()
            raise
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

    def covers_row(self, seq: int | None) -> bool:
        """Whether the rebuild says what a table's row holds (None: a row naming no entry,
        which any entry may have written)."""
        return not self.stopped if seq is None else self.covers(seq)

    def compare(self, source: Recorder, report: AuditReport, progress: Progress) -> None:
        rebuilt = self.ledger.recorder
        assert isinstance(rebuilt, SQLiteLedgerRecorder)
        _compare_events(source, rebuilt, self, report, progress)
        compare_tables(source.datastore, rebuilt.datastore, self.covers_row, report)


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


# -- the stored events ---------------------------------------------------------------------


def _paged(
    fetch: Callable[[Any, int], list[Any]], after: Any, last: Callable[[Any], Any]
) -> Iterator[Any]:
    """Every row `fetch(after, limit)` gives, page after page."""
    while page := fetch(after, PAGE):
        yield from page
        after = last(page[-1])


def _compare_events(
    source: Recorder, rebuilt: Recorder, replay: Replay, report: AuditReport, progress: Progress
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
