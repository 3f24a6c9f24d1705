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
from tests.support import START, Clock, World, assert_rebuild_equals_live, stamp
from tests.test_story import Desk, refused

Json = dict[str, Any]
DEFAULT_PACK: Json = json.loads(Path("ledger/packs/default.json").read_text("utf-8"))
DEFAULT_ID = "default-2026-03"
HOUR = timedelta(hours=1)
WARNINGS = {"delivery-shortfall", "serial-mismatch", "late-report"}


@dataclass
class Office(Desk):
    """A desk that also grants licenses, adopts packs and reads flags."""

    def fabricate(
        self, batch: str, quantity: int = 100, model: str = "H200", **fields: Any
    ) -> Json:
        return self.record("batch.fabricated", "nvidia", batch=batch, model=model,
                           quantity=quantity, country="TW", **fields).receipt  # fmt: skip

    def export(
        self, batch: str, to: str = "gulf-cloud", destination: str = "AE", **fields: Any
    ) -> Json:
        fields = {key: value for key, value in fields.items() if value is not None}
        return self.record("batch.exported", "nvidia", batch=batch, to=to,
                           destination=destination, **fields).receipt  # fmt: skip

    def ship(self, batch: str, quantity: int = 100, model: str = "H200", **fields: Any) -> Json:
        """Fabricate `batch` and export it (to gulf-cloud in AE unless told); the receipt."""
        self.fabricate(batch, quantity, model)
        return self.export(batch, **fields)

    def deliver(self, batch: str, site: str = "dxb-1", quantity: int = 100, **fields: Any) -> Json:
        fields = {key: value for key, value in fields.items() if value is not None}
        return self.record("batch.delivered", "gulf-cloud", batch=batch, site=site,
                           quantity=quantity, **fields).receipt  # fmt: skip

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
    """The default pack under a new id, effective now, top-level keys changed (None: gone)."""
    raw = copy.deepcopy(DEFAULT_PACK) | {"id": pack_id, "effective_from": stamp(clock.now)}
    return {key: value for key, value in (raw | changes).items() if value is not None}


def groups(**changes: list[str]) -> Json:
    found: Json = DEFAULT_PACK["groups"] | changes
    return found


def expect(rule: str, receipt: Json, policy: str = DEFAULT_ID, **about: str | None) -> Json:
    """The flag `rule` raised by the event of `receipt`, less its message."""
    severity = "warning" if rule in WARNINGS else "breach"
    return {"rule": rule, "severity": severity, "seq": receipt["seq"], "policy": policy} | {
        key: value for key, value in about.items() if value is not None
    }


def found(receipt: Json) -> list[Json]:
    """The receipt's findings, less their messages (each a sentence for a person)."""
    return [without_message(flag) for flag in receipt["findings"]]


def rules(findings: list[Json]) -> list[str]:
    return sorted(flag["rule"] for flag in findings)


def without_message(flag: Json) -> Json:
    assert isinstance(flag["message"], str)
    assert flag["message"]
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
    pytest.param({"destination": "RU", "license": "L-cn"}, ["embargoed-destination"],
                 id="a-license-never-lifts-an-embargo"),
    pytest.param({"destination": "CN", "license": "L-none"}, ["license-invalid"],
                 id="an-unknown-license-is-invalid-not-missing"),
]  # fmt: skip


@pytest.mark.parametrize(("export", "expected"), MOVEMENTS)
def test_an_export_is_flagged_for_embargo_or_a_missing_license(
    office: Office, export: Json, expected: list[str]
) -> None:
    accepted(office.grant("L-cn", destinations=["CN", "AE", "RU"],
                          consignees=["gulf-cloud", "pearl-ai"]))  # fmt: skip
    receipt = office.ship("h200-1", **export)
    assert rules(receipt["findings"]) == expected
    assert office.flags(batch="h200-1") == receipt["findings"]


def test_an_embargo_flag_names_the_batch_the_receiver_the_pack_and_its_seq(office: Office) -> None:
    receipt = office.ship("h200-1", to="neva-dc", destination="AE", via=["KP"])
    flag = expect("embargoed-destination", receipt, batch="h200-1", party="neva-dc")
    assert found(receipt) == [flag]
    assert "KP" in receipt["findings"][0]["message"]


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
    office.fabricate("b-1", model=export.get("model", "H200"), at=stamp(START - 2 * HOUR))
    fields = {"license": "L-ae", "at": stamp(at)} | {
        k: v for k, v in export.items() if k != "model"
    }
    receipt = office.export("b-1", **fields)
    cited = export.get("license", "L-ae")
    invalid = expect("license-invalid", receipt, batch="b-1", party="nvidia", license=cited)
    assert found(receipt) == ([] if valid else [invalid])


def test_a_revocation_invalidates_the_license_for_later_events_whatever_their_at(
    office: Office,
) -> None:
    accepted(office.grant("L-ae"))
    office.fabricate("b-1", at=stamp(START - HOUR))
    accepted(office.authority("license.revoked", license="L-ae", reason="diversion"))
    late = office.export("b-1", license="L-ae", at=stamp(START - HOUR))  # dated before it
    assert rules(late["findings"]) == ["license-invalid"]


