"""Phase 1 of `chipledger audit`: each stored log entry on its own, on a worker process.

An entry's envelope must pass acceptance's schema stage (`decode`, at the clock of the
entry's `recorded_at`), be stored in canonical form, and each signature must verify under the
key its key id names. What the entry means in order (keys in force, `prev` links) is phase 2's,
in `ledger.audit_sequence`. Workers get the candidate keys once, when they start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime

from ledger import merkle, wire
from ledger.acceptance import COMMANDS
from ledger.canonical import canonical_text, parse_json
from ledger.crypto import decode_public_key, key_id, verify
from ledger.envelopes import Decoded, decode
from ledger.errors import LedgerError
from ledger.wire import parse_time

Verified = frozenset[tuple[str, bytes]]  # (key id, public key) of signatures that verify
Row = tuple[int, bytes]  # a stored log entry: seq, state
NO_LEAF = merkle.leaf_hash(b"")  # the leaf of an entry that is missing or unreadable
_worker_keys: dict[str, bytes] = {}


@dataclass(frozen=True)
class Summary:
    """What phase 2 reads of an entry's event."""

    envelope_hash: str
    signers: tuple[str, ...]  # key ids
    introduced: tuple[tuple[str, str], ...]  # (public key, party) of keys the event introduces
    revoked: tuple[str, str] | None  # (party, key id)
    batch: str | None  # the batch a batch event is about
    prev: str | None  # its `prev` (None: a fabrication)
    children: tuple[str, ...]  # the batches a split makes


@dataclass(frozen=True)
class Checked:
    """One entry as phase 1 found it; `decoded` only when the rebuild asked for it."""

    seq: int
    leaf: bytes
    recorded_at: datetime | None = None
    summary: Summary | None = None  # None: the envelope does not decode
    decoded: Decoded | None = None
    verified: Verified = frozenset()
    unknown: tuple[str, ...] = ()  # key ids phase 1 had no key for
    problems: tuple[tuple[str, str], ...] = ()


def start_worker(niceness: int, keys: dict[str, bytes]) -> None:
    """A worker process's start: its priority, and the keys `check_in_worker` uses."""
    os.nice(niceness)
    _worker_keys.update(keys)


def check_in_worker(origin: str, rows: list[Row], keep: bool) -> list[Checked]:
    """`check_entries` with the keys the worker was started with."""
    return check_entries(origin, _worker_keys, rows, keep)


def check_entries(
    origin: str, keys: dict[str, bytes], rows: list[Row], keep: bool = False
) -> list[Checked]:
    """Phase 1 of stored log entries, with `keys` by key id; `keep` the decoded envelopes."""
    return [check_entry(origin, keys, seq, state, keep) for seq, state in rows]


def check_entry(origin: str, keys: dict[str, bytes], seq: int, state: bytes, keep: bool) -> Checked:
    """Phase 1 of one stored entry: its envelope decoded as acceptance decodes it, at the clock
    of the entry's `recorded_at`, stored in canonical form, and its signatures verified."""
    try:
        entry = json.loads(state)
        data, recorded_at = entry["envelope"].encode(), parse_time(entry["recorded_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return Checked(seq, NO_LEAF, problems=(("entry", "the stored entry is unreadable"),))
    leaf = merkle.leaf_hash(data)
    problems = [] if entry.get("seq") == seq else [("entry", f"it says seq {entry.get('seq')}")]
    try:  # a canonical text needs no check for duplicated keys: it would not re-encode
        value = canonical_text(data)
        decoded = decode(parse_json(data) if value is None else value, origin, recorded_at)
    except LedgerError as exc:
        problems.append(("envelope", f"acceptance refuses the stored envelope: {exc.message}"))
        return Checked(seq, leaf, recorded_at, problems=tuple(problems))
    if decoded.canonical != data:
        problems.append(("envelope", "the stored envelope is not in its canonical JSON form"))
    summary = _summary(decoded)
    verified, unknown = _verify(decoded, summary, keys, problems)
    kept = decoded if keep else None
    return Checked(seq, leaf, recorded_at, summary, kept, verified, unknown, tuple(problems))


def _verify(
    decoded: Decoded, summary: Summary, keys: dict[str, bytes], problems: list[tuple[str, str]]
) -> tuple[Verified, tuple[str, ...]]:
    """The signatures that verify under the keys their key ids name (known, or introduced
    by the event itself), and the key ids of no key known; a failure is a problem."""
    new = {key_id(k): k for k in (decode_public_key(text) for text, _ in summary.introduced)}
    verified: set[tuple[str, bytes]] = set()
    unknown: list[str] = []
    message = decoded.message
    for kid, signature in decoded.signatures:
        key = keys.get(kid) or new.get(kid)
        if key is None:
            unknown.append(kid)
        elif verify(key, message, signature):
            verified.add((kid, key))
        else:
            problems.append(("signature", f"the signature by key {kid} does not verify"))
    return frozenset(verified), tuple(unknown)


def _summary(decoded: Decoded) -> Summary:
    event = decoded.event
    batch = event.batch if isinstance(event, wire.BatchFabricated | wire.BatchEventBase) else None
    return Summary(
        decoded.envelope_hash,
        tuple(kid for kid, _ in decoded.signatures),
        tuple(COMMANDS[event.type].introduced(event).items()),
        (event.party, event.keyid) if isinstance(event, wire.PartyKeyRevoked) else None,
        batch,
        event.prev if isinstance(event, wire.BatchEventBase) else None,
        tuple(p.batch for p in event.into) if isinstance(event, wire.BatchSplit) else (),
    )
