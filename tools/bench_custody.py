"""The scale bench's custody: a deterministic stream of signed envelopes, `ScaleWorld`.

`ScaleWorld(entries, origin).chunks()` yields (clock, envelopes) batches of 100 that make exactly
`entries` log entries: the registry of `tools.bench_world`, then batches fabricated (some with
serials, a few recorded late), exported under licenses granted when needed (some citing the
wrong one, some under none, some to an embargoed or licence-required buyer or a forwarder),
delivered (some short, some with other serials, some in another country), installed,
relocated, transferred with two signatures (some to a party the license does not name),
split, decommissioned and lost; sites attested and inspected. The world keeps its own copy of
each live batch to sign valid events; the ledger judges them, this module predicts no flag.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

from ledger.wire import format_time
from tools.bench_world import (
    CHUNK,
    VENDORS,
    Action,
    Born,
    Catalog,
    Emitted,
    Envelope,
    Party,
    Site,
    Stream,
    customers_for,
    parties,
    registry,
)

HELD = ("delivered", "installed")
ENDS = {"decommissioned": ("batch.decommissioned", "failed burn-in"),
        "lost": ("batch.reported_lost", "container missing at the port")}  # fmt: skip


@dataclass
class Chips:
    """One live batch as the world knows it: enough to sign its next event."""

    id: str
    model: str
    quantity: int
    serials: list[str] | None
    status: str
    owner: str
    holder: str
    head: str
    to: str | None = None
    bound: Site | None = None  # where it will be delivered, chosen at export
    site: Site | None = None
    license: str | None = None


@dataclass
class Grant:
    id: str
    consignees: tuple[str, ...]
    until: datetime
    limit: int
    used: int = 0


@dataclass
class Plan:
    """An export decided before its license exists: the license is granted first."""

    target: Party
    destination: str
    bound: Site
    license: str | None = None
    via: list[str] = field(default_factory=list)


class ScaleWorld:
    """The world of one bench ledger: its parties, its live batches, and the stream."""

    def __init__(self, entries: int, origin: str, seed: int = 2026) -> None:
        self.entries, self.rng, self.catalog = entries, random.Random(seed), Catalog()
        self.customers = customers_for(entries)
        self.stream = Stream(entries, origin, self.rng, self.catalog)
        self.parties = parties(self.customers)
        self.buyers = [p for p in self.parties.values() if p.id.startswith("cust-")]
        self.diligence = list(accumulate(b.diligence for b in self.buyers))
        self.pending: deque[Action] = deque(registry(self.stream, self.parties))
        self.pool: list[Chips] = []
        self.pool_target = max(8, min(12 * self.customers, entries // 40))
        self.grants: dict[tuple[str, str], Grant] = {}  # the latest of a vendor and a buyer
        self.licenses: dict[str, Grant] = {}
        self.placed: dict[str, Counter[str]] = {}
        self.attested: dict[str, datetime] = {}
        self.numbers = Counter[str]()

    def chunks(self) -> Iterator[tuple[datetime, list[Envelope]]]:
        """The envelopes in batches of 100, each with the clock to record it at."""
        while self.stream.seq < self.entries:
            before = self.stream.seq
            self.step()
            assert self.stream.seq == before + 1, "each step signs exactly one event"
            if len(self.stream.out) == CHUNK or self.stream.seq == self.entries:
                yield self.stream.schedule.recorded((self.stream.seq - 1) // CHUNK), self.stream.out
                self.stream.out = []

    def step(self) -> None:
        if self.pending:
            self.pending.popleft()()
            return
        draw = self.rng.random()
        if draw < 0.025:
            self.attest()
        elif draw < 0.029 and self.inspect():
            return
        elif len(self.pool) < self.pool_target or self.rng.random() < 0.05:
            self.fabricate()
        else:
            self.advance(self.rng.randrange(len(self.pool)))

    # -- the sites' side --------------------------------------------------------------------

    def attest(self) -> None:
        buyer = self.rng.choices(self.buyers, cum_weights=self.diligence)[0]
        site = self.rng.choice(buyer.sites)
        now = self.stream.now()
        start = self.attested.get(site.id, now - timedelta(days=90))
        self.stream.emit("security.attested", buyer.id, [buyer.id], site=site.id,
                         period_start=format_time(start), period_end=format_time(now),
                         statement="access controls in place; no chips moved off site")  # fmt: skip
        self.attested[site.id] = now

    def inspect(self) -> bool:
        """An authority counts the chips at a customer's site (sometimes wrongly)."""
        site = self.rng.choice(self.rng.choice(self.buyers).sites)
        observed = {m: n for m, n in self.placed.get(site.id, Counter()).items() if n}
        if not observed:
            return False
        if self.rng.random() < 0.3:
            model = self.rng.choice(sorted(observed))
            observed[model] = max(0, observed[model] - self.rng.randint(1, 16))
        self.stream.emit("site.inspected", "bis", ["bis"], site=site.id, observed=observed)
        return True

    def _place(self, chips: Chips, sign: int) -> None:
        if chips.status in HELD and chips.site is not None:
            counts = self.placed.setdefault(chips.site.id, Counter())
            counts[chips.model] += sign * chips.quantity

    # -- fabrication and export -------------------------------------------------------------

    def fabricate(self) -> None:
        vendor = self.parties[self.rng.choices([v[0] for v in VENDORS], [v[3] for v in VENDORS])[0]]
        model = self.rng.choice(vendor.models)
        self.numbers[model] += 1
        name = f"{model}-{self.numbers[model]:07d}"
        with_serials = self.rng.random() < 0.3
        quantity = self.rng.randint(8, 64) if with_serials else self.rng.choice([64, 128, 256, 512])
        serials = [f"{name}-{i:03d}" for i in range(quantity)] if with_serials else None
        late = self.rng.random() < 0.01  # recorded four days late: late-report
        at = self.stream.now() - timedelta(days=4) if late else None
        extra = {"serials": serials} if serials else {}
        done = self.stream.emit("batch.fabricated", vendor.id, [vendor.id], at=at,
                                batch=name, model=model, quantity=quantity,
                                country=vendor.fab, **extra)  # fmt: skip
        self.catalog.batches.offer(Born(name, done.seq, done.at))
        for serial in serials or []:
            self.catalog.serials.offer(Born(serial, done.seq, done.at))
        self.pool.append(Chips(name, model, quantity, serials, "fabricated", vendor.id,
                               vendor.id, done.hash))  # fmt: skip

    def export(self, chips: Chips) -> None:
        plan = self._plan(chips)
        if plan.license == "":  # a license is needed and none is valid: grant one first
            plan.license = self._grant(chips.holder, plan.target)
            self.pending.append(lambda: self._export(chips, plan))
            return
        self._export(chips, plan)

    def _plan(self, chips: Chips) -> Plan:
        draw = self.rng.random()
        vendor = self.parties[chips.holder].role == "vendor"
        if vendor and draw < 0.02:
            target = self.parties["north-star"]
        elif vendor and draw < 0.04:
            target = self.parties["dragon-ai"]
        elif vendor and draw < 0.08:
            target = self.parties[self.rng.choice(["fastfreight", "gulf-logistics", "sg-forward"])]
        else:
            target = self._receiver(chips.holder)
        bound = target.sites[0]
        destination = bound.country
        if len(target.countries) > 1 and self.rng.random() < 0.03:  # location-mismatch
            destination = target.sites[1].country
        plan = Plan(target, destination, bound)
        if vendor and target.id.startswith("cust-"):
            plan.license = self._license_of(chips.holder, target, chips.quantity)
        if self.rng.random() < 0.05:
            plan.via = [next(c for c in ("SG", "MY", "AE") if c != destination)]
        return plan

    def _receiver(self, owner: str) -> Party:
        """A customer other than `owner`: its partner most often, else any."""
        partner = self.parties[owner].partner
        if partner is not None and self.rng.random() < 0.75:
            return self.parties[partner]
        while True:
            found = self.rng.choice(self.buyers)
            if found.id != owner:
                return found

    def _license_of(self, vendor: str, target: Party, quantity: int) -> str | None:
        """The license to cite: the valid one ('' when one must be granted first), none, or
        a wrong one."""
        draw = self.rng.random()
        if draw >= 0.9:
            return None
        if draw >= 0.88:
            wrong = self.rng.choice(list(self.licenses.values())) if self.licenses else None
            return wrong.id if wrong and target.id not in wrong.consignees else None
        grant = self.grants.get((vendor, target.id))
        if grant is None or grant.used >= grant.limit or grant.until < self.stream.now():
            return ""
        return grant.id

    def _grant(self, vendor: str, target: Party) -> str:
        now = self.stream.now()
        self.numbers[f"{vendor}:{target.id}"] += 1
        name = f"L-{vendor}-{target.id}-{self.numbers[f'{vendor}:{target.id}']:02d}"
        named = [target] + ([self.parties[target.partner]] if target.partner else [])
        consignees, limit = (
            sorted(p.id for p in named),
            3_000 if self.rng.random() < 0.1 else 200_000,
        )
        terms = {
            "id": name, "holder": vendor,
            "destinations": sorted({c for p in named for c in p.countries}),
            "consignees": consignees, "models": list(self.parties[vendor].models),
            "max_quantity": limit,
            "valid_from": format_time(now - timedelta(days=1)),
            "valid_until": format_time(now + timedelta(days=730)),
            "conditions": {"reexport_allowed": False, "attestation_interval_days": target.interval,
                           "security_guarantee": True,
                           "us_investment_commitment": target.guarantees},
        }  # fmt: skip
        done = self.stream.emit("license.granted", "bis", ["bis"], license=terms)
        grant = Grant(name, tuple(consignees), now + timedelta(days=729), limit)
        self.grants[(vendor, target.id)] = self.licenses[name] = grant
        self.catalog.licenses.append(Born(name, done.seq, done.at))
        return name

    def _export(self, chips: Chips, plan: Plan) -> None:
        fields: dict[str, Any] = {"to": plan.target.id, "destination": plan.destination}
        if plan.license:
            fields["license"] = plan.license
            self.licenses[plan.license].used += chips.quantity
        if plan.via:
            fields["via"] = plan.via
        self._move(chips, "batch.exported", [chips.holder], **fields)
        self._place(chips, -1)
        chips.status, chips.to, chips.bound = "in_transit", plan.target.id, plan.bound
        chips.site = None
        chips.license = plan.license or chips.license

    # -- on the way and at a site -----------------------------------------------------------

    def _move(self, chips: Chips, kind: str, signers: list[str], **fields: Any) -> Emitted:
        done = self.stream.emit(kind, signers[0], signers, batch=chips.id, prev=chips.head,
                                **fields)  # fmt: skip
        chips.head = done.hash
        return done

    def deliver(self, chips: Chips) -> None:
        assert chips.to is not None
        assert chips.bound is not None
        received, serials = chips.quantity, chips.serials
        draw = self.rng.random()
        if draw < 0.07 and chips.quantity > 1:  # a short delivery, serials named or not
            received = chips.quantity - self.rng.randint(1, max(1, chips.quantity // 8))
            serials = chips.serials[:received] if chips.serials and draw < 0.035 else None
        elif draw < 0.11 and chips.serials:  # one serial that was never shipped
            serials = [*chips.serials[:-1], f"{chips.id}-x"]
        extra = {"serials": serials} if serials else {}
        done = self._move(chips, "batch.delivered", [chips.to], site=chips.bound.id,
                          quantity=received, **extra)  # fmt: skip
        kept = set(serials or ())
        for serial in chips.serials or []:
            if serial not in kept:
                self.catalog.serials.gone(serial, done.seq, done.at)
        for serial in kept - set(chips.serials or ()):
            self.catalog.serials.offer(Born(serial, done.seq, done.at))
        chips.owner = chips.holder = chips.to
        chips.status, chips.site, chips.to = "delivered", chips.bound, None
        chips.quantity, chips.serials = received, serials
        self._place(chips, +1)

    def install(self, chips: Chips) -> None:
        assert chips.site is not None
        self._move(chips, "batch.installed", [chips.holder], site=chips.site.id)
        chips.status = "installed"

    def relocate(self, chips: Chips) -> None:
        assert chips.site is not None
        site = next(s for s in self.parties[chips.holder].sites if s != chips.site)
        self._place(chips, -1)
        self._move(chips, "batch.relocated", [chips.holder], site=site.id)
        chips.site, chips.status = site, "delivered"
        self._place(chips, +1)

    def transfer(self, chips: Chips) -> None:
        """Two signatures: the owner's and the receiver's; moved to the receiver's site."""
        receiver = self._receiver(chips.owner)
        self._place(chips, -1)
        self._move(chips, "batch.transferred", [chips.owner, receiver.id], to=receiver.id,
                   site=receiver.sites[0].id)  # fmt: skip
        chips.owner = chips.holder = receiver.id
        chips.site, chips.status = receiver.sites[0], "delivered"
        self._place(chips, +1)

    def split(self, chips: Chips, index: int) -> None:
        count = 2 if chips.quantity < 6 or self.rng.random() < 0.7 else 3
        cuts = sorted(self.rng.sample(range(1, chips.quantity), count - 1))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, chips.quantity], strict=True)]
        parts: list[dict[str, Any]] = []
        for n, size in enumerate(sizes):
            part: dict[str, Any] = {"batch": f"{chips.id}-{'abc'[n]}", "quantity": size}
            if chips.serials:
                start = sum(sizes[:n])
                part["serials"] = chips.serials[start : start + size]
            parts.append(part)
        self._place(chips, -1)
        done = self._move(chips, "batch.split", [chips.holder], into=parts)
        children = [replace(chips, id=p["batch"], quantity=p["quantity"],
                            serials=p.get("serials")) for p in parts]  # fmt: skip
        for child in children:
            self.catalog.batches.offer(Born(child.id, done.seq, done.at))
            self._place(child, +1)
        self.pool[index] = children[0]
        self.pool.extend(children[1:])

    def end(self, chips: Chips, kind: str, reason: str) -> None:
        self._place(chips, -1)
        self._move(chips, kind, [chips.holder], reason=reason)

    # -- choosing a batch's next event ------------------------------------------------------

    def advance(self, index: int) -> None:
        chips = self.pool[index]
        choices = self._choices(chips, self.parties[chips.holder].role)
        action = self.rng.choices([c[0] for c in choices], [c[1] for c in choices])[0]
        if action == "split":
            self.split(chips, index)
        elif action in ENDS:
            self._drop(index)
            kind, reason = ENDS[action]
            self.end(chips, kind, reason)
        elif action == "retired":  # it stays as it is; this step fabricates instead
            self._drop(index)
            self.fabricate()
        else:
            getattr(self, action)(chips)

    def _choices(self, chips: Chips, role: str) -> list[tuple[str, float]]:
        if chips.status == "fabricated":
            big = chips.quantity >= 2 and len(chips.id) < 48
            return [("export", 93), ("split", 3 if big else 0), ("decommissioned", 2), ("lost", 1)]
        if chips.status == "in_transit":
            return [("deliver", 98), ("lost", 2)]
        if role == "carrier":  # a forwarder passes the chips on
            return [("export", 60), ("transfer", 35), ("lost", 5)]
        customer = chips.holder.startswith("cust-")
        movable = customer and len(chips.id) < 48 and chips.quantity >= 2
        if chips.status == "delivered":
            return [("install", 70), ("relocate", 8 if customer else 0),
                    ("transfer", 7 if customer else 0), ("split", 6 if movable else 0),
                    ("decommissioned", 3), ("export", 3 if customer else 0), ("lost", 1),
                    ("retired", 2)]  # fmt: skip
        return [("retired", 55), ("relocate", 10 if customer else 0),
                ("transfer", 12 if customer else 0), ("split", 8 if movable else 0),
                ("decommissioned", 13), ("lost", 2)]  # fmt: skip

    def _drop(self, index: int) -> None:
        self.pool[index] = self.pool[-1]
        self.pool.pop()
