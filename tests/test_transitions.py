"""Which batch event may follow which status: the table of PROTOCOL.md section 4, cell by cell.

Each row drives a fresh batch to one status, then sends one event that is otherwise valid and
signed by the party it needs, so only the status decides: accepted (the new state and the next
`seq`), or a 409 `invalid_transition` that stores nothing. `batch.fabricated` on a used id is
a 409 `conflict` instead (section 5: a reused id). `Custody` drives test_custody_rules.py too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import pytest

from ledger.application import Ledger
from ledger.errors import Conflict, InvalidTransition, LedgerError
from ledger.views import BatchView, Receipt
from tests.support import World

Json = dict[str, Any]
DROP = object()  # a field value that means: leave the field out

BYSTANDER = "oasis-compute"  # a buyer that never owns, holds or receives the table's batches
SITES = {  # each operator's sites, its home first
    "nvidia": ["tsmc-f18"],
    "gulf-cloud": ["dxb-1", "dxb-2"],
    "desert-ai": ["auh-1"],
    "fastfreight": ["pkg-1", "pkg-2"],
    BYSTANDER: ["oas-1"],
}
SITE_COUNTRIES = {"dxb-2": "AE", "auh-1": "AE", "pkg-1": "MY", "pkg-2": "MY", "oas-1": "AE"}
STATUSES = ["fabricated", "in_transit", "delivered", "installed", "split", "decommissioned", "lost"]
KINDS = [
    "fabricated",
    "exported",
    "delivered",
    "installed",
    "relocated",
    "transferred-with-site",
    "transferred-in-place",
    "split",
    "decommissioned",
    "reported_lost",
]
TO_DELIVERED = ["fabricated", "exported", "delivered"]
PATHS = {  # the events that bring a fresh batch (nvidia -> gulf-cloud at dxb-1) to each status
    "fabricated": ["fabricated"],
    "in_transit": ["fabricated", "exported"],
    "delivered": TO_DELIVERED,
    "installed": [*TO_DELIVERED, "installed"],
    "split": [*TO_DELIVERED, "split"],
    "decommissioned": [*TO_DELIVERED, "decommissioned"],
    "lost": [*TO_DELIVERED, "reported_lost"],
}


def receiver_for(party: str) -> str:
    """The party a batch of `party`'s goes to next in these tests."""
    return "desert-ai" if party == "gulf-cloud" else "gulf-cloud"


@dataclass(frozen=True)
class Move:
    """One event and the parties whose keys sign it."""

    event: Json
    signers: tuple[str, ...]

    def envelope(self) -> Json:
        return World.envelope(self.event, *self.signers)

    def signed_by(self, *signers: str) -> Move:
        return replace(self, signers=signers)

    def changed(self, **fields: Any) -> Move:
        """The same event with fields changed (DROP removes one); the signers stay."""
        event = {**self.event, **fields}
        return replace(self, event={k: v for k, v in event.items() if v is not DROP})


@dataclass
class Custody:
    """Drives batches through the populated ledger with the right party's events."""

    ledger: Ledger
    world: World

    @classmethod
    def start(cls, ledger: Ledger, world: World) -> Custody:
        """The populated ledger plus a bystander buyer and a few more sites."""
        envelopes = [world.party(BYSTANDER, ["buyer"], "AE")]
        for site, country in SITE_COUNTRIES.items():
            operator = next(party for party, sites in SITES.items() if site in sites)
            envelopes.append(world.site(site, operator, country))
        ledger.submit_batch({"envelopes": envelopes})
        return cls(ledger, world)

    def state(self, batch: str = "b1") -> BatchView:
        return self.ledger.batch(batch)

    def submit(self, move: Move | Json) -> Receipt:
        outcome = self.ledger.submit(move.envelope() if isinstance(move, Move) else move)
        assert not outcome.repeated
        return outcome.receipt

    def event(self, kind: str, actor: str, batch: str = "b1", **fields: Any) -> Json:
        """A `batch.<kind>` event on an existing batch, chained to its current head."""
        prev = fields.pop("prev", None) or self.state(batch).head
        return self.world.event(f"batch.{kind}", actor, batch=batch, prev=prev, **fields)

    def fabricate(
        self, batch: str = "b1", quantity: int = 100, serials: list[str] | None = None
    ) -> Move:
        extra = {} if serials is None else {"serials": serials}
        fields = {"batch": batch, "model": "H200", "quantity": quantity, "country": "TW"}
        return Move(self.world.event("batch.fabricated", "nvidia", **fields, **extra), ("nvidia",))

    def move(self, kind: str, batch: str = "b1", actor: str | None = None) -> Move:
        """The event `kind` (a KINDS entry) on `batch`, by `actor` or else the party it needs."""
        if kind == "fabricated":
            return self.fabricate(batch)
        view = self.state(batch)
        actor = actor or right_party(kind, view)
        fields = self._fields(kind, view, actor)
        signers = (actor, fields["to"]) if kind.startswith("transferred") else (actor,)
        event_type = kind.split("-")[0]
        return Move(self.event(event_type, actor, batch, **fields), signers)

    def _fields(self, kind: str, view: BatchView, actor: str) -> Json:
        own = SITES.get(actor, ["dxb-1"])
        if kind == "exported":
            return {"to": receiver_for(actor), "destination": "AE"}
        if kind == "delivered":
            return {"site": own[0], "quantity": view.quantity}
        if kind == "installed":
            return {"site": view.site or own[0]}
        if kind == "relocated":
            return {"site": next((s for s in own if s != view.site), own[0])}
        if kind.startswith("transferred"):
            to = receiver_for(view.owner)
            return {"to": to, "site": SITES[to][0]} if kind.endswith("site") else {"to": to}
        if kind == "split":
            return {"into": self.halves(view)}
        return {"reason": "recorded by the test"}

    def halves(self, view: BatchView) -> list[Json]:
        tag = f"{view.batch}-{self.world.counter + 1}"  # fresh ids: the next event id's number
        half = view.quantity // 2
        return [
            {"batch": f"{tag}a", "quantity": half},
            {"batch": f"{tag}b", "quantity": view.quantity - half},
        ]

    def drive(self, status: str, batch: str = "b1") -> BatchView:
        """A fresh batch `batch` brought to `status` by the right parties."""
        for kind in PATHS[status]:
            self.submit(self.move(kind, batch))
        view = self.state(batch)
        assert view.status == status
        return view

    def refused(self, move: Move | Json, error: type[LedgerError], batch: str = "b1") -> str:
        """Assert the envelope is refused with `error` and changes nothing; the message."""
        size, head = self.ledger.size(), self._head(batch)
        with pytest.raises(error) as refusal:
            self.submit(move)
        assert type(refusal.value) is error, refusal.value.message
        assert self.ledger.size() == size
        assert self._head(batch) == head
        return refusal.value.message

    def _head(self, batch: str) -> str | None:
        try:
            return self.state(batch).head
        except LedgerError:
            return None


