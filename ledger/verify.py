"""Verifying an evidence bundle offline (PROTOCOL.md section 9): no server, no database.

`verify_bundle` checks, in order: 1. the bundle's layout, strictly; 2. the checkpoint, opened
with the log key the caller gives (never a key from the bundle); 3. the entries' seqs; 4. the
manifest the log key signed, which lists them; 5. each entry's inclusion proof against the
checkpoint; 6. each signature, under the keys the bundle's registry entries introduce; 7. the
`prev` links; 8. the head statements; 9. a replay of every entry in seq order by a fresh
in-memory ledger, which checks each signer's key as registered at that entry, `prev` and the
custody state machine; 10. the lineage and where each batch's replay ends.
It never raises on a bad bundle: its `Report` says what holds and what does not, naming the
entry (seq), signature (key id), proof or head statement, for a person.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ledger import merkle
from ledger.application import Ledger
from ledger.bundles import MANIFEST_HEADER, Bundle, BundleEntry
from ledger.canonical import b64decode_strict, canonical, parse_json
from ledger.crypto import PAYLOAD_TYPE, decode_public_key, key_id, pae, verify
from ledger.errors import InvalidEvent, LedgerError, NotFound
from ledger.notes import (
    Checkpoint,
    Head,
    VerifierKey,
    open_note,
    parse_checkpoint,
    parse_head,
    parse_verifier_key,
)
from ledger.replay import SetClock
from ledger.views import BatchView
from ledger.wire import describe, parse_time


class Check(BaseModel):
    """One thing verified: what (`checkpoint`, `signatures`...), whether it holds, and a
    sentence naming the entry's seq, the signature's key id, the proof or the head."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    what: str
    ok: bool
    detail: str


class BatchState(BaseModel):
    """A lineage batch as the replay leaves it; `seq` is its latest entry's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: str
    status: str
    owner: str
    holder: str
    quantity: int
    missing: int
    to: str | None = None
    site: str | None = None
    country: str | None = None
    seq: int

    def sentence(self) -> str:
        where = f" at site {self.site} ({self.country})" if self.site else ""
        where += f" to {self.to}" if self.to else ""
        return (
            f"{self.batch}: {self.status}{where}, {self.quantity} chips ({self.missing} missing), "
            f"owned by {self.owner}, held by {self.holder}; its latest entry is seq {self.seq}"
        )


class Report(BaseModel):
    """Every check made, and the lineage's replayed state when the replay got through."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: str | None
    checks: list[Check]
    batches: list[BatchState]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def summary(self) -> str:
        if self.ok:
            return (
                f"The bundle verifies: batch {self.batch}'s custody is as stated, every entry "
                "signed by the parties it needed and included in the log the key signs."
            )
        failed = sum(not check.ok for check in self.checks)
        return f"The bundle does NOT verify: {failed} problem(s) found; do not rely on it."


def verify_bundle(bundle: bytes | dict[str, Any], log_key: str) -> Report:
    """Check `bundle` (its JSON bytes, or parsed) against the log's verifier key text."""
    out = _Checks()
    try:
        key = parse_verifier_key(log_key)
    except LedgerError as exc:
        out.add("log key", [exc.message])
        return out.report(None)
    parsed = _parse(bundle, out)
    if parsed is None:
        return out.report(None)
    entries = [_Entry.of(item) for item in parsed.entries]
    tree = _checkpoint(parsed, key, out)
    _seqs(entries, tree, out)
    _manifest(parsed, entries, key, tree, out)
    _proofs(entries, tree, out)
    _signatures(entries, out)
    _prev_links(entries, out)
    heads = _heads(parsed, entries, key, tree, out)
    replayed = _replay(parsed, entries, key, out)
    states = _custody(parsed, heads, replayed, out) if replayed is not None else []
    return out.report(parsed.batch, states)


@dataclass
class _Checks:
    checks: list[Check] = field(default_factory=list)

    def add(self, what: str, failures: list[str], holds: str = "") -> None:
        """One failing check per failure, or one that holds."""
        if failures:
            self.checks += [Check(what=what, ok=False, detail=text) for text in failures]
        else:
            self.checks.append(Check(what=what, ok=True, detail=holds))

    def report(self, batch: str | None, states: list[BatchState] | None = None) -> Report:
        return Report(batch=batch, checks=self.checks, batches=states or [])


