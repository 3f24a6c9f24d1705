"""The leaner write path of batched ingest, as a specification.

- Accepted event ids live in a table of their own (`ledger.recorders`), written in the save's
  transaction, on SQLite and on PostgreSQL; SQLite's one-call insert returns the rowids it took.
- A batch is judged optimistically: repeats, reused ids and refusals answer as before.
- Batches of `MIN_BATCH` or more are decoded and signature-checked ahead on a worker process
  (`ledger.ahead`); no outcome depends on it, or on its death.
- The fast paths (`canonical_text`, the envelope's canonical bytes, `built`) give exactly
  what the slow ones give.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import ledger.ahead as ahead_module
from ledger import events
from ledger.aggregates import LOG_ID, Claim, stream_id
from ledger.ahead import Worker, _bounds, prepare
from ledger.application import Ledger
from ledger.batch import Batch
from ledger.canonical import canonical, canonical_text
from ledger.crypto import PAYLOAD_TYPE, pae
from ledger.envelopes import decode
from ledger.errors import BadSignature, BatchRefused, Conflict, InvalidEvent, LedgerError, TooLarge
from ledger.models import built
from ledger.recorders import ours
from ledger.views import Outcome, Receipt
from tests.support import ORIGIN, START, Clock, World, new_ledger, populate, signer

Json = dict[str, Any]
Refusal = tuple[int, type[LedgerError], str]
BOUNDED = settings(max_examples=300, deadline=None)


@pytest.fixture
def any_ledger(any_store: str, clock: Clock, world: World) -> Iterator[Ledger]:
    """The populated ledger, on a SQLite file and on PostgreSQL."""
    ledger = new_ledger(any_store, clock)
    populate(ledger, world)
    yield ledger
    ledger.close()


def fabricate(world: World, batch: str, *signers: str) -> Json:
    event = world.event(
        "batch.fabricated", "nvidia", batch=batch, model="H200", quantity=8, country="TW"
    )
    return world.envelope(event, *(signers or ("nvidia",)))


def payload(envelope: Json) -> bytes:
    return base64.b64decode(envelope["payload"])


def event_id(envelope: Json) -> str:
    return str(json.loads(payload(envelope))["id"])


def digest(envelope: Json) -> str:
    return hashlib.sha256(payload(envelope)).hexdigest()


def event_ids(ledger: Ledger, ids: list[str]) -> dict[str, tuple[int, str]]:
    recorder = ours(ledger.recorder)
    return recorder.select_event_ids(ids)


def stored_events(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def refusal(ledger: Ledger, envelopes: list[Json]) -> Refusal:
    """Submit a batch that must be refused; (index, error class, message). Nothing stored."""
    size, stored = ledger.size(), stored_events(ledger)
    with pytest.raises(BatchRefused) as refused:
        ledger.submit_batch({"envelopes": envelopes})
    assert (ledger.size(), stored_events(ledger)) == (size, stored)
    return refused.value.index, type(refused.value.cause), refused.value.message


# -- faults: a good fabrication made bad in one way ---------------------------------------------


def bad_signature(world: World, batch: str) -> Json:
    envelope = fabricate(world, batch)
    forged = base64.b64encode(signer("nvidia").sign(b"another message")).decode()
    return {**envelope, "signatures": [{**envelope["signatures"][0], "sig": forged}]}


def unknown_key(world: World, batch: str) -> Json:
    return fabricate(world, batch, "stranger")


def non_canonical(world: World, batch: str) -> Json:
    event = json.loads(payload(fabricate(world, batch)))
    spaced = json.dumps(event).encode()  # ", " and ": ", in insertion order
    sig = signer("nvidia").sign(pae(PAYLOAD_TYPE, spaced))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(spaced).decode(),
        "signatures": [{"keyid": signer("nvidia").key_id, "sig": base64.b64encode(sig).decode()}],
    }


FAULTS = [bad_signature, unknown_key, non_canonical]


# -- the event ids table -------------------------------------------------------------------------


def test_every_accepted_event_id_maps_to_its_seq_and_payload_digest_and_no_other_id_does(
    any_ledger: Ledger, world: World
) -> None:
    any_ledger.submit_batch({"envelopes": [fabricate(world, f"b{i}") for i in range(3)]})
    any_ledger.submit(fabricate(world, "b3"))
    log = any_ledger.log_entries(0, 1000).entries
    unknown = [world.next_id(), "not-an-event-id"]

    found = event_ids(any_ledger, [event_id(e.envelope) for e in log] + unknown)

    assert found == {event_id(e.envelope): (e.seq, digest(e.envelope)) for e in log}
    assert len(found) == any_ledger.size() == 12
    assert event_ids(any_ledger, unknown) == {}


def test_a_refused_batch_leaves_no_event_id_row(any_ledger: Ledger, world: World) -> None:
    good = [fabricate(world, "b1"), world.party("lion", ["buyer"], "SG")]

    index, error, _ = refusal(any_ledger, [*good, bad_signature(world, "b2")])

    assert (index, error) == (2, BadSignature)
    assert event_ids(any_ledger, [event_id(e) for e in good]) == {}


def test_sqlite_notification_ids_returned_by_the_batch_insert_are_the_rowids_it_stored(
    populated: Ledger, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = populated.recorder
    insert = recorder.insert_events
    returned: list[int] = []
    inserted: list[tuple[Any, int]] = []

    def spy(stored: Any, **kwargs: Any) -> Any:
        ids = insert(stored, **kwargs)
        returned.extend(ids or [])
        inserted.extend((s.originator_id, s.originator_version) for s in stored)
        return ids

    monkeypatch.setattr(recorder, "insert_events", spy)
    before = recorder.max_notification_id() or 0
    for batch in ("b1", "b2"):
        parts = [fabricate(world, f"{batch}-{i}") for i in range(3)]
        populated.submit_batch({"envelopes": [*parts, world.party(batch, ["buyer"])]})

    notes = recorder.select_notifications(before + 1, 1000)
    assert [n.id for n in notes] == returned == list(range(before + 1, before + 1 + len(notes)))
    assert [(n.originator_id, n.originator_version) for n in notes] == inserted
    assert notes[-1].id == recorder.max_notification_id()
    assert populated.reads.position() == populated.size()  # the read models, in that commit


def test_a_store_written_before_the_event_ids_table_still_answers_repeats_with_receipts(
    store: str, clock: Clock, world: World
) -> None:
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    old = world.party("desert-one", ["buyer"])
    receipt = ledger.submit(old).receipt
    for entry in ledger.log_entries(0, 1000).entries:  # what the previous release stored
        name = f"event:{event_id(entry.envelope)}"
        ledger.save(
            Claim._create(
                events.Claimed, id=stream_id("claim", name), timestamp=clock(), name=name,
                owner="bis", digest=digest(entry.envelope), seq=entry.seq,
            )
        )  # fmt: skip
    ledger.close()
    with contextlib.closing(sqlite3.connect(store)) as db:
        db.execute("DROP TABLE ledger_event_ids")  # ... and without the table

    outcome = Ledger(store, clock=clock).submit(old)

    assert (outcome.repeated, outcome.receipt) == (True, receipt)


def test_a_store_written_before_the_signatures_index_gets_its_rows_when_opened(
    store: str, clock: Clock, world: World
) -> None:
    ledger = new_ledger(store, clock)
    populate(ledger, world)
    size = ledger.size()
    with contextlib.closing(sqlite3.connect(store)) as db:
        before = db.execute("SELECT * FROM ledger_signatures ORDER BY seq, keyid").fetchall()
    ledger.close()
    with contextlib.closing(sqlite3.connect(store)) as db, db:
        db.execute("DELETE FROM ledger_signatures")  # what a store of that release holds

    Ledger(store, clock=clock).close()

    with contextlib.closing(sqlite3.connect(store)) as db:
        after = db.execute("SELECT * FROM ledger_signatures ORDER BY seq, keyid").fetchall()
    assert len(before) >= size
    assert after == before


# -- optimistic batches ---------------------------------------------------------------------------


def test_a_batch_repeating_an_earlier_batch_gets_the_original_receipts_and_stores_the_new_only(
    any_ledger: Ledger, world: World, clock: Clock
) -> None:
    earlier = [fabricate(world, "b1"), world.party("lion", ["buyer"], "SG")]
    receipts = [o.receipt for o in any_ledger.submit_batch({"envelopes": earlier})]
    size = any_ledger.size()
    clock.advance(hours=1)  # a receipt made afresh would show a new recorded_at
    new = [fabricate(world, "b2"), world.site("sin-3", "lion")]

    outcomes = any_ledger.submit_batch({"envelopes": [earlier[0], new[0], earlier[1], new[1]]})

    assert [o.repeated for o in outcomes] == [True, False, True, False]
    assert [outcomes[0].receipt, outcomes[2].receipt] == receipts
    assert [outcomes[1].receipt.seq, outcomes[3].receipt.seq] == [size, size + 1]
    assert any_ledger.size() == size + 2
    sent, seqs = [*earlier, *new], [*(r.seq for r in receipts), size, size + 1]
    assert event_ids(any_ledger, [event_id(e) for e in sent]) == {
        event_id(e): (seq, digest(e)) for e, seq in zip(sent, seqs, strict=True)
    }


def test_a_batch_reusing_an_earlier_event_id_with_other_bytes_is_409_at_its_index(
    any_ledger: Ledger, world: World
) -> None:
    accepted = world.event("party.registered", "bis", party=buyer("desert-one"))
    any_ledger.submit_batch({"envelopes": [World.envelope(accepted, "bis", "desert-one")]})
    row = event_ids(any_ledger, [accepted["id"]])
    reused = {**accepted, "party": buyer("desert-two")}  # a new party: only the id is wrong
    new = [fabricate(world, "b1"), fabricate(world, "b2")]
    batch = [*new, World.envelope(reused, "bis", "desert-two"), fabricate(world, "b3")]

    index, error, message = refusal(any_ledger, batch)

    assert (index, error) == (2, Conflict)
    assert message.startswith(f"envelope 2 of the batch was refused: event id {accepted['id']}")
    assert event_ids(any_ledger, [accepted["id"], *(event_id(e) for e in batch)]) == row


def buyer(party_id: str) -> Json:
    key = signer(party_id).public_key_b64
    return {"id": party_id, "name": party_id, "roles": ["buyer"], "country": "AE", "keys": [key]}


def wrong_prev(world: World, batch: str) -> Json:
    """An export of the existing batch `b0`, chained to a `prev` that is not its head."""
    event = world.event(
        "batch.exported", "nvidia", batch="b0", prev="0" * 64, to="gulf-cloud", destination="AE"
    )
    return world.envelope(event, "nvidia")


@pytest.mark.parametrize("repeat_first", [False, True], ids=["fresh", "after-a-repeat"])
@pytest.mark.parametrize("fault", [*FAULTS, wrong_prev], ids=lambda f: f.__name__)
@pytest.mark.parametrize("k", [0, 3])
def test_a_batch_refused_at_k_answers_k_and_what_envelope_k_alone_is_answered(
    populated: Ledger, world: World, fault: Any, k: int, repeat_first: bool
) -> None:
    earlier = fabricate(world, "b0")
    populated.submit(earlier)
    batch = [fabricate(world, f"b{i + 1}") for i in range(5)]
    batch[k] = fault(world, f"b{k + 1}")
    if repeat_first:
        batch.insert(0, earlier)
        k += 1

    index, error, message = refusal(populated, batch)

    with pytest.raises(LedgerError) as alone:
        populated.submit(batch[k])
    assert (index, error) == (k, type(alone.value))
    assert message == f"envelope {k} of the batch was refused: {alone.value.message}"


def test_a_batch_with_the_same_new_envelope_twice_accepts_it_once(
    populated: Ledger, world: World
) -> None:
    envelope, size = fabricate(world, "b1"), populated.size()

    first, second = populated.submit_batch({"envelopes": [envelope, envelope]})

    assert (first.repeated, second.repeated) == (False, True)
    assert first.receipt == second.receipt
    assert (first.receipt.seq, populated.size()) == (size, size + 1)


# -- decoding and signatures ahead, on a worker process --------------------------------------------


def started(worker: Worker) -> Worker:
    """The worker, once it has said it is ready (it answers on a pipe: no sleeping)."""
    assert worker.start()
    deadline = time.monotonic() + 30
    while not worker.ready and time.monotonic() < deadline:
        worker.pump(0.5)
    assert worker.ready
    return worker


def stopped(worker: Worker) -> None:
    process = worker._process
    worker.fail()
    if process is not None:
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def workers() -> Iterator[list[Worker]]:
    started_here: list[Worker] = []
    yield started_here
    for worker in started_here:
        stopped(worker)


@pytest.fixture
def worker(workers: list[Worker], monkeypatch: pytest.MonkeyPatch) -> Worker:
    """A ready worker of this module's own, used by every batch big enough on any machine
    (a new one if the last was given up)."""
    if not workers or not workers[-1].ready:
        workers.append(started(Worker()))
    monkeypatch.setattr(ahead_module, "_WORKER", workers[-1])
    monkeypatch.setattr(ahead_module, "usable_cores", lambda: 2)
    return workers[-1]


@contextlib.contextmanager
def inline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ahead_module, "usable_cores", lambda: 1)
        yield


def forty(world: World) -> list[Json]:
    return [fabricate(world, f"c{i}") for i in range(40)]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("k", [0, 5, 12, 30, 39])
def test_a_refusal_is_the_same_with_the_worker_and_without_it(
    worker: Worker, populated: Ledger, world: World, fault: Any, k: int
) -> None:
    batch = forty(world)
    batch[k] = fault(world, f"c{k}")
    jobs = worker._next_job

    ahead = refusal(populated, batch)
    with inline():
        here = refusal(populated, batch)

    assert worker._next_job > jobs  # the worker took part
    assert ahead == here
    assert ahead[:2] == (k, InvalidEvent if fault is non_canonical else BadSignature)


def test_a_key_revoked_earlier_in_a_batch_refuses_what_it_signs_later_with_the_worker_too(
    worker: Worker, populated: Ledger, world: World
) -> None:
    """The worker checks signatures under the keys registered when the batch began; a
    verdict for a key the batch revokes before using it must not count."""
    batch = forty(world)
    key = signer("nvidia#2").public_key_b64
    added = world.event("party.key_added", "bis", party="nvidia", key=key)
    revoked = world.event("party.key_revoked", "bis", party="nvidia", keyid=signer("nvidia").key_id)
    batch[9:11] = [world.envelope(added, "bis", "nvidia#2"), world.envelope(revoked, "bis")]
    jobs = worker._next_job

    ahead = refusal(populated, batch)
    with inline():
        here = refusal(populated, batch)

    assert worker._next_job > jobs
    assert ahead == here
    assert ahead[:2] == (11, BadSignature)


def test_a_batch_is_accepted_the_same_with_the_worker_and_without_it(
    worker: Worker, tmp_path: Path, clock: Clock
) -> None:
    receipts, jobs = [], worker._next_job
    for here in (False, True):
        world = World(clock)  # the same ids, so the same envelopes
        ledger = new_ledger(str(tmp_path / f"{here}.db"), clock)
        populate(ledger, world)
        with inline() if here else contextlib.nullcontext():
            receipts.append(ledger.submit_batch({"envelopes": forty(world)}))

    assert worker._next_job > jobs  # the worker took part
    assert receipts[0] == receipts[1]
    assert [(o.repeated, o.receipt.seq) for o in receipts[0]] == [(False, s) for s in range(8, 48)]


@pytest.mark.parametrize("death", ["failed", "killed"])
def test_after_the_worker_dies_batches_are_judged_here_the_same(
    worker: Worker, populated: Ledger, world: World, death: str
) -> None:
    process = worker._process
    assert process is not None
    if death == "failed":
        worker.fail()
    else:
        process.kill()
    process.wait(timeout=10)
    batch = forty(world)

    faulty = [*batch[:20], bad_signature(world, "c20"), *batch[21:]]
    assert refusal(populated, faulty)[:2] == (20, BadSignature)
    outcomes = populated.submit_batch({"envelopes": batch})

    assert not worker.ready  # given up: inline from now on
    assert [(o.repeated, o.receipt.seq) for o in outcomes] == [(False, s) for s in range(8, 48)]


def test_prepare_gives_a_verdict_only_for_a_signature_that_verifies_under_the_given_key(
    world: World,
) -> None:
    good = world.envelope(
        world.event("party.registered", "bis", party=buyer("lion")), "bis", "lion"
    )
    bis, lion = ((signer(n).key_id, signer(n).public_key) for n in ("bis", "lion"))
    forged = base64.b64encode(signer("lion").sign(b"another message")).decode()
    tampered = {**good, "signatures": [good["signatures"][0], {"keyid": lion[0], "sig": forged}]}

    def verdicts(envelope: Json, keys: dict[str, bytes]) -> frozenset[tuple[str, bytes]]:
        [(decoded, verified)] = prepare([envelope], ORIGIN, START, keys)
        assert decoded == decode(envelope, ORIGIN, START)
        return verified

    assert verdicts(good, dict([bis, lion])) == {bis, lion}
    assert verdicts(good, dict([lion])) == {lion}
    assert verdicts(good, {bis[0]: lion[1], lion[0]: bis[1]}) == set()  # keys swapped
    assert verdicts(tampered, dict([bis, lion])) == {bis}
    [(error, verified)] = prepare([{**good, "payload": "!"}], ORIGIN, START, dict([bis]))
    assert isinstance(error, InvalidEvent)
    assert verified == set()


@given(st.integers(min_value=0, max_value=3000))
def test_chunk_bounds_cover_every_index_once_in_order(size: int) -> None:
    bounds = _bounds(size)

    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(size))
    assert all(start < stop for start, stop in bounds)


# -- the fast paths give what the slow ones give ---------------------------------------------------

SAFE = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
ASCII = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8)
plain = st.recursive(
    st.none() | st.booleans() | SAFE | ASCII,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ASCII, inner, max_size=4),
    max_leaves=20,
)
anything = st.recursive(
    st.none() | st.booleans() | SAFE | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


def reference(value: Any) -> bytes | None:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        return None


@BOUNDED
@given(anything)
def test_canonical_text_of_canonical_bytes_is_their_value_or_nothing(value: Any) -> None:
    data = reference(value)
    assume(data is not None)
    assert data is not None
    found = canonical_text(data)
    if found is not None:
        assert found == json.loads(data)
        assert rfc8785.dumps(found) == data


@BOUNDED
@given(plain)
def test_canonical_text_reads_every_canonical_plain_value(value: Any) -> None:
    assert canonical_text(rfc8785.dumps(value)) == value


def variants(value: Any) -> list[bytes]:
    """JSON texts of `value` that are not all canonical: spaced, unsorted, escaped, padded,
    with a key written twice, with floats written as floats."""
    texts = [
        json.dumps(value),
        json.dumps(value, separators=(",", ":")),
        json.dumps(value, sort_keys=True, separators=(",", ":")),
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        json.dumps(value, sort_keys=True, indent=1),
        json.dumps(floated(value), sort_keys=True, separators=(",", ":")),
        json.dumps(value, sort_keys=True, separators=(",", ":")) + " ",
    ]
    if isinstance(value, dict) and value:
        pairs = [json.dumps({k: v}, separators=(",", ":"))[1:-1] for k, v in sorted(value.items())]
        texts.append("{" + ",".join([pairs[0], *pairs]) + "}")
    return [t.encode() for t in texts]


def floated(value: Any) -> Any:
    """`value` with its integers as floats (written `1.0`)."""
    if isinstance(value, bool) or not isinstance(value, int | list | dict):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [floated(v) for v in value]
    return {k: floated(v) for k, v in value.items()}


@BOUNDED
@given(st.one_of(anything, plain).map(variants) | st.lists(st.binary(max_size=24), max_size=3))
def test_canonical_text_accepts_only_bytes_that_are_exactly_rfc8785(texts: list[bytes]) -> None:
    for data in texts:
        found = canonical_text(data)
        if found is not None:
            assert data == rfc8785.dumps(json.loads(data))
            assert found == json.loads(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"a":1.0}', id="one-point-oh"),
        pytest.param(b'{"a":1e2}', id="exponent"),
        pytest.param(b'{"b":1,"a":2}', id="unsorted"),
        pytest.param(b'{"a":1,"a":1}', id="duplicated-key"),
        pytest.param(b'{"a": 1}', id="space"),
        pytest.param(b"[9007199254740992]", id="2^53"),
        pytest.param(b"-0", id="minus-zero"),
        pytest.param(b'"\\u00e9"', id="escaped-non-ascii"),
        pytest.param(b'"\\u007f"', id="escaped-del"),
        pytest.param(b'"\\/"', id="escaped-slash"),
        pytest.param(b'"\\ud800"', id="lone-surrogate"),
        pytest.param(b"NaN", id="nan"),
        pytest.param('{"k":"é"}'.encode(), id="canonical-but-not-ascii-left-to-the-slow-path"),
    ],
)
def test_canonical_text_declines_bytes_it_cannot_show_canonical(data: bytes) -> None:
    assert canonical_text(data) is None


def test_canonical_text_reads_the_payloads_clients_sign(world: World) -> None:
    events_ = [
        json.loads(payload(fabricate(world, "b1"))),
        world.event("party.registered", "bis", party=buyer("lion")),
        world.event("batch.delivered", "gulf-cloud", batch="b1", prev="a" * 64, site="dxb-1",
                    quantity=8, serials=["S-1", "S-2"]),
    ]  # fmt: skip
    for event in events_:
        assert canonical_text(canonical(event)) == event


@pytest.mark.parametrize(
    "signers",
    [("nvidia",), ("bis", "lion"), ("bis", "lion", "gulf-cloud", "desert-ai")],
    ids=["one-signature", "two", "four"],
)
@pytest.mark.parametrize("name", ["Lion", "Lion ~~~~~", "Société ~", "東京 ~~ \U0001f981"])
def test_decoded_canonical_bytes_are_the_rfc8785_bytes_of_the_envelope(
    world: World, signers: tuple[str, ...], name: str
) -> None:
    envelope = World.envelope(
        world.event("party.registered", "bis", party=buyer("lion") | {"name": name}), *signers
    )

    decoded = decode(envelope, ORIGIN, START)

    assert decoded.canonical == rfc8785.dumps(envelope)
    assert decoded.envelope_hash == hashlib.sha256(rfc8785.dumps(envelope)).hexdigest()


@pytest.mark.parametrize("junk", ["é" * 600_000, "\x01" * 200_000], ids=["utf8", "escaped"])
def test_an_envelope_over_1_mib_in_a_batch_is_too_large_at_its_index(
    populated: Ledger, world: World, junk: str
) -> None:
    big = {**fabricate(world, "b2"), "payload": junk}
    assert len(rfc8785.dumps(big)) > 1 << 20

    assert refusal(populated, [fabricate(world, "b1"), big])[:2] == (1, TooLarge)


# -- built models ---------------------------------------------------------------------------------


@pytest.fixture
def made(populated: Ledger, world: World) -> list[BaseModel]:
    """Models of every kind `built` makes, as the ledger made or stored them."""
    outcome = populated.submit(fabricate(world, "b1"))
    head = populated.batch("b1").head
    export = world.event(
        "batch.exported", "nvidia", batch="b1", prev=head, to="gulf-cloud", destination="AE"
    )
    populated.submit(world.envelope(export, "nvidia"))
    batch = populated.repository_get(stream_id("batch", "b1"))
    assert isinstance(batch, Batch)
    fabricated, exported = populated.events.get(stream_id("batch", "b1"))
    [entry] = populated.events.get(LOG_ID, gt=outcome.receipt.seq - 1, lte=outcome.receipt.seq)
    assert isinstance(fabricated, events.BatchFabricated)
    assert isinstance(exported, events.BatchExported)
    assert isinstance(entry, events.EntryRecorded)
    return [outcome, outcome.receipt, batch.snapshot(), entry, fabricated.accepted, exported]


def fields(model: BaseModel) -> Json:
    return {name: getattr(model, name) for name in type(model).model_fields}


def test_a_built_model_equals_the_same_model_validated_and_writes_the_same_json(
    made: list[BaseModel],
) -> None:
    for model in made:
        cls, values = type(model), fields(model)
        again, checked = built(cls, **values), cls.model_validate(values)
        stored = model.model_dump_json(exclude_none=True)  # the form the mapper stores
        assert again == checked == cls.model_validate_json(stored)
        assert again.model_dump_json() == checked.model_dump_json() == model.model_dump_json()
        assert again.model_dump_json(exclude_none=True) == stored


def test_a_model_built_without_a_required_field_is_a_type_error(made: list[BaseModel]) -> None:
    for model in made:
        cls, values = type(model), fields(model)
        for name in (n for n, f in cls.model_fields.items() if f.is_required()):
            with pytest.raises(TypeError, match=name):
                built(cls, **{k: v for k, v in values.items() if k != name})


@pytest.mark.parametrize("cls", [Receipt, Outcome, events.Accepted])
def test_a_model_built_with_a_misspelled_field_is_a_type_error(
    made: list[BaseModel], cls: type[BaseModel]
) -> None:
    values = fields(next(m for m in made if type(m) is cls))
    name = next(iter(values))
    with pytest.raises(TypeError):
        built(cls, **{k: v for k, v in values.items() if k != name}, **{name + "_": values[name]})
