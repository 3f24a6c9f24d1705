"""Licenses, rule packs and the rules that flag (PROTOCOL.md sections 4-7, DOMAIN.md 2-12).

A breach is recorded and flagged, never bounced: each rule has a table of cases that must and
must not raise it, at its boundaries. Then the DOMAIN scenarios through the HTTP API, the
license and rule-pack events with their refusals, `GET /v1/flags` with its filters, `as_of`
and rebuilds, and `POST /v1/checks`, which judges exactly as acceptance would and stores
nothing. `Office` is the parties' side: the story test's `Desk`, plus licenses and packs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from ledger.application import Ledger
from tests.support import START, Clock, World, stamp
from tests.test_story import Desk, refused

Json = dict[str, Any]
DEFAULT_PACK: Json = json.loads(Path("ledger/packs/default.json").read_text("utf-8"))
DEFAULT_ID = "default-2026-03"
HOUR = timedelta(hours=1)


@dataclass
class Office(Desk):
    """A desk that also grants licenses, adopts packs and reads flags."""

    def fabricate(self, batch: str, quantity: int = 100, model: str = "H200", **fields: Any) -> Json:
        return self.record("batch.fabricated", "nvidia", batch=batch, model=model,
                           quantity=quantity, country="TW", **fields).receipt  # fmt: skip

    def export(
        self, batch: str, to: str = "gulf-cloud", destination: str = "AE", **fields: Any
    ) -> Json:
        return self.record(
            "batch.exported", "nvidia", batch=batch, to=to, destination=destination, **fields
        ).receipt

    def ship(self, batch: str, quantity: int = 100, model: str = "H200", **fields: Any) -> Json:
        """Fabricate `batch` and export it (to gulf-cloud in AE unless told); the receipt."""
        self.fabricate(batch, quantity, model)
        return self.export(batch, **fields)

    def deliver(self, batch: str, site: str = "dxb-1", quantity: int = 100, **fields: Any) -> Json:
        actor = fields.pop("actor", "gulf-cloud")
        return self.record(
            "batch.delivered", actor, batch=batch, site=site, quantity=quantity, **fields
        ).receipt

    def authority(self, kind: str, **fields: Any) -> Any:
        """The response to an event that `bis` signs."""
        return self.post(self.world.envelope(self.world.event(kind, "bis", **fields), "bis"))

    def grant(self, license_id: str = "L-ae", **changes: Any) -> Any:
        return self.authority("license.granted", license=terms(license_id, **changes))

    def adopt(self, pack_id: str = "pack-2", **changes: Any) -> Any:
        return self.authority("policy.adopted", policy=pack(pack_id, self.world.clock, **changes))

    def flags(self, **params: str | int) -> list[Json]:
        found: list[Json] = self.read("/v1/flags", **params)["flags"]
        return found


def terms(license_id: str, **changes: Any) -> Json:
    """A license to nvidia for H200s to gulf-cloud in AE, valid a day back and 30 ahead."""
    conditions = {"reexport_allowed": False, "security_guarantee": False,
                  "us_investment_commitment": False}  # fmt: skip
    return {
        "id": license_id, "holder": "nvidia", "destinations": ["AE"],
        "consignees": ["gulf-cloud"], "models": ["H200"], "max_quantity": 1000,
        "valid_from": stamp(START - timedelta(days=1)),
        "valid_until": stamp(START + timedelta(days=30)), "conditions": conditions,
    } | changes  # fmt: skip


def pack(pack_id: str, clock: Clock, **changes: Any) -> Json:
    """The default pack under a new id, effective now, with top-level keys changed."""
    return copy.deepcopy(DEFAULT_PACK) | {"id": pack_id, "effective_from": stamp(clock.now)} | changes


def groups(**changes: list[str]) -> Json:
    found: Json = DEFAULT_PACK["groups"] | changes
    return found


def rules(findings: list[Json]) -> list[str]:
    return sorted(flag["rule"] for flag in findings)


def without_message(flag: Json) -> Json:
    assert isinstance(flag["message"], str) and flag["message"]
    return {key: value for key, value in flag.items() if key != "message"}


def accepted(response: Any) -> Json:
    assert response.status_code == 201, response.text
    receipt: Json = response.json()
    return receipt


def error(response: Any, status: int, code: str) -> str:
    """The message of a refusal with this status and code."""
    refused(response, status, code)
    message: str = response.json()["error"]["message"]
    return message


@pytest.fixture
def office(client: TestClient, world: World) -> Office:
    """The populated ledger, plus buyers headquartered in RU and CN, and more sites."""
    office = Office(client, world)
    office.accept(world.party("neva-dc", ["buyer"], "AE", hq_country="RU"))
    office.accept(world.party("pearl-ai", ["buyer"], "AE", hq_country="CN"))
    for site, operator, country in [("ryd-1", "gulf-cloud", "SA"), ("auh-1", "gulf-cloud", "AE"),
                                    ("dsr-1", "desert-ai", "AE")]:  # fmt: skip
        office.accept(world.site(site, operator, country))
    return office


# -- 7. embargoed-destination and license-required ---------------------------------------------

MOVEMENTS = [
    pytest.param({}, [], id="to-the-emirates-nothing"),
    pytest.param({"via": ["TR", "MY"]}, [], id="through-unembargoed-hubs-nothing"),
    pytest.param({"destination": "RU"}, ["embargoed-destination"], id="to-russia-embargo-only"),
    pytest.param({"destination": "BY"}, ["embargoed-destination"], id="to-belarus-embargo-only"),
    pytest.param({"via": ["MY", "IR"]}, ["embargoed-destination"], id="via-iran"),
    pytest.param({"to": "neva-dc"}, ["embargoed-destination"], id="receiver-hq-in-russia"),
    pytest.param({"destination": "CN"}, ["license-required"], id="to-china-unlicensed"),
    pytest.param({"destination": "HK"}, ["license-required"], id="to-hong-kong-unlicensed"),
    pytest.param({"destination": "VE"}, ["license-required"], id="to-a-d5-country-unlicensed"),
    pytest.param({"to": "pearl-ai"}, ["license-required"], id="receiver-hq-in-china-unlicensed"),
    pytest.param({"destination": "CN", "license": "L-cn"}, [], id="to-china-licensed"),
    pytest.param({"to": "pearl-ai", "license": "L-cn"}, [], id="receiver-hq-china-licensed"),
    pytest.param(
        {"destination": "RU", "license": "L-cn"},
        ["embargoed-destination", "license-invalid"],
        id="a-license-never-lifts-an-embargo",
    ),
    pytest.param(
        {"destination": "CN", "license": "L-none"}, ["license-invalid"], id="unknown-license"
    ),
]


@pytest.mark.parametrize(("export", "expected"), MOVEMENTS)
def test_an_export_is_flagged_for_embargo_or_a_missing_license(
    office: Office, export: Json, expected: list[str]
) -> None:
    accepted(office.grant("L-cn", destinations=["CN", "AE", "RU"],
                          consignees=["gulf-cloud", "pearl-ai"]))  # fmt: skip
    receipt = office.ship("h200-1", **export)
    assert rules(receipt["findings"]) == expected
    assert office.flags(batch="h200-1") == receipt["findings"]


def test_an_embargo_flag_names_the_batch_the_receiver_the_pack_and_its_seq(
    office: Office,
) -> None:
    receipt = office.ship("h200-1", to="neva-dc", destination="AE", via=["KP"])
    [flag] = receipt["findings"]
    assert without_message(flag) == {
        "rule": "embargoed-destination", "severity": "breach", "seq": receipt["seq"],
        "policy": DEFAULT_ID, "batch": "h200-1", "party": "neva-dc",
    }  # fmt: skip
    assert "KP" in flag["message"] and "RU" in flag["message"]


# -- 7. license-invalid, at the edges of the validity window -----------------------------------

WINDOW = (START - HOUR, START + HOUR)  # valid_from <= at < valid_until
CITED = [
    pytest.param(WINDOW[0] - timedelta(seconds=1), {}, False, id="a-second-before-valid_from"),
    pytest.param(WINDOW[0], {}, True, id="at-valid_from"),
    pytest.param(WINDOW[1] - timedelta(seconds=1), {}, True, id="the-last-second-of-validity"),
    pytest.param(WINDOW[1], {}, False, id="at-valid_until"),
    pytest.param(START, {"destination": "SA"}, False, id="another-destination"),
    pytest.param(START, {"to": "desert-ai"}, False, id="another-consignee"),
    pytest.param(START, {"model": "H100"}, False, id="another-model"),
    pytest.param(START, {"license": "L-gulf"}, False, id="held-by-someone-else"),
    pytest.param(START, {"license": "L-revoked"}, False, id="revoked"),
    pytest.param(START, {"license": "L-unknown"}, False, id="never-granted"),
]


@pytest.mark.parametrize(("at", "export", "valid"), CITED)
def test_an_export_citing_a_license_that_does_not_cover_it_is_flagged_license_invalid(
    office: Office, clock: Clock, at: Any, export: Json, valid: bool
) -> None:
    window = {"valid_from": stamp(WINDOW[0]), "valid_until": stamp(WINDOW[1])}
    accepted(office.grant("L-ae", **window))
    accepted(office.grant("L-gulf", holder="gulf-cloud"))
    accepted(office.grant("L-revoked"))
    accepted(office.authority("license.revoked", license="L-revoked", reason="diversion"))
    clock.advance(hours=1)
    office.fabricate("b-1", model=export.pop("model", "H200"), at=stamp(START - 2 * HOUR))
    receipt = office.export("b-1", **({"license": "L-ae", "at": stamp(at)} | export))
    cited = ({"license": "L-ae"} | export)["license"]
    expected = [] if valid else [{"rule": "license-invalid", "severity": "breach",
                                  "seq": receipt["seq"], "policy": DEFAULT_ID, "batch": "b-1",
                                  "party": "nvidia", "license": cited}]  # fmt: skip
    assert [without_message(f) for f in receipt["findings"]] == expected


def test_a_revocation_invalidates_the_license_for_later_events_whatever_their_at(
    office: Office,
) -> None:
    accepted(office.grant("L-ae"))
    office.fabricate("b-1", at=stamp(START - HOUR))
    accepted(office.authority("license.revoked", license="L-ae", reason="diversion"))
    late = office.export("b-1", license="L-ae", at=stamp(START - HOUR))  # dated before it
    assert rules(late["findings"]) == ["license-invalid"]


# -- 7. license-quantity-exceeded: on the event that crosses the line, not before --------------


@pytest.mark.parametrize(("second", "expected"), [(39, []), (40, []), (41, [41])])
def test_exports_adding_up_past_max_quantity_are_flagged_on_the_one_that_crosses(
    office: Office, second: int, expected: list[int]
) -> None:
    accepted(office.grant("L-ae", max_quantity=100))
    first = office.ship("b-1", 60, license="L-ae")
    crossing = office.ship("b-2", second, license="L-ae")
    assert first["findings"] == []
    assert [without_message(f) for f in crossing["findings"]] == [
        {"rule": "license-quantity-exceeded", "severity": "breach", "seq": crossing["seq"],
         "policy": DEFAULT_ID, "batch": "b-2", "party": "nvidia", "license": "L-ae"}
        for _ in expected
    ]  # fmt: skip
    assert office.read("/v1/licenses/L-ae")["used_quantity"] == 60 + second


# -- 7. transfer-not-authorized: a licensed batch changes hands or country ---------------------


def transfer(site: str | None = None, license: str | None = None) -> Json:
    fields = {"to": "desert-ai", "site": site, "license": license}
    return {"kind": "batch.transferred", "actor": "gulf-cloud", "cosigners": ["desert-ai"]} | {
        key: value for key, value in fields.items() if value is not None
    }


LATER_MOVES = [
    pytest.param("L-ae", transfer(), "desert-ai", id="sold-in-place-to-a-non-consignee"),
    pytest.param("L-ae", transfer("dsr-1"), "desert-ai", id="moved-to-a-non-consignees-site"),
    pytest.param("L-ae", transfer(license="L-resale"), None, id="sold-under-a-license-for-it"),
    pytest.param("L-both", transfer(), None, id="sold-to-a-consignee-of-the-old-license"),
    pytest.param(None, transfer(), None, id="sold-after-moving-unlicensed"),
    pytest.param("L-ae", {"kind": "batch.relocated", "actor": "gulf-cloud", "site": "ryd-1"},
                 "gulf-cloud", id="relocated-across-a-border"),
    pytest.param("L-ae", {"kind": "batch.relocated", "actor": "gulf-cloud", "site": "auh-1"},
                 None, id="relocated-within-the-country"),
    pytest.param("L-ae", {"kind": "batch.exported", "actor": "gulf-cloud", "to": "gulf-cloud",
                          "destination": "SA"}, "gulf-cloud", id="re-exported"),
]  # fmt: skip


@pytest.mark.parametrize(("moved_under", "move", "flagged_party"), LATER_MOVES)
def test_a_licensed_batch_changing_hands_or_country_unlicensed_is_flagged(
    office: Office, moved_under: str | None, move: Json, flagged_party: str | None
) -> None:
    accepted(office.grant("L-ae"))
    accepted(office.grant("L-both", consignees=["gulf-cloud", "desert-ai"]))
    accepted(office.grant("L-resale", holder="gulf-cloud", consignees=["desert-ai"]))
    office.ship("b-1", **({"license": moved_under} if moved_under else {}))
    office.deliver("b-1")
    kind, actor, cosigners = move.pop("kind"), move.pop("actor"), move.pop("cosigners", [])
    receipt = office.record(kind, actor, *cosigners, batch="b-1", **move).receipt
    found = [f for f in receipt["findings"] if f["rule"] == "transfer-not-authorized"]
    assert [without_message(f) for f in found] == ([
        {"rule": "transfer-not-authorized", "severity": "breach", "seq": receipt["seq"],
         "policy": DEFAULT_ID, "batch": "b-1", "party": flagged_party, "license": moved_under}
    ] if flagged_party else [])  # fmt: skip


# -- 7. listed-party ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listing", "severity"),
    [
        pytest.param(["entity"], "breach", id="entity-list"),
        pytest.param(["denied"], "breach", id="denied-list"),
        pytest.param(["unverified"], "warning", id="unverified-list"),
        pytest.param(["entity", "delisted"], None, id="delisted-before-the-export"),
        pytest.param([], None, id="on-no-list"),
    ],
)
def test_a_movement_to_a_listed_receiver_is_flagged(
    office: Office, listing: list[str], severity: str | None
) -> None:
    for name in listing:
        if name == "delisted":
            accepted(office.authority("party.delisted", party="gulf-cloud", list=listing[0]))
        else:
            accepted(office.authority("party.listed", party="gulf-cloud", list=name,
                                      reason="front company"))  # fmt: skip
    receipt = office.ship("b-1")
    assert [without_message(f) for f in receipt["findings"]] == (
        [{"rule": "listed-party", "severity": severity, "seq": receipt["seq"],
          "policy": DEFAULT_ID, "batch": "b-1", "party": "gulf-cloud"}] if severity else []
    )  # fmt: skip


# -- 7. location-mismatch, delivery-shortfall, serial-mismatch ---------------------------------


@pytest.mark.parametrize(("site", "flagged"), [("dxb-1", False), ("auh-1", False), ("ryd-1", True)])
def test_chips_delivered_outside_their_export_destination_are_flagged(
    office: Office, site: str, flagged: bool
) -> None:
    accepted(office.grant("L-ae"))
    office.ship("b-1", license="L-ae")
    receipt = office.deliver("b-1", site=site)
    assert [without_message(f) for f in receipt["findings"]] == (
        [{"rule": "location-mismatch", "severity": "breach", "seq": receipt["seq"],
          "policy": DEFAULT_ID, "batch": "b-1", "party": "gulf-cloud", "site": site,
          "license": "L-ae"}] if flagged else []
    )  # fmt: skip


SERIALS = ["S-1", "S-2", "S-3", "S-4"]
DELIVERIES = [
    pytest.param(4, SERIALS, [], id="all-shipped-serials-received"),
    pytest.param(4, None, [], id="all-received-serials-unnamed"),
    pytest.param(3, None, ["delivery-shortfall"], id="one-chip-short"),
    pytest.param(3, SERIALS[:3], ["delivery-shortfall"], id="one-chip-short-serials-named"),
    pytest.param(4, [*SERIALS[:3], "S-9"], ["serial-mismatch"], id="one-serial-swapped"),
    pytest.param(1, ["S-9"], ["delivery-shortfall", "serial-mismatch"], id="short-and-swapped"),
]


@pytest.mark.parametrize(("quantity", "serials", "expected"), DELIVERIES)
def test_a_short_delivery_or_unshipped_serials_raise_warnings(
    office: Office, quantity: int, serials: list[str] | None, expected: list[str]
) -> None:
    office.fabricate("b-1", 4, serials=SERIALS)
    office.export("b-1")
    named = {"serials": serials} if serials else {}
    receipt = office.deliver("b-1", quantity=quantity, **named)
    assert rules(receipt["findings"]) == expected
    assert {(f["severity"], f["party"], f["site"]) for f in receipt["findings"]} <= {
        ("warning", "gulf-cloud", "dxb-1")
    }


# -- 7. late-report ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "late"),
    [
        pytest.param(timedelta(hours=1), False, id="an-hour-late"),
        pytest.param(timedelta(hours=72), False, id="exactly-late_report_hours"),
        pytest.param(timedelta(hours=72, seconds=1), True, id="a-second-more"),
    ],
)
def test_an_event_recorded_more_than_late_report_hours_after_its_at_is_flagged(
    office: Office, clock: Clock, delay: timedelta, late: bool
) -> None:
    receipt = office.fabricate("b-1", at=stamp(clock.now - delay))
    assert [without_message(f) for f in receipt["findings"]] == (
        [{"rule": "late-report", "severity": "warning", "seq": receipt["seq"],
          "policy": DEFAULT_ID, "batch": "b-1", "party": "nvidia"}] if late else []
    )  # fmt: skip