@dataclass(frozen=True)
class _Entry:
    """A bundle entry with its canonical envelope bytes and, if they decode, its event."""

    item: BundleEntry
    canonical: bytes
    envelope_hash: str
    payload: bytes
    event: dict[str, Any]
    problem: str | None

    @classmethod
    def of(cls, item: BundleEntry) -> _Entry:
        text = canonical(item.envelope.to_json())
        digest = hashlib.sha256(text).hexdigest()
        try:
            payload = b64decode_strict(item.envelope.payload, "payload")
            event = parse_json(payload, "payload")
            if not isinstance(event, dict):
                raise InvalidEvent("the payload is not a JSON object")
        except LedgerError as exc:
            return cls(item, text, digest, b"", {}, exc.message)
        return cls(item, text, digest, payload, event, None)

    @property
    def seq(self) -> int:
        return self.item.seq

    @property
    def kind(self) -> str:
        return str(self.event.get("type", "an undecodable entry"))

    def batches(self) -> list[str]:
        """The batches this entry is an event of: its `batch`, and a split's children."""
        named = [self.event.get("batch")]
        if self.kind == "batch.split" and isinstance(self.event.get("into"), list):
            named += [part.get("batch") for part in self.event["into"] if isinstance(part, dict)]
        return [name for name in named if isinstance(name, str)]


def _parse(bundle: bytes | dict[str, Any], out: _Checks) -> Bundle | None:
    try:
        value = parse_json(bundle, "bundle") if isinstance(bundle, bytes) else bundle
        if not isinstance(value, dict):
            raise InvalidEvent("a bundle is a JSON object")
        parsed = Bundle.model_validate(value)
    except LedgerError as exc:
        problem = exc.message
    except ValidationError as exc:
        problem = describe(exc, "bundle")
    else:
        out.add("bundle", [], f"a bundle of batch {parsed.batch} from {parsed.origin}")
        return parsed
    out.add("bundle", [f"this is not a chipledger bundle: {problem}"])
    return None


def _checkpoint(bundle: Bundle, key: VerifierKey, out: _Checks) -> Checkpoint | None:
    """2. The checkpoint, signed by the log key, of the bundle's origin."""
    try:
        tree = parse_checkpoint(open_note(bundle.checkpoint, key))
    except LedgerError as exc:
        out.add("checkpoint", [f"it does not open under the log key {key.text}: {exc.message}"])
        return None
    if tree.origin != bundle.origin:
        out.add("checkpoint", [f"it is of log {tree.origin!r}, not {bundle.origin!r}"])
        return None
    out.add("checkpoint", [], f"signed by the log key: size {tree.size}, root {tree.root.hex()}")
    return tree


def _seqs(entries: list[_Entry], tree: Checkpoint | None, out: _Checks) -> None:
    """3. Each seq once, in order, within the checkpoint's tree, genesis (seq 0) among them."""
    seqs = [entry.seq for entry in entries]
    failures = [
        f"seq {after} comes after seq {before}: the entries must be in seq order"
        for before, after in itertools.pairwise(seqs)
        if after < before
    ]
    failures += [f"seq {seq} appears {n} times" for seq, n in Counter(seqs).items() if n > 1]
    if 0 not in seqs:
        failures.append("the genesis entry (seq 0) is missing")
    if tree is not None:
        failures += [
            f"seq {seq} is past the checkpoint's tree (size {tree.size})"
            for seq in seqs
            if seq >= tree.size
        ]
    out.add("entries", failures, f"{len(seqs)} entries, each seq once, in order, from genesis")


