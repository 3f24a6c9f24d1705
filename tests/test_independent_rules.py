"""Every rule id of PROTOCOL.md section 7, raised through a real `chipledger serve`.

The client is tests/independent/client.py, written from PROTOCOL.md and DOMAIN.md alone; nothing
here imports the project's packages (`ledger`, `api`, `tools`, `tests.support`). One server with
open reads serves the rules under the built-in default pack (no pack is ever adopted on it); a
second one shows what a rule pack adopted later does and does not change.

Each test registers its own parties, sites and licenses, so findings and thresholds are exact.
Stored rules are judged on events whose `at` is at most 3 hours old (no `late-report`). The two
time-judged rules need the server's clock to be far past the events, so their events are dated
months ago; every such event is accepted more than 72 hours after its `at`, which is exactly
`late-report` and nothing else in its receipt.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.independent.client import (
    JSONObject,
    LedgerClient,
    ServerProcess,
    Signer,
    Step,
    Timeline,
    accepted_step,
    canonical,
    init_ledger,
    make_event,
    now,
    parse_time,
    sign,
)

FLAG_REQUIRED = {"rule", "severity", "seq", "message", "policy"}
FLAG_OPTIONAL = {"batch", "party", "license", "site", "affected_seq"}
TIME_JUDGED = {"attestation-overdue", "not-installed"}
PACK_KEYS = {"id", "effective_from", "groups", "thresholds", "models"}

# DOMAIN.md, "Rules worth encoding": the defaults of the pack.
DEFAULT_EMBARGO = {"RU", "BY", "IR", "KP", "CU", "SY"}
COUNTRY_GROUP_D5 = "AF BY MM KH CF CD CU ER HT IR IQ KP LB LY NI RU SO SS SD SY VE ZW"
DEFAULT_LICENSE_REQUIRED = {"CN", "HK", "MO", *COUNTRY_GROUP_D5.split()}
DEFAULT_THRESHOLDS = {
    "site_unlicensed": 1000,
    "entity_country_strategic": 200000,
    "late_report_hours": 72,
    "install_within_days": 60,
}


def iso(moment: datetime) -> str:
    """RFC 3339 UTC with `Z`; fractional seconds written out only when there are some."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def days_ago(days: float) -> str:
    return iso((now() - timedelta(days=days)).replace(microsecond=0))


def days_after(at: str, days: float) -> str:
    return iso(parse_time(at) + timedelta(days=days))


# --- the ledger under test ------------------------------------------------------------------


@dataclass
class World:
    """A ledger and the parties the tests act as; tracks each batch's head for `prev`."""

    server: ServerProcess
    client: LedgerClient
    timeline: Timeline
    default_pack: JSONObject
    signers: dict[str, Signer] = field(default_factory=dict)
    heads: dict[str, Step] = field(default_factory=dict)
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def default_policy(self) -> str:
        return str(self.default_pack["id"])

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    def keys(self, *parties: str) -> list[Signer]:
        return [self.signers[party] for party in parties]

    def submit(self, event: JSONObject, signers: Sequence[Signer]) -> Step:
        step = accepted_step(self.client, event, signers)
        receipt = step.receipt
        assert isinstance(receipt["findings"], list)
        for finding in receipt["findings"]:
            assert_flag_shape(finding)
            assert finding["seq"] == receipt["seq"], "a receipt's findings are its own event's"
            assert finding["rule"] not in TIME_JUDGED, "time-judged rules are never stored"
        return step

    # registry

    def party(
        self,
        role: str,
        country: str = "AE",
        *,
        hq_country: str | None = None,
        at: str | None = None,
        extra: Sequence[Signer] = (),
    ) -> str:
        """A new party with one key (plus `extra` keys), registered by the trust root."""
        party = self.name(role)
        signer = Signer.from_label(f"rules {party}")
        record: JSONObject = {
            "id": party,
            "name": f"{party} Ltd",
            "roles": [role],
            "country": country,
            "keys": [signer.public_key_b64, *(key.public_key_b64 for key in extra)],
        }
        if hq_country is not None:
            record["hq_country"] = hq_country
        event = make_event("party.registered", "bis", at=at or self.timeline.next(), party=record)
        self.submit(event, [self.signers["bis"], signer, *extra])
        self.signers[party] = signer
        return party

    def site(self, operator: str, country: str = "AE", *, at: str | None = None) -> str:
        site = self.name("site")
        record = {"id": site, "operator": operator, "country": country, "name": f"Site {site}"}
        event = make_event("site.registered", operator, at=at or self.timeline.next(), site=record)
        self.submit(event, self.keys(operator))
        return site

    def license(
        self,
        holder: str,
        *,
        destinations: Sequence[str] = ("AE",),
        consignees: Sequence[str],
        models: Sequence[str] = ("H200",),
        max_quantity: int = 1000,
        valid_from: str | None = None,
        valid_until: str | None = None,
        reexport_allowed: bool = False,
        attestation_interval_days: int | None = None,
        security_guarantee: bool = False,
        us_investment_commitment: bool = False,
        at: str | None = None,
    ) -> str:
        license_id = self.name("L")
        conditions: JSONObject = {
            "reexport_allowed": reexport_allowed,
            "security_guarantee": security_guarantee,
            "us_investment_commitment": us_investment_commitment,
        }
        if attestation_interval_days is not None:
            conditions["attestation_interval_days"] = attestation_interval_days
        terms: JSONObject = {
            "id": license_id,
            "holder": holder,
            "destinations": list(destinations),
            "consignees": list(consignees),
            "models": list(models),
            "max_quantity": max_quantity,
            "valid_from": valid_from or days_ago(30),
            "valid_until": valid_until or iso(now().replace(microsecond=0) + timedelta(days=365)),
            "conditions": conditions,
        }
        event = make_event("license.granted", "bis", at=at or self.timeline.next(), license=terms)
        self.submit(event, self.keys("bis"))
        return license_id

    def authority(self, type_: str, *, at: str | None = None, **fields: Any) -> Step:
        """A registry or monitoring event asserted by the trust root."""
        event = make_event(type_, "bis", at=at or self.timeline.next(), **fields)
        return self.submit(event, self.keys("bis"))

    # batch events

    def act(
        self,
        type_: str,
        actor: str,
        batch: str,
        *,
        signers: Sequence[Signer] | None = None,
        **fields: Any,
    ) -> Step:
        """A batch event chained (section 3 `prev`) to the head this client last saw."""
        chain = {} if type_ == "batch.fabricated" else {"prev": self.heads[batch].hash}
        at = fields.pop("at", None) or self.timeline.next()
        event = make_event(type_, actor, at=at, batch=batch, **chain, **fields)
        step = self.submit(event, signers if signers is not None else self.keys(actor))
        self.heads[batch] = step
        return step

    def fabricate(
        self,
        vendor: str,
        quantity: int,
        *,
        model: str = "H200",
        serials: Sequence[str] | None = None,
        at: str | None = None,
    ) -> tuple[str, Step]:
        batch = self.name("B")
        fields: JSONObject = {"model": model, "quantity": quantity, "country": "TW"}
        if serials is not None:
            fields["serials"] = list(serials)
        return batch, self.act("batch.fabricated", vendor, batch, at=at, **fields)

    def export(
        self,
        batch: str,
        holder: str,
        to: str,
        destination: str = "AE",
        *,
        license: str | None = None,
        via: Sequence[str] | None = None,
        at: str | None = None,
    ) -> Step:
        more: JSONObject = {}
        if license is not None:
            more["license"] = license
        if via is not None:
            more["via"] = list(via)
        return self.act(
            "batch.exported", holder, batch, to=to, destination=destination, at=at, **more
        )

    def deliver(self, batch: str, consignee: str, site: str, quantity: int, **more: Any) -> Step:
        return self.act("batch.delivered", consignee, batch, site=site, quantity=quantity, **more)

    def install(self, batch: str, holder: str, site: str, *, at: str | None = None) -> Step:
        return self.act("batch.installed", holder, batch, site=site, at=at)

    def relocate(self, batch: str, holder: str, site: str, *, at: str | None = None) -> Step:
        return self.act("batch.relocated", holder, batch, site=site, at=at)

    def transfer_event(
        self,
        batch: str,
        owner: str,
        to: str,
        *,
        site: str | None = None,
        license: str | None = None,
    ) -> JSONObject:
        more: JSONObject = {}
        if site is not None:
            more["site"] = site
        if license is not None:
            more["license"] = license
        return make_event(
            "batch.transferred",
            owner,
            at=self.timeline.next(),
            batch=batch,
            prev=self.heads[batch].hash,
            to=to,
            **more,
        )

    def transfer(
        self,
        batch: str,
        owner: str,
        to: str,
        *,
        site: str | None = None,
        license: str | None = None,
    ) -> Step:
        event = self.transfer_event(batch, owner, to, site=site, license=license)
        step = self.submit(event, self.keys(owner, to))
        self.heads[batch] = step
        return step

    def shipped(
        self,
        vendor: str,
        buyer: str,
        site: str,
        quantity: int,
        *,
        destination: str = "AE",
        license: str | None = None,
        model: str = "H200",
    ) -> tuple[str, Step]:
        """A batch fabricated, exported and delivered whole at `site`; the delivery's step."""
        batch, _ = self.fabricate(vendor, quantity, model=model)
        self.export(batch, vendor, buyer, destination, license=license)
        return batch, self.deliver(batch, buyer, site, quantity)

    # reads (section 6)

    def read(self, path: str, as_of: int | str | None = None, **params: str) -> JSONObject:
        query = dict(params)
        if as_of is not None:
            query["as_of"] = str(as_of)
        response = self.client.get(f"{path}?{urlencode(query)}" if query else path)
        assert response.status_code == 200, f"GET {path} {query}: {response.text}"
        assert response.headers.get("X-Chipledger-Open-Reads") == "true"
        body: JSONObject = response.json()
        return body

    def flags(self, as_of: int | str | None = None, **filters: str) -> list[JSONObject]:
        """`GET /v1/flags` with filters; every flag well formed, matching them, in seq order."""
        body = self.read("/v1/flags", as_of, **filters)
        assert set(body) == {"flags"}, body
        flags: list[JSONObject] = body["flags"]
        for flag in flags:
            assert_flag_shape(flag)
            for key, value in filters.items():
                assert flag.get(key) == value, f"filter {key}={value} returned {flag}"
        seqs = [flag["seq"] for flag in flags]
        assert seqs == sorted(seqs), f"flags are in seq order: {seqs}"
        return flags

    def size(self) -> int:
        return self.client.size()

    def check(self, envelope: Mapping[str, Any]) -> JSONObject:
        response = self.client.post_raw("/v1/checks", canonical(dict(envelope)))
        assert response.status_code == 200, response.text
        body: JSONObject = response.json()
        return body