# -- 7. license-quantity-exceeded: on the event that crosses the line, not before --------------


@pytest.mark.parametrize(("second", "flagged"), [(39, False), (40, False), (41, True)])
def test_exports_adding_up_past_max_quantity_are_flagged_on_the_one_that_crosses(
    office: Office, second: int, flagged: bool
) -> None:
    accepted(office.grant("L-ae", max_quantity=100))
    first = office.ship("b-1", 60, license="L-ae")
    crossing = office.ship("b-2", second, license="L-ae")
    assert first["findings"] == []
    exceeded = expect("license-quantity-exceeded", crossing, batch="b-2", party="nvidia",
                      license="L-ae")  # fmt: skip
    assert found(crossing) == ([exceeded] if flagged else [])
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
    office.ship("b-1", license=moved_under)
    office.deliver("b-1")
    fields = {k: v for k, v in move.items() if k not in ("kind", "actor", "cosigners")}
    signers = [move["actor"], *move.get("cosigners", [])]
    receipt = office.record(move["kind"], *signers, batch="b-1", **fields).receipt
    flag = expect("transfer-not-authorized", receipt, batch="b-1", party=flagged_party,
                  license=moved_under)  # fmt: skip
    assert found(receipt) == ([flag] if flagged_party else [])


# -- 7. listed-party ---------------------------------------------------------------------------


@pytest.mark.parametrize(("listing", "severity"), [
    pytest.param(["entity"], "breach", id="entity-list"),
    pytest.param(["denied"], "breach", id="denied-list"),
    pytest.param(["unverified"], "warning", id="unverified-list"),
    pytest.param(["entity", "delisted"], None, id="delisted-before-the-export"),
    pytest.param([], None, id="on-no-list"),
])  # fmt: skip
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
    listed = expect("listed-party", receipt, batch="b-1", party="gulf-cloud")
    assert found(receipt) == ([listed | {"severity": severity}] if severity else [])


# -- 7. location-mismatch, delivery-shortfall, serial-mismatch ---------------------------------


@pytest.mark.parametrize(("site", "flagged"), [("dxb-1", False), ("auh-1", False), ("ryd-1", True)])
def test_chips_delivered_outside_their_export_destination_are_flagged(
    office: Office, site: str, flagged: bool
) -> None:
    accepted(office.grant("L-ae"))
    office.ship("b-1", license="L-ae")
    receipt = office.deliver("b-1", site=site)
    mismatch = expect("location-mismatch", receipt, batch="b-1", party="gulf-cloud", site=site,
                      license="L-ae")  # fmt: skip
    assert found(receipt) == ([mismatch] if flagged else [])


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
    receipt = office.deliver("b-1", quantity=quantity, serials=serials)
    about = {"batch": "b-1", "party": "gulf-cloud", "site": "dxb-1"}
    assert found(receipt) == [expect(rule, receipt, **about) for rule in expected]


# -- 7. late-report ----------------------------------------------------------------------------


@pytest.mark.parametrize(("delay", "late"), [
    pytest.param(timedelta(hours=1), False, id="an-hour-late"),
    pytest.param(timedelta(hours=72), False, id="exactly-late_report_hours"),
    pytest.param(timedelta(hours=72, seconds=1), True, id="a-second-more"),
])  # fmt: skip
def test_an_event_recorded_more_than_late_report_hours_after_its_at_is_flagged(
    office: Office, clock: Clock, delay: timedelta, late: bool
) -> None:
    receipt = office.fabricate("b-1", at=stamp(clock.now - delay))
    flag = expect("late-report", receipt, batch="b-1", party="nvidia")
    assert found(receipt) == ([flag] if late else [])


# -- 7. time-judged: not-installed and attestation-overdue, now and as_of ----------------------

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def time_judged(office: Office, **params: str | int) -> list[Json]:
    return [
        without_message(flag)
        for flag in office.flags(**params)
        if flag["rule"] in {"not-installed", "attestation-overdue"}
    ]


@pytest.mark.parametrize(("after", "flagged"), [
    (60 * DAY - SECOND, False), (60 * DAY, False), (60 * DAY + SECOND, True),
])  # fmt: skip
def test_not_installed_is_raised_once_install_within_days_have_passed(
    office: Office, after: timedelta, flagged: bool
) -> None:
    office.ship("b-x")
    delivered = office.deliver("b-x")
    office.world.clock.advance(seconds=after.total_seconds())
    expected = expect("not-installed", delivered, batch="b-x", party="gulf-cloud", site="dxb-1")
    assert time_judged(office) == ([{**expected, "severity": "warning"}] if flagged else [])
    assert office.flags(rule="not-installed", batch="b-x") == office.flags(rule="not-installed")


