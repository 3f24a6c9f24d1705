"""The rules of every batch event (PROTOCOL.md sections 3-5, DOMAIN.md scenarios 10 and 11).

Who must sign (403, whatever the batch's status), what must exist (404), `prev` and `at`
(409 `conflict` / `invalid_transition`), the custody state each event needs (409), the shape
of serials and `prev` (422), the order in which those checks answer, short deliveries and
splits. Refusal rows run against one `gallery` ledger holding a batch in every status: a
refusal stores nothing, so they can share it; every refusal asserts that nothing was stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.application import Ledger
from ledger.canonical import canonical
from ledger.errors import (
    BadSignature,
    Conflict,
    InvalidEvent,
    InvalidTransition,
    LedgerError,
    NotAuthorized,
    NotFound,
)
from tests.support import START, Clock, World, new_ledger, populate, signer, stamp
from tests.test_transitions import BYSTANDER, DROP, KINDS, STATUSES, Custody, Move

Json = dict[str, Any]
Build = Callable[[Custody], Move]
SERIALS = ["S-001", "S-002", "S-003", "S-004"]
EARLIER = stamp(START.replace(hour=11))  # an hour before every gallery event


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Custody:
    """One batch per status (named after it), plus:

    `serialled` (4 chips with SERIALS, delivered to gulf-cloud at dxb-1), `titled` (delivered
    to gulf-cloud, then sold in place to desert-ai) and `carried` (held by the carrier
    fastfreight at its site pkg-1).
    """
    clock = Clock()
    world = World(clock)
    ledger = new_ledger(str(Path(tmp_path_factory.mktemp("gallery")) / "ledger.db"), clock)
    populate(ledger, world)
    custody = Custody.start(ledger, world)
    for status in STATUSES:
        custody.drive(status, batch=status)
    custody.submit(custody.fabricate("serialled", 4, SERIALS))
    for kind in ["exported", "delivered"]:
        custody.submit(custody.move(kind, "serialled"))
    custody.drive("delivered", batch="titled")
    custody.submit(custody.move("transferred-in-place", "titled"))
    deliver_to_carrier(custody, "carried")
    return custody


@pytest.fixture
def custody(populated: Ledger, world: World) -> Custody:
    return Custody.start(populated, world)


def deliver_to_carrier(custody: Custody, batch: str) -> None:
    custody.submit(custody.fabricate(batch))
    export = custody.move("exported", batch).changed(to="fastfreight", destination="MY")
    custody.submit(export)
    custody.submit(custody.move("delivered", batch))  # by the consignee, at its site pkg-1


def stale(custody: Custody, batch: str) -> str:
    """The envelope_hash of the batch's first event: a `prev` the batch has moved on from."""
    first = custody.ledger.history(batch).entries[0].envelope
    return hashlib.sha256(canonical(first)).hexdigest()


def on(kind: str, target: str, actor: str | None = None, **fields: Any) -> Build:
    """The event `kind` on gallery batch `target` (by `actor`), fields changed."""
    return lambda custody: custody.move(kind, target, actor).changed(**fields)


def signed(kind: str, batch: str, *who: str) -> Build:
    """The right party's event, signed by `who` ("actor" and "to" name the event's parties)."""

    def build(custody: Custody) -> Move:
        move = custody.move(kind, batch)
        names = {"actor": move.event["actor"], "to": move.event.get("to", "")}
        return move.signed_by(*(names.get(name, name) for name in who))

    return build


# -- who must sign: 403 whatever the batch's status (sections 4 and 5) -------------------------

