"""Rule packs: the built-in default, the book of adopted packs, and which one is in force.

An event is judged under the pack with the latest `effective_from` <= its `at` among the packs
accepted before it (of two with the same `effective_from`, the one accepted later); with none,
under the built-in default (PROTOCOL.md section 4). A pack is shape-checked as an event field
(`ledger.wire.rules`); adopting it checks the rest here: a new id, and not retroactive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import singledispatchmethod
from importlib import resources
from typing import Any

from ledger import events, wire
from ledger.aggregates import Aggregate, stream_id
from ledger.errors import Conflict, InvalidEvent
from ledger.registry import Command, require_authority
from ledger.unit import UnitOfWork

NOT_RETROACTIVE = timedelta(minutes=5)


@dataclass(frozen=True)
class Pack:
    """A rule pack as adopted (`raw`, byte for byte the JSON value) and as read (`terms`)."""

    raw: dict[str, Any]
    terms: wire.RulePack
    seq: int | None  # None: the built-in default

    @property
    def id(self) -> str:
        return self.terms.id

    @property
    def effective_from(self) -> datetime:
        return self.terms.effective_from

    def group(self, name: str) -> frozenset[str]:
        members = getattr(self.terms.groups, name, None)
        if members is None:
            members = (self.terms.groups.model_extra or {}).get(name, [])
        return frozenset(members)

    def threshold(self, name: str) -> int:
        return int(getattr(self.terms.thresholds, name))


def _default() -> Pack:
    text = resources.files("ledger").joinpath("packs/default.json").read_text("utf-8")
    raw = json.loads(text)
    return Pack(raw, wire.parse_pack(raw), None)


DEFAULT = _default()


class PolicyBook(Aggregate):
    """Every rule pack adopted, in `seq` order."""

    @singledispatchmethod
    def when(self, event: events.AggregateEvent) -> None:
        raise NotImplementedError(type(event).__name__)

    @when.register
    def _(self, event: events.PolicyBookOpened) -> None:
        self.packs: list[Pack] = []
        self._adopt(event.fact, event.accepted.seq)

    @when.register
    def _(self, event: events.PolicyAdopted) -> None:
        self._adopt(event.fact, event.accepted.seq)

    def _adopt(self, fact: wire.PolicyAdopted, seq: int) -> None:
        self.packs = [*self.packs, Pack(fact.policy, fact.pack, seq)]


def in_force(book: PolicyBook | None, at: datetime, before_seq: int | None = None) -> Pack:
    """The pack an event dated `at` is judged under, among those accepted before `before_seq`."""
    candidates = [
        pack
        for pack in (book.packs if book is not None else [])
        if pack.effective_from <= at and (before_seq is None or (pack.seq or 0) < before_seq)
    ]
    return max(candidates, key=lambda p: (p.effective_from, p.seq or 0), default=DEFAULT)


def policy_book(unit: UnitOfWork) -> PolicyBook | None:
    return unit.get(PolicyBook, "policy", "book")


class AdoptPolicy(Command[wire.PolicyAdopted]):
    def authorize(self, event: wire.PolicyAdopted, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)

    def check(self, event: wire.PolicyAdopted, unit: UnitOfWork) -> None:
        pack = event.pack
        book = policy_book(unit)
        taken = {DEFAULT.id, *(p.id for p in (book.packs if book else []))}
        if pack.id in taken:
            raise Conflict(f"a rule pack with id {pack.id!r} was adopted before; choose a new id")
        if pack.effective_from < unit.now - NOT_RETROACTIVE:
            raise InvalidEvent(
                f"policy.effective_from {wire.format_time(pack.effective_from)} is before now: "
                "rules are never made retroactive; make it effective from now or later"
            )

    def apply(self, event: wire.PolicyAdopted, unit: UnitOfWork, accepted: events.Accepted) -> None:
        book = policy_book(unit)
        if book is None:
            book = PolicyBook._create(
                events.PolicyBookOpened, id=stream_id("policy", "book"), timestamp=unit.now,
                fact=event, accepted=accepted,
            )  # fmt: skip
            unit.add(book, "policy", "book")
        else:
            book.record(events.PolicyAdopted, timestamp=unit.now, fact=event, accepted=accepted)
