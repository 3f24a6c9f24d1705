"""The counters the threshold rules read: chips at each site (in all, by model, and how many
are covered by a license naming the site's country and operator), and chips each party owns
in each country (and how many moved under licenses with the strategic guarantees).

They live in the store (`rm_site_counts`, `rm_owner_counts`), moved batch by batch as the
allocations are: judging an event reads a few counters and never scans history. A unit of
work lays its own changes over the committed counters, so an envelope sees the earlier
envelopes of its batch.
"""

from __future__ import annotations

from collections import Counter

from ledger.readmodels import COVERED, HELD, MODEL, TOTAL, Changes
from ledger.readqueries import ReadStore

__all__ = ["COVERED", "HELD", "MODEL", "TOTAL", "Counts"]


class Counts:
    """The counters as a unit of work sees them: the store's, moved by the unit's changes."""

    def __init__(self, store: ReadStore, changes: Changes) -> None:
        self.store = store
        self.changes = changes

    def site(self, site: str) -> Counter[str]:
        return self.changes.site_counts(site, self.store.site_counts(site))

    def owner(self, owner: str, country: str) -> Counter[str]:
        return self.changes.owner_counts(owner, country, self.store.owner_counts(owner, country))