WRONG_SIGNERS = [
    pytest.param("exported", BYSTANDER, None, id="export-by-someone-not-the-holder"),
    pytest.param("exported", "audit-office", None, id="export-by-an-investigator"),
    pytest.param("delivered", BYSTANDER, None, id="delivery-acknowledged-by-a-non-consignee"),
    pytest.param("installed", BYSTANDER, None, id="install-by-someone-not-the-holder"),
    pytest.param("relocated", BYSTANDER, None, id="relocation-by-someone-not-the-holder"),
    pytest.param("transferred-in-place", BYSTANDER, None, id="transfer-by-a-non-owner"),
    pytest.param("transferred-with-site", BYSTANDER, None, id="transfer-with-site-by-a-non-owner"),
    pytest.param("transferred-in-place", None, ("actor",), id="transfer-without-the-receiver"),
    pytest.param("transferred-with-site", None, ("actor",), id="transfer-with-site-no-receiver"),
    pytest.param("transferred-in-place", None, ("to",), id="transfer-signed-by-receiver-alone"),
    pytest.param(
        "transferred-in-place", None, ("actor", "to", BYSTANDER), id="transfer-with-extra-signer"
    ),
    pytest.param("split", BYSTANDER, None, id="split-by-someone-not-the-holder"),
    pytest.param("decommissioned", BYSTANDER, None, id="decommission-by-someone-not-the-holder"),
    pytest.param("decommissioned", "audit-office", None, id="decommission-by-an-investigator"),
    pytest.param("reported_lost", BYSTANDER, None, id="loss-reported-by-a-bystander"),
    pytest.param("reported_lost", "audit-office", None, id="loss-reported-by-an-investigator"),
    pytest.param("reported_lost", "fastfreight", None, id="loss-reported-by-an-unrelated-carrier"),
    pytest.param("decommissioned", None, (BYSTANDER,), id="holders-event-signed-by-another-key"),
    pytest.param("decommissioned", None, ("actor", BYSTANDER), id="holders-event-extra-signer"),
    pytest.param("decommissioned", None, (), id="holders-event-with-no-signature"),
]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize(("kind", "actor", "signers"), WRONG_SIGNERS)
def test_an_event_signed_by_other_than_the_party_it_needs_is_403_whatever_the_status(
    gallery: Custody, status: str, kind: str, actor: str | None, signers: tuple[str, ...] | None
) -> None:
    build = signed(kind, status, *signers) if signers is not None else on(kind, status, actor)
    gallery.refused(build(gallery), NotAuthorized, batch=status)


BEFORE_DELIVERY = ["exported", "installed", "relocated", "split", "decommissioned", "reported_lost"]


@pytest.mark.parametrize("kind", BEFORE_DELIVERY)
def test_a_consignee_neither_holds_nor_owns_a_batch_before_delivery(
    gallery: Custody, kind: str
) -> None:
    consignee = gallery.state("in_transit").to
    assert consignee == "gulf-cloud"
    move = gallery.move(kind, "in_transit", actor=consignee)
    gallery.refused(move, NotAuthorized, batch="in_transit")


ONLY_VENDORS = ["gulf-cloud", "fastfreight", "bis", "audit-office"]


@pytest.mark.parametrize("actor", ONLY_VENDORS, ids=[f"by-{a}" for a in ONLY_VENDORS])
def test_only_a_vendor_fabricates(gallery: Custody, actor: str) -> None:
    move = gallery.fabricate("new-batch").changed(actor=actor).signed_by(actor)
    gallery.refused(move, NotAuthorized, batch="new-batch")


TITLE_WITHOUT_POSSESSION = ["exported", "installed", "relocated", "split", "decommissioned"]


@pytest.mark.parametrize("kind", TITLE_WITHOUT_POSSESSION)
def test_an_owner_that_does_not_hold_the_batch_cannot_move_it(gallery: Custody, kind: str) -> None:
    owner = gallery.state("titled").owner  # desert-ai bought it in place; gulf-cloud holds it
    gallery.refused(gallery.move(kind, "titled", actor=owner), NotAuthorized, batch="titled")


def test_a_holder_that_does_not_own_the_batch_cannot_transfer_it(gallery: Custody) -> None:
    view = gallery.state("titled")
    move = gallery.move("transferred-in-place", "titled", actor=view.holder).changed(to=BYSTANDER)
    gallery.refused(move.signed_by(view.holder, BYSTANDER), NotAuthorized, batch="titled")


def test_a_carrier_holding_a_batch_cannot_install_it(gallery: Custody) -> None:
    move = gallery.move("installed", "carried")
    assert move.event["actor"] == gallery.state("carried").holder == "fastfreight"
    gallery.refused(move, NotAuthorized, batch="carried")


