"""Demo data for `make run`: a new ledger with parties, keys and sites, signed like any client.

Keys are made fresh on first run under DIR/keys (never committed); the events go through
`Ledger.submit`, the same path as `POST /v1/events`. A store that already holds a ledger is
left exactly as it is.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ledger.application import Ledger
from ledger.crypto import Signer
from ledger.signing import envelope, read_signer, write_key_pair, write_secret
from ledger.wire import format_time

ORIGIN = "chipledger.local/ledger"
ZERO = timedelta(0)
PARTIES: list[dict[str, Any]] = [
    {
        "id": "bis",
        "name": "Bureau of Industry and Security",
        "roles": ["authority"],
        "country": "US",
    },
    {
        "id": "audit-office",
        "name": "Export Enforcement Investigations",
        "roles": ["investigator"],
        "country": "US",
    },
    {"id": "nvidia", "name": "NVIDIA Corporation", "roles": ["vendor"], "country": "US"},
    {"id": "gulf-cloud", "name": "Gulf Cloud LLC", "roles": ["buyer"], "country": "AE"},
    {"id": "desert-ai", "name": "Desert AI FZCO", "roles": ["buyer"], "country": "AE"},
    {
        "id": "lion-compute",
        "name": "Lion Compute Pte",
        "roles": ["buyer"],
        "country": "SG",
        "hq_country": "HK",
    },
    {"id": "fastfreight", "name": "FastFreight Forwarding", "roles": ["carrier"], "country": "MY"},
    {"id": "north-star", "name": "North Star Compute", "roles": ["buyer"], "country": "RU"},
]
SITES = [
    ("tsmc-f18", "nvidia", "TW", "Fab 18 (packaging and test)"),
    ("dxb-1", "gulf-cloud", "AE", "Dubai South DC1"),
    ("dxb-2", "desert-ai", "AE", "Jebel Ali AI campus"),
    ("sin-3", "lion-compute", "SG", "Tuas data hall 3"),
    ("auh-1", "gulf-cloud", "AE", "Abu Dhabi KEZAD hall 1"),
]


@dataclass
class Demo:
    ledger: Ledger
    keys: dict[str, Signer] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)

    def event(self, kind: str, actor: str, ago: timedelta = ZERO, **fields: Any) -> dict[str, Any]:
        at = self.ledger.clock() - timedelta(minutes=1) - ago
        return {
            "type": kind,
            "id": str(uuid.uuid4()),
            "ledger": ORIGIN,
            "actor": actor,
            "at": format_time(at),
            **fields,
        }

    def submit(self, event: dict[str, Any], *signers: str) -> None:
        receipt = self.ledger.submit(envelope(event, [self.keys[s] for s in signers])).receipt
        for batch in [event.get("batch"), *[p["batch"] for p in event.get("into", [])]]:
            if isinstance(batch, str):
                self.heads[batch] = receipt.envelope_hash

    def move(
        self, kind: str, actor: str, batch: str, *cosigners: str, ago: timedelta = ZERO,
        **fields: Any,
    ) -> None:  # fmt: skip
        """A batch event signed by `actor` (and co-signers), chained to the batch's head."""
        event = self.event(kind, actor, ago, batch=batch, prev=self.heads[batch], **fields)
        self.submit(event, actor, *cosigners)

    def fabricate(
        self, batch: str, model: str, quantity: int, serials: bool = False, ago: timedelta = ZERO
    ) -> None:
        extra = {"serials": [f"{batch}-{i:05d}" for i in range(quantity)]} if serials else {}
        event = self.event(
            "batch.fabricated",
            "nvidia",
            ago,
            batch=batch,
            model=model,
            quantity=quantity,
            country="TW",
            **extra,
        )
        self.submit(event, "nvidia")

    def license(self, license_id: str, *, ago: timedelta = ZERO, **terms: Any) -> None:
        now = self.ledger.clock()
        spec = {
            "id": license_id,
            "valid_from": format_time(now - ago - timedelta(days=1)),
            "valid_until": format_time(now + timedelta(days=365)),
            **terms,
        }
        self.submit(self.event("license.granted", "bis", license=spec), "bis")


