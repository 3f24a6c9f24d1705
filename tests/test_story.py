"""The DOMAIN.md scenarios as stories, told through the HTTP API (PROTOCOL.md sections 4 and 6).

Each story is what the parties do and what the ledger then says: a vendor fabricates and
exports, a buyer acknowledges delivery, installs, transfers and splits, an authority rotates
a compromised key. The rules' own stories are in test_rules.py; here every receipt is clean.
`Desk` is the parties' side of the API: it signs events with the fixed-seed test keys, posts
them, and keeps each batch's head so the next event can name it as `prev`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support import Clock, World, signer, stamp

Json = dict[str, Any]


@dataclass(frozen=True)
class Sent:
    """One accepted envelope: what was signed and sent, and the receipt it got."""

    envelope: Json
    event: Json
    receipt: Json

    @property
    def seq(self) -> int:
        seq = self.receipt["seq"]
        assert isinstance(seq, int)
        return seq

    def entry(self) -> Json:
        """How `GET /v1/batches/{id}/history` must list this envelope."""
        return {
            "seq": self.seq,
            "recorded_at": self.receipt["recorded_at"],
            "envelope": self.envelope,
            "event": self.event,
        }


@dataclass
class Desk:
    """Signs events, posts them to `/v1/events` and remembers each batch's head."""

    client: TestClient
    world: World
    heads: dict[str, str] = field(default_factory=dict)

    def sign(
        self, kind: str, actor: str, *cosigners: str, keys: Sequence[str] = (), **fields: Any
    ) -> tuple[Json, Json]:
        """The event and its envelope, signed by the actor and cosigners (or by `keys`)."""
        if kind.startswith("batch.") and kind != "batch.fabricated":
            fields.setdefault("prev", self.heads[fields["batch"]])
        event = self.world.event(kind, actor, **fields)
        return event, self.world.envelope(event, *(keys or (actor, *cosigners)))

    def post(self, envelope: Json) -> Any:
        return self.client.post("/v1/events", content=json.dumps(envelope).encode())

    def accept(self, envelope: Json) -> Json:
        response = self.post(envelope)
        assert response.status_code == 201, response.text
        receipt: Json = response.json()
        return receipt

    def record(
        self, kind: str, actor: str, *cosigners: str, keys: Sequence[str] = (), **fields: Any
    ) -> Sent:
        """Sign and post a batch event that must be accepted; its batch's head moves on."""
        event, envelope = self.sign(kind, actor, *cosigners, keys=keys, **fields)
        receipt = self.accept(envelope)
        for batch in [event["batch"], *(part["batch"] for part in event.get("into", []))]:
            self.heads[batch] = receipt["envelope_hash"]
        return Sent(envelope, event, receipt)

    def read(self, path: str, **params: str | int) -> Json:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        return body

    def size(self) -> int:
        value = self.read("/v1/ledger")["size"]
        assert isinstance(value, int)
        return value

    def snapshot(self, batch: str) -> tuple[int, Json, Json]:
        """What a refusal must leave untouched: the log size, the batch and its history."""
        return (
            self.size(),
            self.read(f"/v1/batches/{batch}"),
            self.read(f"/v1/batches/{batch}/history"),
        )


@pytest.fixture
def desk(client: TestClient, world: World) -> Desk:
    return Desk(client, world)


def allocation(
    party: str, by_status: dict[str, int], by_country: dict[str, int],
    by_site: dict[str, int], by_model: dict[str, int], batches: list[str],
) -> Json:  # fmt: skip
    return {
        "party": party,
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_country": by_country,
        "by_site": by_site,
        "by_model": by_model,
        "batches": batches,
    }


def refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["code"] == code


# -- Scenario 1 --------------------------------------------------------------------------------


