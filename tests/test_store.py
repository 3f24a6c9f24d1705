"""The store: what survives a restart, what a refusal leaves behind, and two writers at once.

Every test runs on a SQLite file and on PostgreSQL (`any_store`). PROTOCOL.md section 5 (a
refusal stores nothing and uses no `seq`; a batch is all or nothing; repeats get their
original receipts) and section 8 (`seq` is a dense, zero-based counter).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from eventsourcing.sqlite import SQLiteRecorder

from ledger.application import Ledger
from ledger.canonical import canonical
from ledger.crypto import Signer
from ledger.errors import (
    BadSignature,
    BatchRefused,
    Conflict,
    InvalidEvent,
    LedgerError,
    NotAuthorized,
)
from ledger.views import Receipt
from tests.support import (
    LOG_SEED,
    ORIGIN,
    Clock,
    World,
    assert_rebuild_equals_live,
    new_ledger,
    populate,
    signer,
    stamp,
)

OpenLedger = Callable[..., Ledger]


@pytest.fixture
def open_ledger(any_store: str, clock: Clock) -> Iterator[OpenLedger]:
    """Opens `Ledger`s on the one store of the test (`init=True`: a new, initialised one)."""
    opened: list[Ledger] = []

    def open_(init: bool = False) -> Ledger:
        ledger = new_ledger(any_store, clock) if init else Ledger(any_store, clock=clock)
        opened.append(ledger)
        return ledger

    yield open_
    for ledger in opened:
        ledger.close()


def log_bytes(ledger: Ledger) -> list[tuple[int, bytes]]:
    """Every log entry as (seq, canonical envelope bytes)."""
    return [(e.seq, canonical(e.envelope)) for e in ledger.log_entries(0, 1000).entries]


def stored_events(ledger: Ledger) -> int:
    """How many events the store holds, of every stream (registry, claims and log)."""
    return ledger.recorder.max_notification_id() or 0


def site(world: World, site_id: str, operator: str, signed_by: str | None = None) -> dict[str, Any]:
    """A site registered by its operator, signed by `signed_by` (default: the operator's key)."""
    body = {"id": site_id, "operator": operator, "country": "AE", "name": site_id}
    return world.envelope(
        world.event("site.registered", operator, site=body), signed_by or operator
    )


def add_key(world: World, party: str, key_name: str) -> dict[str, Any]:
    key = signer(key_name).public_key_b64
    event = world.event("party.key_added", "bis", party=party, key=key)
    return world.envelope(event, "bis", key_name)


def revoke_key(world: World, party: str, key_name: str) -> dict[str, Any]:
    event = world.event("party.key_revoked", "bis", party=party, keyid=signer(key_name).key_id)
    return world.envelope(event, "bis")


# -- a restart ---------------------------------------------------------------------------------


def test_reopened_ledger_holds_every_entry_byte_for_byte(
    open_ledger: OpenLedger, world: World, clock: Clock
) -> None:
    first = open_ledger(init=True)
    submitted = [world.genesis(), world.party("nvidia", ["vendor"], "US")]
    submitted.append(world.party("gulf-cloud", ["buyer"]))
    submitted.append(site(world, "dxb-1", "gulf-cloud"))
    for envelope in submitted:
        first.submit(envelope)
    before, info = log_bytes(first), first.ledger_info()
    first.close()
    clock.advance(hours=1)

    reopened = open_ledger()

    assert log_bytes(reopened) == before
    assert before == [(seq, canonical(env)) for seq, env in enumerate(submitted)]
    assert reopened.ledger_info() == info
    assert reopened.size() == len(submitted)


def test_reopened_ledger_gives_the_next_envelope_the_next_seq(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    size = first.size()
    first.close()

    reopened = open_ledger()
    outcome = reopened.submit(world.party("desert-one", ["buyer"]))

    assert not outcome.repeated
    assert outcome.receipt.seq == size
    assert [seq for seq, _ in log_bytes(reopened)] == list(range(size + 1))


def test_reopened_ledger_answers_old_envelopes_with_their_original_receipts(
    open_ledger: OpenLedger, world: World, clock: Clock
) -> None:
    first = open_ledger(init=True)
    old = [world.genesis(), world.party("nvidia", ["vendor"], "US")]
    old.append(site(world, "tsmc-f18", "nvidia"))
    receipts = [first.submit(envelope).receipt for envelope in old]
    first.close()
    clock.advance(hours=1)  # a receipt made afresh would show a new recorded_at

    reopened = open_ledger()
    repeats = [reopened.submit(envelope) for envelope in reversed(old)]

    assert all(outcome.repeated for outcome in repeats)
    assert [outcome.receipt for outcome in reversed(repeats)] == receipts
    assert reopened.size() == len(old)


def test_reopened_ledger_keeps_the_registry_a_live_key_signs_and_a_revoked_key_is_refused(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    first.submit(add_key(world, "nvidia", "nvidia#2"))
    first.submit(revoke_key(world, "nvidia", "nvidia"))
    first.close()

    reopened = open_ledger()
    size = reopened.size()

    with pytest.raises(BadSignature):
        reopened.submit(site(world, "fab-revoked", "nvidia"))
    assert reopened.size() == size
    assert reopened.submit(site(world, "fab-2", "nvidia", "nvidia#2")).receipt.seq == size
    assert reopened.submit(site(world, "dxb-9", "gulf-cloud")).receipt.seq == size + 1


def test_reopened_ledger_keeps_licenses_packs_and_the_flags_each_event_raised(
    open_ledger: OpenLedger, world: World, clock: Clock
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    conditions = {"reexport_allowed": False, "security_guarantee": False,
                  "us_investment_commitment": False}  # fmt: skip
    terms = {"id": "L-1", "holder": "nvidia", "destinations": ["AE"], "consignees": ["gulf-cloud"],
             "models": ["H200"], "max_quantity": 100, "valid_from": stamp(clock.now),
             "valid_until": stamp(clock.now + timedelta(days=30)),
             "conditions": conditions}  # fmt: skip
    first.submit(world.envelope(world.event("license.granted", "bis", license=terms), "bis"))
    pack = first.current_policy() | {"id": "pack-2", "effective_from": stamp(clock.now)}
    first.submit(world.envelope(world.event("policy.adopted", "bis", policy=pack), "bis"))
    made = world.event("batch.fabricated", "nvidia", batch="b-1", model="H200", quantity=150,
                       country="TW")  # fmt: skip
    head = first.submit(world.envelope(made, "nvidia")).receipt.envelope_hash
    sent = world.event("batch.exported", "nvidia", batch="b-1", prev=head, to="gulf-cloud",
                       destination="RU", license="L-1")  # fmt: skip
    flagged = first.submit(world.envelope(sent, "nvidia")).receipt
    assert sorted(f["rule"] for f in flagged.findings) == [
        "embargoed-destination", "license-invalid", "license-quantity-exceeded",
    ]  # fmt: skip
    before = (first.flags({}), first.license("L-1"), first.policies(), first.current_policy())
    first.close()
    clock.advance(hours=1)

    reopened = open_ledger()

    assert (reopened.flags({}), reopened.license("L-1")) == before[:2]
    assert (reopened.policies(), reopened.current_policy()) == before[2:]
    assert reopened.flags({}).flags == [f | {"seq": flagged.seq} for f in flagged.findings]
    assert assert_rebuild_equals_live(reopened)["rm_flags"]


# -- refusals and batches ----------------------------------------------------------------------


def malformed(world: World) -> dict[str, Any]:
    return {"payloadType": "application/vnd.chipledger.event.v1+json", "signatures": []}


def signed_by_an_unknown_key(world: World) -> dict[str, Any]:
    return site(world, "dxb-7", "gulf-cloud", "stranger")


def signed_by_the_wrong_party(world: World) -> dict[str, Any]:
    return site(world, "dxb-7", "gulf-cloud", "desert-ai")


def reusing_a_site_id(world: World) -> dict[str, Any]:
    return site(world, "dxb-1", "gulf-cloud")


REFUSALS: list[tuple[Callable[[World], dict[str, Any]], type[LedgerError]]] = [
    (malformed, InvalidEvent),
    (signed_by_an_unknown_key, BadSignature),
    (signed_by_the_wrong_party, NotAuthorized),
    (reusing_a_site_id, Conflict),
]


@pytest.mark.parametrize(
    ("make", "error"), REFUSALS, ids=[make.__name__.replace("_", "-") for make, _ in REFUSALS]
)
def test_refused_envelope_stores_nothing_and_uses_no_seq(
    open_ledger: OpenLedger,
    world: World,
    make: Callable[[World], dict[str, Any]],
    error: type[LedgerError],
) -> None:
    ledger = open_ledger(init=True)
    populate(ledger, world)
    size, log, events = ledger.size(), log_bytes(ledger), stored_events(ledger)

    with pytest.raises(error):
        ledger.submit(make(world))

    assert (ledger.size(), log_bytes(ledger), stored_events(ledger)) == (size, log, events)
    assert ledger.submit(world.party("desert-one", ["buyer"])).receipt.seq == size


def buyer(party_id: str, key_name: str | None = None) -> dict[str, Any]:
    """A buyer's `party` object, listing the key `key_name` (default: its own)."""
    key = signer(key_name or party_id).public_key_b64
    return {"id": party_id, "name": party_id, "roles": ["buyer"], "country": "AE", "keys": [key]}


def test_same_event_id_with_other_payload_bytes_is_refused_and_uses_no_seq(
    open_ledger: OpenLedger, world: World
) -> None:
    ledger = open_ledger(init=True)
    populate(ledger, world)
    accepted = world.event("party.registered", "bis", party=buyer("desert-one"))
    ledger.submit(world.envelope(accepted, "bis", "desert-one"))
    size, events = ledger.size(), stored_events(ledger)
    other = {**accepted, "party": buyer("desert-two", "desert-one")}

    with pytest.raises(Conflict):
        ledger.submit(world.envelope(other, "bis", "desert-one"))

    assert (ledger.size(), stored_events(ledger)) == (size, events)
    assert ledger.submit(world.party("desert-three", ["buyer"])).receipt.seq == size


def test_failed_batch_stores_nothing_and_its_good_envelopes_are_new_afterwards(
    open_ledger: OpenLedger, world: World
) -> None:
    ledger = open_ledger(init=True)
    populate(ledger, world)
    size, log, events = ledger.size(), log_bytes(ledger), stored_events(ledger)
    good = [world.party("lion-compute", ["buyer"], "SG"), site(world, "sin-3", "lion-compute")]
    bad = signed_by_an_unknown_key(world)

    with pytest.raises(BatchRefused) as refused:
        ledger.submit_batch({"envelopes": [*good, bad]})

    assert refused.value.index == 2
    assert (ledger.size(), log_bytes(ledger), stored_events(ledger)) == (size, log, events)
    fresh = open_ledger()
    assert (fresh.size(), log_bytes(fresh), stored_events(fresh)) == (size, log, events)
    outcomes = [ledger.submit(envelope) for envelope in good]
    assert [(o.repeated, o.receipt.seq) for o in outcomes] == [(False, size), (False, size + 1)]


def test_batch_is_accepted_whole_with_dense_seqs_and_repeats_keep_their_receipts(
    open_ledger: OpenLedger, world: World
) -> None:
    ledger = open_ledger(init=True)
    populate(ledger, world)
    old = world.party("desert-one", ["buyer"])
    old_receipt = ledger.submit(old).receipt
    size = ledger.size()
    new = [world.party("lion-compute", ["buyer"], "SG")]
    new.append(site(world, "sin-3", "lion-compute"))

    outcomes = ledger.submit_batch({"envelopes": [new[0], old, new[1]]})

    assert [o.repeated for o in outcomes] == [False, True, False]
    assert outcomes[1].receipt == old_receipt
    assert [outcomes[0].receipt.seq, outcomes[2].receipt.seq] == [size, size + 1]
    assert ledger.size() == size + 2


# -- two writers on one store ------------------------------------------------------------------


def test_two_writers_taking_turns_keep_seqs_dense_and_unique_and_lose_nothing(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    second = open_ledger()
    start = first.size()
    sent: list[dict[str, Any]] = []
    receipts: list[Receipt] = []
    for turn in range(4):
        writer, other = (first, second) if turn % 2 == 0 else (second, first)
        party = world.party(f"buyer-{turn}", ["buyer"])
        # the other writer must see the party its peer just registered
        own_site = site(world, f"site-{turn}", f"buyer-{turn}")
        receipts.append(writer.submit(party).receipt)
        receipts.append(other.submit(own_site).receipt)
        sent += [party, own_site]

    assert [r.seq for r in receipts] == list(range(start, start + len(sent)))
    for ledger in (first, second, open_ledger()):
        log = log_bytes(ledger)
        assert [seq for seq, _ in log] == list(range(start + len(sent)))
        assert [body for _, body in log[start:]] == [canonical(env) for env in sent]


def test_second_writer_answers_a_repeat_of_what_the_first_accepted(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    second = open_ledger()
    envelope = world.party("desert-one", ["buyer"])
    receipt = first.submit(envelope).receipt

    outcome = second.submit(envelope)

    assert outcome.repeated
    assert outcome.receipt == receipt
    assert second.size() == first.size() == receipt.seq + 1


def test_stale_writer_judges_again_on_fresh_state_a_key_revoked_by_the_other_is_refused(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    second = open_ledger()
    second.submit(site(world, "fab-2", "nvidia"))  # the second has seen nvidia's key
    first.submit(add_key(world, "nvidia", "nvidia#2"))
    first.submit(revoke_key(world, "nvidia", "nvidia"))
    size, events = first.size(), stored_events(first)

    with pytest.raises(BadSignature):
        second.submit(site(world, "fab-3", "nvidia"))

    assert (second.size(), stored_events(second)) == (size, events)
    assert second.submit(site(world, "fab-4", "nvidia", "nvidia#2")).receipt.seq == size


def test_second_writer_accepts_an_envelope_signed_by_a_key_the_first_writer_added(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    second = open_ledger()
    second.submit(site(world, "fab-2", "nvidia"))  # the second has seen nvidia's keys
    first.submit(add_key(world, "nvidia", "nvidia#2"))
    size = first.size()

    outcome = second.submit(site(world, "fab-3", "nvidia", "nvidia#2"))

    assert (outcome.repeated, outcome.receipt.seq) == (False, size)
    assert [seq for seq, _ in log_bytes(first)] == list(range(size + 1))


def test_writer_opened_before_genesis_accepts_registrations_after_the_other_records_it(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    second = open_ledger()  # opened on an initialised ledger that has no genesis yet
    first.submit(world.genesis())

    outcome = second.submit(world.party("nvidia", ["vendor"], "US"))

    assert (outcome.repeated, outcome.receipt.seq) == (False, 1)
    assert second.ledger_info().authority.party == "bis"


def test_servers_opening_one_store_at_the_same_moment_all_open_and_read_one_ledger(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    first.submit(world.genesis())
    barrier = threading.Barrier(6)

    def open_at_once(_: int) -> Ledger:
        barrier.wait(timeout=30)
        return open_ledger()  # each server (or worker) of a store opens it as it starts

    with ThreadPoolExecutor(6) as pool:
        opened = list(pool.map(open_at_once, range(6)))

    assert [ledger.size() for ledger in opened] == [1] * 6


def test_a_reader_whose_catch_up_the_store_cut_short_catches_up_on_its_next_read(
    open_ledger: OpenLedger, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    second = open_ledger()
    made = world.event("batch.fabricated", "nvidia", batch="b-9", model="H200", quantity=1,
                       country="TW", serials=["s-9"])  # fmt: skip
    first.submit(world.envelope(made, "nvidia"))
    read_notifications = second.recorder.select_notifications

    def gone_once(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(second.recorder, "select_notifications", read_notifications)
        raise OperationalError("the store went away for a moment")

    monkeypatch.setattr(second.recorder, "select_notifications", gone_once)
    with pytest.raises(OperationalError):
        second.serial("s-9")  # its catch-up fails half way: the log head is already read

    assert second.serial("s-9").batch == "b-9"


# -- init --------------------------------------------------------------------------------------


def test_init_on_a_store_that_holds_a_ledger_is_refused_and_changes_nothing(
    open_ledger: OpenLedger, world: World
) -> None:
    first = open_ledger(init=True)
    populate(first, world)
    info, log, events = first.ledger_info(), log_bytes(first), stored_events(first)
    again = open_ledger()

    with pytest.raises(Conflict):
        again.initialise("other.example/log", signer("other").public_key_b64, b"\x07" * 32)

    for ledger in (first, again, open_ledger()):
        assert (ledger.ledger_info(), log_bytes(ledger), stored_events(ledger)) == (
            info,
            log,
            events,
        )


def test_init_racing_another_init_on_the_same_store_is_refused_and_changes_nothing(
    open_ledger: OpenLedger,
) -> None:
    winner, loser = open_ledger(), open_ledger()  # both opened while the store was empty
    log_key = Signer(LOG_SEED).public_key
    winner.initialise(ORIGIN, signer("bis").public_key_b64, log_key)
    info, events = winner.ledger_info(), stored_events(winner)

    with pytest.raises(Conflict):
        loser.initialise("other.example/log", signer("other").public_key_b64, b"\x07" * 32)

    fresh = open_ledger()
    assert (fresh.ledger_info(), stored_events(fresh)) == (info, events)


def test_init_with_a_key_that_is_not_base64_is_refused_and_stores_nothing(
    open_ledger: OpenLedger,
) -> None:
    ledger = open_ledger()

    with pytest.raises(InvalidEvent):
        ledger.initialise(ORIGIN, "not a key", Signer(LOG_SEED).public_key)

    assert not open_ledger().initialised
    assert stored_events(ledger) == 0


# -- SQLite durability -------------------------------------------------------------------------


def test_sqlite_store_writes_ahead_and_syncs_fully(store: str, clock: Clock) -> None:
    ledger = new_ledger(store, clock)
    recorder = ledger.recorder
    assert isinstance(recorder, SQLiteRecorder)
    try:
        for commit in (False, True):  # a reader's and a writer's connection of the library
            with recorder.datastore.transaction(commit=commit) as cursor:
                cursor.execute("PRAGMA journal_mode")
                assert str(cursor.fetchone()[0]).lower() == "wal"
                cursor.execute("PRAGMA synchronous")
                assert cursor.fetchone()[0] == 2  # FULL
    finally:
        ledger.close()
    fresh = sqlite3.connect(store)
    try:
        assert fresh.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        fresh.close()