def _keys(directory: Path) -> dict[str, Signer]:
    keys = {}
    for party in [p["id"] for p in PARTIES] + ["nvidia-2"]:
        path = directory / f"{party}.key"
        keys[party] = read_signer(path) if path.exists() else write_key_pair(directory, party)
    return keys


def load_demo(store: str, directory: Path) -> str:
    """Create and fill a demo ledger in `store`, unless it already holds one."""
    ledger = Ledger(store)
    if ledger.initialised:
        return (
            f"{store} already holds a ledger ({ledger.size()} entries); left as it is"
            + _investigator_token(ledger, directory / "keys")
        )
    keys = _keys(directory / "keys")
    log_key = directory / "log.key"
    log_signer = read_signer(log_key) if log_key.exists() else Signer.generate()
    if not log_key.exists():
        write_secret(log_key, log_signer)
    ledger.initialise(ORIGIN, keys["bis"].public_key_b64, log_signer.public_key)
    ledger.use_log_key(log_signer)
    demo = Demo(ledger, keys)
    _registry(demo)
    _licenses(demo)
    _custody(demo)
    _flags(demo)
    raised = Counter(flag["rule"] for flag in ledger.flags({}).flags)
    shown = ", ".join(f"{rule} ({n})" for rule, n in sorted(raised.items()))
    return (
        f"demo ledger in {store}: {ledger.size()} entries; party keys in {directory / 'keys'}\n"
        f"flags to see at GET /v1/flags: {shown}" + _investigator_token(ledger, directory / "keys")
    )


def _investigator_token(ledger: Ledger, keys: Path) -> str:
    """A line with a read token of the demo's investigator, who reads everything: the API
    without --open-reads answers it (Authorization: Bearer <token>)."""
    key = keys / "audit-office.key"
    if not key.exists():
        return ""
    event = {"type": "session.requested", "id": str(uuid.uuid4()), "ledger": ledger.info.origin,
             "actor": "audit-office", "at": format_time(ledger.clock())}  # fmt: skip
    found = ledger.open_session(envelope(event, [read_signer(key)]))
    return f"\nan investigator's read token, until {found.expires_at}: {found.token}"


def _registry(demo: Demo) -> None:
    for spec in PARTIES:
        party = {**spec, "keys": [demo.keys[spec["id"]].public_key_b64]}
        signers = ["bis"] if spec["id"] == "bis" else ["bis", spec["id"]]
        demo.submit(demo.event("party.registered", "bis", party=party), *signers)
    for site_id, operator, country, name in SITES:
        site = {"id": site_id, "operator": operator, "country": country, "name": name}
        demo.submit(demo.event("site.registered", operator, site=site), operator)
    second = demo.keys["nvidia-2"]
    demo.submit(
        demo.event("party.key_added", "bis", party="nvidia", key=second.public_key_b64),
        "bis",
        "nvidia-2",
    )
    demo.submit(
        demo.event(
            "party.listed",
            "bis",
            party="fastfreight",
            list="unverified",
            reason="end use could not be verified on a 2026 site visit",
        ),
        "bis",
    )


def _licenses(demo: Demo) -> None:
    """Two licenses to the Gulf: the vendor's, and one asking for attestations every 30 days."""
    conditions = {"reexport_allowed": False, "security_guarantee": True,
                  "us_investment_commitment": True}  # fmt: skip
    demo.license(
        "BIS-2026-AE-0001", holder="nvidia", destinations=["AE"],
        consignees=["gulf-cloud", "desert-ai"], models=["H100", "H200", "B200", "H20"],
        max_quantity=20_000, conditions={**conditions, "attestation_interval_days": 90},
    )  # fmt: skip
    demo.license(
        "BIS-2026-AE-0002", ago=timedelta(days=60), holder="nvidia", destinations=["AE"],
        consignees=["desert-ai"], models=["H100"], max_quantity=1_000,
        conditions={**conditions, "attestation_interval_days": 30},
    )  # fmt: skip


