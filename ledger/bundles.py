"""Evidence bundles (PROTOCOL.md section 9): one JSON document that proves a batch's custody.

A bundle holds the entries of the batch's whole lineage (ancestors and descendants), every
entry their acceptance depends on (genesis; the registry events of each party that signs or
is named, and of the authorities that registered those, and so on; the sites and licenses
named; every rule pack), an inclusion proof of each against one signed checkpoint, a head
statement per lineage batch signed by the log key, and a manifest, also signed by the log key,
listing the seqs of the entries: so leaving out an entry that no replay needs (a license grant,
a key's revocation, a rule pack) is a provable lie too. `ledger.verify` checks one offline.

Dependencies are found through the aggregates' own streams, whose events carry the seq of the
entry that caused them; the log is never scanned. `Bundle` is also the published layout
(`schemas/bundle.schema.json`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from ledger import events, wire
from ledger.canonical import parse_json
from ledger.crypto import Signer
from ledger.errors import NotFound
from ledger.notes import head_text, sign_note
from ledger.wire.types import TIME_PATTERN, Hex64, Id, Strict, parse_time

PARTY_EVENTS = (
    events.PartyRegistered,
    events.PartyKeyAdded,
    events.PartyKeyRevoked,
    events.PartyListed,
    events.PartyDelisted,
)
SITE_EVENTS = (events.SiteRegistered,)  # attestations and inspections judge, never refuse
LICENSE_EVENTS = (events.LicenseGranted, events.LicenseRevoked)  # not the citations
POLICY_EVENTS = (events.PolicyBookOpened, events.PolicyAdopted)
MANIFEST_HEADER = "chipledger-bundle/v1"


def _a_time(text: str) -> str:
    """A time of the protocol's form that exists (the pattern alone allows month 13)."""
    parse_time(text)
    return text


TimeText = Annotated[str, StringConstraints(pattern=TIME_PATTERN), AfterValidator(_a_time)]


class BundleEntry(Strict):
    """One log entry: its seq, when the ledger recorded it, the envelope as accepted, and
    its RFC 9162 inclusion proof (hex) in the tree of the bundle's checkpoint."""

    seq: Annotated[int, Field(ge=0)]
    recorded_at: TimeText
    envelope: wire.Envelope
    proof: Annotated[list[Hex64], Field(max_length=64)]


class Bundle(Strict):
    """The evidence bundle of a batch (PROTOCOL.md section 9).

    `lineage`: the batch's ancestors (oldest first), the batch, its descendants. `checkpoint`,
    `manifest` (`manifest_text`: the seqs of `entries`) and each of `heads` (one per lineage
    batch) are C2SP signed notes by the log key, which a verifier never takes from the bundle.
    `entries` are in seq order."""

    type: Literal["bundle"]
    version: Literal[1]
    origin: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    batch: Id
    lineage: Annotated[list[Id], Field(min_length=1)]
    checkpoint: str
    manifest: str
    entries: list[BundleEntry]
    heads: list[str]


@dataclass(frozen=True)
class Source:
    """What a bundle is made from: a ledger's streams and log, at the checkpoint of `size`."""

    origin: str
    size: int
    checkpoint: str
    signer: Signer
    stream: Callable[[str, str], Iterable[Any]]  # the stored events of `kind:name`
    entry: Callable[[int], events.EntryRecorded]
    proof: Callable[[int], Sequence[bytes]]  # inclusion proof of a seq in the tree of `size`


def make_bundle(source: Source, batch_id: str) -> Bundle:
    """The bundle of `batch_id` as of `source.size`; NotFound if no entry made that batch."""
    found = _Collector(source)
    if not found.stream("batch", batch_id):
        raise NotFound(f"no batch {batch_id!r} is recorded")
    lineage = found.lineage(batch_id)
    found.take("party", source.entry(0).actor, PARTY_EVENTS)  # genesis (PROTOCOL.md section 4)
    found.take("policy", "book", POLICY_EVENTS)
    for batch in lineage:
        found.take("batch", batch, (events.AggregateEvent,))
    seqs = sorted(found.seqs)
    entries = [_entry(source, seq) for seq in seqs]
    listed = [(entry.seq, entry.recorded_at) for entry in entries]
    manifest = manifest_text(source.origin, batch_id, source.size, listed)
    return Bundle(
        type="bundle",
        version=1,
        origin=source.origin,
        batch=batch_id,
        lineage=lineage,
        checkpoint=source.checkpoint,
        manifest=sign_note(manifest, source.origin, source.signer),
        entries=entries,
        heads=[found.head(batch) for batch in lineage],
    )