def assert_flag_shape(flag: Mapping[str, Any]) -> None:
    """Section 6: a flag's fields and nothing else."""
    assert FLAG_REQUIRED <= set(flag) <= FLAG_REQUIRED | FLAG_OPTIONAL, flag
    assert flag["severity"] in ("breach", "warning"), flag
    assert isinstance(flag["seq"], int), flag
    assert isinstance(flag["message"], str), flag
    assert flag["message"].strip(), flag
    assert isinstance(flag["policy"], str), flag


def assert_flag(
    flag: Mapping[str, Any],
    *,
    rule: str,
    severity: str,
    seq: int,
    policy: str,
    maybe: Mapping[str, Any] | None = None,
    **where: Any,
) -> None:
    """`flag` is this finding: `where` fields must be present and equal; `maybe` fields, where
    the spec leaves presence open, must equal the given value when present."""
    assert_flag_shape(flag)
    assert flag["rule"] == rule, flag
    assert flag["severity"] == severity, flag
    assert flag["seq"] == seq, flag
    assert flag["policy"] == policy, flag
    for key, value in where.items():
        assert key in flag, f"{rule} names its {key}: {flag}"
        assert flag[key] == value, f"{rule} {key}: {flag}"
    for key, value in (maybe or {}).items():
        if key in flag:
            assert flag[key] == value, f"{rule} {key}: {flag}"


def only(step: Step, rule: str) -> JSONObject:
    """The receipt's findings are exactly one, of `rule`."""
    assert step.rules == [rule], step.findings
    return step.findings[0]


def assert_recorded(world: World, finding: Mapping[str, Any], by: str) -> None:
    """`GET /v1/flags` filtered by rule and by the finding's `by` field returns the finding as
    the receipt carried it."""
    filters = {"rule": str(finding["rule"]), by: str(finding[by])}
    assert dict(finding) in world.flags(**filters), f"{finding} not in GET /v1/flags {filters}"


def start(directory: Path, label: str) -> tuple[ServerProcess, LedgerClient, Signer]:
    bis = Signer.from_label(f"rules {label} bis")
    store, log_key = init_ledger(directory, bis)
    server = ServerProcess(store, log_key, open_reads=True)
    server.start()
    return server, LedgerClient(server.url), bis