def _manifest(
    bundle: Bundle, entries: list[_Entry], key: VerifierKey, tree: Checkpoint | None, out: _Checks
) -> None:
    """4. The manifest, signed by the log key at the checkpoint's size, lists exactly the
    bundle's seqs and their `recorded_at`: an entry left out is named even when no other check
    needs it, and a time changed is named too."""
    try:
        lines = open_note(bundle.manifest, key).split("\n")
    except LedgerError as exc:
        out.add("manifest", [f"it does not open under the log key: {exc.message}"])
        return
    if len(lines) != 6 or lines[:3] != [MANIFEST_HEADER, bundle.origin, bundle.batch]:
        out.add("manifest", [f"it is not a manifest of batch {bundle.batch} of {bundle.origin}"])
        return
    held = {entry.seq: entry.item.recorded_at for entry in entries}
    pairs = [item.partition("@") for item in lines[4].split(",")]
    listed = {int(seq): at for seq, _, at in pairs if seq.isdigit()}
    failures = [
        f"it lists seq {seq}, which the bundle omits" for seq in sorted(listed - held.keys())
    ]
    failures += [
        f"it does not list seq {seq}, which the bundle holds"
        for seq in sorted(held.keys() - listed.keys())
    ]
    failures += [
        f"seq {seq} says it was recorded at {held[seq]}, the log signed {listed[seq]}"
        for seq in sorted(held.keys() & listed.keys())
        if held[seq] != listed[seq]
    ]
    if tree is not None and lines[3] != str(tree.size):
        failures.append(f"it is as of tree size {lines[3]}, the checkpoint of size {tree.size}")
    holds = (
        f"signed by the log key, it lists exactly the bundle's {len(held)} seqs and when "
        "each was recorded"
    )
    out.add("manifest", failures, holds)


def _proofs(entries: list[_Entry], tree: Checkpoint | None, out: _Checks) -> None:
    """5. Each entry's leaf hash, SHA-256(0x00 || canonical envelope), is in the tree."""
    if tree is None:
        out.add("inclusion proofs", ["not checked: no checkpoint opened under the log key"])
        return
    failures = []
    for entry in entries:
        leaf = merkle.leaf_hash(entry.canonical)
        proof = [bytes.fromhex(node) for node in entry.item.proof]
        if not merkle.verify_inclusion(leaf, entry.seq, tree.size, proof, tree.root):
            failures.append(
                f"seq {entry.seq}: its inclusion proof does not lead from its leaf hash "
                f"{leaf.hex()} to the checkpoint's root at tree size {tree.size}"
            )
    holds = f"all {len(entries)} entries are leaves of the checkpoint's tree, at their seqs"
    out.add("inclusion proofs", failures, holds)


def _signatures(entries: list[_Entry], out: _Checks) -> None:
    """6. Every signature verifies under a key some registry entry of the bundle introduces.
    (Whether that key was its signer's, and unrevoked, when it signed is the replay's part.)"""
    keys = _introduced_keys(entries)
    failures, count = [], 0
    for entry in entries:
        if entry.problem is not None:
            failures.append(f"seq {entry.seq}: {entry.problem}")
            continue
        message = pae(PAYLOAD_TYPE, entry.payload)
        for signature in entry.item.envelope.signatures:
            count += 1
            public = keys.get(signature.keyid)
            if public is None:
                failures.append(
                    f"seq {entry.seq}: key {signature.keyid} signs it, but no entry of the "
                    "bundle registers that key"
                )
            elif not verify(public, message, _raw(signature.sig)):
                failures.append(
                    f"seq {entry.seq}: the signature by key {signature.keyid} does not verify"
                )
    holds = f"all {count} signatures verify under keys that entries of the bundle register"
    out.add("signatures", failures, holds)


def _introduced_keys(entries: list[_Entry]) -> dict[str, bytes]:
    """Key id -> public key, for every key a `party.registered` or `party.key_added` names."""
    keys: dict[str, bytes] = {}
    for entry in entries:
        event = entry.event
        party = event.get("party")
        named = party.get("keys") if isinstance(party, dict) else [event.get("key")]
        for text in named if isinstance(named, list) else []:
            try:
                public = decode_public_key(text) if isinstance(text, str) else None
            except LedgerError:
                public = None
            if public is not None:
                keys[key_id(public)] = public
    return keys


