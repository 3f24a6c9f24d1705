"""Counters the threshold rules read: chips at each site (by model, and how many are covered
by a license naming the site's country and operator), and chips each party owns in each
country (and how many moved under licenses with the strategic guarantees).

They move batch by batch, like the allocations: judging an event reads a few counters and
never scans history. A unit of work lays its own changes over the committed counters
(`Overlay`), so an envelope sees the earlier envelopes of its batch.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from ledger.events import BatchSnapshot
from ledger.wire import LicenseSpec

HELD = ("delivered", "installed")
TOTAL = "*"
COVERED = "covered"
MODEL = "model:"  # site counters by model: "model:H200"


@dataclass(frozen=True)
class Placed:
    """What one batch adds to the counters (None when it is at no site)."""

    site: str
    model: str
    quantity: int
    site_covered: bool
    owner: str
    country: str
    entity_covered: bool


def placed(batch: BatchSnapshot, operator: str | None, terms: LicenseSpec | None) -> Placed | None:
    """A batch's share of the counters, given its site's operator and its license's terms."""
    if batch.status not in HELD or batch.site is None or batch.country is None:
        return None
    site_covered = (
        terms is not None
        and batch.country in terms.destinations
        and operator is not None
        and operator in terms.consignees
    )
    entity_covered = (
        terms is not None
        and terms.conditions.security_guarantee
        and terms.conditions.us_investment_commitment
    )
    return Placed(
        batch.site, batch.model, batch.quantity, site_covered, batch.owner, batch.country,
        entity_covered,
    )  # fmt: skip


class Counters:
    """The committed counters, fed batch by batch in `seq` order."""

    def __init__(self) -> None:
        self.placed: dict[str, Placed] = {}
        self.sites: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.owned: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)

    def on_batch(self, batch: str, new: Placed | None) -> None:
        _move(self.sites, self.owned, self.placed.pop(batch, None), -1)
        _move(self.sites, self.owned, new, +1)
        if new is not None:
            self.placed[batch] = new

    def site(self, site: str) -> Counter[str]:
        return self.sites.get(site) or Counter()

    def owner(self, owner: str, country: str) -> Counter[str]:
        return self.owned.get((owner, country)) or Counter()


def _move(
    sites: defaultdict[str, Counter[str]],
    owned: defaultdict[tuple[str, str], Counter[str]],
    share: Placed | None,
    sign: int,
) -> None:
    if share is None:
        return
    quantity = sign * share.quantity
    at = sites[share.site]
    at[TOTAL] += quantity
    at[MODEL + share.model] += quantity
    if share.site_covered:
        at[COVERED] += quantity
    mine = owned[(share.owner, share.country)]
    mine[TOTAL] += quantity
    if share.entity_covered:
        mine[COVERED] += quantity


class Overlay:
    """A unit's changes over the committed counters."""

    def __init__(self, base: Counters) -> None:
        self.base = base
        self.placed: dict[str, Placed | None] = {}
        self.sites: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.owned: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)

    def on_batch(self, batch: str, new: Placed | None) -> None:
        old = self.placed[batch] if batch in self.placed else self.base.placed.get(batch)
        _move(self.sites, self.owned, old, -1)
        _move(self.sites, self.owned, new, +1)
        self.placed[batch] = new

    def site(self, site: str) -> Counter[str]:
        return (
            self.base.site(site) + self.sites[site] if site in self.sites else self.base.site(site)
        )

    def owner(self, owner: str, country: str) -> Counter[str]:
        key = (owner, country)
        found = self.base.owner(owner, country)
        return found + self.owned[key] if key in self.owned else found

    def commit(self) -> None:
        for batch, new in self.placed.items():
            self.base.on_batch(batch, new)