def test_not_installed_as_of_a_time_judges_that_state_at_that_time(office: Office) -> None:
    office.ship("b-x")
    delivered = office.deliver("b-x")
    office.world.clock.advance(days=61)
    installed = office.record("batch.installed", "gulf-cloud", batch="b-x", site="dxb-1").receipt
    assert installed["findings"] == []
    assert time_judged(office) == []
    flag = {**expect("not-installed", delivered, batch="b-x", party="gulf-cloud", site="dxb-1"),
            "severity": "warning"}  # fmt: skip
    assert time_judged(office, as_of=stamp(START + 61 * DAY - SECOND)) == [flag]
    assert time_judged(office, as_of=stamp(START + 60 * DAY)) == []  # not yet due then
    assert time_judged(office, as_of=installed["seq"] - 1) == [flag]  # that state, now's clock
    assert time_judged(office, as_of=installed["seq"]) == []
    assert time_judged(office, as_of=stamp(START + 61 * DAY - SECOND), batch="b-x") == [flag]
    assert time_judged(office, as_of=stamp(START + 61 * DAY - SECOND), batch="b-y") == []


def attested_license(office: Office, interval: int = 90) -> Json:
    """L-ae asking for an attestation every `interval` days; b-x delivered, installed under it."""
    conditions = terms("L-ae")["conditions"] | {"attestation_interval_days": interval}
    accepted(office.grant(valid_until=stamp(START + 400 * DAY), conditions=conditions))
    office.ship("b-x", license="L-ae")
    delivered = office.deliver("b-x")
    office.record("batch.installed", "gulf-cloud", batch="b-x", site="dxb-1")
    return delivered


def attest(office: Office) -> Json:
    now = office.world.clock.now
    return office.accept(office.world.envelope(office.world.event(
        "security.attested", "gulf-cloud", site="dxb-1", period_start=stamp(now - 30 * DAY),
        period_end=stamp(now), statement="Chips on site as recorded.",
    ), "gulf-cloud"))  # fmt: skip


@pytest.mark.parametrize(("after", "flagged"), [
    (90 * DAY, False), (90 * DAY + SECOND, True),
])  # fmt: skip
def test_attestation_overdue_counts_from_arrival_when_never_attested(
    office: Office, after: timedelta, flagged: bool
) -> None:
    delivered = attested_license(office)
    office.world.clock.advance(seconds=after.total_seconds())
    expected = {**expect("attestation-overdue", delivered, batch="b-x", party="gulf-cloud",
                         site="dxb-1", license="L-ae"), "severity": "warning"}  # fmt: skip
    assert time_judged(office) == ([expected] if flagged else [])


def test_attestation_overdue_counts_from_the_last_attestation_and_reads_as_of(
    office: Office,
) -> None:
    delivered = attested_license(office)
    office.world.clock.advance(days=95)
    attested = attest(office)
    assert attested["findings"] == []
    office.world.clock.advance(days=91)
    flag = {**expect("attestation-overdue", attested, batch="b-x", party="gulf-cloud",
                     site="dxb-1", license="L-ae"), "severity": "warning"}  # fmt: skip
    from_arrival = flag | {"seq": delivered["seq"]}
    assert time_judged(office) == [flag]
    assert time_judged(office, as_of=attested["seq"] - 1) == [from_arrival]  # now's clock
    assert time_judged(office, as_of=attested["seq"]) == [flag]
    assert time_judged(office, as_of=stamp(START + 90 * DAY)) == []
    assert time_judged(office, as_of=stamp(START + 90 * DAY + SECOND)) == [from_arrival]
    assert time_judged(office, as_of=stamp(START + 95 * DAY)) == []  # attested at that moment
    assert time_judged(office, as_of=stamp(START + 185 * DAY)) == []
    assert time_judged(office, as_of=stamp(START + 185 * DAY + SECOND)) == [flag]
    attest(office)
    assert time_judged(office) == []


def test_a_partys_time_judged_flags_are_everyones_that_name_it(office: Office) -> None:
    """Sold in place: desert-ai owns b-x at dxb-1, which gulf-cloud operates. The overdue
    attestation names the operator, not the owner, now and as_of."""
    attested_license(office)
    sold = office.record("batch.transferred", "gulf-cloud", "desert-ai", batch="b-x",
                         to="desert-ai").receipt  # fmt: skip
    office.world.clock.advance(days=91)
    overdue = time_judged(office, rule="attestation-overdue")
    assert [flag["party"] for flag in overdue] == ["gulf-cloud"]
    for as_of in (None, sold["seq"], stamp(office.world.clock.now)):
        moment = {} if as_of is None else {"as_of": as_of}
        everyone = time_judged(office, **moment)
        for party in ("gulf-cloud", "desert-ai", "nvidia"):
            named = [flag for flag in everyone if flag["party"] == party]
            assert time_judged(office, party=party, **moment) == named, (party, as_of)
    assert time_judged(office, party="gulf-cloud") == overdue


# -- DOMAIN scenarios 2, 3, 4, 5, 7, 9, 11, 12 -------------------------------------------------


