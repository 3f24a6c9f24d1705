"""The scale bench's world: who takes part, when things happen, and what a reader may ask for.

Parties: one authority, three vendors, three carriers with a warehouse each, two buyers the
rules flag (one in an embargoed country and on the entity list, one headquartered where a
license is required), and customers: one per 2,000 entries, at least 5, so that a customer's
own volume (batches, flags, its allocation's batch list) stays about constant as the ledger
grows; each customer has two sites, some in two countries. Every key comes from a fixed seed.
Times: entry `seq` has an `at` inside the window of its batch of 100 (at most 48 h before the
clock the batch is recorded at), and the batches are spread evenly over six simulated years
whatever the size. The custody itself is `tools.bench_custody`.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from ledger.canonical import canonical
from ledger.crypto import Signer
from ledger.signing import envelope
from ledger.wire import format_time
from tools.bench import signer

Envelope = dict[str, Any]
CHUNK = 100  # envelopes per `Ledger.submit_batch`
START = datetime(2020, 1, 6, tzinfo=UTC)
SPAN = timedelta(days=6 * 365)
WINDOW = timedelta(hours=48)  # the longest an event waits to be recorded (late-report: 72 h)
ENTRIES_PER_CUSTOMER = 2_000
MIN_CUSTOMERS = 5
SAMPLE = 4_000  # ids of each kind kept for the reads to pick from (uniformly, reservoir)


def customers_for(entries: int) -> int:
    """One customer per 2,000 entries, at least 5: a customer's own volume stays constant."""
    return max(MIN_CUSTOMERS, entries // ENTRIES_PER_CUSTOMER)


def envelope_hash(value: Envelope) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


# -- parties and sites ----------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    id: str
    operator: str
    country: str


@dataclass
class Party:
    id: str
    role: str
    country: str
    sites: list[Site] = field(default_factory=list)
    hq: str | None = None
    models: tuple[str, ...] = ()  # a vendor's
    fab: str = ""  # where a vendor's batches are fabricated
    partner: str | None = None  # a customer its licenses also name
    diligence: int = 4  # how often it attests, relative to the others
    interval: int = 90  # the attestation interval its licenses ask for
    guarantees: bool = True  # its licenses' us_investment_commitment

    @property
    def countries(self) -> list[str]:
        return sorted({site.country for site in self.sites})


VENDORS = [  # id, fab country, models, weight
    ("nvidia", "TW", ("H100", "H200", "B200", "GB300", "H20"), 14),
    ("amd", "TW", ("MI300X",), 3),
    ("smci", "MY", ("H200", "B200"), 3),
]
CARRIERS = [("fastfreight", "MY"), ("gulf-logistics", "AE"), ("sg-forward", "SG")]
FLAGGED = [("north-star", "RU", None), ("dragon-ai", "CN", "CN")]
PROFILES = [  # a customer's country, headquarters (when elsewhere), its two sites' countries
    ("AE", None, ("AE", "AE")),
    ("SG", "HK", ("SG", "MY")),
    ("SA", None, ("SA", "AE")),
    ("IN", None, ("IN", "IN")),
    ("GB", None, ("GB", "DE")),
    ("JP", None, ("JP", "JP")),
    ("MY", "CN", ("MY", "TH")),
    ("KR", None, ("KR", "KR")),
    ("DE", None, ("DE", "FR")),
    ("IL", None, ("IL", "IL")),
]


def customer(i: int, count: int) -> Party:
    country, hq, sites = PROFILES[i % len(PROFILES)]
    name = f"cust-{i:05d}"
    partner = i ^ 1 if (i ^ 1) < count else None
    return Party(
        name, "buyer", country, hq=hq,
        sites=[Site(f"{name}-{c.lower()}{k}", name, c) for k, c in enumerate(sites, 1)],
        partner=None if partner is None else f"cust-{partner:05d}",
        diligence=1 if i % 3 == 2 else 4, interval=90 if i % 2 == 0 else 180,
        guarantees=i % 4 != 3,
    )  # fmt: skip


def parties(customers: int) -> dict[str, Party]:
    """Everyone but the authority, by id: vendors, carriers, flagged buyers, customers."""
    found = [Party(v, "vendor", "US", models=m, fab=fab) for v, fab, m, _ in VENDORS]
    found += [Party(c, "carrier", n, sites=[Site(f"{c}-wh", c, n)]) for c, n in CARRIERS]
    found += [Party(p, "buyer", n, hq=hq, sites=[Site(f"{p}-dc", p, n)]) for p, n, hq in FLAGGED]
    found += [customer(i, customers) for i in range(customers)]
    return {p.id: p for p in found}


# -- time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When entry `seq` happened and when its batch of 100 is recorded."""

    entries: int

    @property
    def gap(self) -> timedelta:
        return SPAN / -(-self.entries // CHUNK)

    def recorded(self, chunk: int) -> datetime:
        """The ledger's clock while batch `chunk` is submitted: a minute after its window."""
        return START + (chunk + 1) * self.gap + timedelta(minutes=1)

    def at(self, seq: int) -> datetime:
        chunk, index = divmod(seq, CHUNK)
        end = START + (chunk + 1) * self.gap
        begin = max(START + chunk * self.gap, end - WINDOW)
        return (begin + (end - begin) * (index + 1) / CHUNK).replace(microsecond=0)


# -- what the reads may ask for -------------------------------------------------------------


@dataclass
class Born:
    """An id that exists from entry `seq` (whose `at` is `at`), until `gone_seq` if ever."""

    name: str
    seq: int
    at: datetime
    gone_seq: int | None = None
    gone_at: datetime | None = None

    def exists(self, seq: int | None = None, at: datetime | None = None) -> bool:
        """Whether a read as of `seq` (or as of `at`, or now when neither) finds it."""
        if seq is not None:
            return self.seq <= seq and (self.gone_seq is None or seq < self.gone_seq)
        if at is not None:
            return self.at <= at and (self.gone_at is None or at < self.gone_at)
        return self.gone_seq is None


class Reservoir:
    """A uniform sample of `size` of the ids offered (algorithm R), with their lifetimes."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng, self.seen = size, rng, 0
        self.items: list[Born] = []
        self.index: dict[str, Born] = {}

    def offer(self, item: Born) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            slot = self.rng.randrange(self.seen)
            if slot >= self.size:
                return
            del self.index[self.items[slot].name]
            self.items[slot] = item
        self.index[item.name] = item

    def gone(self, name: str, seq: int, at: datetime) -> None:
        found = self.index.get(name)
        if found is not None and found.gone_seq is None:
            found.gone_seq, found.gone_at = seq, at


@dataclass
class Catalog:
    """What the built ledger holds, for the reads to pick from and the report to state."""

    rng: random.Random = field(default_factory=lambda: random.Random(17))
    batches: Reservoir = field(init=False)
    serials: Reservoir = field(init=False)
    licenses: list[Born] = field(default_factory=list)
    customers: list[Born] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def __post_init__(self) -> None:
        self.batches = Reservoir(SAMPLE, self.rng)
        self.serials = Reservoir(SAMPLE, self.rng)

    def recorded(self, kind: str, at: datetime) -> None:
        self.types[kind] = self.types.get(kind, 0) + 1
        self.first_at = self.first_at or at
        self.last_at = at if self.last_at is None else max(self.last_at, at)

    @property
    def entries(self) -> int:
        return sum(self.types.values())


# -- signing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emitted:
    envelope: Envelope
    seq: int
    at: datetime

    @property
    def hash(self) -> str:
        return envelope_hash(self.envelope)


class Stream:
    """Signs events at the next `seq`'s time and collects them into batches of 100."""

    def __init__(self, entries: int, origin: str, rng: random.Random, catalog: Catalog) -> None:
        self.schedule, self.origin, self.rng, self.catalog = Schedule(entries), origin, rng, catalog
        self.keys: dict[str, Signer] = {}
        self.out: list[Envelope] = []
        self.seq = 0

    def key(self, party: str) -> Signer:
        if party not in self.keys:
            self.keys[party] = signer(f"scale:{party}")
        return self.keys[party]

    def now(self) -> datetime:
        return self.schedule.at(self.seq)

    def emit(
        self, kind: str, actor: str, signers: Sequence[str], at: datetime | None = None,
        **fields: Any,
    ) -> Emitted:  # fmt: skip
        """Sign one event (at the next seq's time unless `at` says otherwise) and queue it."""
        when = self.now() if at is None else at
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        event = {"type": kind, "id": event_id, "ledger": self.origin, "actor": actor,
                 "at": format_time(when), **fields}  # fmt: skip
        signed = envelope(event, [self.key(s) for s in signers])
        self.out.append(signed)
        self.catalog.recorded(kind, when)
        self.seq += 1
        return Emitted(signed, self.seq - 1, when)


Action = Callable[[], object]


def registry(stream: Stream, everyone: dict[str, Party]) -> list[Action]:
    """The registry's events, one action each: genesis, every party, every site, listings."""
    auth = {"id": "bis", "name": "Bureau of Industry and Security", "roles": ["authority"],
            "country": "US", "keys": [stream.key("bis").public_key_b64]}  # fmt: skip
    out: list[Action] = [partial(stream.emit, "party.registered", "bis", ["bis"], party=auth)]
    out += [partial(_register, stream, party) for party in everyone.values()]
    for site in [site for party in everyone.values() for site in party.sites]:
        spec = {"id": site.id, "operator": site.operator, "country": site.country,
                "name": f"{site.id} data hall"}  # fmt: skip
        out.append(partial(stream.emit, "site.registered", site.operator, [site.operator],
                           site=spec))  # fmt: skip
    for name, listed, reason in [
        ("north-star", "entity", "acquires items for a sanctioned end user"),
        ("fastfreight", "unverified", "end use could not be verified on a site visit"),
    ]:
        out.append(partial(stream.emit, "party.listed", "bis", ["bis"], party=name, list=listed,
                           reason=reason))  # fmt: skip
    return out


def _register(stream: Stream, party: Party) -> Emitted:
    spec: dict[str, Any] = {"id": party.id, "name": party.id.replace("-", " ").title(),
                            "roles": [party.role], "country": party.country,
                            "keys": [stream.key(party.id).public_key_b64]}  # fmt: skip
    if party.hq:
        spec["hq_country"] = party.hq
    found = stream.emit("party.registered", "bis", ["bis", party.id], party=spec)
    if party.id.startswith("cust-"):
        stream.catalog.customers.append(Born(party.id, found.seq, found.at))
    return found