def manifest_text(origin: str, batch_id: str, size: int, entries: Sequence[tuple[int, str]]) -> str:
    """`chipledger-bundle/v1`, the origin, the batch, the checkpoint's tree size, then the
    entries as `<seq>@<recorded_at>`, ascending, separated by commas: the log's word that
    these are all the entries the batch's bundle needs at that size, and when each was
    recorded (the envelope signs the `at` its actor claims, nothing signs `recorded_at`)."""
    listed = ",".join(f"{seq}@{recorded_at}" for seq, recorded_at in entries)
    return f"{MANIFEST_HEADER}\n{origin}\n{batch_id}\n{size}\n{listed}\n"


def _entry(source: Source, seq: int) -> BundleEntry:
    stored = source.entry(seq)
    return BundleEntry(
        seq=seq,
        recorded_at=stored.recorded_at,
        envelope=wire.parse_envelope(parse_json(stored.envelope.encode("utf-8"))),
        proof=[node.hex() for node in source.proof(seq)],
    )


@dataclass
class _Collector:
    """Reads streams once each (up to the checkpoint) and gathers the seqs a bundle needs."""

    source: Source
    seqs: set[int] = field(default_factory=lambda: {0})
    _taken: set[tuple[str, str]] = field(default_factory=set)
    _streams: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def stream(self, kind: str, name: str) -> list[Any]:
        key = (kind, name)
        if key not in self._streams:
            stored = self.source.stream(kind, name)
            self._streams[key] = [e for e in stored if e.accepted.seq < self.source.size]
        return self._streams[key]

    def lineage(self, batch_id: str) -> list[str]:
        """Ancestors (oldest first), the batch, then descendants breadth first."""
        ancestors: list[str] = []
        first = self.stream("batch", batch_id)[0]
        while isinstance(first, events.BatchSplitFrom):
            ancestors.insert(0, first.parent.batch)
            first = self.stream("batch", first.parent.batch)[0]
        descendants, queue = [], [batch_id]
        while queue:
            last = self.stream("batch", queue.pop(0))[-1]
            if isinstance(last, events.BatchSplit):
                children = [part.batch for part in last.fact.into]
                descendants += children
                queue += children
        return [*ancestors, batch_id, *descendants]

    def take(self, kind: str, name: str, wanted: tuple[type[Any], ...]) -> None:
        """The entries of stream `kind:name` of the `wanted` classes, and what they name."""
        if (kind, name) in self._taken:
            return
        self._taken.add((kind, name))
        for event in self.stream(kind, name):
            if isinstance(event, wanted):
                self.seqs.add(event.accepted.seq)
                for other_kind, other in _named(event.fact):
                    self.take(other_kind, other, _WANTED[other_kind])

    def head(self, batch_id: str) -> str:
        """The signed head statement: the batch's latest entry (a split, for a child that has
        no event of its own) as of the checkpoint."""
        accepted = self.stream("batch", batch_id)[-1].accepted
        source = self.source
        text = head_text(source.origin, batch_id, accepted.seq, accepted.envelope_hash, source.size)
        return sign_note(text, source.origin, source.signer)


_WANTED: dict[str, tuple[type[Any], ...]] = {
    "party": PARTY_EVENTS,
    "site": SITE_EVENTS,
    "license": LICENSE_EVENTS,
}


def _named(fact: Any) -> list[tuple[str, str]]:
    """The parties, sites and licenses whose state accepting `fact` reads: its signers
    (the actor; a transfer's `to`), receivers, sites and their operators, licenses and their
    holders and consignees, the party a registry event is about."""
    found = [("party", fact.actor)]
    for name in ("to", "party"):
        if isinstance(value := getattr(fact, name, None), str):
            found.append(("party", value))
    site = getattr(fact, "site", None)
    if isinstance(site, str):
        found.append(("site", site))
    elif isinstance(site, wire.SiteSpec):
        found.append(("party", site.operator))
    license_ = getattr(fact, "license", None)
    if isinstance(license_, str):
        found.append(("license", license_))
    elif isinstance(license_, wire.LicenseSpec):
        found += [("party", party) for party in (license_.holder, *license_.consignees)]
    return found