@pytest.mark.parametrize(("scenario", "destination", "rule"), [
    (2, "RU", "embargoed-destination"), (3, "CN", "license-required")])  # fmt: skip
def test_scenarios_2_and_3_an_export_to_russia_or_unlicensed_to_china_is_recorded_and_flagged(
    office: Office, scenario: int, destination: str, rule: str
) -> None:
    receipt = office.ship("h200-1", 256, destination=destination)
    assert rules(receipt["findings"]) == [rule]
    assert office.read("/v1/batches/h200-1")["status"] == "in_transit"
    assert office.flags() == receipt["findings"]


def test_scenario_4_only_the_export_that_crosses_max_quantity_is_flagged(office: Office) -> None:
    accepted(office.grant("L-ae", max_quantity=1000))
    within = [office.ship(f"b-{n}", quantity, license="L-ae")
              for n, quantity in enumerate([400, 400, 200])]  # fmt: skip
    crossing = office.ship("b-3", 1, license="L-ae")
    assert [receipt["findings"] for receipt in within] == [[], [], []]
    assert office.flags(license="L-ae") == crossing["findings"]
    assert [(f["rule"], f["seq"]) for f in crossing["findings"]] == [
        ("license-quantity-exceeded", crossing["seq"])
    ]


def test_scenario_5_a_transfer_the_license_does_not_name_checked_first_then_recorded(
    office: Office,
) -> None:
    accepted(office.grant("L-ae"))
    office.ship("b-1", license="L-ae")
    office.deliver("b-1")
    size, flags = office.size(), office.flags()
    event, envelope = office.sign("batch.transferred", "gulf-cloud", batch="b-1", to="desert-ai")
    checked = check(office, envelope, unsigned=True)
    refused(office.post(envelope | {"signatures": []}), 403, "not_authorized")  # only checked
    assert (office.size(), office.flags()) == (size, flags)  # nothing stored
    assert office.read("/v1/batches/b-1")["owner"] == "gulf-cloud"
    receipt = office.record("batch.transferred", "gulf-cloud", "desert-ai", batch="b-1",
                            to="desert-ai", id=event["id"]).receipt  # fmt: skip
    assert checked == {"accepted": True, "findings": receipt["findings"]}
    assert [(f["rule"], f["seq"], f["party"]) for f in receipt["findings"]] == [
        ("transfer-not-authorized", size, "desert-ai")
    ]


def test_scenario_6_1200_unlicensed_chips_at_one_site_breach_installed_or_not(
    office: Office,
) -> None:
    office.ship("b-1000", quantity=1000)
    assert found(office.deliver("b-1000", site="auh-1", quantity=1000)) == []  # not above
    office.ship("b-200", quantity=200)
    delivered = office.deliver("b-200", site="auh-1", quantity=200)
    installed = office.record("batch.installed", "gulf-cloud", batch="b-200", site="auh-1")
    for receipt in (delivered, installed.receipt):
        assert found(receipt) == [
            expect("site-threshold", receipt, batch="b-200", party="gulf-cloud", site="auh-1")
        ]
    assert "1,200 chips are at site 'auh-1'" in installed.receipt["findings"][0]["message"]


def test_scenario_7_a_batch_delivered_outside_its_export_destination(office: Office) -> None:
    office.ship("b-1")
    receipt = office.deliver("b-1", site="ryd-1")
    assert rules(receipt["findings"]) == ["location-mismatch"]
    assert office.read("/v1/batches/b-1")["country"] == "SA"


def test_scenario_8_an_inspection_that_counts_fewer_chips_than_the_ledger_holds(
    office: Office,
) -> None:
    office.ship("b-x")
    office.deliver("b-x", site="auh-1")

    def inspect(count: int) -> Json:
        return accepted(office.authority("site.inspected", site="auh-1", observed={"H200": count}))

    short = inspect(90)
    assert found(short) == [expect("inspection-mismatch", short, party="gulf-cloud", site="auh-1")]
    assert "H200: 90 counted, 100 recorded" in short["findings"][0]["message"]
    assert found(inspect(100)) == []
    assert office.flags(rule="inspection-mismatch") == short["findings"]


def test_scenario_9_a_pack_adopted_later_leaves_earlier_findings_and_answers_as_of(
    office: Office, clock: Clock
) -> None:
    first = office.ship("b-cn", destination="CN")
    before = office.flags()
    clock.advance(days=1)
    adopted = accepted(office.adopt("pack-2", groups=groups(license_required=["SA"])))
    assert office.flags() == before
    to_china = office.ship("b-cn2", destination="CN")
    to_saudi = office.ship("b-sa", destination="SA")
    assert (first["findings"][0]["policy"], to_china["findings"]) == (DEFAULT_ID, [])
    assert [(f["rule"], f["policy"]) for f in to_saudi["findings"]] == [
        ("license-required", "pack-2")
    ]
    assert office.flags(as_of=stamp(START)) == before
    assert office.flags(as_of=adopted["seq"]) == before
    assert office.read("/v1/policies/current", as_of=stamp(START)) == DEFAULT_PACK
    assert office.read("/v1/policies/current", as_of=adopted["seq"] - 1) == DEFAULT_PACK
    assert office.read("/v1/policies/current")["id"] == "pack-2"


