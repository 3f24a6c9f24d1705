"""What the time-judged rules (`not-installed`, `attestation-overdue`, PROTOCOL.md section 7)
see when flags are read: the batches at sites that the read can concern, now or `as_of`.

The candidates come from the read models' indexes, narrowed by the read's filters (one batch;
a party's batches, whose held ones it owns or operates the site of; a site's; a license's),
never by folding every batch that was ever at a site. Sites, licenses and the rule pack are
looked up as they stood at the judged moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from ledger.aggregates import License, Site, stream_id
from ledger.asof import AsOf
from ledger.policy import PolicyBook, in_force
from ledger.readmodels import Held, micros
from ledger.readqueries import LRU, ReadStore, bounds
from ledger.replay import fold
from ledger.rules import TIME_JUDGED, Clocked

TIME_JUDGED_IDS = frozenset(rule.id for rule in TIME_JUDGED)
Lookup = Callable[[UUID], Any]  # an aggregate now, or None
Stream = Callable[[UUID], Iterable[Any]]  # a stream's stored events


def about(where: dict[str, str]) -> tuple[str | None, str]:
    """The narrowest index for a flags read's filters (the others are applied to findings)."""
    for name in ("batch", "party", "site", "license"):
        if name in where:
            return name, where[name]
    return None, ""


def concerned(where: dict[str, str]) -> bool:
    """Whether a flags read can include time-judged findings at all."""
    return where.get("rule") in (None, *TIME_JUDGED_IDS)


class Grants:
    """Licenses as granted: each from its first event only (its terms, when it was granted),
    in a bounded cache. A license's stream grows by a citation per export under it; the
    time-judged rules read only its terms, which never change."""

    def __init__(self, repository: Callable[[], Any], size: int = 20_000) -> None:
        self.repository = repository  # the ledger's, which a reread replaces
        self.found: LRU[str, License] = LRU(size)

    def __call__(self, license_id: str) -> License | None:
        found = self.found.get(license_id)
        if found is None:
            try:
                found = self.repository().get(stream_id("license", license_id), version=1)
            except AggregateNotFoundError:
                return None
            if not isinstance(found, License):
                return None
            self.found.put(license_id, found)
        return found


def clocked(
    reads: ReadStore, now: Lookup, stream: Stream, where: dict[str, str], as_of: AsOf | None,
    clock: datetime, grants: Grants,
) -> Clocked:  # fmt: skip
    """What the time-judged rules see for this read: `as_of` a time T is judged at T, a seq
    (or none) at `clock`, on the state after the entries the read includes."""
    rows = reads.rows(about(where), as_of, held=True) if concerned(where) else []
    held = _concerning(where.get("party"), [Held.of(row) for row in rows if row.held], now)
    book_id = stream_id("policy", "book")
    if as_of is None:
        book = now(book_id)
        return Clocked(held, _named(now, "site"), grants, _pack(book, clock), clock)
    judged_at = as_of.at if as_of.at is not None else clock
    sites: dict[str, Any] = {}

    def site(site_id: str) -> Any:
        if site_id not in sites:
            sites[site_id] = fold(stream(stream_id("site", site_id)), as_of)
        return sites[site_id]

    def license_(license_id: str) -> Any:
        found = grants(license_id)
        return found if found is not None and _granted(found, as_of) else None

    book = fold(stream(book_id), as_of)
    return Clocked(held, site, license_, _pack(book, judged_at), judged_at)


def _concerning(party: str | None, held: list[Held], now: Lookup) -> list[Held]:
    """For a party's flags, the held batches whose findings can name it: those it owns
    (`not-installed`) or at a site it operates (`attestation-overdue`; a site's operator
    never changes, so the site now tells). The others' sites are not folded `as_of`."""
    if party is None:
        return held
    operators: dict[str, str | None] = {}
    for site_id in {h.site for h in held if h.owner != party}:
        found = now(stream_id("site", site_id))
        operators[site_id] = found.operator if isinstance(found, Site) else None
    return [h for h in held if h.owner == party or operators.get(h.site) == party]


def _granted(found: License, as_of: AsOf) -> bool:
    """Whether a license was granted by the entries `as_of` includes (its terms never change)."""
    seq, at = bounds(as_of)
    return found.granted_seq <= seq and micros(found.granted_at) <= at


def _named(now: Lookup, kind: str) -> Callable[[str], Any]:
    return lambda name: now(stream_id(kind, name))


def _pack(book: Any, at: datetime) -> Any:
    return in_force(book if isinstance(book, PolicyBook) else None, at)
