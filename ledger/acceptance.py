"""The acceptance pipeline: the one path every envelope takes (PROTOCOL.md section 5).

`accept` runs the checks in the section 5 order: schema (`decode`), repeat, signatures,
signers and roles, referenced objects, `prev` / `at` / custody state, then judges the event
and appends it to the unit of work. It commits nothing: the application saves the unit in one
transaction, or drops it when anything is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from ledger import events, wire
from ledger.aggregates import FLAGS_ID, LOG_ID
from ledger.crypto import decode_public_key, key_id
from ledger.custody import CUSTODY_COMMANDS
from ledger.envelopes import Decoded, verify_signatures
from ledger.errors import Conflict, NotAuthorized
from ledger.licensing import GrantLicense, RevokeLicense
from ledger.models import built
from ledger.policy import AdoptPolicy, in_force, policy_book
from ledger.readmodels import micros
from ledger.registry import REGISTRY_COMMANDS, Command
from ledger.rules import Case, judge
from ledger.unit import UnitOfWork
from ledger.views import Outcome, Receipt
from ledger.wire import format_time

COMMANDS: Mapping[str, Command[Any]] = {
    **REGISTRY_COMMANDS,
    **CUSTODY_COMMANDS,
    "license.granted": GrantLicense(),
    "license.revoked": RevokeLicense(),
    "policy.adopted": AdoptPolicy(),
}
EntryReader = Callable[[int], events.EntryRecorded]


def accept(
    unit: UnitOfWork,
    decoded: Decoded,
    stored_entry: EntryReader,
    verified: Collection[tuple[str, bytes]] = (),
    *,
    assume_signed: bool = False,
) -> Outcome:
    """Judge one decoded envelope against the unit's state and append it; raise if refused.

    `verified`: signatures already seen to verify (`ledger.ahead`), not checked again.
    `assume_signed` (only for `POST /v1/checks`): judge as if the signers it needs signed."""
    event = decoded.event
    repeat = _repeat(unit, decoded, stored_entry)
    if repeat is not None:
        return built(Outcome, receipt=repeat, repeated=True)
    command = COMMANDS[event.type]
    if not assume_signed:
        signers = verify_signatures(decoded, unit.active_key, command.introduced(event), verified)
        _check_signers(decoded, signers, command.cosigners(event, unit), unit.genesis is None)
    command.authorize(event, unit)
    command.check(event, unit)
    pack = in_force(policy_book(unit), event.at)  # among the packs accepted before it
    before = _before(event, unit)
    command.apply(
        event,
        unit,
        built(events.Accepted, seq=unit.next_seq, envelope_hash=decoded.envelope_hash),
    )
    unit.note_changes(_batches_named(event), before)  # the counters the rules read move first
    findings = judge(Case(event, unit, unit.next_seq, pack, before))
    return built(Outcome, receipt=_append(unit, decoded, findings), repeated=False)


def _before(event: Any, unit: UnitOfWork) -> events.BatchSnapshot | None:
    """The batch an event moves, as it was before the event."""
    if not isinstance(event, wire.BatchEventBase):
        return None
    batch = unit.batch(event.batch)
    return batch.snapshot() if batch is not None else None


def _batches_named(event: Any) -> list[str]:
    """The batch an event moves, then the children a split creates (in that order)."""
    if not isinstance(event, wire.BatchFabricated | wire.BatchEventBase):
        return []
    children = [part.batch for part in event.into] if isinstance(event, wire.BatchSplit) else []
    return [event.batch, *children]


def created_streams(found: list[Any]) -> dict[str, list[str]]:
    """The batch and serial streams these events would create, by kind (to look up at once)."""
    names: dict[str, list[str]] = {"batch": [], "claim": []}
    for event in found:
        if isinstance(event, wire.BatchFabricated):
            names["batch"].append(event.batch)
            names["claim"] += [f"serial:{serial}" for serial in event.serials or ()]
        elif isinstance(event, wire.BatchSplit):
            names["batch"] += [part.batch for part in event.into]
    return {kind: found for kind, found in names.items() if found}


def _repeat(unit: UnitOfWork, decoded: Decoded, stored_entry: EntryReader) -> Receipt | None:
    accepted = unit.accepted_id(decoded.event.id)
    if accepted is None:
        return None
    seq, digest = accepted
    if digest != decoded.payload_digest:
        raise Conflict(
            f"event id {decoded.event.id} was accepted with other payload bytes; "
            "an event id names one event: choose a new id"
        )
    return receipt(unit.recorded(seq) or stored_entry(seq))


def _check_signers(
    decoded: Decoded, signers: dict[str, str], cosigners: set[str], genesis: bool
) -> None:
    """The signers are exactly the parties the event needs, and every new key signed.

    A key the event introduces proves possession only: it never stands for the actor or a
    co-signer (PROTOCOL.md section 2), except at genesis, where the actor is the new party.
    """
    event = decoded.event
    if not signers:
        raise NotAuthorized(f"the envelope has no signatures; {event.actor!r} must sign it")
    new_keys = {key_id(decode_public_key(k)): k for k in COMMANDS[event.type].introduced(event)}
    for kid, key in new_keys.items():
        if kid not in signers:
            raise NotAuthorized(f"every new key must sign (proof of possession); {key} did not")
    if genesis:
        return  # the genesis command checks that the actor registers itself with these keys
    required = {event.actor} | cosigners
    parties = {party for kid, party in signers.items() if kid not in new_keys}
    if missing := sorted(required - parties):
        raise NotAuthorized(
            f"{event.type} must be signed by {', '.join(map(repr, missing))} "
            "with a key registered before this event"
        )
    if extra := sorted(parties - required):
        raise NotAuthorized(
            f"only {', '.join(map(repr, sorted(required)))} may sign this {event.type}; "
            f"remove the signature of {', '.join(map(repr, extra))}"
        )


def _append(unit: UnitOfWork, decoded: Decoded, findings: list[dict[str, Any]]) -> Receipt:
    event = decoded.event
    # Built from values the pipeline has just checked: no second validation on the hot path.
    entry = built(
        events.EntryRecorded,
        originator_id=LOG_ID,
        originator_version=unit.next_seq,
        timestamp=unit.now,
        seq=unit.next_seq,
        event_id=event.id,
        event_type=event.type,
        actor=event.actor,
        envelope=decoded.canonical.decode("utf-8"),
        envelope_hash=decoded.envelope_hash,
        leaf_hash=decoded.leaf_hash,
        recorded_at=format_time(unit.now),
        findings=findings,
    )
    unit.event_ids[event.id] = (unit.next_seq, decoded.payload_digest)
    unit.entries.append(entry)
    at = micros(event.at)
    unit.signed.extend((kid, at, unit.next_seq) for kid, _ in decoded.signatures)
    if findings:
        unit.findings.append(
            built(
                events.FindingsRecorded,
                originator_id=FLAGS_ID,
                originator_version=unit.next_seq,
                timestamp=unit.now,
                seq=unit.next_seq,
                at=event.at,
                findings=findings,
            )
        )
    unit.next_seq += 1
    return receipt(entry)


def receipt(entry: events.EntryRecorded) -> Receipt:
    return built(
        Receipt,
        seq=entry.seq,
        id=entry.event_id,
        type=entry.event_type,
        recorded_at=entry.recorded_at,
        envelope_hash=entry.envelope_hash,
        leaf_hash=entry.leaf_hash,
        findings=entry.findings,
    )