@pytest.mark.parametrize("kind", ["relocated", "exported", "decommissioned"])
def test_a_carrier_holding_a_batch_moves_it_like_a_buyer(custody: Custody, kind: str) -> None:
    deliver_to_carrier(custody, "b1")
    custody.submit(custody.move(kind))
    assert custody.state().holder == "fastfreight"


def test_the_owner_that_does_not_hold_a_batch_may_report_it_lost(custody: Custody) -> None:
    custody.drive("delivered")
    custody.submit(custody.move("transferred-in-place"))
    owner = custody.state().owner
    custody.submit(custody.move("reported_lost", actor=owner))
    assert (custody.state().status, owner) == ("lost", "desert-ai")


@pytest.mark.parametrize("status", ["fabricated", "in_transit", "installed"])
def test_an_authority_may_report_a_batch_lost(custody: Custody, status: str) -> None:
    custody.drive(status)
    custody.submit(custody.move("reported_lost", actor="bis"))
    assert custody.state().status == "lost"


RECEIVERS = [
    pytest.param(on("exported", "delivered", to="ghost"), NotFound, id="export-to-nobody"),
    pytest.param(
        on("exported", "delivered", to="audit-office"), NotAuthorized, id="export-to-investigator"
    ),
    pytest.param(on("exported", "delivered", to="bis"), NotAuthorized, id="export-to-authority"),
    pytest.param(  # an unregistered receiver has no key that can count (section 2)
        lambda c: c.move("transferred-in-place", "delivered").changed(to="ghost"),
        NotAuthorized,
        id="transfer-to-nobody-signed-by-the-owner-alone",
    ),
    pytest.param(
        lambda c: (
            c.move("transferred-in-place", "delivered")
            .changed(to="ghost")
            .signed_by("gulf-cloud", "ghost")
        ),
        BadSignature,
        id="transfer-to-nobody-signed-with-an-unregistered-key",
    ),
    pytest.param(
        lambda c: (
            c.move("transferred-in-place", "delivered")
            .changed(to="bis")
            .signed_by("gulf-cloud", "bis")
        ),
        NotAuthorized,
        id="transfer-to-an-authority",
    ),
    pytest.param(
        lambda c: (
            c.move("transferred-in-place", "delivered")
            .changed(to="audit-office")
            .signed_by("gulf-cloud", "audit-office")
        ),
        NotAuthorized,
        id="transfer-to-an-investigator",
    ),
]


@pytest.mark.parametrize(("build", "error"), RECEIVERS)
def test_a_consignee_or_receiver_must_be_a_registered_vendor_buyer_or_carrier(
    gallery: Custody, build: Build, error: type[LedgerError]
) -> None:
    gallery.refused(build(gallery), error, batch="delivered")


# -- scenario 10 over HTTP: refused, nothing stored ---------------------------------------------


def _delivery_by_the_sender(custody: Custody) -> Json:
    custody.drive("in_transit")
    return custody.move("delivered", actor="nvidia").envelope()


def _delivery_by_another_buyer(custody: Custody) -> Json:
    custody.drive("in_transit")
    return custody.move("delivered", actor="desert-ai").envelope()


def _transfer_without_the_receiver(custody: Custody) -> Json:
    custody.drive("delivered")
    return custody.move("transferred-with-site").signed_by("gulf-cloud").envelope()


def _delivery_under_a_revoked_key(custody: Custody) -> Json:
    custody.drive("in_transit")
    keyid = signer("gulf-cloud").key_id
    revoke = custody.world.event("party.key_revoked", "bis", party="gulf-cloud", keyid=keyid)
    custody.submit(World.envelope(revoke, "bis"))
    return custody.move("delivered").envelope()


def _delivery_with_a_stale_prev(custody: Custody) -> Json:
    custody.drive("in_transit")
    return custody.move("delivered").changed(prev=stale(custody, "b1")).envelope()