def right_party(kind: str, view: BatchView) -> str:
    """Who an event needs: the consignee (else the holder) delivers, the owner transfers."""
    if kind == "delivered":
        return view.to or view.holder
    if kind.startswith("transferred"):
        return view.owner
    return view.holder


@pytest.fixture
def custody(populated: Ledger, world: World) -> Custody:
    return Custody.start(populated, world)


# -- the table -------------------------------------------------------------------------------


class State(NamedTuple):
    status: str
    owner: str
    holder: str
    site: str | None = None
    to: str | None = None


N, G, D = "nvidia", "gulf-cloud", "desert-ai"
AT_A_SITE = {  # what delivered and installed batches (gulf-cloud's, at dxb-1) may do
    "relocated": State("delivered", G, G, "dxb-2"),
    "transferred-with-site": State("delivered", D, D, "auh-1"),
    "split": State("split", G, G),
    "decommissioned": State("decommissioned", G, G),
    "reported_lost": State("lost", G, G),
}
ACCEPTED: dict[tuple[str, str], State] = {
    ("fabricated", "exported"): State("in_transit", N, N, to=G),
    ("fabricated", "transferred-in-place"): State("fabricated", G, N),
    ("fabricated", "split"): State("split", N, N),
    ("fabricated", "decommissioned"): State("decommissioned", N, N),
    ("fabricated", "reported_lost"): State("lost", N, N),
    ("in_transit", "delivered"): State("delivered", G, G, "dxb-1"),
    ("in_transit", "reported_lost"): State("lost", N, N),
    ("delivered", "exported"): State("in_transit", G, G, to=D),
    ("delivered", "installed"): State("installed", G, G, "dxb-1"),
    ("delivered", "transferred-in-place"): State("delivered", D, G, "dxb-1"),
    **{("delivered", kind): state for kind, state in AT_A_SITE.items()},
    ("installed", "transferred-in-place"): State("installed", D, G, "dxb-1"),
    **{("installed", kind): state for kind, state in AT_A_SITE.items()},
}


def cells() -> list[Any]:
    rows = []
    for status in STATUSES:
        for kind in KINDS:
            expected: State | type[LedgerError] = ACCEPTED.get((status, kind), InvalidTransition)
            if kind == "fabricated":
                expected = Conflict  # the batch id is taken: a reuse, not a transition
            verdict = "accepted" if isinstance(expected, State) else "refused"
            rows.append(pytest.param(status, kind, expected, id=f"{status}-then-{kind}-{verdict}"))
    return rows


@pytest.mark.parametrize(("status", "kind", "expected"), cells())
def test_the_batch_status_decides_which_event_may_follow(
    custody: Custody, status: str, kind: str, expected: State | type[LedgerError]
) -> None:
    custody.drive(status)
    move = custody.move(kind)
    if not isinstance(expected, State):
        custody.refused(move, expected)
        return
    size = custody.ledger.size()

    receipt = custody.submit(move)

    after = custody.state()
    assert receipt.seq == size
    assert State(after.status, after.owner, after.holder, after.site, after.to) == expected
    assert (after.head, after.last_seq) == (receipt.envelope_hash, receipt.seq)
