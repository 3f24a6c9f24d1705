"""`chipledger rebuild`: the read models recomputed from the log, offline.

Every batch event and every finding stored is fed, in notification (that is, `seq`) order,
to the same projection the write path uses (`ledger.readmodels.row_of`, `Changes`), and the
rows are written page by page. A store written before the read models existed gets them
this way when it is first opened. Nothing but the `rm_*` tables is written.
"""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import ApplicationRecorder, Mapper
from eventsourcing.utils import get_topic

from ledger import events
from ledger.aggregates import License, Site, stream_id
from ledger.batch import Batch
from ledger.readmodels import Changes, row_of
from ledger.readqueries import LRU, ReadStore
from ledger.readstore import KEYS, TABLES, write
from ledger.wire import LicenseSpec

BATCH_EVENTS = (
    events.BatchFabricated, events.BatchSplitFrom, events.BatchExported, events.BatchDelivered,
    events.BatchInstalled, events.BatchRelocated, events.BatchTransferred, events.BatchSplit,
    events.BatchDecommissioned, events.BatchReportedLost,
)  # fmt: skip
BATCH_TOPICS = frozenset(get_topic(cls) for cls in BATCH_EVENTS)
FINDINGS_TOPIC = get_topic(events.FindingsRecorded)
CITED_TOPIC = get_topic(events.LicenseCited)
TOPICS = tuple(sorted(BATCH_TOPICS | {FINDINGS_TOPIC, CITED_TOPIC}))
PAGE = 1000


class Store(Protocol):
    """What the rebuild reads: the application's store, repository and read models."""

    recorder: ApplicationRecorder
    mapper: Mapper[UUID]
    reads: ReadStore

    @property
    def repository(self) -> Repository[UUID]: ...

    def size(self) -> int: ...


def rebuild(app: Store) -> int:
    """Empty the read models and recompute them from the whole log; return the log size."""
    size = app.size()
    with app.reads.datastore.transaction(commit=True) as cursor:
        for table in TABLES:
            cursor.execute(app.reads.dialect.sql(f"DELETE FROM {{{table}}}"))  # noqa: S608 (ours)
    app.reads.clear()
    feed = _Feed(app)
    position = 0
    while True:
        page = app.recorder.select_notifications(start=position + 1, limit=PAGE, topics=TOPICS)
        changes = Changes()
        for notification in page:
            position = notification.id
            feed.take(notification, changes)
        if len(page) < PAGE:
            changes.position = size
        with app.reads.datastore.transaction(commit=True) as cursor:
            write(cursor, app.reads.dialect, changes)
        app.reads.committed(changes)
        if len(page) < PAGE:
            return size


class _Feed:
    """Stored events in, read-model changes out; batches folded as they go (a bounded cache)."""

    def __init__(self, app: Store) -> None:
        self.app = app
        self.batches: LRU[UUID, Batch] = LRU(10_000)

    def take(self, notification: Any, changes: Changes) -> None:
        event: Any = self.app.mapper.to_domain_event(notification)
        if notification.topic == FINDINGS_TOPIC:
            changes.on_findings(event.seq, event.at, event.findings)
            return
        if notification.topic == CITED_TOPIC:
            cited: Any = self.app.repository.get(event.originator_id)
            changes.on_cited(cited.terms.id, event.accepted.seq, event.at, event.quantity)
            return
        originator = UUID(str(notification.originator_id))
        before = self.batches.get(originator)
        if before is None and notification.originator_version > 1:
            version = notification.originator_version - 1
            before = self.app.repository.get(originator, version=version)
        then = list(before.serials or ()) if before is not None else []
        old = changes.rows.get(before.batch_id) if before is not None else None
        if before is not None and old is None:
            old = self.app.reads.batch_row(before.batch_id)
        batch = event.mutate(before)
        self.batches.put(originator, batch)
        site = self._get(Site, "site", batch.site)
        row = row_of(batch, old, site.operator if site else None, self._terms)
        now = list(batch.serials or ()) if batch.status != "split" else []
        changes.on_batch(row, old, (now, then))

    def _terms(self, license_id: str, seq: int) -> LicenseSpec | None:
        found = self._get(License, "license", license_id)
        return found.terms if found is not None and found.granted_seq <= seq else None

    def _get(self, cls: type[Any], kind: str, name: str | None) -> Any:
        if name is None:
            return None
        try:
            found: Any = self.app.repository.get(stream_id(kind, name))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, cls) else None


def table_rows(reads: ReadStore, table: str) -> list[tuple[Any, ...]]:
    """Every row of a read-model table, in key order (for tests and comparisons)."""
    order = ", ".join(KEYS[table])
    with reads.datastore.transaction(commit=False) as cursor:
        text = f"SELECT * FROM {{{table}}} ORDER BY {order}"  # noqa: S608 (our own names)
        cursor.execute(reads.dialect.sql(text))
        return [tuple(row.values()) if isinstance(row, dict) else tuple(row)
                for row in cursor.fetchall()]  # fmt: skip