SCENARIO_10 = [
    pytest.param(_delivery_by_the_sender, 403, "not_authorized", id="delivery-by-the-sender"),
    pytest.param(_delivery_by_another_buyer, 403, "not_authorized", id="delivery-by-a-stranger"),
    pytest.param(
        _transfer_without_the_receiver, 403, "not_authorized", id="transfer-without-receiver"
    ),
    pytest.param(_delivery_under_a_revoked_key, 401, "bad_signature", id="revoked-key"),
    pytest.param(_delivery_with_a_stale_prev, 409, "conflict", id="stale-prev"),
]


@pytest.mark.parametrize(("build", "status", "code"), SCENARIO_10)
def test_scenario_10_forged_or_stale_custody_is_refused_and_stores_nothing(
    custody: Custody,
    client: TestClient,
    build: Callable[[Custody], Json],
    status: int,
    code: str,
) -> None:
    envelope = build(custody)
    size, head = client.get("/v1/ledger").json()["size"], custody.state().head

    response = client.post("/v1/events", json=envelope)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert client.get("/v1/ledger").json()["size"] == size
    assert custody.state().head == head


# -- prev and at (section 3) --------------------------------------------------------------------


def test_a_stale_prev_is_a_conflict(gallery: Custody) -> None:
    move = gallery.move("installed", "delivered").changed(prev=stale(gallery, "delivered"))
    gallery.refused(move, Conflict, batch="delivered")


def test_a_prev_naming_another_batchs_head_is_a_conflict(gallery: Custody) -> None:
    move = gallery.move("installed", "delivered").changed(prev=gallery.state("installed").head)
    gallery.refused(move, Conflict, batch="delivered")


def test_an_envelope_signed_against_an_old_head_cannot_be_replayed(custody: Custody) -> None:
    custody.drive("delivered")
    install, decommission = custody.move("installed"), custody.move("decommissioned")
    custody.submit(install)
    message = custody.refused(decommission, Conflict)
    assert "prev" in message


@pytest.mark.parametrize("kind", KINDS[1:])
def test_a_batch_event_without_prev_is_malformed(gallery: Custody, kind: str) -> None:
    gallery.refused(on(kind, "delivered", prev=DROP)(gallery), InvalidEvent, batch="delivered")


@pytest.mark.parametrize("prev", ["AB" * 32, "ab" * 31, "zz" * 32], ids=["upper", "short", "hex"])
def test_a_prev_that_is_not_a_lowercase_sha256_is_malformed(gallery: Custody, prev: str) -> None:
    gallery.refused(on("installed", "delivered", prev=prev)(gallery), InvalidEvent, "delivered")


def test_a_fabrication_with_a_prev_is_malformed(gallery: Custody) -> None:
    move = gallery.fabricate("new-batch").changed(prev=gallery.state("delivered").head)
    gallery.refused(move, InvalidEvent, batch="new-batch")


def test_an_event_dated_before_the_batchs_previous_event_is_an_invalid_transition(
    gallery: Custody,
) -> None:
    gallery.refused(
        on("installed", "delivered", at=EARLIER)(gallery), InvalidTransition, "delivered"
    )


def test_an_event_dated_a_fraction_of_a_second_before_the_previous_one_is_refused(
    custody: Custody,
) -> None:
    custody.drive("delivered")
    custody.submit(custody.move("installed").changed(at="2026-03-06T12:00:00.5Z"))
    custody.refused(
        custody.move("decommissioned").changed(at="2026-03-06T12:00:00Z"), InvalidTransition
    )


def test_an_event_dated_exactly_at_the_previous_event_is_accepted(custody: Custody) -> None:
    custody.drive("delivered")
    custody.world.clock.advance(hours=1)
    moment = stamp(custody.world.clock.now)
    custody.submit(custody.move("installed").changed(at=moment))
    custody.submit(custody.move("decommissioned").changed(at=moment))
    assert custody.state().status == "decommissioned"


def test_an_event_dated_more_than_five_minutes_ahead_of_the_ledger_is_malformed(
    gallery: Custody,
) -> None:
    ahead = stamp(START.replace(minute=6))
    gallery.refused(on("installed", "delivered", at=ahead)(gallery), InvalidEvent, "delivered")


# -- what an event names must exist (404) -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS[1:])
def test_an_event_on_an_unknown_batch_is_not_found(gallery: Custody, kind: str) -> None:
    gallery.refused(
        on(kind, "delivered", batch="no-such-batch")(gallery), NotFound, "no-such-batch"
    )