def test_scenario_1_a_batch_goes_from_fab_to_an_installed_datacenter_in_the_emirates(
    desk: Desk, clock: Clock
) -> None:
    conditions = {"reexport_allowed": False, "security_guarantee": False,
                  "us_investment_commitment": False}  # fmt: skip
    license_ = {"id": "L-h100", "holder": "nvidia", "destinations": ["AE"],
                "consignees": ["gulf-cloud"], "models": ["H100"], "max_quantity": 1000,
                "valid_from": stamp(clock.now),
                "valid_until": stamp(clock.now + timedelta(days=90)),
                "conditions": conditions}  # fmt: skip
    granted = desk.accept(
        desk.world.envelope(desk.world.event("license.granted", "bis", license=license_), "bis")
    )
    assert granted["findings"] == []
    fabricated = desk.record(
        "batch.fabricated", "nvidia", batch="h100-0001", model="H100", quantity=256, country="TW"
    )
    clock.advance(days=2)
    exported = desk.record(
        "batch.exported", "nvidia", batch="h100-0001", to="gulf-cloud", destination="AE",
        license="L-h100",
    )  # fmt: skip
    in_transit = desk.read("/v1/parties/gulf-cloud/allocation")
    clock.advance(days=7)
    delivered = desk.record(
        "batch.delivered", "gulf-cloud", batch="h100-0001", site="dxb-1", quantity=256
    )
    clock.advance(days=3)
    installed = desk.record("batch.installed", "gulf-cloud", batch="h100-0001", site="dxb-1")

    story = [fabricated, exported, delivered, installed]
    assert [sent.receipt["findings"] for sent in story] == [[], [], [], []]
    assert desk.read("/v1/flags") == {"flags": []}
    assert desk.read("/v1/licenses/L-h100")["used_quantity"] == 256
    assert in_transit == allocation(
        "gulf-cloud", {"in_transit": 256}, {"AE": 256}, {}, {"H100": 256}, ["h100-0001"]
    )
    assert desk.read("/v1/parties/gulf-cloud/allocation") == allocation(
        "gulf-cloud", {"installed": 256}, {"AE": 256}, {"dxb-1": 256}, {"H100": 256},
        ["h100-0001"],
    )  # fmt: skip
    assert desk.read("/v1/parties/nvidia/allocation")["total"] == 0
    assert desk.read("/v1/batches/h100-0001") == {
        "batch": "h100-0001", "model": "H100", "quantity": 256, "missing": 0,
        "status": "installed", "owner": "gulf-cloud", "holder": "gulf-cloud", "country": "AE",
        "site": "dxb-1", "serials_known": False, "head": installed.receipt["envelope_hash"],
        "last_seq": installed.seq, "license": "L-h100",
    }  # fmt: skip
    assert desk.read("/v1/batches/h100-0001/history") == {
        "batch": "h100-0001",
        "entries": [sent.entry() for sent in story],
    }


# -- Scenario 10 -------------------------------------------------------------------------------


def test_scenario_10_four_wrongly_signed_or_stale_envelopes_are_refused_and_store_nothing(
    desk: Desk, world: World, clock: Clock
) -> None:
    desk.accept(world.site("auh-1", "desert-ai", "AE"))
    desk.record("batch.fabricated", "nvidia", batch="b200-7", model="B200", quantity=64,
                country="TW")  # fmt: skip
    exported = desk.record(
        "batch.exported", "nvidia", batch="b200-7", to="gulf-cloud", destination="AE"
    )
    clock.advance(days=5)

    # A delivery acknowledged by someone other than the consignee.
    before = desk.snapshot("b200-7")
    event, envelope = desk.sign(
        "batch.delivered", "desert-ai", batch="b200-7", site="auh-1", quantity=64
    )
    refused(desk.post(envelope), 403, "not_authorized")
    assert desk.snapshot("b200-7") == before
    desk.record("batch.delivered", "gulf-cloud", batch="b200-7", site="dxb-1", quantity=64,
                id=event["id"])  # fmt: skip

    # An envelope whose `prev` is stale: it names the export, not the delivery.
    before = desk.snapshot("b200-7")
    event, envelope = desk.sign(
        "batch.installed", "gulf-cloud", batch="b200-7", site="dxb-1",
        prev=exported.receipt["envelope_hash"],
    )  # fmt: skip
    refused(desk.post(envelope), 409, "conflict")
    assert desk.snapshot("b200-7") == before
    desk.record("batch.installed", "gulf-cloud", batch="b200-7", site="dxb-1", id=event["id"])

    # A transfer missing the receiver's signature.
    before = desk.snapshot("b200-7")
    event, envelope = desk.sign(
        "batch.transferred", "gulf-cloud", batch="b200-7", to="desert-ai", site="auh-1"
    )
    refused(desk.post(envelope), 403, "not_authorized")
    assert desk.snapshot("b200-7") == before
    desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="b200-7", to="desert-ai",
                site="auh-1", id=event["id"])  # fmt: skip

    # A revoked key: desert-ai's key is rotated, and the old one then signs an installation.
    new_key = signer("desert-ai#2").public_key_b64
    desk.accept(world.envelope(
        world.event("party.key_added", "bis", party="desert-ai", key=new_key), "bis", "desert-ai#2"
    ))  # fmt: skip
    desk.accept(world.envelope(world.event(
        "party.key_revoked", "bis", party="desert-ai", keyid=signer("desert-ai").key_id
    ), "bis"))  # fmt: skip
    before = desk.snapshot("b200-7")
    event, envelope = desk.sign("batch.installed", "desert-ai", batch="b200-7", site="auh-1")
    refused(desk.post(envelope), 401, "bad_signature")
    assert desk.snapshot("b200-7") == before
    installed = desk.record("batch.installed", "desert-ai", batch="b200-7", site="auh-1",
                            keys=["desert-ai#2"], id=event["id"])  # fmt: skip

    # Each refused event id was left free: its corrected envelope was a new entry, not a repeat.
    assert installed.seq == before[0]
    assert desk.read("/v1/batches/b200-7")["status"] == "installed"
    assert desk.read("/v1/batches/b200-7")["owner"] == "desert-ai"


# -- Scenario 11 -------------------------------------------------------------------------------