def _prev_links(entries: list[_Entry], out: _Checks) -> None:
    """7. Each batch event's `prev` is the envelope_hash of an earlier entry of its batch in
    the bundle (a split, for a child's first own event): a gap names the entry left out."""
    by_hash = {entry.envelope_hash: entry for entry in entries}
    failures, count = [], 0
    for entry in entries:
        prev, batch = entry.event.get("prev"), entry.event.get("batch")
        if not entry.kind.startswith("batch.") or not isinstance(prev, str):
            continue  # not a batch event, or fabricated: the replay judges its shape
        count += 1
        before = by_hash.get(prev)
        if before is None:
            failures.append(
                f"seq {entry.seq} ({entry.kind} of {batch}): its prev {prev} is the "
                "envelope_hash of no entry in the bundle: the entry before it is missing"
            )
        elif before.seq >= entry.seq or batch not in before.batches():
            failures.append(
                f"seq {entry.seq} ({entry.kind} of {batch}): its prev names seq {before.seq}, "
                f"which is not an earlier entry of {batch}"
            )
    holds = f"each of the {count} batch events follows an earlier entry of its batch in the bundle"
    out.add("prev links", failures, holds)


def _raw(text: str) -> bytes:
    try:
        return b64decode_strict(text, "sig")
    except LedgerError:
        return b""  # verifies nothing


def _heads(
    bundle: Bundle, entries: list[_Entry], key: VerifierKey, tree: Checkpoint | None, out: _Checks
) -> dict[str, Head]:
    """8. A head statement by the log key for each lineage batch, at the checkpoint's size,
    naming an entry of the bundle that is that batch's latest in it. Returns the first head
    that opens for each batch, for step 10."""
    by_seq = {entry.seq: entry for entry in entries}
    latest: dict[str, int] = {}
    for entry in entries:
        for batch in entry.batches():
            latest[batch] = max(latest.get(batch, -1), entry.seq)
    heads: dict[str, Head] = {}
    failures: list[str] = []
    named: set[str] = set()
    for number, note in enumerate(bundle.heads, 1):
        try:
            head = parse_head(open_note(note, key))
        except LedgerError as exc:
            failures.append(f"head statement {number} does not open: {exc.message}")
            continue
        problem = _head_problem(head, bundle, tree, by_seq.get(head.seq), latest, named)
        if problem:
            failures.append(f"head statement {number} (batch {head.batch}): {problem}")
        heads.setdefault(head.batch, head)
        named.add(head.batch)
    failures += [
        f"batch {batch} of the lineage has no head statement"
        for batch in bundle.lineage
        if batch not in named
    ]
    holds = (
        f"{len(bundle.heads)}, signed by the log key, one per lineage batch, each naming its "
        "batch's latest entry, which the bundle holds"
    )
    out.add("head statements", failures, holds)
    return heads


def _head_problem(
    head: Head,
    bundle: Bundle,
    tree: Checkpoint | None,
    entry: _Entry | None,
    latest: dict[str, int],
    named: set[str],
) -> str | None:
    if head.origin != bundle.origin:
        return f"it is of log {head.origin!r}, not {bundle.origin!r}"
    if head.batch not in bundle.lineage:
        return "that batch is not in the bundle's lineage"
    if head.batch in named:
        return "a second head statement for that batch"
    if tree is not None and head.tree_size != tree.size:
        return f"it is as of tree size {head.tree_size}, the checkpoint of size {tree.size}"
    if entry is None:
        return f"it names seq {head.seq} as the batch's latest entry, which the bundle omits"
    if entry.envelope_hash != head.envelope_hash or head.batch not in entry.batches():
        return f"seq {head.seq} in the bundle is not the entry of that batch it names"
    if latest.get(head.batch, -1) > head.seq:
        return (
            f"the bundle holds seq {latest[head.batch]}, an entry of that batch after "
            f"seq {head.seq} that its head names"
        )
    return None


@dataclass(frozen=True)
class _Replayed:
    """The lineage as the replay left it (ancestors, the batch, descendants), with the
    bundle's seq of each replayed entry (the replay numbers its entries from 0)."""

    family: list[BatchView]
    seqs: list[int]