UNKNOWN_SITES = [
    pytest.param("delivered", "in_transit", id="delivery"),
    pytest.param("installed", "delivered", id="installation"),
    pytest.param("relocated", "delivered", id="relocation"),
    pytest.param("transferred-with-site", "delivered", id="transfer"),
]


@pytest.mark.parametrize(("kind", "batch"), UNKNOWN_SITES)
def test_an_event_naming_an_unknown_site_is_not_found(
    gallery: Custody, kind: str, batch: str
) -> None:
    gallery.refused(on(kind, batch, site="no-such-site")(gallery), NotFound, batch)


# -- the custody state each event needs (409 invalid_transition) ------------------------------

STATE_REFUSALS = [
    pytest.param(on("delivered", "in_transit", site="tsmc-f18"), id="delivery-at-the-senders-site"),
    pytest.param(on("delivered", "in_transit", site="auh-1"), id="delivery-at-another-buyers-site"),
    pytest.param(on("delivered", "in_transit", quantity=101), id="delivery-of-more-than-shipped"),
    pytest.param(on("relocated", "delivered", site="auh-1"), id="relocation-to-someone-elses-site"),
    pytest.param(on("relocated", "delivered", site="dxb-1"), id="relocation-to-the-current-site"),
    pytest.param(on("relocated", "installed", site="dxb-1"), id="uninstall-to-the-current-site"),
    pytest.param(on("installed", "delivered", site="dxb-2"), id="install-at-another-own-site"),
    pytest.param(on("installed", "delivered", site="auh-1"), id="install-at-someone-elses-site"),
    pytest.param(
        on("transferred-with-site", "delivered", site="dxb-2"), id="transfer-to-owners-site"
    ),
    pytest.param(
        on("transferred-with-site", "delivered", site="oas-1"), id="transfer-to-a-third-site"
    ),
    pytest.param(
        lambda c: (
            c.move("transferred-in-place", "delivered")
            .changed(to="gulf-cloud")
            .signed_by("gulf-cloud")
        ),
        id="transfer-to-the-owner",
    ),
]


@pytest.mark.parametrize("build", STATE_REFUSALS)
def test_an_event_the_custody_state_does_not_allow_is_an_invalid_transition(
    gallery: Custody, build: Build
) -> None:
    move = build(gallery)
    gallery.refused(move, InvalidTransition, batch=move.event["batch"])


# -- the order of checks (section 5) -----------------------------------------------------------


def _with_stale_prev(build: Build, batch: str) -> Build:
    return lambda c: build(c).changed(prev=stale(c, batch))


ORDER = [
    pytest.param(
        _with_stale_prev(on("decommissioned", "delivered", BYSTANDER), "delivered"),
        NotAuthorized,
        id="wrong-signer-and-stale-prev-is-403",
    ),
    pytest.param(
        on("exported", "in_transit", BYSTANDER), NotAuthorized, id="wrong-signer-and-status-is-403"
    ),
    pytest.param(
        _with_stale_prev(on("exported", "in_transit"), "in_transit"),
        Conflict,
        id="right-signer-stale-prev-and-wrong-status-is-409-conflict",
    ),
    pytest.param(
        _with_stale_prev(on("installed", "delivered", at=EARLIER), "delivered"),
        Conflict,
        id="stale-prev-and-earlier-at-is-409-conflict",
    ),
    pytest.param(
        on("exported", "installed", at=EARLIER),
        InvalidTransition,
        id="earlier-at-and-wrong-status-is-409-invalid-transition",
    ),
    pytest.param(
        _with_stale_prev(on("relocated", "delivered", site="no-such-site"), "delivered"),
        NotFound,
        id="unknown-site-and-stale-prev-is-404",
    ),
    pytest.param(
        _with_stale_prev(on("exported", "delivered", to="ghost"), "delivered"),
        NotFound,
        id="unknown-consignee-and-stale-prev-is-404",
    ),
    pytest.param(
        on("relocated", "lost", site="no-such-site"), NotFound, id="unknown-site-and-status-is-404"
    ),
    pytest.param(
        on("decommissioned", "delivered", BYSTANDER, prev=DROP),
        InvalidEvent,
        id="missing-prev-and-wrong-signer-is-422",
    ),
    pytest.param(
        lambda c: c.move("exported", "in_transit").signed_by("mallory"),
        BadSignature,
        id="unregistered-key-and-wrong-status-is-401",
    ),
    pytest.param(
        lambda c: c.move("decommissioned", "delivered", BYSTANDER).signed_by("mallory"),
        BadSignature,
        id="unregistered-key-and-wrong-signer-is-401",
    ),
    pytest.param(
        on("decommissioned", "delivered", "audit-office", batch="no-such-batch"),
        NotAuthorized,
        id="investigator-writing-to-an-unknown-batch-is-403-roles-before-references",
    ),
    pytest.param(
        on("decommissioned", "delivered", BYSTANDER, batch="no-such-batch"),
        NotFound,
        id="buyer-writing-to-an-unknown-batch-is-404",
    ),
]