def test_scenario_11_a_short_delivery_holds_what_arrived_and_counts_the_rest_missing(
    desk: Desk, clock: Clock
) -> None:
    shipped = [f"SN-{n:03d}" for n in range(100)]
    received = [*shipped[:89], "SN-900"]  # 89 of those shipped, and one never shipped
    desk.record("batch.fabricated", "nvidia", batch="h200-11", model="H200", quantity=100,
                country="TW", serials=shipped)  # fmt: skip
    desk.record("batch.exported", "nvidia", batch="h200-11", to="gulf-cloud", destination="AE")
    clock.advance(days=6)

    delivered = desk.record("batch.delivered", "gulf-cloud", batch="h200-11", site="dxb-1",
                            quantity=90, serials=received)  # fmt: skip

    batch = desk.read("/v1/batches/h200-11")
    assert (batch["status"], batch["quantity"], batch["missing"]) == ("delivered", 90, 10)
    assert batch["serials_known"] is True
    assert batch["head"] == delivered.receipt["envelope_hash"]
    assert desk.read("/v1/serials/SN-900") == {"serial": "SN-900", "batch": "h200-11"}
    assert desk.read("/v1/serials/SN-000") == {"serial": "SN-000", "batch": "h200-11"}
    assert desk.client.get("/v1/serials/SN-099").status_code == 404  # shipped, never received
    assert desk.read("/v1/parties/gulf-cloud/allocation") == allocation(
        "gulf-cloud", {"delivered": 90}, {"AE": 90}, {"dxb-1": 90}, {"H200": 90}, ["h200-11"]
    )


# -- Two parties, a site, a split --------------------------------------------------------------


def test_a_buyer_transfers_installed_chips_to_another_buyers_site_which_splits_and_moves_them(
    desk: Desk, world: World, clock: Clock
) -> None:
    serials = [f"GB-{n:03d}" for n in range(300)]
    desk.accept(world.site("auh-1", "desert-ai", "AE"))
    desk.accept(world.site("auh-2", "desert-ai", "AE"))
    story = [
        desk.record("batch.fabricated", "nvidia", batch="gb300-1", model="GB300", quantity=300,
                    country="TW", serials=serials),
        desk.record("batch.exported", "nvidia", batch="gb300-1", to="gulf-cloud",
                    destination="AE"),
        desk.record("batch.delivered", "gulf-cloud", batch="gb300-1", site="dxb-1",
                    quantity=300),
        desk.record("batch.installed", "gulf-cloud", batch="gb300-1", site="dxb-1"),
    ]  # fmt: skip
    clock.advance(days=30)

    transferred = desk.record("batch.transferred", "gulf-cloud", "desert-ai", batch="gb300-1",
                              to="desert-ai", site="auh-1")  # fmt: skip
    split = desk.record("batch.split", "desert-ai", batch="gb300-1", into=[
        {"batch": "gb300-1a", "quantity": 200, "serials": serials[:200]},
        {"batch": "gb300-1b", "quantity": 100, "serials": serials[200:]},
    ])  # fmt: skip
    clock.advance(days=1)
    installed_a = desk.record("batch.installed", "desert-ai", batch="gb300-1a", site="auh-1")
    relocated_b = desk.record("batch.relocated", "desert-ai", batch="gb300-1b", site="auh-2")

    assert desk.read("/v1/parties/gulf-cloud/allocation")["total"] == 0
    assert desk.read("/v1/parties/desert-ai/allocation") == allocation(
        "desert-ai", {"installed": 200, "delivered": 100}, {"AE": 300},
        {"auh-1": 200, "auh-2": 100}, {"GB300": 300}, ["gb300-1a", "gb300-1b"],
    )  # fmt: skip
    parent = desk.read("/v1/batches/gb300-1")
    assert (parent["status"], parent["children"]) == ("split", ["gb300-1a", "gb300-1b"])
    assert parent["head"] == split.receipt["envelope_hash"]
    child_b = desk.read("/v1/batches/gb300-1b")
    assert child_b == {
        "batch": "gb300-1b", "model": "GB300", "quantity": 100, "missing": 0,
        "status": "delivered", "owner": "desert-ai", "holder": "desert-ai", "country": "AE",
        "site": "auh-2", "parent": "gb300-1", "serials_known": True,
        "head": relocated_b.receipt["envelope_hash"], "last_seq": relocated_b.seq,
    }  # fmt: skip
    lineage = [*story, transferred, split]
    assert desk.read("/v1/batches/gb300-1a/history")["entries"] == [
        sent.entry() for sent in [*lineage, installed_a]
    ]
    assert desk.read("/v1/batches/gb300-1b/history")["entries"] == [
        sent.entry() for sent in [*lineage, relocated_b]
    ]
    assert desk.read("/v1/serials/GB-000")["batch"] == "gb300-1a"
    assert desk.read("/v1/serials/GB-299")["batch"] == "gb300-1b"
    assert all(sent.receipt["findings"] == [] for sent in [*lineage, installed_a, relocated_b])