def genesis(client: LedgerClient, bis: Signer, at: str) -> None:
    record = {
        "id": "bis",
        "name": "Bureau of Industry and Security",
        "roles": ["authority"],
        "country": "US",
        "keys": [bis.public_key_b64],
    }
    envelope = sign(make_event("party.registered", "bis", at=at, party=record), [bis])
    response = client.post_event(envelope)
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server, client, bis = start(tmp_path_factory.mktemp("independent-rules"), "main")
    try:
        # The trust root exists before every dated event, even those months ago.
        genesis(client, bis, days_ago(400))
        pack = client.get("/v1/policies/current").json()
        timeline = Timeline(now() - timedelta(hours=3), timedelta(seconds=5))
        yield World(server, client, timeline, pack, signers={"bis": bis})
    finally:
        client.close()
        server.stop()


# --- the default pack -----------------------------------------------------------------------


def test_before_any_adoption_current_is_the_built_in_default_pack(world: World) -> None:
    current = world.read("/v1/policies/current")
    assert set(current) >= PACK_KEYS, current
    assert set(current["groups"]) >= {"embargo", "license_required"}
    assert set(current["groups"]["embargo"]) == DEFAULT_EMBARGO
    assert set(current["groups"]["license_required"]) >= DEFAULT_LICENSE_REQUIRED
    assert {k: current["thresholds"][k] for k in DEFAULT_THRESHOLDS} == DEFAULT_THRESHOLDS
    assert "H200" in current["models"]
    parse_time(current["effective_from"])
    assert world.read("/v1/policies") == {"policies": []}, "the default pack is not listed"
    assert current == world.default_pack, "the same pack, whatever events were accepted since"


# --- embargoed-destination ------------------------------------------------------------------


def test_embargoed_destination_an_export_to_an_embargoed_country(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "RU")
    batch, _ = world.fabricate(vendor, 10)
    exported = world.export(batch, vendor, buyer, "RU")
    finding = only(exported, "embargoed-destination")
    assert_flag(
        finding,
        rule="embargoed-destination",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=batch,
        party=buyer,
    )
    assert_recorded(world, finding, "batch")
    assert_recorded(world, finding, "party")