def _custody(demo: Demo) -> None:
    """DOMAIN scenario 1, then a batch in every status, a split, a transfer, a short delivery."""
    demo.fabricate("H200-0001", "H200", 256, serials=True)  # scenario 1: fab to datacenter
    demo.move(
        "batch.exported", "nvidia", "H200-0001", to="gulf-cloud", destination="AE",
        license="BIS-2026-AE-0001",
    )  # fmt: skip
    demo.move("batch.delivered", "gulf-cloud", "H200-0001", site="dxb-1", quantity=256)
    demo.move("batch.installed", "gulf-cloud", "H200-0001", site="dxb-1")

    demo.fabricate("H200-0002", "H200", 64, serials=True)  # still at the fab
    demo.fabricate("B200-0003", "B200", 512)  # on its way to desert-ai
    demo.move("batch.exported", "nvidia", "B200-0003", to="desert-ai", destination="AE")

    demo.fabricate("H100-0004", "H100", 100)  # a short delivery: 96 of 100 arrive
    demo.move("batch.exported", "nvidia", "H100-0004", to="desert-ai", destination="AE")
    demo.move("batch.delivered", "desert-ai", "H100-0004", site="dxb-2", quantity=96)

    demo.fabricate("H20-0005", "H20", 300)  # split; one part sold on, one moved and installed
    demo.move("batch.exported", "nvidia", "H20-0005", to="gulf-cloud", destination="AE")
    demo.move("batch.delivered", "gulf-cloud", "H20-0005", site="dxb-1", quantity=300)
    demo.move(
        "batch.split",
        "gulf-cloud",
        "H20-0005",
        into=[{"batch": "H20-0005-a", "quantity": 120}, {"batch": "H20-0005-b", "quantity": 180}],
    )
    demo.move(
        "batch.transferred", "gulf-cloud", "H20-0005-a", "desert-ai", to="desert-ai", site="dxb-2"
    )
    demo.move("batch.relocated", "gulf-cloud", "H20-0005-b", site="auh-1")
    demo.move("batch.installed", "gulf-cloud", "H20-0005-b", site="auh-1")

    demo.fabricate("H200-0006", "H200", 32)  # delivered to Singapore, later decommissioned
    demo.move("batch.exported", "nvidia", "H200-0006", to="lion-compute", destination="SG")
    demo.move("batch.delivered", "lion-compute", "H200-0006", site="sin-3", quantity=32)
    demo.move("batch.decommissioned", "lion-compute", "H200-0006", reason="failed burn-in")

    demo.fabricate("H200-0007", "H200", 48)  # handed to a forwarder, then lost
    demo.move("batch.exported", "nvidia", "H200-0007", to="fastfreight", destination="MY")
    demo.move(
        "batch.reported_lost", "nvidia", "H200-0007", reason="container missing at Port Klang"
    )


def _flags(demo: Demo) -> None:
    """What the rules flag: an embargoed export, an unlicensed large install, a transfer the
    license does not allow, an attestation overdue (and, on the way, late reports)."""
    demo.fabricate("H100-0008", "H100", 64)  # to Russia: embargoed-destination
    demo.move("batch.exported", "nvidia", "H100-0008", to="north-star", destination="RU")

    demo.fabricate("B200-0009", "B200", 1200)  # 1,200 unlicensed chips at one site
    demo.move("batch.exported", "nvidia", "B200-0009", to="desert-ai", destination="AE")
    demo.move("batch.delivered", "desert-ai", "B200-0009", site="dxb-2", quantity=1200)
    demo.move("batch.installed", "desert-ai", "B200-0009", site="dxb-2")

    demo.fabricate("H200-0010", "H200", 128)  # licensed to the Gulf, then sold to Singapore
    demo.move(
        "batch.exported", "nvidia", "H200-0010", to="gulf-cloud", destination="AE",
        license="BIS-2026-AE-0001",
    )  # fmt: skip
    demo.move("batch.delivered", "gulf-cloud", "H200-0010", site="dxb-1", quantity=128)
    demo.move(
        "batch.transferred", "gulf-cloud", "H200-0010", "lion-compute", to="lion-compute",
        site="sin-3",
    )  # fmt: skip

    old = timedelta(days=45)  # recorded late: arrived 45 days ago, never attested since
    demo.fabricate("H100-0011", "H100", 200, ago=old)
    demo.move(
        "batch.exported", "nvidia", "H100-0011", ago=old, to="desert-ai", destination="AE",
        license="BIS-2026-AE-0002",
    )  # fmt: skip
    demo.move("batch.delivered", "desert-ai", "H100-0011", ago=old, site="dxb-2", quantity=200)
    demo.move("batch.installed", "desert-ai", "H100-0011", ago=old, site="dxb-2")