def test_scenario_11_a_short_delivery_and_a_serial_never_shipped(office: Office) -> None:
    shipped = [f"SN-{n:03d}" for n in range(100)]
    office.fabricate("b-1", 100, serials=shipped)
    office.export("b-1")
    receipt = office.deliver("b-1", quantity=90, serials=[*shipped[:89], "SN-900"])
    batch = office.read("/v1/batches/b-1")
    assert (batch["quantity"], batch["missing"]) == (90, 10)
    assert rules(receipt["findings"]) == ["delivery-shortfall", "serial-mismatch"]
    assert "SN-900" in receipt["findings"][1]["message"]


def test_scenario_12_a_late_export_is_judged_under_the_pack_of_its_at_and_shown_late(
    office: Office, clock: Clock
) -> None:
    accepted(office.adopt("pack-today", groups=groups(license_required=["AE"])))
    office.fabricate("b-old", at=stamp(clock.now - timedelta(days=5)))
    late = office.export("b-old", at=stamp(clock.now - timedelta(days=4)))
    today = office.ship("b-new")
    assert [(f["rule"], f["policy"]) for f in late["findings"]] == [("late-report", DEFAULT_ID)]
    assert [(f["rule"], f["policy"]) for f in today["findings"]] == [
        ("license-required", "pack-today")
    ]


# -- licenses (section 4) ----------------------------------------------------------------------


BAD_TERMS = [
    pytest.param({"valid_until": stamp(START - timedelta(days=1))}, 422, "valid_until",
                 id="valid_until-equal-to-valid_from"),
    pytest.param({"valid_until": stamp(START - timedelta(days=2))}, 422, "valid_until",
                 id="valid_until-before-valid_from"),
    pytest.param({"destinations": ["XX"]}, 422, "license.destinations", id="unknown-country"),
    pytest.param({"destinations": []}, 422, "license.destinations", id="no-destinations"),
    pytest.param({"consignees": []}, 422, "license.consignees", id="no-consignees"),
    pytest.param({"models": []}, 422, "license.models", id="no-models"),
    pytest.param({"models": ["H999"]}, 422, "license.models", id="a-model-the-pack-lacks"),
    pytest.param({"max_quantity": 0}, 422, "license.max_quantity", id="zero-chips"),
    pytest.param({"max_quantity": -5}, 422, "license.max_quantity", id="negative-chips"),
    pytest.param({"conditions": terms("L")["conditions"] | {"attestation_interval_days": -1}},
                 422, "attestation_interval_days", id="negative-attestation-interval"),
    pytest.param({"conditions": {"reexport_allowed": False}}, 422, "security_guarantee",
                 id="a-missing-condition"),
    pytest.param({"holder": "nobody"}, 404, "nobody", id="unknown-holder"),
    pytest.param({"consignees": ["nobody"]}, 404, "nobody", id="unknown-consignee"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "status", "named"), BAD_TERMS)
def test_license_terms_that_cannot_hold_are_refused_naming_the_field(
    office: Office, changes: Json, status: int, named: str
) -> None:
    size = office.size()
    code = "invalid_event" if status == 422 else "not_found"
    assert named in error(office.grant("L-bad", **changes), status, code)
    assert office.size() == size
    refused(office.client.get("/v1/licenses/L-bad"), 404, "not_found")


def test_only_an_authority_grants_or_revokes_once_and_ids_are_never_reused(office: Office) -> None:
    event = office.world.event("license.granted", "nvidia", license=terms("L-own"))
    refused(office.post(office.world.envelope(event, "nvidia")), 403, "not_authorized")
    refused(office.authority("license.revoked", license="L-none", reason="x"), 404, "not_found")
    assert accepted(office.grant("L-ae"))["findings"] == []
    refused(office.grant("L-ae", holder="gulf-cloud"), 409, "conflict")
    event = office.world.event("license.revoked", "gulf-cloud", license="L-ae", reason="x")
    refused(office.post(office.world.envelope(event, "gulf-cloud")), 403, "not_authorized")
    revoked = accepted(office.authority("license.revoked", license="L-ae", reason="diversion"))
    assert revoked["findings"] == []  # the authority's own act cites the license, not uses it
    refused(office.authority("license.revoked", license="L-ae", reason="again"), 409,
            "invalid_transition")  # fmt: skip