def test_embargoed_destination_a_via_country_in_the_embargo_group(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    batch, _ = world.fabricate(vendor, 10)
    exported = world.export(batch, vendor, buyer, "AE", via=["TR", "BY"])
    finding = only(exported, "embargoed-destination")
    assert_flag(
        finding,
        rule="embargoed-destination",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=batch,
        party=buyer,
    )
    assert_recorded(world, finding, "batch")


def test_embargoed_destination_a_receiver_headquartered_in_an_embargoed_country(
    world: World,
) -> None:
    vendor = world.party("vendor", "US")
    buyer = world.party("buyer", "AE", hq_country="IR")
    batch, _ = world.fabricate(vendor, 10)
    exported = world.export(batch, vendor, buyer, "AE")
    finding = only(exported, "embargoed-destination")
    assert_flag(
        finding,
        rule="embargoed-destination",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=batch,
        party=buyer,
    )
    assert_recorded(world, finding, "party")


# --- license-required -----------------------------------------------------------------------


def test_license_required_an_unlicensed_export_to_a_license_required_country(
    world: World,
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "CN")
    batch, _ = world.fabricate(vendor, 10)
    exported = world.export(batch, vendor, buyer, "CN")
    finding = only(exported, "license-required")
    assert_flag(
        finding,
        rule="license-required",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=batch,
        party=buyer,
    )
    assert_recorded(world, finding, "batch")
    assert_recorded(world, finding, "party")


def test_license_required_a_receiver_headquartered_in_a_license_required_country(
    world: World,
) -> None:
    vendor = world.party("vendor", "US")
    buyer = world.party("buyer", "AE", hq_country="HK")
    batch, _ = world.fabricate(vendor, 10)
    exported = world.export(batch, vendor, buyer, "AE")
    finding = only(exported, "license-required")
    assert_flag(
        finding,
        rule="license-required",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=batch,
        party=buyer,
    )


def test_license_required_a_relocation_across_a_border_into_a_license_required_country(
    world: World,
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    here, there = world.site(buyer, "AE"), world.site(buyer, "MO")
    batch, delivered = world.shipped(vendor, buyer, here, 10)
    assert delivered.rules == []
    moved = world.relocate(batch, buyer, there)
    finding = only(moved, "license-required")
    assert_flag(
        finding,
        rule="license-required",
        severity="breach",
        seq=moved.seq,
        policy=world.default_policy,
        batch=batch,
        party=buyer,
    )


def test_license_required_is_not_raised_when_the_movement_is_licensed(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "CN")
    license_id = world.license(vendor, destinations=["CN"], consignees=[buyer])
    batch, _ = world.fabricate(vendor, 10)
    assert world.export(batch, vendor, buyer, "CN", license=license_id).rules == []


def test_license_required_is_not_raised_with_embargoed_destination(world: World) -> None:
    # RU is in both groups of the default pack: only the embargo is reported.
    assert "RU" in world.default_pack["groups"]["license_required"]
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    batch, _ = world.fabricate(vendor, 10)
    assert world.export(batch, vendor, buyer, "RU").rules == ["embargoed-destination"]


# --- license-invalid ------------------------------------------------------------------------


@dataclass
class Licensed:
    vendor: str
    buyer: str
    license: str
    batch: str


def licensed_batch(world: World, model: str = "H200", **terms: Any) -> Licensed:
    """A vendor, a buyer in AE, a license for H200 to that buyer in AE, a fabricated batch."""
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    license_id = world.license(vendor, consignees=[buyer], **terms)
    batch, _ = world.fabricate(vendor, 10, model=model)
    return Licensed(vendor, buyer, license_id, batch)


def _revoked(world: World) -> tuple[Licensed, Step]:
    got = licensed_batch(world)
    world.authority("license.revoked", license=got.license, reason="Conditions breached.")
    return got, world.export(got.batch, got.vendor, got.buyer, "AE", license=got.license)


def licensed_at(world: World, edge: str) -> tuple[Licensed, str]:
    """`licensed_batch` whose `valid_from` or `valid_until` (`edge`) is the export's own `at`."""
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    batch, _ = world.fabricate(vendor, 10)
    at = world.timeline.next()
    if edge == "valid_from":
        license_id = world.license(vendor, consignees=[buyer], valid_from=at, at=at)
    else:
        license_id = world.license(
            vendor, consignees=[buyer], valid_from=days_ago(10), valid_until=at, at=at
        )
    return Licensed(vendor, buyer, license_id, batch), at


def _not_yet_valid(world: World) -> tuple[Licensed, Step]:
    tomorrow = iso(now().replace(microsecond=0) + timedelta(days=1))
    got = licensed_batch(world, valid_from=tomorrow)
    return got, world.export(got.batch, got.vendor, got.buyer, "AE", license=got.license)


def _at_valid_until(world: World) -> tuple[Licensed, Step]:
    got, at = licensed_at(world, "valid_until")
    return got, world.export(got.batch, got.vendor, got.buyer, "AE", license=got.license, at=at)


def _expired(world: World) -> tuple[Licensed, Step]:
    got = licensed_batch(world, valid_from=days_ago(10), valid_until=days_ago(1))
    return got, world.export(got.batch, got.vendor, got.buyer, "AE", license=got.license)


def _not_held_by_the_actor(world: World) -> tuple[Licensed, Step]:
    got = licensed_batch(world)
    other = world.party("vendor", "US")
    batch, _ = world.fabricate(other, 10)
    step = world.export(batch, other, got.buyer, "AE", license=got.license)
    return Licensed(other, got.buyer, got.license, batch), step


def _destination_not_covered(world: World) -> tuple[Licensed, Step]:
    got = licensed_batch(world)
    return got, world.export(got.batch, got.vendor, got.buyer, "SA", license=got.license)


def _receiver_not_covered(world: World) -> tuple[Licensed, Step]:
    got = licensed_batch(world)
    stranger = world.party("buyer", "AE")
    step = world.export(got.batch, got.vendor, stranger, "AE", license=got.license)
    return Licensed(got.vendor, stranger, got.license, got.batch), step


def _model_not_covered(world: World) -> tuple[Licensed, Step]:
    got = licensed_batch(world, model="B200")
    return got, world.export(got.batch, got.vendor, got.buyer, "AE", license=got.license)


def _unknown(world: World) -> tuple[Licensed, Step]:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    batch, _ = world.fabricate(vendor, 10)
    missing = world.name("L-never-granted")
    return Licensed(vendor, buyer, missing, batch), world.export(
        batch, vendor, buyer, "AE", license=missing
    )


INVALID_LICENSES = {
    "revoked": _revoked,
    "before-valid-from": _not_yet_valid,
    "at-valid-until": _at_valid_until,
    "after-valid-until": _expired,
    "not-held-by-the-actor": _not_held_by_the_actor,
    "destination-not-covered": _destination_not_covered,
    "receiver-not-covered": _receiver_not_covered,
    "model-not-covered": _model_not_covered,
    "unknown": _unknown,
}


@pytest.mark.parametrize("case", sorted(INVALID_LICENSES))
def test_license_invalid_an_export_citing_a_license_that_does_not_cover_it(
    world: World, case: str
) -> None:
    got, exported = INVALID_LICENSES[case](world)
    finding = only(exported, "license-invalid")
    assert_flag(
        finding,
        rule="license-invalid",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=got.batch,
        license=got.license,
    )
    assert_recorded(world, finding, "license")
    assert_recorded(world, finding, "batch")


def test_license_invalid_is_not_raised_at_valid_from(world: World) -> None:
    got, at = licensed_at(world, "valid_from")
    exported = world.export(got.batch, got.vendor, got.buyer, "AE", license=got.license, at=at)
    assert exported.rules == []


# --- license-quantity-exceeded --------------------------------------------------------------


def test_license_quantity_exceeded_on_the_event_that_crosses_the_line_not_before(
    world: World,
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    license_id = world.license(vendor, consignees=[buyer], max_quantity=100)
    steps: list[Step] = []
    batches: list[str] = []
    for quantity in (60, 40, 1):
        batch, _ = world.fabricate(vendor, quantity)
        batches.append(batch)
        steps.append(world.export(batch, vendor, buyer, "AE", license=license_id))
    assert steps[0].rules == []
    assert steps[1].rules == [], "used_quantity equal to max_quantity is not above it"
    finding = only(steps[2], "license-quantity-exceeded")
    assert_flag(
        finding,
        rule="license-quantity-exceeded",
        severity="breach",
        seq=steps[2].seq,
        policy=world.default_policy,
        batch=batches[2],
        license=license_id,
    )
    assert world.read(f"/v1/licenses/{license_id}")["used_quantity"] == 101
    assert world.flags(license=license_id, rule="license-quantity-exceeded") == [finding]


# --- transfer-not-authorized ----------------------------------------------------------------


@dataclass
class Moved:
    """A batch exported under a license to a buyer in AE and delivered at its site there."""

    vendor: str
    buyer: str
    site: str
    license: str
    batch: str


def moved_under_license(world: World, **terms: Any) -> Moved:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    terms.setdefault("consignees", [buyer])
    license_id = world.license(vendor, **terms)
    batch, delivered = world.shipped(vendor, buyer, site, 10, license=license_id)
    assert delivered.rules == []
    return Moved(vendor, buyer, site, license_id, batch)


def test_transfer_not_authorized_a_transfer_to_a_party_the_license_does_not_name(
    world: World,
) -> None:
    got = moved_under_license(world)
    stranger = world.party("buyer", "AE")
    transferred = world.transfer(got.batch, got.buyer, stranger)
    finding = only(transferred, "transfer-not-authorized")
    assert_flag(
        finding,
        rule="transfer-not-authorized",
        severity="breach",
        seq=transferred.seq,
        policy=world.default_policy,
        batch=got.batch,
        party=stranger,
        license=got.license,
    )
    assert_recorded(world, finding, "batch")
    assert_recorded(world, finding, "license")


def test_transfer_not_authorized_a_relocation_to_a_country_the_license_does_not_name(
    world: World,
) -> None:
    got = moved_under_license(world)
    abroad = world.site(got.buyer, "SA")
    moved = world.relocate(got.batch, got.buyer, abroad)
    finding = only(moved, "transfer-not-authorized")
    assert_flag(
        finding,
        rule="transfer-not-authorized",
        severity="breach",
        seq=moved.seq,
        policy=world.default_policy,
        batch=got.batch,
        party=got.buyer,
        license=got.license,
    )


def test_transfer_not_authorized_a_move_out_of_the_country_without_reexport_allowed(
    world: World,
) -> None:
    got = moved_under_license(world, destinations=["AE", "SA"], reexport_allowed=False)
    abroad = world.site(got.buyer, "SA")
    moved = world.relocate(got.batch, got.buyer, abroad)
    finding = only(moved, "transfer-not-authorized")
    assert_flag(
        finding,
        rule="transfer-not-authorized",
        severity="breach",
        seq=moved.seq,
        policy=world.default_policy,
        batch=got.batch,
        party=got.buyer,
        license=got.license,
    )


def test_transfer_not_authorized_a_reexport_to_a_party_the_license_does_not_name(
    world: World,
) -> None:
    got = moved_under_license(world, destinations=["AE", "SA"], reexport_allowed=True)
    stranger = world.party("buyer", "SA")
    exported = world.export(got.batch, got.buyer, stranger, "SA")
    finding = only(exported, "transfer-not-authorized")
    assert_flag(
        finding,
        rule="transfer-not-authorized",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=got.batch,
        party=stranger,
        license=got.license,
    )


def test_transfer_not_authorized_is_not_raised_when_the_old_license_covers_the_move(
    world: World,
) -> None:
    vendor = world.party("vendor", "US")
    buyer, other = world.party("buyer", "AE"), world.party("buyer", "AE")
    site, others_site = world.site(buyer, "AE"), world.site(other, "AE")
    license_id = world.license(vendor, consignees=[buyer, other], reexport_allowed=False)
    batch, _ = world.shipped(vendor, buyer, site, 10, license=license_id)
    assert world.transfer(batch, buyer, other, site=others_site).rules == []


def test_transfer_not_authorized_is_not_raised_when_the_move_cites_a_license_valid_for_it(
    world: World,
) -> None:
    got = moved_under_license(world)
    other = world.party("buyer", "AE")
    new_license = world.license(got.buyer, consignees=[other])
    assert world.transfer(got.batch, got.buyer, other, license=new_license).rules == []


def test_checks_report_the_finding_acceptance_records_and_store_nothing(world: World) -> None:
    got = moved_under_license(world)
    stranger = world.party("buyer", "AE")
    event = world.transfer_event(got.batch, got.buyer, stranger)
    envelope = sign(event, world.keys(got.buyer, stranger))
    size = world.size()
    state = world.read(f"/v1/batches/{got.batch}")
    flags = world.flags(batch=got.batch)

    checked = world.check(envelope)
    unsigned = world.check({**envelope, "signatures": []})

    assert world.size() == size, "a check stores nothing"
    assert world.read(f"/v1/batches/{got.batch}") == state
    assert world.flags(batch=got.batch) == flags
    assert set(checked) <= {"accepted", "error", "findings"}, checked
    assert checked["accepted"] is True, checked
    assert "error" not in checked
    assert unsigned == checked, "with no signatures it is judged as if the signers had signed"
    [finding] = checked["findings"]
    assert_flag(
        finding,
        rule="transfer-not-authorized",
        severity="breach",
        seq=size,
        policy=world.default_policy,
        batch=got.batch,
        party=stranger,
        license=got.license,
    )

    response = world.client.post_event(envelope)
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["seq"] == size
    assert receipt["findings"] == checked["findings"]
    assert world.flags(batch=got.batch, rule="transfer-not-authorized") == checked["findings"]


# --- site-threshold -------------------------------------------------------------------------


def test_site_threshold_raised_by_each_event_that_leaves_a_site_above_it(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    limit = DEFAULT_THRESHOLDS["site_unlicensed"]
    _, at_limit = world.shipped(vendor, buyer, site, limit)
    assert at_limit.rules == [], "exactly the threshold is not above it"
    over, crossing = world.shipped(vendor, buyer, site, 1)
    installed = world.install(over, buyer, site)
    for step in (crossing, installed):
        finding = only(step, "site-threshold")
        assert_flag(
            finding,
            rule="site-threshold",
            severity="breach",
            seq=step.seq,
            policy=world.default_policy,
            site=site,
            party=buyer,
            maybe={"batch": over},
        )
    recorded = world.flags(site=site, rule="site-threshold")
    assert recorded == [crossing.findings[0], installed.findings[0]]


def test_site_threshold_scenario_6_1200_unlicensed_chips_delivered_to_one_site(
    world: World,
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    batch, delivered = world.shipped(vendor, buyer, site, 1200)
    finding = only(delivered, "site-threshold")
    assert_flag(
        finding,
        rule="site-threshold",
        severity="breach",
        seq=delivered.seq,
        policy=world.default_policy,
        site=site,
        party=buyer,
        maybe={"batch": batch},
    )
    assert_recorded(world, finding, "site")


def test_site_threshold_not_raised_when_all_moved_under_a_license_naming_country_and_operator(
    world: World,
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    license_id = world.license(vendor, consignees=[buyer], max_quantity=5000)
    _, delivered = world.shipped(vendor, buyer, site, 1200, license=license_id)
    assert delivered.rules == []
    _, unlicensed = world.shipped(vendor, buyer, site, 1)
    finding = only(unlicensed, "site-threshold")
    assert_flag(
        finding,
        rule="site-threshold",
        severity="breach",
        seq=unlicensed.seq,
        policy=world.default_policy,
        site=site,
        party=buyer,
    )


# --- entity-threshold -----------------------------------------------------------------------


def test_entity_threshold_one_party_owns_more_than_the_threshold_in_one_country(
    world: World,
) -> None:
    limit = DEFAULT_THRESHOLDS["entity_country_strategic"]
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    # Licensed to the buyer in AE (no site-threshold), without a security guarantee.
    license_id = world.license(
        vendor, consignees=[buyer], max_quantity=10 * limit, us_investment_commitment=True
    )
    _, at_limit = world.shipped(vendor, buyer, site, limit, license=license_id)
    assert at_limit.rules == [], "exactly the threshold is not above it"
    over, crossing = world.shipped(vendor, buyer, site, 1, license=license_id)
    finding = only(crossing, "entity-threshold")
    assert_flag(
        finding,
        rule="entity-threshold",
        severity="breach",
        seq=crossing.seq,
        policy=world.default_policy,
        party=buyer,
        maybe={"batch": over},
    )
    assert_recorded(world, finding, "party")
    installed = world.install(over, buyer, site)
    assert installed.rules == ["entity-threshold"], "raised by each such event"


def test_entity_threshold_is_per_country(world: World) -> None:
    limit = DEFAULT_THRESHOLDS["entity_country_strategic"]
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    here, there = world.site(buyer, "AE"), world.site(buyer, "SA")
    license_id = world.license(
        vendor, destinations=["AE", "SA"], consignees=[buyer], max_quantity=10 * limit
    )
    half = limit // 2 + 1
    _, first = world.shipped(vendor, buyer, here, half, license=license_id)
    _, second = world.shipped(vendor, buyer, there, half, destination="SA", license=license_id)
    assert (first.rules, second.rules) == ([], [])


def test_entity_threshold_not_raised_under_licenses_with_both_guarantees(world: World) -> None:
    limit = DEFAULT_THRESHOLDS["entity_country_strategic"]
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    license_id = world.license(
        vendor,
        consignees=[buyer],
        max_quantity=10 * limit,
        security_guarantee=True,
        us_investment_commitment=True,
    )
    _, delivered = world.shipped(vendor, buyer, site, limit + 1, license=license_id)
    assert delivered.rules == []


# --- location-mismatch ----------------------------------------------------------------------


def test_location_mismatch_chips_delivered_in_a_country_other_than_the_destination(
    world: World,
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    elsewhere = world.site(buyer, "SA")
    batch, _ = world.fabricate(vendor, 10)
    world.export(batch, vendor, buyer, "AE")
    delivered = world.deliver(batch, buyer, elsewhere, 10)
    finding = only(delivered, "location-mismatch")
    assert_flag(
        finding,
        rule="location-mismatch",
        severity="breach",
        seq=delivered.seq,
        policy=world.default_policy,
        batch=batch,
        maybe={"party": buyer, "site": elsewhere},
    )
    assert_recorded(world, finding, "batch")


# --- listed-party ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listed", "severity"), [("entity", "breach"), ("denied", "breach"), ("unverified", "warning")]
)
def test_listed_party_the_receiver_is_listed_when_the_movement_is_accepted(
    world: World, listed: str, severity: str
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    world.authority("party.listed", party=buyer, list=listed, reason="Diversion suspected.")
    batch, _ = world.fabricate(vendor, 10)
    exported = world.export(batch, vendor, buyer, "AE")
    finding = only(exported, "listed-party")
    assert_flag(
        finding,
        rule="listed-party",
        severity=severity,
        seq=exported.seq,
        policy=world.default_policy,
        batch=batch,
        party=buyer,
    )
    assert_recorded(world, finding, "party")


def test_listed_party_judges_the_list_when_the_movement_is_accepted(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    before, _ = world.fabricate(vendor, 10)
    assert world.export(before, vendor, buyer, "AE").rules == []
    world.authority("party.listed", party=buyer, list="entity", reason="Diversion suspected.")
    assert world.flags(batch=before) == [], "a later listing does not change earlier findings"
    world.authority("party.delisted", party=buyer, list="entity")
    after, _ = world.fabricate(vendor, 10)
    assert world.export(after, vendor, buyer, "AE").rules == []


# --- inspection-mismatch --------------------------------------------------------------------


@pytest.mark.parametrize(
    "observed",
    [{"H200": 14}, {"H200": 16}, {"H200": 15, "B200": 1}],
    ids=["fewer", "more", "another-model"],
)
def test_inspection_mismatch_an_inspection_counts_other_than_the_ledger_holds(
    world: World, observed: dict[str, int]
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    world.shipped(vendor, buyer, site, 10)
    installed, _ = world.shipped(vendor, buyer, site, 5)
    world.install(installed, buyer, site)
    inspected = world.authority("site.inspected", site=site, observed=observed)
    finding = only(inspected, "inspection-mismatch")
    assert_flag(
        finding,
        rule="inspection-mismatch",
        severity="breach",
        seq=inspected.seq,
        policy=world.default_policy,
        site=site,
        party=buyer,
    )
    assert_recorded(world, finding, "site")


def test_inspection_mismatch_not_raised_when_the_counts_agree(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    world.shipped(vendor, buyer, site, 10)
    installed, _ = world.shipped(vendor, buyer, site, 5)
    world.install(installed, buyer, site)
    world.shipped(vendor, buyer, site, 3, model="B200")
    inspected = world.authority("site.inspected", site=site, observed={"H200": 15, "B200": 3})
    assert inspected.rules == []


# --- key-compromised ------------------------------------------------------------------------


def test_key_compromised_once_for_each_envelope_accepted_under_the_key_after_the_time(
    world: World,
) -> None:
    vendor = world.party("vendor", "US")
    spare = Signer.from_label(f"rules {world.name('spare key')}")
    buyer = world.party("buyer", "AE", extra=[spare])
    stolen = world.signers[buyer]
    site = world.site(buyer, "AE")
    batch, _ = world.fabricate(vendor, 10)
    world.export(batch, vendor, buyer, "AE")
    before = world.deliver(batch, buyer, site, 10)

    time.sleep(0.02)
    since = now()
    time.sleep(0.02)
    # Both accepted, and dated, after `since`.
    after_install = world.install(batch, buyer, site, at=iso(now()))
    record = {"id": world.name("site"), "operator": buyer, "country": "AE", "name": "Annex"}
    after_site = world.submit(
        make_event("site.registered", buyer, at=iso(now()), site=record), [stolen]
    )
    record = {"id": world.name("site"), "operator": buyer, "country": "AE", "name": "Spare"}
    world.submit(make_event("site.registered", buyer, at=iso(now()), site=record), [spare])

    revoked = world.authority(
        "party.key_revoked",
        at=iso(now()),
        party=buyer,
        keyid=stolen.keyid,
        compromised_since=iso(since),
    )
    assert revoked.rules == ["key-compromised", "key-compromised"], revoked.findings
    affected = sorted(finding["affected_seq"] for finding in revoked.findings)
    assert affected == [after_install.seq, after_site.seq]
    assert before.seq not in affected
    for finding in revoked.findings:
        assert_flag(
            finding,
            rule="key-compromised",
            severity="breach",
            seq=revoked.seq,
            policy=world.default_policy,
            maybe={"party": buyer},
        )
    [on_batch] = [f for f in revoked.findings if f["affected_seq"] == after_install.seq]
    assert on_batch.get("batch", batch) == batch
    recorded = world.flags(rule="key-compromised")
    assert all(finding in recorded for finding in revoked.findings)


# --- delivery-shortfall, serial-mismatch ----------------------------------------------------


def test_delivery_shortfall_fewer_chips_received_than_shipped(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    batch, _ = world.fabricate(vendor, 100)
    world.export(batch, vendor, buyer, "AE")
    delivered = world.deliver(batch, buyer, site, 90)
    finding = only(delivered, "delivery-shortfall")
    assert_flag(
        finding,
        rule="delivery-shortfall",
        severity="warning",
        seq=delivered.seq,
        policy=world.default_policy,
        batch=batch,
        maybe={"party": buyer, "site": site},
    )
    assert_recorded(world, finding, "batch")
    state = world.read(f"/v1/batches/{batch}")
    assert (state["quantity"], state["missing"]) == (90, 10)


def test_serial_mismatch_a_received_serial_that_was_never_shipped(world: World) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    tag = world.name("SN")
    shipped = [f"{tag}-{n}" for n in range(3)]
    batch, _ = world.fabricate(vendor, 3, serials=shipped)
    world.export(batch, vendor, buyer, "AE")
    received = [*shipped[:2], f"{tag}-relabelled"]
    delivered = world.deliver(batch, buyer, site, 3, serials=received)
    finding = only(delivered, "serial-mismatch")
    assert_flag(
        finding,
        rule="serial-mismatch",
        severity="warning",
        seq=delivered.seq,
        policy=world.default_policy,
        batch=batch,
        maybe={"party": buyer, "site": site},
    )
    assert_recorded(world, finding, "batch")


def test_serial_mismatch_not_raised_when_the_serials_received_are_those_shipped(
    world: World,
) -> None:
    vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
    site = world.site(buyer, "AE")
    tag = world.name("SN")
    shipped = [f"{tag}-{n}" for n in range(3)]
    batch, _ = world.fabricate(vendor, 3, serials=shipped)
    world.export(batch, vendor, buyer, "AE")
    assert world.deliver(batch, buyer, site, 3, serials=list(reversed(shipped))).rules == []


# --- late-report ----------------------------------------------------------------------------


def test_late_report_an_event_accepted_more_than_late_report_hours_after_its_at(
    world: World,
) -> None:
    vendor = world.party("vendor", "US")
    batch, fabricated = world.fabricate(vendor, 10, at=days_ago(4))
    finding = only(fabricated, "late-report")
    assert_flag(
        finding,
        rule="late-report",
        severity="warning",
        seq=fabricated.seq,
        policy=world.default_policy,
        batch=batch,
    )
    assert_recorded(world, finding, "batch")
    hours = DEFAULT_THRESHOLDS["late_report_hours"]
    _, in_time = world.fabricate(
        vendor, 10, at=iso(now().replace(microsecond=0) - timedelta(hours=hours - 1))
    )
    assert in_time.rules == []


# --- time-judged: not-installed -------------------------------------------------------------


@dataclass
class Dated:
    """Parties, sites and licenses registered 200 days ago, for events dated months back."""

    vendor: str
    buyer: str
    site: str
    other_site: str


def dated_parties(world: World) -> Dated:
    at = days_ago(200)
    vendor = world.party("vendor", "US", at=at)
    buyer = world.party("buyer", "AE", at=at)
    return Dated(vendor, buyer, world.site(buyer, "AE", at=at), world.site(buyer, "AE", at=at))


def delivered_long_ago(
    world: World, cast: Dated, delivered_at: str, *, license: str | None = None
) -> tuple[str, Step]:
    """A batch fabricated, exported and delivered months ago: each receipt only late-report."""
    batch, fabricated = world.fabricate(cast.vendor, 10, at=days_after(delivered_at, -2))
    exported = world.export(
        batch, cast.vendor, cast.buyer, "AE", license=license, at=days_after(delivered_at, -1)
    )
    delivered = world.deliver(batch, cast.buyer, cast.site, 10, at=delivered_at)
    for step in (fabricated, exported, delivered):
        assert step.rules == ["late-report"], step.findings
    return batch, delivered


def test_not_installed_a_batch_delivered_longer_than_install_within_days(world: World) -> None:
    cast = dated_parties(world)
    delivered_at = days_ago(118)
    batch, delivered = delivered_long_ago(world, cast, delivered_at)
    [flag] = world.flags(batch=batch, rule="not-installed")
    assert_flag(
        flag,
        rule="not-installed",
        severity="warning",
        seq=delivered.seq,
        policy=world.default_policy,
        batch=batch,
        maybe={"party": cast.buyer, "site": cast.site},
    )
    assert flag in world.flags(rule="not-installed")


def test_not_installed_as_of_a_time_is_judged_with_that_time_as_the_clock(world: World) -> None:
    cast = dated_parties(world)
    delivered_at = days_ago(118)
    batch, _ = delivered_long_ago(world, cast, delivered_at)
    [flag] = world.flags(batch=batch, rule="not-installed")
    days = DEFAULT_THRESHOLDS["install_within_days"]
    assert world.flags(days_after(delivered_at, days - 1), batch=batch, rule="not-installed") == []
    assert world.flags(days_after(delivered_at, days + 1), batch=batch, rule="not-installed") == [
        flag
    ]


def test_not_installed_as_of_a_seq_is_judged_with_the_current_clock(world: World) -> None:
    cast = dated_parties(world)
    batch, delivered = delivered_long_ago(world, cast, days_ago(118))
    [flag] = world.flags(batch=batch, rule="not-installed")
    assert world.flags(delivered.seq, batch=batch, rule="not-installed") == [flag]


def test_not_installed_never_appears_in_a_receipt(world: World) -> None:
    cast = dated_parties(world)
    batch, _ = delivered_long_ago(world, cast, days_ago(118))
    rules = sorted(f["rule"] for f in world.flags(batch=batch))
    assert rules == ["late-report"] * 3 + ["not-installed"]
    # An event on the batch now: its receipt carries stored findings only.
    lost = world.act("batch.reported_lost", cast.buyer, batch, reason="Not found.")
    assert lost.rules == []


def test_not_installed_is_not_raised_once_installed(world: World) -> None:
    cast = dated_parties(world)
    delivered_at = days_ago(118)
    batch, _ = delivered_long_ago(world, cast, delivered_at)
    installed = world.install(batch, cast.buyer, cast.site, at=days_after(delivered_at, 1))
    assert installed.rules == ["late-report"]
    assert world.flags(batch=batch, rule="not-installed") == []


def test_not_installed_counts_from_the_latest_event_that_left_it_delivered(world: World) -> None:
    cast = dated_parties(world)
    batch, _ = delivered_long_ago(world, cast, days_ago(118))
    moved = world.relocate(batch, cast.buyer, cast.other_site, at=days_ago(20))
    assert moved.rules == ["late-report"]
    assert world.flags(batch=batch, rule="not-installed") == []
    recent, _ = delivered_long_ago(world, cast, days_ago(10))
    assert world.flags(batch=recent, rule="not-installed") == []


# --- time-judged: attestation-overdue -------------------------------------------------------


def attested_site(world: World, interval: int = 90) -> tuple[Dated, str, str, Step]:
    """A site holding chips licensed with an attestation interval, delivered (and installed,
    so not-installed stays out of the way) 148 days ago."""
    cast = dated_parties(world)
    license_id = world.license(
        cast.vendor,
        consignees=[cast.buyer],
        valid_from=days_ago(200),
        attestation_interval_days=interval,
        at=days_ago(200),
    )
    delivered_at = days_ago(148)
    batch, delivered = delivered_long_ago(world, cast, delivered_at, license=license_id)
    installed = world.install(batch, cast.buyer, cast.site, at=days_after(delivered_at, 1))
    assert installed.rules == ["late-report"]
    return cast, license_id, batch, delivered


def attest(world: World, cast: Dated, at: str) -> Step:
    event = make_event(
        "security.attested",
        cast.buyer,
        at=at,
        site=cast.site,
        period_start=days_after(at, -30),
        period_end=at,
        statement="No unauthorised access; chips on site as recorded.",
    )
    return world.submit(event, world.keys(cast.buyer))


def test_attestation_overdue_no_attestation_since_the_chips_arrived(world: World) -> None:
    cast, license_id, batch, delivered = attested_site(world)
    [flag] = world.flags(site=cast.site, rule="attestation-overdue")
    assert_flag(
        flag,
        rule="attestation-overdue",
        severity="warning",
        seq=delivered.seq,
        policy=world.default_policy,
        site=cast.site,
        party=cast.buyer,
        license=license_id,
        maybe={"batch": batch},
    )
    assert flag in world.flags(license=license_id)


def test_attestation_overdue_as_of_a_time_is_judged_with_that_time_as_the_clock(
    world: World,
) -> None:
    cast, _, _, delivered = attested_site(world)
    [flag] = world.flags(site=cast.site, rule="attestation-overdue")
    arrived = str(delivered.event["at"])
    assert world.flags(days_after(arrived, 89), site=cast.site, rule="attestation-overdue") == []
    assert world.flags(days_after(arrived, 91), site=cast.site, rule="attestation-overdue") == [
        flag
    ]


def test_attestation_overdue_as_of_a_seq_is_judged_with_the_current_clock(world: World) -> None:
    cast, _, _, _ = attested_site(world)
    [flag] = world.flags(site=cast.site, rule="attestation-overdue")
    assert world.flags(world.size() - 1, site=cast.site, rule="attestation-overdue") == [flag]


def test_attestation_overdue_the_last_attestation_is_older_than_the_interval(
    world: World,
) -> None:
    cast, license_id, _, _ = attested_site(world)
    attested = attest(world, cast, days_ago(100))
    assert attested.rules == ["late-report"], "an attestation's receipt: stored findings only"
    [flag] = world.flags(site=cast.site, rule="attestation-overdue")
    assert_flag(
        flag,
        rule="attestation-overdue",
        severity="warning",
        seq=attested.seq,
        policy=world.default_policy,
        site=cast.site,
        party=cast.buyer,
        license=license_id,
    )


def test_attestation_overdue_is_not_raised_after_a_recent_attestation(world: World) -> None:
    cast, _, _, _ = attested_site(world)
    attest(world, cast, days_ago(100))
    recent = attest(world, cast, world.timeline.next())
    assert recent.rules == []
    assert world.flags(site=cast.site, rule="attestation-overdue") == []


def test_time_judged_rules_never_appear_in_a_receipt(world: World) -> None:
    # Every receipt of this module is checked as it comes back; here the two rules are
    # present in GET /v1/flags while the receipts of the events that started their clocks
    # held late-report only.
    cast, _, batch, delivered = attested_site(world)
    assert delivered.rules == ["late-report"]
    judged = {f["rule"] for f in world.flags(site=cast.site)}
    assert "attestation-overdue" in judged
    overdue, left = delivered_long_ago(world, cast, days_ago(118))
    assert left.rules == ["late-report"]
    assert [f["seq"] for f in world.flags(batch=overdue, rule="not-installed")] == [left.seq]
    assert batch != overdue


# --- a rule pack adopted later --------------------------------------------------------------


@dataclass
class Adoption:
    world: World
    flags_before: list[JSONObject]
    adopted: Step
    pack: JSONObject
    vendor: str
    buyer: str


@pytest.fixture(scope="module")
def adoption(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adoption]:
    """A second ledger: findings under the default pack, then a pack adopted effective now."""
    server, client, bis = start(tmp_path_factory.mktemp("independent-rules-adoption"), "pack")
    try:
        timeline = Timeline(now() - timedelta(hours=3), timedelta(seconds=5))
        genesis(client, bis, timeline.next())
        default = client.get("/v1/policies/current").json()
        world = World(server, client, timeline, default, signers={"bis": bis})
        vendor, buyer = world.party("vendor", "US"), world.party("buyer", "AE")
        site = world.site(buyer, "AE")
        for destination in ("CN", "RU"):
            batch, _ = world.fabricate(vendor, 10)
            world.export(batch, vendor, buyer, destination)
        world.fabricate(vendor, 10, at=days_ago(4))
        world.shipped(vendor, buyer, site, 1200)
        flags_before = world.flags()
        assert {f["rule"] for f in flags_before} == {
            "license-required",
            "embargoed-destination",
            "late-report",
            "site-threshold",
        }
        effective = iso(now().replace(microsecond=0))
        pack: JSONObject = {
            "id": "rules-test-2026",
            "effective_from": effective,
            "groups": {"embargo": ["KP"], "license_required": ["KP"]},
            "thresholds": {
                "site_unlicensed": 5,
                "entity_country_strategic": 100,
                "late_report_hours": 1,
                "install_within_days": 1,
            },
            "models": {"H200": {"tpp": 15832}},
        }
        adopted = world.authority("policy.adopted", at=effective, policy=pack)
        assert adopted.rules == []
        yield Adoption(world, flags_before, adopted, pack, vendor, buyer)
    finally:
        client.close()
        server.stop()


def test_a_pack_adopted_later_leaves_earlier_flags_exactly_as_they_were(
    adoption: Adoption,
) -> None:
    world = adoption.world
    assert world.flags() == adoption.flags_before
    assert all(f["policy"] == world.default_policy for f in adoption.flags_before)
    assert world.flags(as_of=adoption.adopted.seq - 1) == adoption.flags_before


def test_a_pack_adopted_later_is_listed_and_current(adoption: Adoption) -> None:
    world = adoption.world
    assert world.read("/v1/policies") == {
        "policies": [
            {
                "id": adoption.pack["id"],
                "effective_from": adoption.pack["effective_from"],
                "seq": adoption.adopted.seq,
            }
        ]
    }
    assert world.read("/v1/policies/current") == adoption.pack
    before = world.read("/v1/policies/current", as_of=adoption.adopted.seq - 1)
    assert before == world.default_pack


def test_a_pack_adopted_later_judges_events_dated_from_its_effective_from(
    adoption: Adoption,
) -> None:
    world = adoption.world
    at = iso(now().replace(microsecond=0))
    assert at >= adoption.pack["effective_from"]
    batch, fabricated = world.fabricate(adoption.vendor, 10, at=at)
    assert fabricated.rules == []
    exported = world.export(batch, adoption.vendor, adoption.buyer, "CN", at=at)
    assert exported.rules == [], "CN is not in the adopted pack's license_required group"
    exported_kp = world.export(
        world.fabricate(adoption.vendor, 10, at=at)[0], adoption.vendor, adoption.buyer, "KP", at=at
    )
    finding = only(exported_kp, "embargoed-destination")
    assert finding["policy"] == adoption.pack["id"]


def test_an_event_dated_before_the_adopted_pack_is_judged_under_the_old_one(
    adoption: Adoption,
) -> None:
    world = adoption.world
    batch, _ = world.fabricate(adoption.vendor, 10)
    exported = world.export(batch, adoption.vendor, adoption.buyer, "CN")
    finding = only(exported, "license-required")
    assert_flag(
        finding,
        rule="license-required",
        severity="breach",
        seq=exported.seq,
        policy=world.default_policy,
        batch=batch,
        party=adoption.buyer,
    )
    assert world.flags()[: len(adoption.flags_before)] == adoption.flags_before
