"""Chip custody through a real `chipledger serve`, read back as PROTOCOL.md section 4 and 6 say.

The client is tests/independent/client.py, written from PROTOCOL.md and DOMAIN.md alone; nothing
here imports the project's packages (`ledger`, `api`, `tools`, `tests.support`). One server with
open reads serves the module; every test registers its own parties, so allocations are exact.
Events get distinct, increasing `at`s in the past, so `as_of` a time is as sharp as `as_of` a seq.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import pytest

from tests.independent.client import (
    JSONObject,
    LedgerClient,
    ServerProcess,
    Signer,
    Step,
    Timeline,
    accepted_step,
    format_time,
    init_ledger,
    make_event,
    now,
    parse_time,
    payload_bytes,
    sign,
)

STATE_REQUIRED = {
    "batch",
    "model",
    "quantity",
    "missing",
    "status",
    "owner",
    "holder",
    "serials_known",
    "head",
    "last_seq",
}
STATE_OPTIONAL = {"to", "country", "site", "license", "parent", "children"}
ALLOCATION_FIELDS = {"party", "total", "by_status", "by_country", "by_site", "by_model", "batches"}
ENTRY_FIELDS = {"seq", "recorded_at", "envelope", "event"}


# --- the ledger under test ------------------------------------------------------------------


def shifted(at: str, seconds: float) -> str:
    """`at` moved by `seconds`, as RFC 3339 UTC; fractional seconds written out when present."""
    moment = parse_time(at) + timedelta(seconds=seconds)
    if moment.microsecond == 0:
        return format_time(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def serial_numbers(batch: str, quantity: int) -> list[str]:
    return [f"SN-{batch}-{n:04d}" for n in range(quantity)]


@dataclass
class Custody:
    """The module's ledger and the parties the tests act as; tracks each batch's head."""

    server: ServerProcess
    client: LedgerClient
    timeline: Timeline
    signers: dict[str, Signer] = field(default_factory=dict)
    heads: dict[str, Step] = field(default_factory=dict)
    serials: dict[str, list[str]] = field(default_factory=dict)
    _names: Iterator[int] = field(default_factory=itertools.count)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    def keys(self, *parties: str) -> list[Signer]:
        return [self.signers[party] for party in parties]

    def submit(self, event: JSONObject, signers: Sequence[Signer]) -> Step:
        return accepted_step(self.client, event, signers)

    # registry

    def party(self, role: str, country: str = "AE", *, sites: Sequence[str] = ()) -> str:
        """A new party with one key, registered by the trust root, and its sites (countries)."""
        party = self.name(role)
        signer = Signer.from_label(f"custody {party}")
        record = {
            "id": party,
            "name": f"{party} Ltd",
            "roles": [role],
            "country": country,
            "keys": [signer.public_key_b64],
        }
        event = make_event("party.registered", "bis", at=self.timeline.next(), party=record)
        self.submit(event, [self.signers["bis"], signer])
        self.signers[party] = signer
        return party

    def site(self, operator: str, country: str = "AE") -> str:
        site = self.name("site")
        record = {"id": site, "operator": operator, "country": country, "name": f"Site {site}"}
        event = make_event("site.registered", operator, at=self.timeline.next(), site=record)
        self.submit(event, self.keys(operator))
        return site

    # batch events

    def event(
        self, type_: str, actor: str, batch: str, *, prev: str | None = None, **fields: Any
    ) -> JSONObject:
        """A batch event chained (section 3 `prev`) to the head this client last saw."""
        if prev is None and type_ != "batch.fabricated":
            prev = self.heads[batch].hash
        chain = {} if prev is None else {"prev": prev}
        fields.setdefault("at", self.timeline.next())
        return make_event(type_, actor, batch=batch, **chain, **fields)

    def act(
        self, type_: str, actor: str, batch: str, *, signers: Sequence[str] = (), **fields: Any
    ) -> Step:
        event = self.event(type_, actor, batch, **fields)
        step = self.submit(event, self.keys(*(signers or [actor])))
        self.heads[batch] = step
        for child in event.get("into", []):
            self.heads[child["batch"]] = step
        return step

    def fabricate(
        self,
        vendor: str,
        quantity: int,
        *,
        country: str = "TW",
        model: str = "H200",
        serials: bool = False,
    ) -> tuple[str, Step]:
        batch = self.name("B")
        fields: JSONObject = {"model": model, "quantity": quantity, "country": country}
        if serials:
            fields["serials"] = self.serials[batch] = serial_numbers(batch, quantity)
        return batch, self.act("batch.fabricated", vendor, batch, **fields)

    def export(self, batch: str, holder: str, to: str, destination: str = "AE") -> Step:
        return self.act("batch.exported", holder, batch, to=to, destination=destination)

    def deliver(self, batch: str, consignee: str, site: str, quantity: int, **more: Any) -> Step:
        return self.act("batch.delivered", consignee, batch, site=site, quantity=quantity, **more)

    def install(self, batch: str, holder: str, site: str) -> Step:
        return self.act("batch.installed", holder, batch, site=site)

    def relocate(self, batch: str, holder: str, site: str) -> Step:
        return self.act("batch.relocated", holder, batch, site=site)

    def transfer(self, batch: str, owner: str, to: str, site: str | None = None) -> Step:
        where = {} if site is None else {"site": site}
        return self.act("batch.transferred", owner, batch, signers=[owner, to], to=to, **where)

    def split(self, batch: str, holder: str, quantities: Sequence[int]) -> tuple[list[str], Step]:
        children = [self.name(f"{batch}.c") for _ in quantities]
        into: list[JSONObject] = []
        known = self.serials.get(batch)
        start = 0
        for child, quantity in zip(children, quantities, strict=True):
            part: JSONObject = {"batch": child, "quantity": quantity}
            if known is not None:
                part["serials"] = self.serials[child] = known[start : start + quantity]
            start += quantity
            into.append(part)
        return children, self.act("batch.split", holder, batch, into=into)

    def decommission(self, batch: str, holder: str) -> Step:
        return self.act("batch.decommissioned", holder, batch, reason="End of life, shredded.")

    def report_lost(self, batch: str, actor: str) -> Step:
        return self.act("batch.reported_lost", actor, batch, reason="Not found at stocktake.")

    # reads (section 6)

    def read(self, path: str, as_of: int | str | None = None) -> JSONObject:
        response = self.client.read(path, as_of)
        assert response.status_code == 200, f"GET {path} as_of {as_of}: {response.text}"
        assert response.headers.get("X-Chipledger-Open-Reads") == "true"
        body: JSONObject = response.json()
        return body

    def state(self, batch: str, as_of: int | str | None = None) -> JSONObject:
        body = self.read(f"/v1/batches/{batch}", as_of)
        assert STATE_REQUIRED <= set(body) <= STATE_REQUIRED | STATE_OPTIONAL, body
        return body

    def history(self, batch: str, as_of: int | str | None = None) -> list[JSONObject]:
        body = self.read(f"/v1/batches/{batch}/history", as_of)
        assert set(body) == {"batch", "entries"}
        assert body["batch"] == batch
        entries: list[JSONObject] = body["entries"]
        for entry in entries:
            assert set(entry) == ENTRY_FIELDS, entry
        return entries

    def holder_of(self, serial: str, as_of: int | str | None = None) -> str:
        body = self.read(f"/v1/serials/{serial}", as_of)
        assert set(body) == {"serial", "batch"}
        assert body["serial"] == serial
        return str(body["batch"])

    def allocation(self, party: str, as_of: int | str | None = None) -> JSONObject:
        """The allocation, with zero counts dropped and `batches` sorted (neither is specified)."""
        body = self.read(f"/v1/parties/{party}/allocation", as_of)
        assert set(body) == ALLOCATION_FIELDS, body
        assert len(set(body["batches"])) == len(body["batches"]), body
        normal: JSONObject = {
            "party": body["party"],
            "total": body["total"],
            "batches": sorted(body["batches"]),
        }
        for key in ("by_status", "by_country", "by_site", "by_model"):
            counts = body[key]
            assert all(isinstance(v, int) and v >= 0 for v in counts.values()), body
            normal[key] = {k: v for k, v in counts.items() if v}
        return normal

    def size(self) -> int:
        return self.client.size()

    # refusals (section 5)

    def snapshot(self, batch: object) -> tuple[object, ...]:
        if not isinstance(batch, str):
            return ()
        reads = (f"/v1/batches/{batch}", f"/v1/batches/{batch}/history")
        return tuple((r.status_code, r.json()) for r in (self.client.read(path) for path in reads))

    def refuse(
        self,
        event: JSONObject,
        signers: Sequence[Signer],
        status: int,
        code: str,
        *,
        or_else: tuple[int, str] | None = None,
    ) -> JSONObject:
        """Send `event`; it must get `status` and `code` (or `or_else`, where the spec reads
        both ways), store nothing, and change no batch."""
        size, before = self.size(), self.snapshot(event.get("batch"))
        response = self.client.post_event(sign(event, signers))
        assert response.status_code < 500, response.text
        error: JSONObject = response.json()["error"]
        answers = {(status, code), *([or_else] if or_else else [])}
        assert (response.status_code, error["code"]) in answers, response.text
        assert isinstance(error["message"], str)
        assert " " in error["message"].strip(), error
        assert self.size() == size, "a refused envelope must store nothing"
        assert self.snapshot(event.get("batch")) == before
        return error


def state_of(
    batch: str,
    head: Step,
    *,
    quantity: int,
    status: str,
    owner: str,
    holder: str | None = None,
    model: str = "H200",
    missing: int = 0,
    serials_known: bool = False,
    **optional: str | list[str] | None,
) -> JSONObject:
    """The exact `GET /v1/batches/{id}` body of section 6; optional fields left out when None."""
    assert set(optional) <= STATE_OPTIONAL
    state: JSONObject = {
        "batch": batch,
        "model": model,
        "quantity": quantity,
        "missing": missing,
        "status": status,
        "owner": owner,
        "holder": holder or owner,
        "serials_known": serials_known,
        "head": head.hash,
        "last_seq": head.seq,
    }
    state.update({key: value for key, value in optional.items() if value is not None})
    return state


def assert_ended_state(actual: JSONObject, expected: JSONObject) -> None:
    """A split, decommissioned or lost batch: section 4 changes its status (and a split's
    `children`) only, while section 6 gives `country` and `site` "only when at a site". Its
    chips are gone or in its children, so both readings are taken: at its last site, or none."""
    placeless = {key: value for key, value in expected.items() if key not in ("site", "country")}
    assert actual in (expected, placeless), f"{actual} is neither {expected} nor {placeless}"


@dataclass(frozen=True)
class Holding:
    batch: str
    quantity: int
    status: str
    country: str
    site: str | None = None
    model: str = "H200"


def allocation_of(party: str, *holdings: Holding) -> JSONObject:
    """The allocation (normalised as `Custody.allocation`) of these holdings."""
    expected: JSONObject = {
        "party": party,
        "total": sum(h.quantity for h in holdings),
        "batches": sorted(h.batch for h in holdings),
    }
    for key, attribute in (
        ("by_status", "status"),
        ("by_country", "country"),
        ("by_site", "site"),
        ("by_model", "model"),
    ):
        counts: dict[str, int] = {}
        for holding in holdings:
            label = getattr(holding, attribute)
            if label is not None:
                counts[label] = counts.get(label, 0) + holding.quantity
        expected[key] = counts
    return expected


def entry_of(step: Step) -> JSONObject:
    """A history entry as section 6 gives it: the envelope as sent and the decoded event."""
    return {
        "seq": step.seq,
        "recorded_at": step.receipt["recorded_at"],
        "envelope": step.envelope,
        "event": step.event,
    }


@pytest.fixture(scope="module")
def custody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Custody]:
    directory = tmp_path_factory.mktemp("independent-custody")
    bis = Signer.from_label("custody bis")
    store, log_key = init_ledger(directory, bis)
    server = ServerProcess(store, log_key, open_reads=True)
    server.start()
    client = LedgerClient(server.url)
    # 5 s apart from 3 h ago: room for 2,160 events, every one of them in the past.
    timeline = Timeline(now() - timedelta(hours=3), timedelta(seconds=5))
    world = Custody(server, client, timeline, signers={"bis": bis})
    try:
        genesis = {
            "id": "bis",
            "name": "Bureau of Industry and Security",
            "roles": ["authority"],
            "country": "US",
            "keys": [bis.public_key_b64],
        }
        world.submit(
            make_event("party.registered", "bis", at=timeline.next(), party=genesis), [bis]
        )
        yield world
    finally:
        client.close()
        server.stop()


# --- DOMAIN scenario 1: fab (TW) -> export to AE -> delivery -> installed --------------------

STORY_STEPS = ["fabricated", "exported", "delivered", "installed"]


@dataclass
class Story:
    batch: str
    vendor: str
    buyer: str
    site: str
    serials: list[str]
    size_before: int
    steps: dict[str, Step] = field(default_factory=dict)
    states: dict[str, JSONObject] = field(default_factory=dict)
    histories: dict[str, list[JSONObject]] = field(default_factory=dict)
    buyer_allocations: dict[str, JSONObject] = field(default_factory=dict)
    vendor_allocations: dict[str, JSONObject] = field(default_factory=dict)
    holders: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def story(custody: Custody) -> Story:
    """Scenario 1, with every read taken right after each step, before the next one."""
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = custody.site(buyer, "AE")
    size_before = custody.size()
    batch, fabricated = custody.fabricate(vendor, 64, country="TW", serials=True)
    told = Story(batch, vendor, buyer, site, custody.serials[batch], size_before)

    def record(name: str, step: Step) -> None:
        told.steps[name] = step
        told.states[name] = custody.state(batch)
        told.histories[name] = custody.history(batch)
        told.buyer_allocations[name] = custody.allocation(buyer)
        told.vendor_allocations[name] = custody.allocation(vendor)
        told.holders[name] = custody.holder_of(told.serials[0])

    record("fabricated", fabricated)
    record("exported", custody.export(batch, vendor, buyer, "AE"))
    record("delivered", custody.deliver(batch, buyer, site, 64, serials=told.serials))
    record("installed", custody.install(batch, buyer, site))
    return told


def story_state(story: Story, name: str) -> JSONObject:
    """What section 4 says the batch is after step `name` of scenario 1."""
    head = story.steps[name]
    common: dict[str, Any] = {"quantity": 64, "serials_known": True}
    if name == "fabricated":
        return state_of(story.batch, head, status="fabricated", owner=story.vendor, **common)
    if name == "exported":
        return state_of(
            story.batch, head, status="in_transit", owner=story.vendor, to=story.buyer, **common
        )
    status = "delivered" if name == "delivered" else "installed"
    return state_of(
        story.batch, head, status=status, owner=story.buyer, site=story.site, country="AE", **common
    )


def story_allocation(story: Story, name: str) -> JSONObject:
    if name == "fabricated":
        return allocation_of(story.buyer)
    if name == "exported":
        return allocation_of(story.buyer, Holding(story.batch, 64, "in_transit", "AE"))
    status = "delivered" if name == "delivered" else "installed"
    return allocation_of(story.buyer, Holding(story.batch, 64, status, "AE", story.site))


def test_scenario_1_each_step_is_accepted_in_seq_order_with_no_findings(story: Story) -> None:
    steps = [story.steps[name] for name in STORY_STEPS]
    assert [s.seq for s in steps] == list(range(story.size_before, story.size_before + 4))
    for name, step in zip(STORY_STEPS, steps, strict=True):
        assert step.receipt["type"] == f"batch.{name}"
        assert step.receipt["findings"] == [], name


@pytest.mark.parametrize("name", STORY_STEPS)
def test_scenario_1_the_batch_state_after_each_step_is_exactly_the_section_4_state(
    story: Story, name: str
) -> None:
    assert story.states[name] == story_state(story, name)


@pytest.mark.parametrize("name", STORY_STEPS)
def test_scenario_1_history_after_each_step_holds_every_envelope_as_sent_in_order(
    story: Story, name: str
) -> None:
    upto = STORY_STEPS.index(name) + 1
    expected = [entry_of(story.steps[n]) for n in STORY_STEPS[:upto]]
    assert story.histories[name] == expected
    for entry in story.histories[name]:
        assert json.loads(payload_bytes(entry["envelope"])) == entry["event"]


@pytest.mark.parametrize("name", STORY_STEPS)
def test_scenario_1_the_buyers_allocation_follows_the_batch_to_installed_in_ae(
    story: Story, name: str
) -> None:
    assert story.buyer_allocations[name] == story_allocation(story, name)


def test_scenario_1_the_vendor_never_has_the_batch_in_its_allocation(story: Story) -> None:
    # Only chips in transit to a party, or owned and delivered or installed, count (section 6).
    for name in STORY_STEPS:
        assert story.vendor_allocations[name] == allocation_of(story.vendor), name


def test_scenario_1_every_serial_names_the_batch_at_every_step(
    custody: Custody, story: Story
) -> None:
    assert story.holders == dict.fromkeys(STORY_STEPS, story.batch)
    for serial in story.serials:
        assert custody.holder_of(serial) == story.batch


@pytest.mark.parametrize("name", STORY_STEPS)
def test_scenario_1_as_of_each_steps_seq_gives_that_steps_answers_after_the_batch_moved_on(
    custody: Custody, story: Story, name: str
) -> None:
    seq = story.steps[name].seq
    assert custody.state(story.batch, seq) == story.states[name]
    assert custody.history(story.batch, seq) == story.histories[name]
    assert custody.allocation(story.buyer, seq) == story.buyer_allocations[name]
    assert custody.holder_of(story.serials[0], seq) == story.batch


@pytest.mark.parametrize("name", STORY_STEPS)
@pytest.mark.parametrize("offset", [0, 2.5], ids=["at-its-at", "between-steps"])
def test_scenario_1_as_of_each_steps_time_gives_that_steps_answers_after_the_batch_moved_on(
    custody: Custody, story: Story, name: str, offset: float
) -> None:
    moment = shifted(story.steps[name].at, offset)
    assert custody.state(story.batch, moment) == story.states[name]
    assert custody.history(story.batch, moment) == story.histories[name]
    assert custody.allocation(story.buyer, moment) == story.buyer_allocations[name]
    assert custody.holder_of(story.serials[-1], moment) == story.batch


def test_scenario_1_before_its_fabrication_the_batch_and_its_serials_are_404(
    custody: Custody, story: Story
) -> None:
    before_seq = story.steps["fabricated"].seq - 1
    before_time = shifted(story.steps["fabricated"].at, -1)
    for as_of in (before_seq, before_time):
        for path in (
            f"/v1/batches/{story.batch}",
            f"/v1/batches/{story.batch}/history",
            f"/v1/serials/{story.serials[0]}",
        ):
            response = custody.client.read(path, as_of)
            assert response.status_code == 404, f"{path} as_of {as_of}: {response.text}"
            assert response.json()["error"]["code"] == "not_found"
        assert custody.allocation(story.buyer, as_of) == allocation_of(story.buyer)


# --- as_of at the end of the log, and bad values ---------------------------------------------


def test_as_of_the_last_seq_is_now_and_one_past_the_end_of_the_log_is_404(
    custody: Custody, story: Story
) -> None:
    last = custody.size() - 1
    assert custody.state(story.batch, last) == custody.state(story.batch)
    assert custody.allocation(story.buyer, last) == custody.allocation(story.buyer)
    for path in (
        f"/v1/batches/{story.batch}",
        f"/v1/batches/{story.batch}/history",
        f"/v1/serials/{story.serials[0]}",
        f"/v1/parties/{story.buyer}/allocation",
    ):
        response = custody.client.read(path, last + 1)
        assert response.status_code == 404, f"{path}: {response.text}"
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("as_of", ["yesterday", "2026-13-01T00:00:00Z", "1.5"])
def test_as_of_that_is_neither_a_seq_nor_a_time_is_400_bad_request(
    custody: Custody, story: Story, as_of: str
) -> None:
    for path in (f"/v1/batches/{story.batch}", f"/v1/parties/{story.buyer}/allocation"):
        response = custody.client.read(path, as_of)
        assert response.status_code == 400, f"{path} as_of {as_of}: {response.text}"
        assert response.json()["error"]["code"] == "bad_request"


def test_unknown_batch_serial_and_party_are_404(custody: Custody) -> None:
    for path in (
        "/v1/batches/no-such-batch",
        "/v1/batches/no-such-batch/history",
        "/v1/serials/SN-NO-SUCH-SERIAL",
        "/v1/parties/no-such-party/allocation",
    ):
        response = custody.client.read(path)
        assert response.status_code == 404, f"{path}: {response.text}"
        assert response.json()["error"]["code"] == "not_found"


# --- relocation -----------------------------------------------------------------------------


@dataclass
class Site:
    id: str
    country: str


@dataclass
class Delivered:
    """A batch delivered at `site` of `buyer`, made by `vendor`."""

    batch: str
    vendor: str
    buyer: str
    site: Site
    quantity: int
    steps: list[Step]


def delivered_batch(
    custody: Custody, quantity: int = 10, *, country: str = "AE", serials: bool = False
) -> Delivered:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = Site(custody.site(buyer, country), country)
    batch, fabricated = custody.fabricate(vendor, quantity, serials=serials)
    exported = custody.export(batch, vendor, buyer, country)
    more = {"serials": custody.serials[batch]} if serials else {}
    delivered = custody.deliver(batch, buyer, site.id, quantity, **more)
    return Delivered(batch, vendor, buyer, site, quantity, [fabricated, exported, delivered])


def test_relocation_moves_the_batch_to_another_site_of_its_holder(custody: Custody) -> None:
    got = delivered_batch(custody, 12)
    second = custody.site(got.buyer, "AE")
    delivered = got.steps[-1]
    step = custody.relocate(got.batch, got.buyer, second)

    assert custody.state(got.batch) == state_of(
        got.batch, step, quantity=12, status="delivered", owner=got.buyer, site=second, country="AE"
    )
    assert custody.allocation(got.buyer) == allocation_of(
        got.buyer, Holding(got.batch, 12, "delivered", "AE", second)
    )
    at_delivery = state_of(
        got.batch,
        delivered,
        quantity=12,
        status="delivered",
        owner=got.buyer,
        site=got.site.id,
        country="AE",
    )
    before = allocation_of(got.buyer, Holding(got.batch, 12, "delivered", "AE", got.site.id))
    for as_of in (delivered.seq, delivered.at, step.seq - 1, shifted(step.at, -1)):
        assert custody.state(got.batch, as_of) == at_delivery, as_of
        assert custody.allocation(got.buyer, as_of) == before, as_of


def test_relocating_an_installed_batch_uninstalls_it(custody: Custody) -> None:
    got = delivered_batch(custody, 8)
    second = custody.site(got.buyer, "AE")
    installed = custody.install(got.batch, got.buyer, got.site.id)
    step = custody.relocate(got.batch, got.buyer, second)

    assert custody.state(got.batch) == state_of(
        got.batch, step, quantity=8, status="delivered", owner=got.buyer, site=second, country="AE"
    )
    assert custody.state(got.batch, installed.seq)["status"] == "installed"
    assert custody.state(got.batch, installed.at)["site"] == got.site.id


def test_relocation_across_a_border_takes_the_new_sites_country(custody: Custody) -> None:
    got = delivered_batch(custody, 5)
    abroad = custody.site(got.buyer, "SA")
    step = custody.relocate(got.batch, got.buyer, abroad)

    assert custody.state(got.batch) == state_of(
        got.batch, step, quantity=5, status="delivered", owner=got.buyer, site=abroad, country="SA"
    )
    assert custody.allocation(got.buyer) == allocation_of(
        got.buyer, Holding(got.batch, 5, "delivered", "SA", abroad)
    )
    assert custody.allocation(got.buyer, step.seq - 1)["by_country"] == {"AE": 5}


# --- transfer -------------------------------------------------------------------------------


def test_a_transfer_in_place_changes_the_title_but_not_the_holder_status_or_site(
    custody: Custody,
) -> None:
    got = delivered_batch(custody, 20)
    receiver = custody.party("buyer", "AE")
    step = custody.transfer(got.batch, got.buyer, receiver)

    assert step.receipt["type"] == "batch.transferred"
    assert custody.state(got.batch) == state_of(
        got.batch,
        step,
        quantity=20,
        status="delivered",
        owner=receiver,
        holder=got.buyer,
        site=got.site.id,
        country="AE",
    )
    holding = Holding(got.batch, 20, "delivered", "AE", got.site.id)
    assert custody.allocation(receiver) == allocation_of(receiver, holding)
    assert custody.allocation(got.buyer) == allocation_of(got.buyer)
    for as_of in (step.seq - 1, shifted(step.at, -1)):
        assert custody.allocation(got.buyer, as_of) == allocation_of(got.buyer, holding)
        assert custody.allocation(receiver, as_of) == allocation_of(receiver)
        assert custody.state(got.batch, as_of)["owner"] == got.buyer


def test_a_transfer_in_place_keeps_an_installed_batch_installed(custody: Custody) -> None:
    got = delivered_batch(custody, 6)
    custody.install(got.batch, got.buyer, got.site.id)
    receiver = custody.party("buyer", "AE")
    step = custody.transfer(got.batch, got.buyer, receiver)

    assert custody.state(got.batch) == state_of(
        got.batch,
        step,
        quantity=6,
        status="installed",
        owner=receiver,
        holder=got.buyer,
        site=got.site.id,
        country="AE",
    )


def test_a_transfer_with_a_site_hands_over_title_and_custody_and_moves_the_batch(
    custody: Custody,
) -> None:
    got = delivered_batch(custody, 30)
    custody.install(got.batch, got.buyer, got.site.id)
    receiver = custody.party("buyer", "AE")
    there = custody.site(receiver, "AE")
    step = custody.transfer(got.batch, got.buyer, receiver, site=there)

    assert custody.state(got.batch) == state_of(
        got.batch, step, quantity=30, status="delivered", owner=receiver, site=there, country="AE"
    )
    assert custody.allocation(receiver) == allocation_of(
        receiver, Holding(got.batch, 30, "delivered", "AE", there)
    )
    assert custody.allocation(got.buyer) == allocation_of(got.buyer)
    assert custody.allocation(got.buyer, step.seq - 1) == allocation_of(
        got.buyer, Holding(got.batch, 30, "installed", "AE", got.site.id)
    )


def test_a_fabricated_batch_sold_in_place_stays_with_the_vendor_until_exported_and_delivered(
    custody: Custody,
) -> None:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = custody.site(buyer, "AE")
    batch, _ = custody.fabricate(vendor, 40)
    sold = custody.transfer(batch, vendor, buyer)
    assert custody.state(batch) == state_of(
        batch, sold, quantity=40, status="fabricated", owner=buyer, holder=vendor
    )
    assert custody.allocation(buyer) == allocation_of(buyer)

    shipped = custody.export(batch, vendor, buyer, "AE")  # the holder exports, not the owner
    assert custody.state(batch) == state_of(
        batch, shipped, quantity=40, status="in_transit", owner=buyer, holder=vendor, to=buyer
    )
    assert custody.allocation(buyer) == allocation_of(buyer, Holding(batch, 40, "in_transit", "AE"))

    received = custody.deliver(batch, buyer, site, 40)
    assert custody.state(batch) == state_of(
        batch, received, quantity=40, status="delivered", owner=buyer, site=site, country="AE"
    )


def test_the_owner_who_is_not_the_holder_transfers_the_title_again(custody: Custody) -> None:
    got = delivered_batch(custody, 9)
    first, second = custody.party("buyer", "AE"), custody.party("buyer", "AE")
    custody.transfer(got.batch, got.buyer, first)
    step = custody.transfer(got.batch, first, second)
    assert custody.state(got.batch) == state_of(
        got.batch,
        step,
        quantity=9,
        status="delivered",
        owner=second,
        holder=got.buyer,
        site=got.site.id,
        country="AE",
    )


# --- split ----------------------------------------------------------------------------------


def test_a_split_gives_each_child_the_parents_state_with_its_own_quantity_and_serials(
    custody: Custody,
) -> None:
    got = delivered_batch(custody, 10, serials=True)
    children, split = custody.split(got.batch, got.buyer, [6, 4])
    at_site: dict[str, Any] = {"owner": got.buyer, "site": got.site.id, "country": "AE"}

    assert_ended_state(
        custody.state(got.batch),
        state_of(
            got.batch,
            split,
            quantity=10,
            status="split",
            children=children,
            serials_known=True,
            **at_site,
        ),
    )
    for child, quantity in zip(children, [6, 4], strict=True):
        assert custody.state(child) == state_of(
            child,
            split,
            quantity=quantity,
            status="delivered",
            parent=got.batch,
            serials_known=True,
            **at_site,
        )
        for serial in custody.serials[child]:
            assert custody.holder_of(serial) == child
    assert custody.allocation(got.buyer) == allocation_of(
        got.buyer,
        Holding(children[0], 6, "delivered", "AE", got.site.id),
        Holding(children[1], 4, "delivered", "AE", got.site.id),
    )


def test_before_the_split_the_parent_is_whole_and_its_children_do_not_exist(
    custody: Custody,
) -> None:
    got = delivered_batch(custody, 10, serials=True)
    children, split = custody.split(got.batch, got.buyer, [3, 7])
    custody.install(children[0], got.buyer, got.site.id)
    delivered = got.steps[-1]
    whole = state_of(
        got.batch,
        delivered,
        quantity=10,
        status="delivered",
        owner=got.buyer,
        site=got.site.id,
        country="AE",
        serials_known=True,
    )
    for as_of in (split.seq - 1, shifted(split.at, -1)):
        assert custody.state(got.batch, as_of) == whole
        assert custody.holder_of(custody.serials[children[1]][0], as_of) == got.batch
        assert custody.allocation(got.buyer, as_of) == allocation_of(
            got.buyer, Holding(got.batch, 10, "delivered", "AE", got.site.id)
        )
        for child in children:
            response = custody.client.read(f"/v1/batches/{child}", as_of)
            assert response.status_code == 404, response.text


def test_a_childs_history_is_its_parents_then_its_own_and_its_first_event_chains_to_the_split(
    custody: Custody,
) -> None:
    got = delivered_batch(custody, 10)
    children, split = custody.split(got.batch, got.buyer, [5, 5])
    parent_entries = [entry_of(step) for step in [*got.steps, split]]
    assert custody.history(children[0]) == parent_entries
    assert custody.history(got.batch) == parent_entries

    own = custody.install(children[0], got.buyer, got.site.id)
    assert own.event["prev"] == split.hash
    assert custody.history(children[0]) == [*parent_entries, entry_of(own)]
    assert custody.history(children[1]) == parent_entries  # a sibling's event is not its own
    assert custody.history(got.batch) == parent_entries  # nor the parent's
    assert custody.history(children[0], own.seq - 1) == parent_entries
    assert custody.state(children[0]) == state_of(
        children[0],
        own,
        quantity=5,
        status="installed",
        owner=got.buyer,
        site=got.site.id,
        country="AE",
        parent=got.batch,
    )


def test_a_grandchilds_history_holds_every_ancestors_entries(custody: Custody) -> None:
    vendor = custody.party("vendor", "US")
    batch, fabricated = custody.fabricate(vendor, 12, serials=True)
    children, first_split = custody.split(batch, vendor, [8, 4])
    grandchildren, second_split = custody.split(children[0], vendor, [2, 6])

    assert custody.history(grandchildren[1]) == [
        entry_of(fabricated),
        entry_of(first_split),
        entry_of(second_split),
    ]
    assert custody.state(grandchildren[1]) == state_of(
        grandchildren[1],
        second_split,
        quantity=6,
        status="fabricated",
        owner=vendor,
        parent=children[0],
        serials_known=True,
    )
    assert custody.state(children[0]) == state_of(
        children[0],
        second_split,
        quantity=8,
        status="split",
        owner=vendor,
        parent=batch,
        children=grandchildren,
        serials_known=True,
    )
    serial = custody.serials[grandchildren[1]][0]
    assert custody.holder_of(serial) == grandchildren[1]
    assert custody.holder_of(serial, first_split.seq) == children[0]
    assert custody.holder_of(serial, fabricated.at) == batch


def test_children_of_a_batch_without_serials_have_no_serials_either(custody: Custody) -> None:
    vendor = custody.party("vendor", "US")
    batch, _ = custody.fabricate(vendor, 7)
    children, split = custody.split(batch, vendor, [1, 2, 4])
    for child, quantity in zip(children, [1, 2, 4], strict=True):
        assert custody.state(child) == state_of(
            child, split, quantity=quantity, status="fabricated", owner=vendor, parent=batch
        )


# --- decommission, loss ---------------------------------------------------------------------


def test_decommissioning_ends_the_batch_and_drops_it_from_the_allocation(
    custody: Custody,
) -> None:
    got = delivered_batch(custody, 11)
    installed = custody.install(got.batch, got.buyer, got.site.id)
    step = custody.decommission(got.batch, got.buyer)

    assert_ended_state(
        custody.state(got.batch),
        state_of(
            got.batch,
            step,
            quantity=11,
            status="decommissioned",
            owner=got.buyer,
            site=got.site.id,
            country="AE",
        ),
    )
    assert custody.allocation(got.buyer) == allocation_of(got.buyer)
    assert custody.allocation(got.buyer, installed.seq) == allocation_of(
        got.buyer, Holding(got.batch, 11, "installed", "AE", got.site.id)
    )


def test_the_holder_reports_a_batch_lost(custody: Custody) -> None:
    got = delivered_batch(custody, 4)
    step = custody.report_lost(got.batch, got.buyer)
    assert_ended_state(
        custody.state(got.batch),
        state_of(
            got.batch,
            step,
            quantity=4,
            status="lost",
            owner=got.buyer,
            site=got.site.id,
            country="AE",
        ),
    )
    assert custody.allocation(got.buyer) == allocation_of(got.buyer)


def test_the_owner_who_is_not_the_holder_reports_a_batch_lost(custody: Custody) -> None:
    got = delivered_batch(custody, 4)
    owner = custody.party("buyer", "AE")
    custody.transfer(got.batch, got.buyer, owner)
    step = custody.report_lost(got.batch, owner)
    assert_ended_state(
        custody.state(got.batch),
        state_of(
            got.batch,
            step,
            quantity=4,
            status="lost",
            owner=owner,
            holder=got.buyer,
            site=got.site.id,
            country="AE",
        ),
    )


def test_an_authority_other_than_the_trust_root_reports_a_batch_in_transit_lost(
    custody: Custody,
) -> None:
    authority = custody.party("authority", "US")
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    batch, _ = custody.fabricate(vendor, 15)
    shipped = custody.export(batch, vendor, buyer, "AE")
    step = custody.report_lost(batch, authority)

    # `to` is the consignee while in transit (section 4); a lost batch is no longer in transit.
    assert custody.state(batch) == state_of(batch, step, quantity=15, status="lost", owner=vendor)
    assert custody.allocation(buyer) == allocation_of(buyer)
    assert custody.allocation(buyer, shipped.seq) == allocation_of(
        buyer, Holding(batch, 15, "in_transit", "AE")
    )


# --- DOMAIN scenario 11: a short delivery ---------------------------------------------------


def test_scenario_11_a_short_delivery_holds_what_was_received_and_counts_the_rest_missing(
    custody: Custody,
) -> None:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = custody.site(buyer, "AE")
    batch, _ = custody.fabricate(vendor, 100)
    shipped = custody.export(batch, vendor, buyer, "AE")
    received = custody.deliver(batch, buyer, site, 90)

    assert custody.state(batch) == state_of(
        batch,
        received,
        quantity=90,
        missing=10,
        status="delivered",
        owner=buyer,
        site=site,
        country="AE",
    )
    assert custody.allocation(buyer) == allocation_of(
        buyer, Holding(batch, 90, "delivered", "AE", site)
    )
    assert custody.state(batch, shipped.seq)["quantity"] == 100
    assert custody.state(batch, shipped.at)["missing"] == 0


def test_missing_chips_add_up_over_two_short_deliveries(custody: Custody) -> None:
    vendor = custody.party("vendor", "US")
    buyer, other = custody.party("buyer", "AE"), custody.party("buyer", "AE")
    site, other_site = custody.site(buyer, "AE"), custody.site(other, "AE")
    batch, _ = custody.fabricate(vendor, 100)
    custody.export(batch, vendor, buyer, "AE")
    custody.deliver(batch, buyer, site, 90)
    custody.export(batch, buyer, other, "AE")
    step = custody.deliver(batch, other, other_site, 85)
    assert custody.state(batch) == state_of(
        batch,
        step,
        quantity=85,
        missing=15,
        status="delivered",
        owner=other,
        site=other_site,
        country="AE",
    )


def test_a_short_delivery_naming_its_serials_keeps_the_received_serials_known(
    custody: Custody,
) -> None:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = custody.site(buyer, "AE")
    batch, _ = custody.fabricate(vendor, 100, serials=True)
    custody.export(batch, vendor, buyer, "AE")
    received = custody.serials[batch][:90]
    step = custody.deliver(batch, buyer, site, 90, serials=received)

    assert custody.state(batch) == state_of(
        batch,
        step,
        quantity=90,
        missing=10,
        status="delivered",
        owner=buyer,
        site=site,
        country="AE",
        serials_known=True,
    )
    assert custody.holder_of(received[0]) == batch
    assert custody.holder_of(received[-1]) == batch


def test_a_short_delivery_naming_no_serials_leaves_the_serials_unknown(custody: Custody) -> None:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = custody.site(buyer, "AE")
    batch, _ = custody.fabricate(vendor, 100, serials=True)
    shipped = custody.export(batch, vendor, buyer, "AE")
    step = custody.deliver(batch, buyer, site, 90)

    assert custody.state(batch) == state_of(
        batch,
        step,
        quantity=90,
        missing=10,
        status="delivered",
        owner=buyer,
        site=site,
        country="AE",
    )
    assert custody.state(batch, shipped.seq)["serials_known"] is True


def test_scenario_11_a_short_delivery_raises_delivery_shortfall(custody: Custody) -> None:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = custody.site(buyer, "AE")
    batch, _ = custody.fabricate(vendor, 100)
    custody.export(batch, vendor, buyer, "AE")
    received = custody.deliver(batch, buyer, site, 90)
    rules = [finding["rule"] for finding in received.receipt["findings"]]
    assert rules == ["delivery-shortfall"]


# --- serials --------------------------------------------------------------------------------


def test_a_serial_names_the_batch_that_holds_it_now_and_at_any_earlier_moment(
    custody: Custody,
) -> None:
    got = delivered_batch(custody, 6, serials=True)
    serial = custody.serials[got.batch][5]
    children, split = custody.split(got.batch, got.buyer, [2, 4])
    grandchildren, resplit = custody.split(children[1], got.buyer, [1, 3])

    assert custody.holder_of(serial) == grandchildren[1]
    assert custody.holder_of(serial, resplit.at) == grandchildren[1]
    assert custody.holder_of(serial, resplit.seq - 1) == children[1]
    assert custody.holder_of(serial, split.seq) == children[1]
    assert custody.holder_of(serial, shifted(split.at, -1)) == got.batch
    assert custody.holder_of(serial, got.steps[0].seq) == got.batch


def test_fabricating_a_serial_that_exists_is_409_and_stores_nothing(custody: Custody) -> None:
    got = delivered_batch(custody, 2, serials=True)
    taken = custody.serials[got.batch][1]
    event = custody.event(
        "batch.fabricated",
        got.vendor,
        custody.name("B"),
        model="H200",
        quantity=2,
        country="TW",
        serials=["SN-fresh-serial-x", taken],
    )
    size = custody.size()
    response = custody.client.post_event(sign(event, custody.keys(got.vendor)))
    assert response.status_code == 409, response.text
    # Section 4 says "a 409" without a code; a reused id is `conflict` (section 5).
    assert response.json()["error"]["code"] == "conflict"
    assert custody.size() == size
    assert custody.holder_of(taken) == got.batch
    assert custody.client.read("/v1/serials/SN-fresh-serial-x").status_code == 404


# --- DOMAIN scenario 10: refused, nothing stored --------------------------------------------


@dataclass
class InTransit:
    batch: str
    vendor: str
    buyer: str
    site: str
    steps: list[Step]


def batch_in_transit(custody: Custody, quantity: int = 10) -> InTransit:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    site = custody.site(buyer, "AE")
    batch, fabricated = custody.fabricate(vendor, quantity)
    exported = custody.export(batch, vendor, buyer, "AE")
    return InTransit(batch, vendor, buyer, site, [fabricated, exported])


def test_scenario_10_a_delivery_acknowledged_by_someone_other_than_the_consignee_is_403(
    custody: Custody,
) -> None:
    got = batch_in_transit(custody)
    intruder = custody.party("buyer", "AE")
    intruders_site = custody.site(intruder, "AE")

    as_itself = custody.event(
        "batch.delivered", intruder, got.batch, site=intruders_site, quantity=10
    )
    custody.refuse(as_itself, custody.keys(intruder), 403, "not_authorized")
    in_the_consignees_name = custody.event(
        "batch.delivered", got.buyer, got.batch, site=got.site, quantity=10
    )
    custody.refuse(in_the_consignees_name, custody.keys(intruder), 403, "not_authorized")
    by_the_vendor = custody.event(
        "batch.delivered", got.vendor, got.batch, site=got.site, quantity=10
    )
    custody.refuse(by_the_vendor, custody.keys(got.vendor), 403, "not_authorized")

    custody.deliver(got.batch, got.buyer, got.site, 10)  # the consignee's own still goes through


def test_scenario_10_a_transfer_missing_the_receivers_signature_is_403(custody: Custody) -> None:
    got = delivered_batch(custody, 10)
    receiver = custody.party("buyer", "AE")
    event = custody.event("batch.transferred", got.buyer, got.batch, to=receiver)
    custody.refuse(event, custody.keys(got.buyer), 403, "not_authorized")
    custody.refuse(event, custody.keys(receiver), 403, "not_authorized")
    stranger = custody.party("buyer", "AE")
    custody.refuse(event, custody.keys(got.buyer, stranger), 403, "not_authorized")
    custody.refuse(event, custody.keys(got.buyer, receiver, stranger), 403, "not_authorized")

    step = custody.submit(event, custody.keys(got.buyer, receiver))
    assert custody.state(got.batch)["owner"] == receiver
    assert custody.state(got.batch)["head"] == step.hash


def test_scenario_10_a_batch_event_signed_with_a_revoked_key_is_401(custody: Custody) -> None:
    got = batch_in_transit(custody)
    spare = Signer.from_label(f"custody spare key of {got.buyer}")
    custody.submit(
        make_event(
            "party.key_added",
            "bis",
            at=custody.timeline.next(),
            party=got.buyer,
            key=spare.public_key_b64,
        ),
        [custody.signers["bis"], spare],
    )
    custody.submit(
        make_event(
            "party.key_revoked",
            "bis",
            at=custody.timeline.next(),
            party=got.buyer,
            keyid=spare.keyid,
        ),
        custody.keys("bis"),
    )
    event = custody.event("batch.delivered", got.buyer, got.batch, site=got.site, quantity=10)
    custody.refuse(event, [spare], 401, "bad_signature")
    custody.refuse(event, [custody.signers[got.buyer], spare], 401, "bad_signature")

    custody.submit(event, custody.keys(got.buyer))


def test_scenario_10_an_envelope_whose_prev_is_stale_is_409_conflict(custody: Custody) -> None:
    got = delivered_batch(custody, 10)
    fabricated, exported, delivered = got.steps
    for stale in (fabricated.hash, exported.hash, "0" * 64):
        event = custody.event("batch.installed", got.buyer, got.batch, prev=stale, site=got.site.id)
        custody.refuse(event, custody.keys(got.buyer), 409, "conflict")
    other = delivered_batch(custody, 3)
    event = custody.event(
        "batch.installed", got.buyer, got.batch, prev=other.steps[-1].hash, site=got.site.id
    )
    custody.refuse(event, custody.keys(got.buyer), 409, "conflict")

    current = custody.event("batch.installed", got.buyer, got.batch, site=got.site.id)
    assert current["prev"] == delivered.hash
    custody.submit(current, custody.keys(got.buyer))


def test_an_envelope_signed_before_the_batch_moved_on_cannot_be_replayed_409_conflict(
    custody: Custody,
) -> None:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    batch, _ = custody.fabricate(vendor, 10)
    signed_long_ago = custody.event("batch.decommissioned", vendor, batch, reason="Scrapped.")
    custody.export(batch, vendor, buyer, "AE")
    # `prev` is checked before `at` order and custody state (section 5): conflict, not transition.
    custody.refuse(signed_long_ago, custody.keys(vendor), 409, "conflict")


# --- impossible custody moves: section 4's table --------------------------------------------


@dataclass
class Cast:
    """The parties of the transition tables, and one batch of 10 chips in each status."""

    vendor: str
    vendor_sites: list[str]
    buyer: str
    buyer_sites: list[str]
    other: str
    other_site: str
    batches: dict[str, str] = field(default_factory=dict)


STATUSES = ["fabricated", "in_transit", "delivered", "installed", "split", "decommissioned", "lost"]
TERMINAL = ["split", "decommissioned", "lost"]


@pytest.fixture(scope="module")
def cast(custody: Custody) -> Cast:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    other = custody.party("buyer", "AE")
    cast = Cast(
        vendor,
        [custody.site(vendor, "TW"), custody.site(vendor, "TW")],
        buyer,
        [custody.site(buyer, "AE"), custody.site(buyer, "AE")],
        other,
        custody.site(other, "AE"),
    )
    for status in STATUSES:
        batch, _ = custody.fabricate(vendor, 10)
        cast.batches[status] = batch
        if status == "fabricated":
            continue
        custody.export(batch, vendor, buyer, "AE")
        if status == "in_transit":
            continue
        custody.deliver(batch, buyer, cast.buyer_sites[0], 10)
        if status == "installed":
            custody.install(batch, buyer, cast.buyer_sites[0])
        elif status == "split":
            custody.split(batch, buyer, [5, 5])
        elif status == "decommissioned":
            custody.decommission(batch, buyer)
        elif status == "lost":
            custody.report_lost(batch, buyer)
    return cast


def holder_in(cast: Cast, status: str) -> tuple[str, list[str]]:
    """Who holds (and owns) the batch in `status`, and the sites that party operates."""
    if status in ("fabricated", "in_transit"):
        return cast.vendor, cast.vendor_sites
    return cast.buyer, cast.buyer_sites


Attempt = Callable[[Custody, Cast, str], tuple[JSONObject, list[str]]]


def _by_holder(type_: str, **fields: Any) -> Attempt:
    def build(custody: Custody, cast: Cast, status: str) -> tuple[JSONObject, list[str]]:
        holder, _ = holder_in(cast, status)
        return custody.event(type_, holder, cast.batches[status], **fields), [holder]

    return build


def _at_holders_site(type_: str, index: int, **fields: Any) -> Attempt:
    """`type_` by the holder, naming its first (current, for the buyer) or second site."""

    def build(custody: Custody, cast: Cast, status: str) -> tuple[JSONObject, list[str]]:
        holder, sites = holder_in(cast, status)
        event = custody.event(type_, holder, cast.batches[status], site=sites[index], **fields)
        return event, [holder]

    return build


def _export(custody: Custody, cast: Cast, status: str) -> tuple[JSONObject, list[str]]:
    holder, _ = holder_in(cast, status)
    event = custody.event(
        "batch.exported", holder, cast.batches[status], to=cast.other, destination="AE"
    )
    return event, [holder]


def _transfer(with_site: bool) -> Attempt:
    def build(custody: Custody, cast: Cast, status: str) -> tuple[JSONObject, list[str]]:
        owner, _ = holder_in(cast, status)
        where = {"site": cast.other_site} if with_site else {}
        event = custody.event(
            "batch.transferred", owner, cast.batches[status], to=cast.other, **where
        )
        return event, [owner, cast.other]

    return build


def _split(custody: Custody, cast: Cast, status: str) -> tuple[JSONObject, list[str]]:
    holder, _ = holder_in(cast, status)
    into = [{"batch": custody.name("never"), "quantity": 5} for _ in range(2)]
    return custody.event("batch.split", holder, cast.batches[status], into=into), [holder]


ATTEMPTS: dict[str, Attempt] = {
    "exported": _export,
    "delivered": _at_holders_site("batch.delivered", 0, quantity=10),
    "installed": _at_holders_site("batch.installed", 0),
    "relocated": _at_holders_site("batch.relocated", 1),
    "transferred": _transfer(with_site=False),
    "transferred-with-a-site": _transfer(with_site=True),
    "split": _split,
    "decommissioned": _by_holder("batch.decommissioned", reason="Scrapped."),
    "reported_lost": _by_holder("batch.reported_lost", reason="Missing."),
}

# Section 4's table, every dash but two columns tested below: `fabricated` (a reused batch id)
# and `delivered` (no consignee outside transit).
FORBIDDEN = [
    ("fabricated", "installed"),
    ("fabricated", "relocated"),
    ("fabricated", "transferred-with-a-site"),
    ("in_transit", "exported"),
    ("in_transit", "installed"),
    ("in_transit", "relocated"),
    ("in_transit", "transferred"),
    ("in_transit", "split"),
    ("in_transit", "decommissioned"),
    ("installed", "exported"),
    ("installed", "installed"),
    *(
        (status, move)
        for status in TERMINAL
        for move in (
            "exported",
            "installed",
            "relocated",
            "transferred",
            "split",
            "decommissioned",
            "reported_lost",
        )
    ),
]


@pytest.mark.parametrize(("status", "move"), FORBIDDEN, ids=[f"{s}-then-{m}" for s, m in FORBIDDEN])
def test_a_move_the_status_forbids_is_409_invalid_transition_and_stores_nothing(
    custody: Custody, cast: Cast, status: str, move: str
) -> None:
    event, signers = ATTEMPTS[move](custody, cast, status)
    custody.refuse(event, custody.keys(*signers), 409, "invalid_transition")
    assert custody.state(cast.batches[status])["status"] == status
    for child in event.get("into", []):
        assert custody.client.read(f"/v1/batches/{child['batch']}").status_code == 404


@pytest.mark.parametrize("status", [s for s in STATUSES if s != "in_transit"])
def test_a_delivery_of_a_batch_that_is_not_in_transit_is_refused_and_stores_nothing(
    custody: Custody, cast: Cast, status: str
) -> None:
    """The table's `delivered` column forbids every status but `in_transit` (409), yet the
    consignee who must sign exists only in transit, and signers are checked before custody
    state (section 5: 403). Signed by the holder at its own site, both answers are taken."""
    event, signers = ATTEMPTS["delivered"](custody, cast, status)
    custody.refuse(
        event,
        custody.keys(*signers),
        409,
        "invalid_transition",
        or_else=(403, "not_authorized"),
    )
    assert custody.state(cast.batches[status])["status"] == status


@pytest.mark.parametrize("status", STATUSES)
def test_fabricating_a_batch_id_already_used_is_409_conflict(
    custody: Custody, cast: Cast, status: str
) -> None:
    event = custody.event(
        "batch.fabricated",
        cast.vendor,
        cast.batches[status],
        model="H200",
        quantity=10,
        country="TW",
    )
    custody.refuse(event, custody.keys(cast.vendor), 409, "conflict")


# --- other impossible custody states --------------------------------------------------------


@dataclass(frozen=True)
class Impossible:
    name: str
    build: Callable[[Custody], tuple[JSONObject, list[str]]]
    status: int
    code: str


def _delivered_elsewhere(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = batch_in_transit(custody)
    someone_elses = custody.site(custody.party("buyer", "AE"), "AE")
    event = custody.event("batch.delivered", got.buyer, got.batch, site=someone_elses, quantity=10)
    return event, [got.buyer]


def _more_received_than_shipped(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = batch_in_transit(custody, 10)
    event = custody.event("batch.delivered", got.buyer, got.batch, site=got.site, quantity=11)
    return event, [got.buyer]


def _relocated_to_anothers_site(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody)
    someone_elses = custody.site(custody.party("buyer", "AE"), "AE")
    return custody.event("batch.relocated", got.buyer, got.batch, site=someone_elses), [got.buyer]


def _installed_elsewhere(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody)
    another_of_its_own = custody.site(got.buyer, "AE")
    event = custody.event("batch.installed", got.buyer, got.batch, site=another_of_its_own)
    return event, [got.buyer]


def _transferred_to_a_site_the_receiver_does_not_operate(
    custody: Custody,
) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody)
    receiver = custody.party("buyer", "AE")
    event = custody.event("batch.transferred", got.buyer, got.batch, to=receiver, site=got.site.id)
    return event, [got.buyer, receiver]


def _split_into(
    quantities: Sequence[int], serials: bool = False
) -> Callable[[Custody], tuple[JSONObject, list[str]]]:
    def build(custody: Custody) -> tuple[JSONObject, list[str]]:
        got = delivered_batch(custody, 10, serials=serials)
        into: list[JSONObject] = [
            {"batch": custody.name("never"), "quantity": q} for q in quantities
        ]
        if serials:  # the right counts, but one serial given twice and one left out
            known = custody.serials[got.batch]
            into[0]["serials"] = known[: quantities[0]]
            into[1]["serials"] = [known[0], *known[quantities[0] + 1 :]]
        return custody.event("batch.split", got.buyer, got.batch, into=into), [got.buyer]

    return build


def _split_into_an_existing_batch(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody, 10)
    existing = delivered_batch(custody, 1).batch
    into = [{"batch": custody.name("never"), "quantity": 5}, {"batch": existing, "quantity": 5}]
    return custody.event("batch.split", got.buyer, got.batch, into=into), [got.buyer]


def _at_before_the_previous_event(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody)
    earlier = shifted(got.steps[-1].at, -1)
    event = custody.event("batch.installed", got.buyer, got.batch, site=got.site.id, at=earlier)
    return event, [got.buyer]


def _unknown_batch(custody: Custody) -> tuple[JSONObject, list[str]]:
    vendor = custody.party("vendor", "US")
    buyer = custody.party("buyer", "AE")
    event = custody.event(
        "batch.exported", vendor, "no-such-batch", prev="0" * 64, to=buyer, destination="AE"
    )
    return event, [vendor]


def _unknown_site(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody)
    event = custody.event("batch.relocated", got.buyer, got.batch, site="no-such-site")
    return event, [got.buyer]


def _unknown_consignee(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody)
    event = custody.event(
        "batch.exported", got.buyer, got.batch, to="no-such-party", destination="AE"
    )
    return event, [got.buyer]


def _split_into_one(custody: Custody) -> tuple[JSONObject, list[str]]:
    got = delivered_batch(custody, 10)
    into = [{"batch": custody.name("never"), "quantity": 10}]
    return custody.event("batch.split", got.buyer, got.batch, into=into), [got.buyer]


IMPOSSIBLE = [
    Impossible(
        "delivered-at-a-site-the-consignee-does-not-operate",
        _delivered_elsewhere,
        409,
        "invalid_transition",
    ),
    Impossible(
        "delivered-more-than-shipped", _more_received_than_shipped, 409, "invalid_transition"
    ),
    Impossible(
        "relocated-to-a-site-the-holder-does-not-operate",
        _relocated_to_anothers_site,
        409,
        "invalid_transition",
    ),
    Impossible("installed-at-a-site-it-is-not-at", _installed_elsewhere, 409, "invalid_transition"),
    Impossible(
        "transferred-to-a-site-the-receiver-does-not-operate",
        _transferred_to_a_site_the_receiver_does_not_operate,
        409,
        "invalid_transition",
    ),
    Impossible(
        "split-quantities-short-of-the-batch", _split_into([5, 4]), 409, "invalid_transition"
    ),
    Impossible("split-quantities-over-the-batch", _split_into([5, 6]), 409, "invalid_transition"),
    Impossible(
        "split-serials-that-do-not-partition-the-batchs",
        _split_into([5, 5], True),
        409,
        "invalid_transition",
    ),
    Impossible("split-into-an-existing-batch-id", _split_into_an_existing_batch, 409, "conflict"),
    Impossible(
        "at-earlier-than-the-batchs-previous-event",
        _at_before_the_previous_event,
        409,
        "invalid_transition",
    ),
    Impossible("split-into-one-child", _split_into_one, 422, "invalid_event"),
    Impossible("unknown-batch", _unknown_batch, 404, "not_found"),
    Impossible("unknown-site", _unknown_site, 404, "not_found"),
    Impossible("unknown-consignee", _unknown_consignee, 404, "not_found"),
]


@pytest.mark.parametrize("case", IMPOSSIBLE, ids=[c.name for c in IMPOSSIBLE])
def test_an_impossible_custody_state_is_refused_and_stores_nothing(
    custody: Custody, case: Impossible
) -> None:
    event, signers = case.build(custody)
    custody.refuse(event, custody.keys(*signers), case.status, case.code)


def test_an_at_equal_to_the_previous_events_is_accepted(custody: Custody) -> None:
    got = delivered_batch(custody)
    same = got.steps[-1].at
    step = custody.act("batch.installed", got.buyer, got.batch, site=got.site.id, at=same)
    assert custody.state(got.batch)["status"] == "installed"
    assert custody.state(got.batch, same)["head"] == step.hash


# --- the wrong party: 403 whatever the status -----------------------------------------------


@dataclass(frozen=True)
class WrongParty:
    name: str
    build: Callable[[Custody, Cast], tuple[JSONObject, list[str]]]


def _owned_elsewhere(custody: Custody) -> tuple[Delivered, str]:
    """A batch delivered to a buyer (the holder) whose title was sold in place to another."""
    got = delivered_batch(custody)
    owner = custody.party("buyer", "AE")
    custody.transfer(got.batch, got.buyer, owner)
    return got, owner


def _owner_not_holder(
    type_: str, **fields: Any
) -> Callable[[Custody, Cast], tuple[JSONObject, list[str]]]:
    def build(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
        got, owner = _owned_elsewhere(custody)
        site = {"site": custody.site(owner, "AE")} if type_ == "batch.relocated" else {}
        if type_ == "batch.installed":
            site = {"site": got.site.id}
        if type_ == "batch.exported":
            site = {"to": custody.party("buyer", "AE")}
        return custody.event(type_, owner, got.batch, **site, **fields), [owner]

    return build


def _holder_not_owner_transfers(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
    got, _ = _owned_elsewhere(custody)
    receiver = custody.party("buyer", "AE")
    event = custody.event("batch.transferred", got.buyer, got.batch, to=receiver)
    return event, [got.buyer, receiver]


def _stranger(
    type_: str, status: str, **fields: Any
) -> Callable[[Custody, Cast], tuple[JSONObject, list[str]]]:
    def build(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
        more = dict(fields)
        if type_ == "batch.exported":
            more["to"] = cast.buyer
        if type_ in ("batch.delivered", "batch.installed", "batch.relocated"):
            more["site"] = cast.other_site
        return custody.event(type_, cast.other, cast.batches[status], **more), [cast.other]

    return build


def _carrier_installs(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
    vendor = custody.party("vendor", "US")
    carrier = custody.party("carrier", "NL")
    depot = custody.site(carrier, "NL")
    batch, _ = custody.fabricate(vendor, 3)
    custody.export(batch, vendor, carrier, "NL")
    custody.deliver(batch, carrier, depot, 3)
    return custody.event("batch.installed", carrier, batch, site=depot), [carrier]


def _investigator_reports_lost(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
    investigator = custody.party("investigator", "US")
    event = custody.event(
        "batch.reported_lost", investigator, cast.batches["delivered"], reason="Gone."
    )
    return event, [investigator]


def _fabricated_by(role: str) -> Callable[[Custody, Cast], tuple[JSONObject, list[str]]]:
    def build(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
        party = custody.party(role, "US")
        event = custody.event(
            "batch.fabricated", party, custody.name("B"), model="H200", quantity=1, country="TW"
        )
        return event, [party]

    return build


def _actor_signed_by_another(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
    event = custody.event(
        "batch.installed", cast.buyer, cast.batches["delivered"], site=cast.buyer_sites[0]
    )
    return event, [cast.other]


def _actor_and_an_extra_signer(custody: Custody, cast: Cast) -> tuple[JSONObject, list[str]]:
    event = custody.event(
        "batch.installed", cast.buyer, cast.batches["delivered"], site=cast.buyer_sites[0]
    )
    return event, [cast.buyer, cast.other]


WRONG_PARTY = [
    WrongParty("export-by-a-stranger", _stranger("batch.exported", "delivered", destination="AE")),
    WrongParty(
        "export-by-a-stranger-of-a-batch-in-transit",
        _stranger("batch.exported", "in_transit", destination="AE"),
    ),
    WrongParty("delivery-by-a-stranger", _stranger("batch.delivered", "in_transit", quantity=10)),
    WrongParty("install-by-a-stranger", _stranger("batch.installed", "delivered")),
    WrongParty("relocation-by-a-stranger", _stranger("batch.relocated", "installed")),
    WrongParty(
        "split-by-a-stranger",
        _stranger(
            "batch.split",
            "delivered",
            into=[{"batch": "never-a", "quantity": 5}, {"batch": "never-b", "quantity": 5}],
        ),
    ),
    WrongParty(
        "decommission-by-a-stranger", _stranger("batch.decommissioned", "installed", reason="x y")
    ),
    WrongParty(
        "loss-reported-by-a-stranger", _stranger("batch.reported_lost", "delivered", reason="x y")
    ),
    WrongParty(
        "decommission-of-a-lost-batch-by-a-stranger",
        _stranger("batch.decommissioned", "lost", reason="x y"),
    ),
    WrongParty("install-by-the-owner-who-is-not-the-holder", _owner_not_holder("batch.installed")),
    WrongParty(
        "relocation-by-the-owner-who-is-not-the-holder", _owner_not_holder("batch.relocated")
    ),
    WrongParty(
        "decommission-by-the-owner-who-is-not-the-holder",
        _owner_not_holder("batch.decommissioned", reason="x y"),
    ),
    WrongParty(
        "export-by-the-owner-who-is-not-the-holder",
        _owner_not_holder("batch.exported", destination="AE"),
    ),
    WrongParty("transfer-by-the-holder-who-is-not-the-owner", _holder_not_owner_transfers),
    WrongParty("install-by-a-carrier", _carrier_installs),
    WrongParty("loss-reported-by-an-investigator", _investigator_reports_lost),
    WrongParty("fabrication-by-a-buyer", _fabricated_by("buyer")),
    WrongParty("fabrication-by-an-authority", _fabricated_by("authority")),
    WrongParty("the-holders-event-signed-by-another-party", _actor_signed_by_another),
    WrongParty("the-holders-event-with-an-extra-signer", _actor_and_an_extra_signer),
]


@pytest.mark.parametrize("case", WRONG_PARTY, ids=[c.name for c in WRONG_PARTY])
def test_a_custody_event_from_the_wrong_party_is_403_and_stores_nothing(
    custody: Custody, cast: Cast, case: WrongParty
) -> None:
    event, signers = case.build(custody, cast)
    custody.refuse(event, custody.keys(*signers), 403, "not_authorized")