@pytest.mark.parametrize(("build", "error"), ORDER)
def test_when_checks_meet_the_first_in_section_5_order_answers(
    gallery: Custody, build: Build, error: type[LedgerError]
) -> None:
    move = build(gallery)
    gallery.refused(move, error, batch=move.event["batch"])


def test_a_signature_that_does_not_verify_is_401(gallery: Custody) -> None:
    move = gallery.move("installed", "delivered")
    other = gallery.move("decommissioned", "delivered").envelope()
    forged = {**move.envelope(), "signatures": other["signatures"]}
    gallery.refused(forged, BadSignature, batch="delivered")


def test_a_delivery_under_a_revoked_key_is_401_and_stores_nothing(custody: Custody) -> None:
    message = custody.refused(_delivery_under_a_revoked_key(custody), BadSignature)
    assert custody.state().status == "in_transit", message


def _parts(*parts: tuple[str, int, list[str] | None]) -> list[Json]:
    return [
        {"batch": b, "quantity": q, **({} if s is None else {"serials": s})} for b, q, s in parts
    ]


# -- fabrication and the shape of serials ------------------------------------------------------


def test_fabricating_a_serial_that_exists_is_a_conflict(gallery: Custody) -> None:
    move = gallery.fabricate("new-batch", 2, ["S-900", SERIALS[2]])
    gallery.refused(move, Conflict, batch="new-batch")


SERIAL_SHAPES = [
    pytest.param(lambda c: c.fabricate("new-batch", 3, SERIALS[:2]), id="fabricated-too-few"),
    pytest.param(lambda c: c.fabricate("new-batch", 2, ["S-9", "S-9"]), id="fabricated-twice"),
    pytest.param(
        on("delivered", "in_transit", quantity=100, serials=["S-9"]), id="delivered-too-few"
    ),
    pytest.param(
        on("split", "serialled", into=_parts(("p1", 2, SERIALS[:1]), ("p2", 2, SERIALS[2:]))),
        id="split-part-too-few",
    ),
    pytest.param(on("split", "delivered", into=_parts(("p1", 100, None))), id="split-into-one"),
    pytest.param(
        on("split", "delivered", into=_parts(("p1", 50, None), ("p1", 50, None))),
        id="split-into-one-id-twice",
    ),
    pytest.param(
        on("split", "delivered", into=_parts(("delivered", 50, None), ("p2", 50, None))),
        id="split-into-its-own-id",
    ),
]


@pytest.mark.parametrize("build", SERIAL_SHAPES)
def test_serial_lists_must_match_quantities_and_split_ids_be_distinct(
    gallery: Custody, build: Build
) -> None:
    move = build(gallery)
    gallery.refused(move, InvalidEvent, batch=move.event["batch"])


# -- scenario 11: short deliveries --------------------------------------------------------------


def test_scenario_11_a_short_delivery_holds_what_arrived_and_counts_the_missing(
    custody: Custody,
) -> None:
    custody.drive("in_transit")

    custody.submit(custody.move("delivered").changed(quantity=90))

    view = custody.state()
    assert (view.quantity, view.missing, view.status) == (90, 10, "delivered")
    assert (view.owner, view.holder, view.site) == ("gulf-cloud", "gulf-cloud", "dxb-1")