def test_a_license_reads_back_its_terms_what_moved_under_it_and_its_status(
    populated: Ledger, office: Office, clock: Clock
) -> None:
    window = {"valid_from": stamp(START + HOUR), "valid_until": stamp(START + 3 * HOUR)}
    granted = accepted(office.grant("L-ae", **window))
    assert office.read("/v1/licenses/L-ae") == terms("L-ae", **window) | {
        "used_quantity": 0, "status": "pending"}  # fmt: skip
    clock.advance(hours=1)
    office.ship("b-1", 60, license="L-ae")
    office.deliver("b-1", quantity=60)
    office.record("batch.transferred", "gulf-cloud", "desert-ai", batch="b-1", to="desert-ai",
                  license="L-ae")  # fmt: skip
    office.ship("b-2", 7)  # moves under no license: not counted
    assert office.read("/v1/licenses/L-ae")["used_quantity"] == 120
    assert office.read("/v1/licenses/L-ae")["status"] == "active"
    assert office.read("/v1/licenses/L-ae", as_of=granted["seq"])["used_quantity"] == 0
    before_transfer = populated.size() - 4  # then the transfer, b-2's fabrication and export
    assert office.read("/v1/licenses/L-ae", as_of=before_transfer)["used_quantity"] == 60
    assert office.read("/v1/licenses/L-ae", as_of=stamp(START))["used_quantity"] == 0
    assert office.read("/v1/licenses/L-ae", as_of=stamp(START))["status"] == "pending"
    assert office.read("/v1/licenses/L-ae", as_of=stamp(START + 3 * HOUR))["status"] == "expired"
    clock.advance(hours=2)
    assert office.read("/v1/licenses/L-ae")["status"] == "expired"
    revoked = accepted(office.authority("license.revoked", license="L-ae", reason="diversion"))
    assert office.read("/v1/licenses/L-ae")["status"] == "revoked"
    assert office.read("/v1/licenses/L-ae", as_of=revoked["seq"] - 1)["status"] == "expired"
    refused(office.client.get("/v1/licenses/L-ae", params={"as_of": 10**6}), 404, "not_found")
    assert assert_rebuild_equals_live(populated)["rm_license_uses"]  # its index, row for row


# -- rule packs (section 4) --------------------------------------------------------------------


def test_the_built_in_pack_is_in_force_before_any_adoption(office: Office) -> None:
    assert office.read("/v1/policies/current") == DEFAULT_PACK
    assert office.read("/v1/policies") == {"policies": []}


def thresholds(**changes: Any) -> Json:
    found: Json = DEFAULT_PACK["thresholds"] | changes
    return found


BAD_PACKS = [
    pytest.param({"thresholds": thresholds(late_report_hours=72.5)},
                 "thresholds.late_report_hours", id="a-float-threshold"),
    pytest.param({"thresholds": thresholds(late_report_hours="72")},
                 "thresholds.late_report_hours", id="a-string-threshold"),
    pytest.param({"thresholds": thresholds(own_limit=0.5)}, "thresholds.own_limit",
                 id="a-float-threshold-of-its-own"),
    pytest.param({"thresholds": thresholds(site_unlicensed=-1)}, "thresholds.site_unlicensed",
                 id="a-negative-threshold"),
    pytest.param({"thresholds": thresholds(own_limit=-5)}, "thresholds.own_limit",
                 id="a-negative-threshold-of-its-own"),
    pytest.param({"thresholds": thresholds(install_within_days=True)},
                 "thresholds.install_within_days", id="a-boolean-threshold"),
    pytest.param({"thresholds": {"site_unlicensed": 1000}}, "thresholds.late_report_hours",
                 id="a-missing-threshold"),
    pytest.param({"groups": {"embargo": ["RU"]}}, "groups.license_required",
                 id="a-missing-group"),
    pytest.param({"groups": groups(embargo=["RU", "XX"])}, "groups.embargo",
                 id="a-bad-country"),
    pytest.param({"groups": groups(hubs=["SG", "ZZ"])}, "groups.hubs",
                 id="a-bad-country-in-a-group-of-its-own"),
    pytest.param({"models": {}}, "models", id="no-models"),
    pytest.param({"models": None}, "models", id="a-missing-models"),
    pytest.param({"effective_from": None}, "effective_from", id="a-missing-effective_from"),
    pytest.param({"effective_from": "2026-03-06"}, "effective_from", id="a-date-not-a-time"),
    pytest.param({"effective_from": stamp(START - timedelta(minutes=5, seconds=1))},
                 "effective_from", id="retroactive-by-five-minutes-and-a-second"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "named"), BAD_PACKS)
def test_a_pack_with_a_bad_key_is_refused_naming_it(
    office: Office, changes: Json, named: str
) -> None:
    size = office.size()
    assert named in error(office.adopt("pack-bad", **changes), 422, "invalid_event")
    assert office.size() == size
    assert office.read("/v1/policies") == {"policies": []}


def test_a_pack_is_adopted_by_an_authority_under_a_new_id_and_read_back_exactly(
    office: Office, clock: Clock
) -> None:
    mine = {"notes": {"why": "tighter"}, "effective_from": stamp(START - timedelta(minutes=5))}
    adopted = accepted(office.adopt("pack-2", **mine))  # five minutes back is not retroactive
    event = office.world.event("policy.adopted", "nvidia", policy=pack("pack-3", clock))
    refused(office.post(office.world.envelope(event, "nvidia")), 403, "not_authorized")
    refused(office.adopt("pack-2"), 409, "conflict")
    refused(office.adopt(DEFAULT_ID), 409, "conflict")
    assert office.read("/v1/policies/current") == pack("pack-2", clock, **mine)
    assert office.read("/v1/policies") == {
        "policies": [
            {"id": "pack-2", "effective_from": mine["effective_from"], "seq": adopted["seq"]}
        ]
    }


