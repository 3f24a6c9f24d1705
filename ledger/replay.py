"""Folding stored events back into state: a batch as of a moment, and the projections.

`batch_as_of` folds one batch's own events up to an `AsOf`; `catch_up` feeds the projections
every batch event stored after their position, in notification (that is, `seq`) order. Both
use the aggregates' own appliers, so there is one definition of what an event does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.utils import get_topic

from ledger import events
from ledger.aggregates import License, Site, stream_id
from ledger.asof import AsOf
from ledger.batch import Batch
from ledger.counters import Placed, placed
from ledger.events import BatchSnapshot
from ledger.projections import Projections

BATCH_EVENTS = (
    events.BatchFabricated, events.BatchSplitFrom, events.BatchExported, events.BatchDelivered,
    events.BatchInstalled, events.BatchRelocated, events.BatchTransferred, events.BatchSplit,
    events.BatchDecommissioned, events.BatchReportedLost,
)  # fmt: skip
BATCH_TOPICS = frozenset(get_topic(cls) for cls in BATCH_EVENTS)
CREATED_TOPICS = frozenset(
    get_topic(cls)
    for cls in vars(events).values()
    if isinstance(cls, type)
    and issubclass(cls, events.AggregateCreated)
    and cls is not events.AggregateCreated
)
FINDINGS_TOPIC = get_topic(events.FindingsRecorded)
TOPICS = tuple(sorted(BATCH_TOPICS | CREATED_TOPICS | {FINDINGS_TOPIC}))
PAGE = 1000


def batch_as_of(stored: Iterable[Any], as_of: AsOf) -> Batch | None:
    """The batch after its events that `as_of` includes (None if it did not exist yet)."""
    batch: Batch | None = None
    for event in stored:
        if not as_of.includes(event.accepted.seq, event.fact.at):
            break  # a batch's events are in seq order and never go back in time
        batch = event.mutate(batch)
    return batch


def catch_up(app: Application[UUID], projections: Projections) -> None:
    """Feed `projections` every batch event, and every new stream, stored after their position."""
    batches: dict[UUID, Batch | None] = {}
    while True:
        page = app.recorder.select_notifications(
            start=projections.position + 1, limit=PAGE, topics=TOPICS
        )
        for notification in page:
            originator = UUID(str(notification.originator_id))
            projections.position = notification.id
            if notification.topic in CREATED_TOPICS:
                projections.streams.add(originator.int)
            if notification.topic == FINDINGS_TOPIC:
                found: Any = app.mapper.to_domain_event(notification)
                projections.flags.on_findings(found)
                continue
            if notification.topic not in BATCH_TOPICS:
                continue
            event: Any = app.mapper.to_domain_event(notification)
            batch = batches.get(originator)
            if batch is None and notification.originator_version > 1:
                batch = app.repository.get(originator, version=notification.originator_version - 1)
            batch = event.mutate(batch)
            assert batch is not None  # every batch event leaves a batch
            batches[originator] = batch
            snapshot = batch.snapshot()
            projections.on_batch(snapshot)
            projections.counters.on_batch(snapshot.batch, _placed(app, snapshot))
        if len(page) < PAGE:
            return


def _placed(app: Application[UUID], batch: BatchSnapshot) -> Placed | None:
    """The counters' share of a batch, its site and license read from the store (a site's
    operator and a license's terms never change; a license granted after the batch's event
    was not known to it, as acceptance saw it)."""
    site = _get(app, "site", batch.site)
    held = _get(app, "license", batch.license)
    operator = site.operator if isinstance(site, Site) else None
    known = isinstance(held, License) and held.granted_seq <= batch.last_seq
    return placed(batch, operator, held.terms if known else None)


def _get(app: Application[UUID], kind: str, name: str | None) -> Any:
    if name is None:
        return None
    try:
        return app.repository.get(stream_id(kind, name))
    except AggregateNotFoundError:
        return None


@dataclass
class SetClock:
    """A clock set by hand: a replay of stored entries runs at each one's `recorded_at`."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now
