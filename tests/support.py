"""Test fixtures as plain objects: fixed-seed keys, a fake clock, an event builder.

Keys come from fixed seeds, so signed fixtures are byte-stable: `bis` uses seed 0x01..01 and
`gulf-cloud`/`desert-ai` use 0x02../0x03.. as in ../shared/vectors/envelope.json; every other
name's seed is SHA-256("chipledger-test:" + name).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.application import Ledger
from ledger.crypto import Signer
from ledger.readstore import TABLES
from ledger.rebuild import table_rows
from ledger.signing import envelope

ORIGIN = "chipledger.local/ledger"
START = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
VECTOR_SEEDS = {"bis": b"\x01" * 32, "gulf-cloud": b"\x02" * 32, "desert-ai": b"\x03" * 32}
LOG_SEED = hashlib.sha256(b"chipledger-test:log").digest()


def signer(name: str) -> Signer:
    """The test key called `name` (a party id, or `party#2` for a second key)."""
    seed = VECTOR_SEEDS.get(name) or hashlib.sha256(f"chipledger-test:{name}".encode()).digest()
    return Signer(seed)


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class World:
    """Builds events and envelopes for one ledger; ids are deterministic per world."""

    clock: Clock = field(default_factory=Clock)
    counter: int = 0

    def next_id(self) -> str:
        self.counter += 1
        return str(uuid.UUID(int=(0x4000 << 64) | self.counter, version=4))

    def event(self, kind: str, actor: str, **fields: Any) -> dict[str, Any]:
        at = fields.pop("at", stamp(self.clock.now))
        return {
            "type": kind,
            "id": self.next_id(),
            "ledger": ORIGIN,
            "actor": actor,
            "at": at,
            **fields,
        }

    @staticmethod
    def envelope(event: dict[str, Any], *signers: str) -> dict[str, Any]:
        return envelope(event, [signer(s) for s in signers])

    def genesis(self) -> dict[str, Any]:
        party = {
            "id": "bis",
            "name": "Bureau of Industry and Security",
            "roles": ["authority"],
            "country": "US",
            "keys": [signer("bis").public_key_b64],
        }
        return self.envelope(self.event("party.registered", "bis", party=party), "bis")

    def party(
        self, party_id: str, roles: list[str], country: str = "AE", **extra: Any
    ) -> dict[str, Any]:
        party = {
            "id": party_id,
            "name": party_id.title(),
            "roles": roles,
            "country": country,
            "keys": [signer(party_id).public_key_b64],
            **extra,
        }
        return self.envelope(self.event("party.registered", "bis", party=party), "bis", party_id)

    def site(self, site_id: str, operator: str, country: str = "AE") -> dict[str, Any]:
        site = {"id": site_id, "operator": operator, "country": country, "name": site_id}
        return self.envelope(self.event("site.registered", operator, site=site), operator)


def new_ledger(store: str, clock: Clock) -> Ledger:
    """An initialised, empty ledger whose trust root is the `bis` test key."""
    ledger = Ledger(store, clock=clock)
    ledger.initialise(ORIGIN, signer("bis").public_key_b64, Signer(LOG_SEED).public_key)
    ledger.use_log_key(Signer(LOG_SEED))
    return ledger


def populate(ledger: Ledger, world: World) -> None:
    """Genesis, a vendor, two buyers, a carrier, an investigator and their sites."""
    ledger.submit(world.genesis())
    for party_id, roles, country in [
        ("nvidia", ["vendor"], "US"),
        ("gulf-cloud", ["buyer"], "AE"),
        ("desert-ai", ["buyer"], "AE"),
        ("fastfreight", ["carrier"], "MY"),
        ("audit-office", ["investigator"], "US"),
    ]:
        ledger.submit(world.party(party_id, roles, country))
    ledger.submit(world.site("dxb-1", "gulf-cloud", "AE"))
    ledger.submit(world.site("tsmc-f18", "nvidia", "TW"))


def read_model_rows(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table of the ledger's store, in key order."""
    return {table: table_rows(ledger.reads, table) for table in TABLES}


def assert_rebuild_equals_live(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Recompute the read models from the log (`chipledger rebuild`) and check that every
    table holds exactly the rows it held live, row for row; return those rows."""
    live = read_model_rows(ledger)
    ledger.rebuild_read_models()
    rebuilt = read_model_rows(ledger)
    for table in TABLES:
        assert rebuilt[table] == live[table], f"{table} differs once rebuilt"
    return live