def test_a_pack_effective_tomorrow_is_in_force_only_from_tomorrow(
    office: Office, clock: Clock
) -> None:
    tomorrow = clock.now + timedelta(days=1)
    accepted(office.adopt("pack-2", effective_from=stamp(tomorrow)))
    assert office.read("/v1/policies/current") == DEFAULT_PACK
    assert office.read("/v1/policies/current", as_of=stamp(tomorrow))["id"] == "pack-2"


def test_fabricating_a_model_the_pack_in_force_does_not_know_is_refused(
    office: Office, clock: Clock
) -> None:
    accepted(office.adopt("pack-2", models={"H300": {"tpp": 40000}}))
    size = office.size()
    _, envelope = office.sign("batch.fabricated", "nvidia", batch="b-1", model="H200",
                              quantity=1, country="TW")  # fmt: skip
    assert "H200" in error(office.post(envelope), 422, "invalid_event")
    assert office.size() == size
    office.fabricate("b-2", model="H300")
    office.fabricate("b-3", model="H200", at=stamp(clock.now - timedelta(minutes=1)))  # old pack


# -- flags (section 6) -------------------------------------------------------------------------


@pytest.fixture
def flagged(office: Office, clock: Clock) -> list[Json]:
    """Findings of three kinds, the last raised by the event with the earliest `at`."""
    embargo = office.ship("b-ru", destination="RU")["findings"]
    office.ship("b-ae")
    clock.advance(days=1)
    delivered = office.deliver("b-ae", site="ryd-1", quantity=90)["findings"]
    late = office.fabricate("b-late", at=stamp(START - timedelta(days=3)))["findings"]
    return [*embargo, *delivered, *late]


def test_flags_are_listed_in_seq_order_and_filtered_by_batch_party_rule_and_site(
    office: Office, flagged: list[Json]
) -> None:
    _, mismatch, shortfall, late = flagged
    assert office.flags() == flagged
    assert office.flags(batch="b-ae") == [mismatch, shortfall]
    assert office.flags(party="nvidia") == [late]
    assert office.flags(party="gulf-cloud", rule="delivery-shortfall") == [shortfall]
    assert office.flags(site="ryd-1") == [mismatch, shortfall]
    assert office.flags(site="dxb-1") == office.flags(rule="site-unknown") == []


def test_flags_as_of_a_seq_or_a_time(office: Office, flagged: list[Json]) -> None:
    embargo, late = flagged[0], flagged[3]
    assert office.flags(as_of=embargo["seq"]) == [embargo]
    assert office.flags(as_of=embargo["seq"] - 1) == []
    assert office.flags(as_of=stamp(START - timedelta(days=1))) == [late]  # by `at`
    assert office.flags(as_of=stamp(START)) == [embargo, late]
    refused(office.client.get("/v1/flags", params={"as_of": office.size()}), 404, "not_found")
    refused(office.client.get("/v1/flags", params={"as_of": "yesterday"}), 400, "bad_request")


def test_flags_rebuilt_from_the_store_equal_the_live_ones(
    populated: Ledger, office: Office, flagged: list[Json], store: str, clock: Clock
) -> None:
    assert assert_rebuild_equals_live(populated)["rm_flags"]
    reopened = TestClient(create_app(Ledger(store, clock=clock), open_reads=True))
    assert reopened.get("/v1/flags").json() == {"flags": flagged}
    assert reopened.get("/v1/flags", params={"batch": "b-ae"}).json() == {"flags": flagged[1:3]}


def test_counters_rebuilt_see_a_license_only_from_its_grant_as_acceptance_did(
    populated: Ledger, office: Office
) -> None:
    office.ship("b-early", license="L-ae")  # cites L-ae before it is granted: license-invalid
    office.deliver("b-early")
    accepted(office.grant())
    assert populated.reads.batch_row("b-early").site_covered is False  # type: ignore[union-attr]  # it exists
    assert_rebuild_equals_live(populated)
    assert populated.reads.batch_row("b-early").site_covered is False  # type: ignore[union-attr]


# -- POST /v1/checks (section 6) ---------------------------------------------------------------


def check(office: Office, envelope: Json, unsigned: bool = False) -> Json:
    body = envelope | {"signatures": []} if unsigned else envelope
    response = office.client.post("/v1/checks", json=body)
    assert response.status_code == 200, response.text
    answer: Json = response.json()
    if answer.get("error", "absent") is None:
        del answer["error"]  # pinned by test_an_accepted_check_has_no_error_field
    return answer