def _replay(
    bundle: Bundle, entries: list[_Entry], key: VerifierKey, out: _Checks
) -> _Replayed | None:
    """9. A fresh ledger, trust root the genesis key and clock each entry's `recorded_at`,
    must accept every entry in seq order: the ledger's own acceptance does the checking."""
    ordered = sorted(entries, key=lambda entry: entry.seq)
    authority = _trust_root(ordered)
    if authority is None:
        out.add("replay", ["not run: the bundle holds no genesis entry (seq 0) to start from"])
        return None
    clock = SetClock(parse_time(ordered[0].item.recorded_at))
    ledger = Ledger(":memory:", clock=clock)
    try:
        try:
            ledger.initialise(bundle.origin, authority, key.public_key)
        except LedgerError as exc:
            out.add("replay", [f"not run: the genesis entry's first key: {exc.message}"])
            return None
        for entry in ordered:
            clock.now = parse_time(entry.item.recorded_at)
            problem = _submit(ledger, entry)
            if problem:
                last = entry is ordered[-1]
                rest = "" if last else "; the entries after it were not replayed"
                out.add("replay", [f"seq {entry.seq} ({entry.kind}) {problem}{rest}"])
                return None
        holds = (
            f"a fresh ledger accepts all {len(ordered)} entries in seq order: each signer's "
            "key registered and unrevoked when it signed, each prev link and custody step allowed"
        )
        out.add("replay", [], holds)
        return _Replayed(_family(ledger, bundle.batch), [entry.seq for entry in ordered])
    finally:
        ledger.close()


def _trust_root(ordered: list[_Entry]) -> str | None:
    """The genesis registration's first key, as the replay's trust root. A trust root is only
    checked at genesis, which must list it and be signed by every key it lists: any serves."""
    if not ordered or ordered[0].seq != 0:
        return None
    party = ordered[0].event.get("party")
    keys = party.get("keys") if isinstance(party, dict) else None
    return keys[0] if isinstance(keys, list) and keys and isinstance(keys[0], str) else None


def _submit(ledger: Ledger, entry: _Entry) -> str | None:
    """Why the replaying ledger does not take `entry` as a new entry, or None."""
    try:
        outcome = ledger.submit(entry.item.envelope.to_json())
    except LedgerError as exc:
        return f"is refused: {exc.message}"
    if outcome.repeated:
        return "repeats the event id of an earlier entry"
    return None


def _family(ledger: Ledger, batch_id: str) -> list[BatchView]:
    """The batch, its ancestors (oldest first) and descendants, as `ledger` holds them."""

    def get(name: str) -> BatchView | None:
        try:
            return ledger.batch(name)
        except NotFound:
            return None

    found = get(batch_id)
    if found is None:
        return []
    ancestors: list[BatchView] = []
    parent = get(found.parent) if found.parent else None
    while parent is not None:
        ancestors.insert(0, parent)
        parent = get(parent.parent) if parent.parent else None
    descendants, queue = [], [found]
    while queue:
        children = [get(child) for child in queue.pop(0).children or []]
        descendants += [child for child in children if child is not None]
        queue += [child for child in children if child is not None]
    return [*ancestors, found, *descendants]


def _custody(
    bundle: Bundle, heads: dict[str, Head], replayed: _Replayed, out: _Checks
) -> list[BatchState]:
    """10. The lineage is the one the entries make, and each batch's replay ends at the entry
    its head statement names; then the state of each, for the person."""
    names = [view.batch for view in replayed.family]
    failures = []
    if names != bundle.lineage:
        failures.append(
            f"the bundle says the lineage is {', '.join(bundle.lineage)}, but its entries "
            f"make it {', '.join(names) or 'no batch ' + bundle.batch}"
        )
    states = [_state(view, replayed.seqs) for view in replayed.family]
    for state, view in zip(states, replayed.family, strict=True):
        head = heads.get(state.batch)
        if head is not None and head.envelope_hash != view.head:
            failures.append(
                f"batch {state.batch}: its replay ends at seq {state.seq}, not at seq "
                f"{head.seq} that its head statement names"
            )
    holds = (
        f"{', '.join(names)}, as the entries make it, each batch's replay ending at the entry "
        "its head statement names"
    )
    out.add("lineage", failures, holds)
    return states


def _state(view: BatchView, seqs: list[int]) -> BatchState:
    return BatchState(
        batch=view.batch,
        status=view.status,
        owner=view.owner,
        holder=view.holder,
        quantity=view.quantity,
        missing=view.missing,
        to=view.to,
        site=view.site,
        country=view.country,
        seq=seqs[view.last_seq],
    )
