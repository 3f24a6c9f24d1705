"""Invariants of acceptance, as properties (PROTOCOL.md sections 2 and 5).

- A changed byte never makes a new entry: a signed envelope with any one byte changed is
  refused, or, once the original is accepted, at most answered as a repeat with the original
  receipt (a repeat is judged by event id and payload bytes, "whatever its signatures", so a
  change inside a signature or key id can be one). It never takes a new `seq`.
- A repeat never takes a new `seq`: resending accepted envelopes, in any form, alone or in a
  batch, among fresh ones, gives their original receipts; the log grows by the fresh ones only.
- `canonical` is idempotent over JSON values without floats.

Each test builds one ledger and shares it across its Hypothesis examples (a nested `@given`),
which is safe because each example checks that a refusal stored nothing.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.canonical import canonical, parse_json
from ledger.errors import LedgerError
from ledger.views import Receipt
from tests.support import World

BOUNDED = settings(max_examples=200, deadline=None)
BASE64_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
Envelope = dict[str, Any]


def _setup(ledger: Ledger, world: World) -> list[tuple[Envelope, Receipt]]:
    """Genesis, two buyers and a vendor; the envelopes accepted, with their receipts."""
    envelopes = [
        world.genesis(),
        world.party("gulf-cloud", ["buyer"], "AE"),
        world.party("desert-ai", ["buyer"], "AE"),
        world.party("nvidia", ["vendor"], "US"),
    ]
    return [(e, ledger.submit(e).receipt) for e in envelopes]


def _targets(world: World) -> dict[str, bytes]:
    """Signed, not yet submitted: one signature, and two (a key introduced by registration)."""
    return {
        "site-one-signature": canonical(world.site("dxb-1", "gulf-cloud")),
        "party-two-signatures": canonical(world.party("fastfreight", ["carrier"], "MY")),
    }


def _changed(data: bytes, position: int, value: int) -> bytes:
    mutant = bytearray(data)
    mutant[position] = value
    return bytes(mutant)


def _base64_positions(data: bytes) -> list[int]:
    """Where the payload, key ids and signatures lie: the bytes a forger would change."""
    value = json.loads(data)
    texts = [value["payload"]] + [s[k] for s in value["signatures"] for k in ("keyid", "sig")]
    spans = [(data.index(t.encode()), len(t)) for t in texts]
    return [start + offset for start, length in spans for offset in range(length)]


def _one_byte_changed(original: bytes) -> st.SearchStrategy[bytes]:
    """Any position, any other value, with extra weight on base64 text and base64 letters.

    Uniform draws seldom keep the JSON and base64 well-formed, and those are the mutants
    that reach the signature check; so half of the draws aim there.
    """
    positions = st.integers(0, len(original) - 1) | st.sampled_from(_base64_positions(original))
    values = st.integers(0, 255) | st.sampled_from(list(BASE64_LETTERS))

    @st.composite
    def mutant(draw: st.DrawFn) -> bytes:
        position = draw(positions, label="position")
        value = draw(values.filter(lambda v: v != original[position]), label="value")
        return _changed(original, position, value)

    return mutant()


def _refused_or_repeated(ledger: Ledger, mutant: bytes, original: Receipt | None) -> None:
    """The mutant is refused, or (original accepted) answered with the original receipt."""
    size = ledger.size()
    try:
        outcome = ledger.submit(mutant)
    except LedgerError:
        assert ledger.size() == size
        return
    assert original is not None, "a changed byte made an envelope that was accepted"
    assert outcome.repeated, "a changed byte made a new entry"
    assert outcome.receipt == original
    assert ledger.size() == size


# -- (a) a changed byte never makes a new entry ----------------------------------------------


def test_any_single_byte_change_of_an_unaccepted_envelope_is_refused(
    ledger: Ledger, world: World
) -> None:
    _setup(ledger, world)
    targets = _targets(world)

    @BOUNDED
    @given(name=st.sampled_from(sorted(targets)), data=st.data())
    def check(name: str, data: st.DataObject) -> None:
        original = targets[name]
        mutant = data.draw(_one_byte_changed(original), label="mutant")
        _refused_or_repeated(ledger, mutant, None)

    check()
    for original in targets.values():  # unchanged, each is still acceptable
        assert not ledger.submit(original).repeated


def test_any_single_byte_change_of_an_accepted_envelope_is_refused_or_its_original_receipt(
    ledger: Ledger, world: World
) -> None:
    _setup(ledger, world)
    targets = _targets(world)
    receipts = {name: ledger.submit(data).receipt for name, data in targets.items()}

    @BOUNDED
    @given(name=st.sampled_from(sorted(targets)), data=st.data())
    def check(name: str, data: st.DataObject) -> None:
        mutant = data.draw(_one_byte_changed(targets[name]), label="mutant")
        _refused_or_repeated(ledger, mutant, receipts[name])

    check()
    assert ledger.size() == 4 + len(targets)


def _bit_flips(original: bytes) -> list[bytes]:
    """One mutant per position, flipping a different bit from one position to the next."""
    return [_changed(original, i, original[i] ^ (1 << (i % 8))) for i in range(len(original))]


def test_a_flipped_bit_at_every_position_never_makes_a_new_entry(
    ledger: Ledger, world: World
) -> None:
    _setup(ledger, world)
    targets = _targets(world)
    for original in targets.values():
        for mutant in _bit_flips(original):
            _refused_or_repeated(ledger, mutant, None)
    receipts = {name: ledger.submit(data).receipt for name, data in targets.items()}
    for name, original in targets.items():
        for mutant in _bit_flips(original):
            _refused_or_repeated(ledger, mutant, receipts[name])
    assert ledger.size() == 4 + len(targets)


# -- (b) a repeat never takes a new seq -------------------------------------------------------

FORMS = ["parsed", "canonical-bytes", "indented-bytes", "signatures-removed"]
Item = tuple[bool, int, str]  # (fresh, which earlier envelope to repeat, form of a repeat)
ITEMS = st.tuples(st.booleans(), st.integers(0, 10_000), st.sampled_from(FORMS))
STEPS = st.lists(
    st.tuples(st.sampled_from(["one-by-one", "batch"]), st.lists(ITEMS, min_size=1, max_size=5)),
    min_size=1,
    max_size=6,
)


def _form(envelope: Envelope, form: str, mode: str) -> Envelope | bytes:
    """How a repeat is sent; in a batch every envelope is parsed JSON."""
    if form == "canonical-bytes" and mode == "one-by-one":
        return canonical(envelope)
    if form == "indented-bytes" and mode == "one-by-one":
        return json.dumps(envelope, indent=2).encode()
    if form == "signatures-removed":  # a repeat is answered whatever its signatures
        return {**envelope, "signatures": []}
    return envelope


def test_repeats_interleaved_with_fresh_envelopes_keep_their_receipts_and_seq(
    ledger: Ledger, world: World
) -> None:
    accepted = _setup(ledger, world)
    pool = [envelope for envelope, _ in accepted]
    receipts: dict[int, Receipt] = {index: r for index, (_, r) in enumerate(accepted)}
    operators, sites = ["gulf-cloud", "desert-ai", "nvidia"], count()

    @settings(max_examples=100, deadline=None)
    @given(steps=STEPS)
    def check(steps: list[tuple[str, list[Item]]]) -> None:
        for mode, items in steps:
            size = ledger.size()
            sent: list[tuple[int, bool]] = []
            bodies: list[Envelope | bytes] = []
            for fresh, pick, form in items:
                if fresh:
                    number = next(sites)
                    pool.append(world.site(f"s-{number}", operators[number % len(operators)]))
                index = len(pool) - 1 if fresh else pick % len(pool)
                sent.append((index, fresh))
                bodies.append(pool[index] if fresh else _form(pool[index], form, mode))
            if mode == "batch":
                outcomes = ledger.submit_batch({"envelopes": bodies})
            else:
                outcomes = [ledger.submit(body) for body in bodies]
            new_seq = count(size)
            for (index, fresh), outcome in zip(sent, outcomes, strict=True):
                if fresh:
                    assert not outcome.repeated
                    assert outcome.receipt.seq == next(new_seq)
                    receipts[index] = outcome.receipt
                else:
                    assert outcome.repeated
                    assert outcome.receipt == receipts[index]
            assert ledger.size() == size + sum(fresh for _, fresh in sent)

    check()
    assert ledger.size() == len(receipts)
    assert sorted(r.seq for r in receipts.values()) == list(range(len(receipts)))


# -- (c) canonical form is a fixed point --------------------------------------------------------

JSON_WITHOUT_FLOATS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(value=JSON_WITHOUT_FLOATS)
def test_canonical_is_idempotent_over_json_without_floats(value: Any) -> None:
    once = canonical(value)
    assert parse_json(once) == value
    assert canonical(parse_json(once)) == once


@settings(max_examples=100, deadline=None)
@given(value=JSON_WITHOUT_FLOATS)
def test_canonical_form_does_not_depend_on_how_the_json_was_written(value: Any) -> None:
    indented = json.dumps(value, indent=1, ensure_ascii=True).encode()
    assert canonical(parse_json(indented)) == canonical(value)