def state(office: Office) -> tuple[Any, ...]:
    """What a check must leave as it was."""
    batch = office.client.get("/v1/batches/b-1").json()
    return office.size(), office.flags(), batch, office.read("/v1/policies/current")


@pytest.mark.parametrize("unsigned", [False, True], ids=["signed", "unsigned"])
@pytest.mark.parametrize(
    ("kind", "actor", "cosigners", "fields"),
    [
        pytest.param("batch.delivered", "gulf-cloud", [], {"site": "ryd-1", "quantity": 90},
                     id="a-short-delivery-in-the-wrong-country"),
        pytest.param("batch.exported", "gulf-cloud", [], {"to": "neva-dc", "destination": "CN"},
                     id="a-re-export-to-china"),
        pytest.param("batch.transferred", "gulf-cloud", ["desert-ai"],
                     {"to": "desert-ai", "license": "L-none"}, id="a-transfer-citing-no-license"),
    ],
)  # fmt: skip
def test_a_check_judges_as_acceptance_then_does_and_stores_nothing(
    office: Office, unsigned: bool, kind: str, actor: str, cosigners: list[str], fields: Json
) -> None:
    office.ship("b-1")
    if kind != "batch.delivered":
        office.deliver("b-1")
    before = state(office)
    event, envelope = office.sign(kind, actor, *cosigners, batch="b-1", **fields)
    first, again = check(office, envelope, unsigned), check(office, envelope, unsigned)
    assert state(office) == before
    receipt = office.record(kind, actor, *cosigners, batch="b-1", id=event["id"], **fields)
    assert first == again == {"accepted": True, "findings": receipt.receipt["findings"]}
    assert [f["seq"] for f in first["findings"]] == [before[0] for _ in first["findings"]]
    assert first["findings"]


def test_checks_of_license_and_pack_events_store_nothing_and_leave_no_trace_in_the_cache(
    office: Office, clock: Clock
) -> None:
    grant = office.world.envelope(office.world.event(
        "license.granted", "bis", license=terms("L-ae")), "bis")  # fmt: skip
    adopt = office.world.envelope(office.world.event(
        "policy.adopted", "bis", policy=pack("pack-2", clock)), "bis")  # fmt: skip
    before = state(office)
    assert check(office, adopt, unsigned=True) == {"accepted": True, "findings": []}
    assert check(office, grant, unsigned=True) == {"accepted": True, "findings": []}
    assert state(office) == before
    refused(office.client.get("/v1/licenses/L-ae"), 404, "not_found")
    assert office.read("/v1/policies") == {"policies": []}
    accepted(office.post(adopt))
    accepted(office.post(grant))
    office.fabricate("b-1", 1001)
    _, export = office.sign("batch.exported", "nvidia", batch="b-1", to="gulf-cloud",
                            destination="AE", license="L-ae")  # fmt: skip
    first, again = check(office, export), check(office, export)  # the license is not moved on
    assert office.read("/v1/licenses/L-ae")["used_quantity"] == 0
    assert (
        first == again == {"accepted": True, "findings": accepted(office.post(export))["findings"]}
    )
    assert rules(first["findings"]) == ["license-quantity-exceeded"]


REFUSED_CHECKS = [
    pytest.param("batch.exported", "desert-ai", {"to": "desert-ai", "destination": "AE"},
                 403, "not_authorized", id="export-by-someone-not-the-holder"),
    pytest.param("batch.exported", "nvidia", {"to": "desert-ai", "destination": "AE",
                 "prev": "0" * 64}, 409, "conflict", id="stale-prev"),
    pytest.param("batch.installed", "nvidia", {"site": "tsmc-f18"}, 409, "invalid_transition",
                 id="installing-chips-in-transit"),
    pytest.param("batch.delivered", "gulf-cloud", {"site": "nowhere", "quantity": 1}, 404,
                 "not_found", id="delivered-to-an-unknown-site"),
    pytest.param("batch.delivered", "gulf-cloud", {"site": "dxb-1", "quantity": 101}, 409,
                 "invalid_transition", id="more-received-than-shipped"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "actor", "fields", "status", "code"), REFUSED_CHECKS)
def test_a_check_of_a_refused_event_gives_acceptances_error_and_stores_nothing(
    office: Office, kind: str, actor: str, fields: Json, status: int, code: str
) -> None:
    office.ship("b-1")
    before = state(office)
    _, envelope = office.sign(kind, actor, batch="b-1", **fields)
    signed, unsigned = check(office, envelope), check(office, envelope, unsigned=True)
    assert state(office) == before
    response = office.post(envelope)
    refused(response, status, code)
    assert signed == unsigned == {"accepted": False, "findings": [], **response.json()}
    assert state(office) == before


def test_an_accepted_check_has_no_error_field(office: Office) -> None:
    _, envelope = office.sign("batch.fabricated", "nvidia", batch="b-1", model="H200",
                              quantity=1, country="TW")  # fmt: skip
    response = office.client.post("/v1/checks", json=envelope)
    assert response.json() == {"accepted": True, "findings": []}