def test_missing_chips_add_up_over_successive_short_deliveries(custody: Custody) -> None:
    custody.drive("in_transit")
    custody.submit(custody.move("delivered").changed(quantity=90))
    custody.submit(custody.move("exported"))
    custody.submit(custody.move("delivered").changed(quantity=85))
    assert (custody.state().quantity, custody.state().missing) == (85, 15)


def _serialled_in_transit(custody: Custody) -> None:
    custody.submit(custody.fabricate("b1", 4, SERIALS))
    custody.submit(custody.move("exported"))


def test_a_short_delivery_naming_no_serials_leaves_the_serials_unknown(custody: Custody) -> None:
    _serialled_in_transit(custody)

    custody.submit(custody.move("delivered").changed(quantity=3))

    assert custody.state().serials_known is False
    with pytest.raises(NotFound):  # no batch is known to hold any of them now
        custody.ledger.serial(SERIALS[0])


def test_a_full_delivery_naming_no_serials_keeps_the_shipped_serials(custody: Custody) -> None:
    _serialled_in_transit(custody)

    custody.submit(custody.move("delivered"))

    assert custody.state().serials_known is True
    assert {custody.ledger.serial(s).batch for s in SERIALS} == {"b1"}


def test_the_serials_received_replace_the_batchs_serials(custody: Custody) -> None:
    _serialled_in_transit(custody)
    received = [*SERIALS[:2], "S-999"]

    custody.submit(custody.move("delivered").changed(quantity=3, serials=received))

    view = custody.state()
    assert (view.quantity, view.missing, view.serials_known) == (3, 1, True)
    assert {custody.ledger.serial(s).batch for s in received} == {"b1"}
    for gone in SERIALS[2:]:
        with pytest.raises(NotFound):
            custody.ledger.serial(gone)


# -- splits --------------------------------------------------------------------------------------


def _split(custody: Custody, batch: str = "b1", *parts: tuple[str, int, list[str] | None]) -> str:
    """Split `batch` by its holder; the split's envelope_hash."""
    into = _parts(*parts)
    return custody.submit(custody.move("split", batch).changed(into=into)).envelope_hash


SPLIT_REFUSALS = [
    pytest.param(
        "delivered", _parts(("p1", 40, None), ("p2", 50, None)), InvalidTransition, id="too-few"
    ),
    pytest.param(
        "delivered", _parts(("p1", 60, None), ("p2", 50, None)), InvalidTransition, id="too-many"
    ),
    pytest.param(
        "delivered", _parts(("p1", 50, None), ("installed", 50, None)), Conflict, id="reused-id"
    ),
    pytest.param(
        "delivered",
        _parts(("p1", 1, ["S-1"]), ("p2", 99, None)),
        InvalidTransition,
        id="serials-named-when-the-parents-are-unknown",
    ),
    pytest.param(
        "serialled",
        _parts(("p1", 2, SERIALS[:2]), ("p2", 2, [SERIALS[2], "S-999"])),
        InvalidTransition,
        id="serials-leaving-one-out",
    ),
    pytest.param(
        "serialled",
        _parts(("p1", 2, SERIALS[:2]), ("p2", 2, SERIALS[1:3])),
        InvalidTransition,
        id="serials-naming-one-twice",
    ),
    pytest.param(
        "serialled", _parts(("p1", 2, None), ("p2", 2, None)), InvalidTransition, id="no-serials"
    ),
    pytest.param(
        "serialled",
        _parts(("p1", 2, SERIALS[:2]), ("p2", 2, None)),
        InvalidTransition,
        id="serials-for-one-part-only",
    ),
]


@pytest.mark.parametrize(("batch", "into", "error"), SPLIT_REFUSALS)
def test_a_split_must_partition_the_batch_into_new_ids(
    gallery: Custody, batch: str, into: list[Json], error: type[LedgerError]
) -> None:
    gallery.refused(gallery.move("split", batch).changed(into=into), error, batch=batch)


