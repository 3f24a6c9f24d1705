"""Random valid custody sequences keep the ledger's invariants (PROTOCOL.md section 4).

A Hypothesis state machine fabricates batches and moves them (export, delivery in full or
short, installation, relocation, transfer in place or to a site, split, decommissioning,
loss), all through `Ledger.submit`, and tries refused moves in between (wrong signer, a
status the table forbids, a stale `prev`, an `at` going back, a reused id). It keeps a small
model of each batch, only to choose valid moves, and checks after every step:

- each batch reads as the section 4 effects say, and a refused move changes nothing;
- quantities are conserved: a root's fabricated count is its leaves' quantities plus every
  `missing` of its lineage;
- a party's allocation is exactly the chips in transit to it and those it owns at a site;
- every known serial resolves to the batch that holds it now, and any other to none;
- `seq` is dense; and every few steps (and at the end) replay equals live state: rebuilt
  projections, and a `Ledger` reopened on the same store, read exactly as the live one.

Findings (section 7) are not judged here: no license or rule pack plays a part.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger.application import Ledger
from ledger.errors import Conflict, InvalidTransition, LedgerError, NotAuthorized, NotFound
from ledger.views import BatchView
from tests.support import (
    START,
    Clock,
    World,
    assert_rebuild_equals_live,
    new_ledger,
    populate,
    read_model_rows,
    stamp,
)

ROLES = {"nvidia": "vendor", "gulf-cloud": "buyer", "desert-ai": "buyer", "fastfreight": "carrier"}
OPERATORS = sorted(ROLES)
PARTIES = [*OPERATORS, "bis", "audit-office"]
SITES = {  # two per operator, so a holder can always relocate
    "nvidia": ("tsmc-f18", "tsmc-f21"),
    "gulf-cloud": ("dxb-1", "dxb-2"),
    "desert-ai": ("auh-1", "auh-2"),
    "fastfreight": ("kul-1", "kul-2"),
}
COUNTRY = {"tsmc-f18": "TW", "tsmc-f21": "TW", "dxb-1": "AE", "dxb-2": "AE",
           "auh-1": "AE", "auh-2": "AE", "kul-1": "MY", "kul-2": "MY"}  # fmt: skip
REGISTERED_BY_POPULATE = {"tsmc-f18", "dxb-1"}
HELD = ("delivered", "installed")
ALIVE = ("fabricated", "in_transit", *HELD)
# PROTOCOL.md section 4, which event may follow which status; terminal statuses allow none.
ALLOWED = {
    "fabricated": {"exported", "transferred", "split", "decommissioned", "reported_lost"},
    "in_transit": {"delivered", "reported_lost"},
    "delivered": {"exported", "installed", "relocated", "transferred", "split",
                  "decommissioned", "reported_lost"},
    "installed": {"relocated", "transferred", "split", "decommissioned", "reported_lost"},
}  # fmt: skip
MOVES = ("exported", "delivered", "installed", "relocated", "transferred", "split",
         "decommissioned", "reported_lost")  # fmt: skip
WEIGHTS = {"exported": 3, "delivered": 6, "installed": 3, "relocated": 2, "transferred": 2,
           "split": 2, "decommissioned": 1, "reported_lost": 1}  # fmt: skip
FEW = 3  # alive batches, below which a step may fabricate another
NEW = "(a new batch)"
REPLAY_EVERY = 4
REFUSED_SHARE = 3  # steps between the (slowest) replay checks

Event = dict[str, Any]
Expected = type[LedgerError] | tuple[type[LedgerError], ...]
Refused = tuple[Event, tuple[str, ...], Expected]  # an event, its signers, what it raises


@dataclass
class Chips:
    """What the test expects of one batch; enough to choose valid moves, and no more."""

    id: str
    root: str
    status: str
    quantity: int
    owner: str
    holder: str
    heads: list[str]
    serials: tuple[str, ...] | None = None
    to: str | None = None
    site: str | None = None
    missing: int = 0
    parent: str | None = None
    children: list[str] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.heads[-1]


class CustodyMachine(RuleBasedStateMachine):
    """One fresh SQLite ledger per example: the `populate` parties, two sites each."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="chipledger-custody-")
        self.clock = Clock()
        self.world = World(self.clock)
        self.ledger = new_ledger(str(Path(self.directory) / "ledger.db"), self.clock)
        populate(self.ledger, self.world)
        for operator, sites in SITES.items():
            for site in sites:
                if site not in REGISTERED_BY_POPULATE:
                    self.ledger.submit(self.world.site(site, operator, COUNTRY[site]))
        self.accepted = self.populated = self.ledger.size()
        self.refused = 0
        self.batches: dict[str, Chips] = {}
        self.roots: dict[str, int] = {}
        self.ever_serials: set[str] = set()
        self.numbers = count()
        self.steps = self.moves = 0
        self.read: tuple[int, dict[str, BatchView]] | None = None

    # -- helpers ---------------------------------------------------------------------------------

    def new_id(self) -> str:
        return f"b-{next(self.numbers)}"

    def alive(self) -> list[str]:
        return sorted(bid for bid, chips in self.batches.items() if chips.status in ALIVE)

    def event(self, kind: str, chips: Chips, actor: str, **fields: Any) -> Event:
        """A `batch.<kind>` event on `chips`, against its current head unless told otherwise."""
        self.clock.advance(seconds=1)
        fields.setdefault("prev", chips.head)
        return self.world.event(f"batch.{kind}", actor, batch=chips.id, **fields)

    def submit(self, event: Event, *signers: str) -> str:
        """Submit a valid envelope, which takes exactly the next `seq`; its envelope hash."""
        self.moves += 1
        outcome = self.ledger.submit(self.world.envelope(event, *signers))
        assert not outcome.repeated
        assert outcome.receipt.seq == self.accepted, "seqs must be dense"
        self.accepted += 1
        return outcome.receipt.envelope_hash

    def move(self, chips: Chips, kind: str, actor: str, *cosigners: str, **fields: Any) -> str:
        hypothesis.event("accepted", f"{kind}{fields.pop('note', '')}")
        head = self.submit(self.event(kind, chips, actor, **fields), actor, *cosigners)
        chips.heads.append(head)
        return head

    # -- valid moves -----------------------------------------------------------------------------

    @initialize(batches=st.lists(st.tuples(st.integers(1, 8), st.booleans()), min_size=1,
                                 max_size=3))  # fmt: skip
    def fabricate_first_batches(self, batches: list[tuple[int, bool]]) -> None:
        for quantity, with_serials in batches:
            self.fabricate(quantity, with_serials)

    def fabricate(self, quantity: int, with_serials: bool) -> None:
        bid = self.new_id()
        serials = tuple(f"SN-{bid}-{i}" for i in range(quantity)) if with_serials else None
        extra = {"serials": list(serials)} if serials else {}
        self.clock.advance(seconds=1)
        event = self.world.event("batch.fabricated", "nvidia", batch=bid, model="H200",
                                 quantity=quantity, country="TW", **extra)  # fmt: skip
        head = self.submit(event, "nvidia")
        self.batches[bid] = Chips(bid, bid, "fabricated", quantity, "nvidia", "nvidia", [head],
                                  serials)  # fmt: skip
        self.roots[bid] = quantity
        self.ever_serials.update(serials or ())
        hypothesis.event("accepted", f"fabricated{' with serials' if serials else ''}")

    @rule(data=st.data())
    def a_valid_move(self, data: st.DataObject) -> None:
        """A new batch (while few are alive), or a move that a batch's status allows; the
        endings weigh least, so batches live long enough to travel."""
        alive = self.alive()
        news = [NEW] if len(alive) < FEW else []
        target = data.draw(st.sampled_from([*alive, *news]), label="batch")
        if target == NEW:
            quantity = data.draw(st.integers(1, 8), label="quantity")
            self.fabricate(quantity, data.draw(st.booleans(), label="with serials"))
            return
        chips = self.batches[target]
        kinds = [k for k in MOVES if k in ALLOWED[chips.status]
                 and not (k == "split" and chips.quantity < 2)
                 and not (k == "installed" and ROLES[chips.holder] == "carrier")]  # fmt: skip
        weighted = [k for k in kinds for _ in range(WEIGHTS[k])]
        kind = data.draw(st.sampled_from(weighted), label="move")
        handlers: dict[str, Callable[[Chips, st.DataObject], None]] = {
            "exported": self.export, "delivered": self.deliver, "installed": self.install,
            "relocated": self.relocate, "transferred": self.transfer, "split": self.split,
            "decommissioned": self.decommission, "reported_lost": self.report_lost,
        }  # fmt: skip
        handlers[kind](chips, data)

    def export(self, chips: Chips, data: st.DataObject) -> None:
        to = data.draw(st.sampled_from(OPERATORS), label="to")
        destination = COUNTRY[data.draw(st.sampled_from(SITES[to]), label="bound for")]
        self.move(chips, "exported", chips.holder, to=to, destination=destination)
        chips.status, chips.to, chips.site = "in_transit", to, None

    def deliver(self, chips: Chips, data: st.DataObject) -> None:
        assert chips.to is not None
        short = st.integers(1, chips.quantity - 1) if chips.quantity > 1 else st.nothing()
        received = data.draw(st.just(chips.quantity) | short, label="received")
        site = data.draw(st.sampled_from(SITES[chips.to]), label="site")
        serials = chips.serials
        named = serials is not None and data.draw(st.booleans(), label="names serials")
        if serials is not None and named:
            serials = tuple(data.draw(st.permutations(serials), label="order")[:received])
        elif received != chips.quantity:
            serials = None  # a short delivery naming no serials: which chips came is unknown
        extra = {"serials": list(serials)} if named and serials else {}
        note = f" {'in full' if received == chips.quantity else 'short'}"
        note += ", naming serials" if named else ""
        self.move(chips, "delivered", chips.to, site=site, quantity=received, note=note, **extra)
        chips.missing += chips.quantity - received
        chips.quantity, chips.serials, chips.site = received, serials, site
        chips.status, chips.owner, chips.holder, chips.to = "delivered", chips.to, chips.to, None

    def install(self, chips: Chips, data: st.DataObject) -> None:
        self.move(chips, "installed", chips.holder, site=chips.site)
        chips.status = "installed"

    def relocate(self, chips: Chips, data: st.DataObject) -> None:
        site = next(s for s in SITES[chips.holder] if s != chips.site)
        self.move(chips, "relocated", chips.holder, site=site)
        chips.status, chips.site = "delivered", site

    def transfer(self, chips: Chips, data: st.DataObject) -> None:
        to = data.draw(st.sampled_from([p for p in OPERATORS if p != chips.owner]), label="to")
        with_site = chips.status != "fabricated" and data.draw(st.booleans(), label="with site")
        site = data.draw(st.sampled_from(SITES[to]), label="site") if with_site else None
        extra = {"site": site} if site else {}
        note = " with a site" if site else " in place"
        self.move(chips, "transferred", chips.owner, to, to=to, note=note, **extra)
        chips.owner = to
        if site is not None:
            chips.holder, chips.site, chips.status = to, site, "delivered"

    def split(self, chips: Chips, data: st.DataObject) -> None:
        parts = data.draw(st.integers(2, min(3, chips.quantity)), label="parts")
        cuts = data.draw(st.lists(st.integers(1, chips.quantity - 1), min_size=parts - 1,
                                  max_size=parts - 1, unique=True), label="cuts")  # fmt: skip
        shuffled = data.draw(st.permutations(chips.serials), "order") if chips.serials else None
        into = []
        for low, high in pairwise([0, *sorted(cuts), chips.quantity]):
            part: dict[str, Any] = {"batch": self.new_id(), "quantity": high - low}
            if shuffled is not None:
                part["serials"] = shuffled[low:high]
            into.append(part)
        note = f" in {parts}{', serials partitioned' if shuffled else ''}"
        head = self.move(chips, "split", chips.holder, into=into, note=note)
        for part in into:
            serials = tuple(part["serials"]) if "serials" in part else None
            self.batches[part["batch"]] = Chips(
                part["batch"], chips.root, chips.status, part["quantity"], chips.owner,
                chips.holder, [head], serials, site=chips.site, parent=chips.id,
            )  # fmt: skip
        chips.status, chips.children = "split", [part["batch"] for part in into]

    def decommission(self, chips: Chips, data: st.DataObject) -> None:
        self.move(chips, "decommissioned", chips.holder, reason="end of life")
        chips.status = "decommissioned"

    def report_lost(self, chips: Chips, data: st.DataObject) -> None:
        reporters = sorted({chips.holder, chips.owner, "bis"})
        actor = data.draw(st.sampled_from(reporters), label="reported by")
        self.move(chips, "reported_lost", actor, reason="not found at stocktake")
        chips.status = "lost"

    # -- refused moves ---------------------------------------------------------------------------

    @precondition(lambda self: REFUSED_SHARE * self.refused <= self.accepted - self.populated)
    @rule(data=st.data())
    def a_refused_move_changes_nothing(self, data: st.DataObject) -> None:
        """At most one step in REFUSED_SHARE + 1, so that most steps move custody on."""
        self.refused += 1
        chips = self.batches[data.draw(st.sampled_from(sorted(self.batches)), label="batch")]
        name = data.draw(st.sampled_from(self.refusals(chips, data)), label="refused move")
        hypothesis.event("refused", name)
        event, signers, expected = self.refusal(name, chips, data)
        before, size = self.ledger.batch(chips.id), self.ledger.size()
        self.moves += 1
        with pytest.raises(LedgerError) as refused:
            self.ledger.submit(self.world.envelope(event, *signers))
        assert isinstance(refused.value, expected), f"{name} on {before}: {refused.value!r}"
        assert self.ledger.size() == size
        assert self.ledger.batch(chips.id) == before
        for new in {event["batch"], *(p["batch"] for p in event.get("into", []))} - {chips.id}:
            with pytest.raises(NotFound):
                self.ledger.batch(new)

    def refusals(self, chips: Chips, data: st.DataObject) -> list[str]:
        """The refused moves of one kind (drawn first, for balance) that fit this batch."""
        kinds = ["wrong party", "forbidden by status", "out of order", "reused id"]
        kind = data.draw(st.sampled_from(kinds), label="refusal kind")
        if kind == "wrong party":
            consignee = ["not-the-consignee"] if chips.status == "in_transit" else []
            return ["wrong-actor", "foreign-signature", "missing-cosignature",
                    "stranger-reports-loss", *consignee]  # fmt: skip
        if kind == "forbidden by status":
            return [f"forbidden-{k}" for k in MOVES if k not in ALLOWED.get(chips.status, ())]
        if kind == "out of order":
            return ["stale-prev", *(["at-backwards"] if chips.status in ALIVE else [])]
        return ["reused-batch-id", *(["reused-serial"] if self.ever_serials else [])]

    def refusal(self, name: str, chips: Chips, data: st.DataObject) -> Refused:
        """The event of refused move `name`, its signers, and the error it must raise."""
        if name in ("stale-prev", "at-backwards"):
            return self.out_of_order(name, chips, data)
        if name in ("reused-batch-id", "reused-serial"):
            return self.refabrication(chips.id if name == "reused-batch-id" else None, data)
        if name.startswith("forbidden-"):
            kind = name.removeprefix("forbidden-")
            to_someone = kind in ("exported", "transferred")
            other = self.pick(data, "to", OPERATORS, chips.owner) if to_someone else ""
            return self.forbidden(kind, chips, other)
        return self.wrong_party(name, chips, data)

    @staticmethod
    def pick(data: st.DataObject, label: str, among: list[str], *but: str | None) -> str:
        return data.draw(st.sampled_from([p for p in among if p not in but]), label=label)

    def wrong_party(self, name: str, chips: Chips, data: st.DataObject) -> Refused:
        """Signed by someone other than the party the event needs: 403 whatever the status."""
        holder, owner, lost = chips.holder, chips.owner, {"reason": "gone"}
        if name == "wrong-actor":  # only the holder may decommission
            actor = self.pick(data, "actor", [*OPERATORS, "audit-office"], holder)
            return self.event("decommissioned", chips, actor, **lost), (actor,), NotAuthorized
        if name == "foreign-signature":  # the actor is right, the signature someone else's
            signer = self.pick(data, "signer", PARTIES, holder)
            return self.event("decommissioned", chips, holder, **lost), (signer,), NotAuthorized
        if name == "missing-cosignature":  # a transfer needs the receiver's signature too
            to = self.pick(data, "to", OPERATORS, owner)
            return self.event("transferred", chips, owner, to=to), (owner,), NotAuthorized
        if name == "stranger-reports-loss":  # holder, owner or an authority only
            actor = self.pick(data, "actor", [*OPERATORS, "audit-office"], holder, owner)
            return self.event("reported_lost", chips, actor, **lost), (actor,), NotAuthorized
        assert name == "not-the-consignee"
        actor = self.pick(data, "actor", OPERATORS, chips.to)
        event = self.event("delivered", chips, actor, site=SITES[actor][0],
                           quantity=chips.quantity)  # fmt: skip
        return event, (actor,), NotAuthorized

    def out_of_order(self, name: str, chips: Chips, data: st.DataObject) -> Refused:
        """A loss the holder may report, but against an old head (409 conflict) or dated
        before the batch's last event (409 invalid_transition)."""
        if name == "stale-prev":
            stale = data.draw(st.sampled_from(chips.heads[:-1]) if len(chips.heads) > 1
                              else st.binary(max_size=8).map(_digest), "stale prev")  # fmt: skip
            event = self.event("reported_lost", chips, chips.holder, prev=stale, reason="gone")
            return event, (chips.holder,), Conflict
        early = stamp(START - timedelta(days=1))
        event = self.event("reported_lost", chips, chips.holder, at=early, reason="gone")
        return event, (chips.holder,), InvalidTransition

    def refabrication(self, bid: str | None, data: st.DataObject) -> Refused:
        """A fabrication reusing a batch id, or else a serial: both are taken for ever."""
        serials = (
            [data.draw(st.sampled_from(sorted(self.ever_serials)), "serial")] if not bid else []
        )
        self.clock.advance(seconds=1)
        event = self.world.event("batch.fabricated", "nvidia", batch=bid or self.new_id(),
                                 model="H200", quantity=1, country="TW",
                                 **({"serials": serials} if serials else {}))  # fmt: skip
        return event, ("nvidia",), Conflict

    def forbidden(self, kind: str, chips: Chips, other: str) -> Refused:
        """A move the status table forbids, asked for by the party it would need: 409.

        A carrier may not install at all: 403 (section 5, signer and role before state). Out
        of transit a delivery has no consignee, so the holder asking gets the status's 409;
        for a batch lost on its way, whether its last consignee or its holder is "the party
        the event needs" is not settled, so either answer is taken.
        """
        holder = chips.holder
        if kind == "transferred":
            event = self.event(kind, chips, chips.owner, to=other)
            return event, (chips.owner, other), InvalidTransition
        options: dict[str, dict[str, Any]] = {
            "exported": {"to": other, "destination": "AE"},
            "delivered": {"site": SITES[holder][0], "quantity": chips.quantity},
            "installed": {"site": chips.site or SITES[holder][0]},
            "relocated": {"site": next(s for s in SITES[holder] if s != chips.site)},
            "split": {"into": [{"batch": self.new_id(), "quantity": q}
                               for q in (1, max(1, chips.quantity - 1))]},
        }  # fmt: skip
        fields = options.get(kind, {"reason": "not allowed now"})
        expected: Expected = InvalidTransition
        if kind == "delivered" and chips.to is not None:
            expected = (NotAuthorized, InvalidTransition)
        if kind == "installed" and ROLES[holder] == "carrier":
            expected = NotAuthorized
        return self.event(kind, chips, holder, **fields), (holder,), expected

    # -- invariants ------------------------------------------------------------------------------

    def views(self) -> dict[str, BatchView]:
        """Every batch as the ledger shows it, read once per step (each step bumps `moves`)."""
        if self.read is None or self.read[0] != self.moves:
            self.read = (self.moves, {bid: self.ledger.batch(bid) for bid in sorted(self.batches)})
        return self.read[1]

    @invariant()
    def seqs_are_dense(self) -> None:
        assert self.ledger.size() == self.accepted

    @invariant()
    def each_batch_reads_as_its_events_say(self) -> None:
        for bid, view in self.views().items():
            chips = self.batches[bid]
            at_site = chips.status in HELD
            expected = {
                "status": chips.status, "quantity": chips.quantity, "missing": chips.missing,
                "owner": chips.owner, "holder": chips.holder, "head": chips.head,
                "to": chips.to if chips.status == "in_transit" else None,
                "site": chips.site if at_site else None,
                "country": COUNTRY[chips.site] if at_site and chips.site else None,
                "parent": chips.parent, "children": chips.children or None,
                "serials_known": chips.serials is not None,
            }  # fmt: skip
            assert view.model_dump(include=set(expected)) == expected, f"batch {bid}"

    @invariant()
    def quantities_are_conserved(self) -> None:
        views = self.views()
        for root, fabricated in self.roots.items():
            lineage = [views[bid] for bid, chips in self.batches.items() if chips.root == root]
            leaves = sum(view.quantity for view in lineage if view.status != "split")
            missing = sum(view.missing for view in lineage)
            assert fabricated == leaves + missing, f"lineage of {root}: {lineage}"

    @invariant()
    def allocations_are_the_chips_in_transit_to_or_owned_at_a_site_by_each_party(self) -> None:
        views = self.views().values()
        for party in PARTIES:
            mine = [v for v in views if (v.status == "in_transit" and v.to == party)
                    or (v.status in HELD and v.owner == party)]  # fmt: skip
            allocation = self.ledger.allocation(party)
            assert allocation.total == sum(v.quantity for v in mine), party
            assert allocation.batches == sorted(v.batch for v in mine), party
            assert allocation.by_status == _counts(mine, lambda v: v.status), party
            at_sites = [v for v in mine if v.site is not None]
            assert allocation.by_site == _counts(at_sites, lambda v: v.site or ""), party

    @invariant()
    def serials_resolve_to_the_batch_that_holds_them(self) -> None:
        holds = {s: bid for bid, chips in self.batches.items()
                 if chips.status != "split" for s in chips.serials or ()}  # fmt: skip
        for serial, bid in holds.items():
            assert self.ledger.serial(serial).batch == bid, serial
        for serial in sorted(self.ever_serials - set(holds)):  # missing, or now unknown
            with pytest.raises(NotFound):
                self.ledger.serial(serial)

    @invariant()
    def replay_equals_live_state(self) -> None:
        """Every few steps (the slowest check), and once more at teardown."""
        self.steps += 1
        if self.steps % REPLAY_EVERY == 0:
            self.check_replay()

    def check_replay(self) -> None:
        live = assert_rebuild_equals_live(self.ledger)
        reopened = Ledger(self.ledger.store, clock=self.ledger.clock)
        try:
            assert reopened.size() == self.ledger.size()
            assert read_model_rows(reopened) == live
            for bid, view in self.views().items():
                assert reopened.batch(bid) == view, bid
            for party in PARTIES:
                assert reopened.allocation(party) == self.ledger.allocation(party), party
        finally:
            reopened.close()

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # after a failed step, that failure is the report
                self.check_replay()
        finally:
            self.ledger.close()
            shutil.rmtree(self.directory, ignore_errors=True)


def _digest(data: bytes) -> str:
    return hashlib.sha256(b"never an envelope:" + data).hexdigest()


def _counts(views: list[BatchView], key: Callable[[BatchView], str]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for view in views:
        counts[key(view)] += view.quantity
    return dict(counts)


TestCustodySequences = CustodyMachine.TestCase
TestCustodySequences.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
