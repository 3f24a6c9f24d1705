"""Folding stored events back into state: an aggregate as of a moment, and a hand-set clock.

`fold` applies the events of one stream that an `AsOf` includes (by their seq and their
`at`), with the aggregates' own appliers, so there is one definition of what an event does.
A batch's events never go back in time, so for a batch this is a prefix of its stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.asof import AsOf
from ledger.batch import Batch
from ledger.events import AggregateCreated

PAGE = 1000


def fold(stored: Iterable[Any], as_of: AsOf, found: Any = None) -> Any:
    """An aggregate after the events of its stream that `as_of` includes (None if none)."""
    for event in stored:
        at = event.at if hasattr(event, "at") else event.fact.at
        if as_of.includes(event.accepted.seq, at):
            if found is None and not isinstance(event, AggregateCreated):
                continue  # dated before the stream began: nothing to apply it to
            found = event.mutate(found)
    return found


def batch_as_of(stored: Iterable[Any], as_of: AsOf) -> Batch | None:
    """The batch after its events that `as_of` includes (None if it did not exist yet)."""
    found = fold(stored, as_of)
    return found if isinstance(found, Batch) else None


@dataclass
class SetClock:
    """A clock set by hand: a replay of stored entries runs at each one's `recorded_at`."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now