def test_no_split_child_id_can_be_reused(gallery: Custody) -> None:
    child = (gallery.state("split").children or [])[0]
    gallery.refused(gallery.fabricate(child), Conflict, batch=child)
    into = _parts(("p1", 50, None), (child, 50, None))
    gallery.refused(gallery.move("split", "delivered").changed(into=into), Conflict, "delivered")


INHERITED = ("status", "owner", "holder", "site", "country", "license", "model")


@pytest.mark.parametrize("status", ["delivered", "installed"])
def test_split_children_start_with_the_parents_state_and_their_own_chips(
    custody: Custody, status: str
) -> None:
    custody.submit(custody.fabricate("b1", 4, SERIALS))
    custody.submit(custody.move("exported").changed(license="AE-2026-001"))
    custody.submit(custody.move("delivered"))
    if status == "installed":
        custody.submit(custody.move("installed"))
    before = custody.state()

    _split(custody, "b1", ("b1-a", 3, SERIALS[:3]), ("b1-b", 1, SERIALS[3:]))

    parent = custody.state()
    assert (parent.status, parent.children, parent.quantity) == ("split", ["b1-a", "b1-b"], 4)
    for child_id, quantity in [("b1-a", 3), ("b1-b", 1)]:
        child = custody.state(child_id)
        assert [getattr(child, f) for f in INHERITED] == [getattr(before, f) for f in INHERITED]
        assert (child.parent, child.quantity, child.serials_known) == ("b1", quantity, True)
        assert child.children is None
    assert before.license == "AE-2026-001"
    assert [custody.ledger.serial(s).batch for s in SERIALS] == ["b1-a"] * 3 + ["b1-b"]


def test_split_children_of_a_batch_with_unknown_serials_have_unknown_serials(
    custody: Custody,
) -> None:
    custody.drive("delivered")
    _split(custody, "b1", ("b1-a", 30, None), ("b1-b", 70, None))
    assert [custody.state(c).serials_known for c in ("b1-a", "b1-b")] == [False, False]


def test_a_childs_first_own_event_chains_to_the_split(custody: Custody) -> None:
    custody.drive("delivered")
    before_split = custody.state().head
    split_hash = _split(custody, "b1", ("b1-a", 30, None), ("b1-b", 70, None))
    assert custody.state("b1-a").head == custody.state("b1-b").head == split_hash

    custody.refused(custody.move("installed", "b1-a").changed(prev=before_split), Conflict, "b1-a")
    custody.submit(custody.move("installed", "b1-a").changed(prev=split_hash))

    assert (custody.state("b1-a").status, custody.state("b1-b").status) == (
        "installed",
        "delivered",
    )


def test_a_childs_history_holds_its_parents_entries_up_to_the_split(custody: Custody) -> None:
    custody.drive("delivered")
    _split(custody, "b1", ("b1-a", 30, None), ("b1-b", 70, None))
    parent = [e.seq for e in custody.ledger.history("b1").entries]

    own = custody.submit(custody.move("installed", "b1-a")).seq

    assert [e.event["type"] for e in custody.ledger.history("b1").entries][-1] == "batch.split"
    assert [e.seq for e in custody.ledger.history("b1-a").entries] == [*parent, own]
    assert [e.seq for e in custody.ledger.history("b1-b").entries] == parent
    assert [e.seq for e in custody.ledger.history("b1").entries] == parent


def test_split_children_move_independently_and_split_again(custody: Custody) -> None:
    custody.drive("delivered")
    _split(custody, "b1", ("b1-a", 30, None), ("b1-b", 70, None))
    custody.submit(custody.move("transferred-with-site", "b1-b"))
    _split(custody, "b1-a", ("b1-a1", 10, None), ("b1-a2", 20, None))

    assert (custody.state("b1-b").owner, custody.state("b1-b").site) == ("desert-ai", "auh-1")
    grandchild = custody.state("b1-a1")
    assert (grandchild.parent, grandchild.quantity, grandchild.owner) == ("b1-a", 10, "gulf-cloud")
    lineage = [e.event["type"] for e in custody.ledger.history("b1-a1").entries]
    assert lineage == ["batch.fabricated", "batch.exported", "batch.delivered", "batch.split",
                       "batch.split"]  # fmt: skip
