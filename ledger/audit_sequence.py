"""Phase 2 of `chipledger audit`, per entry in seq order: the log has no gap, each signing key
was registered and not revoked when the entry was accepted (or the entry introduces it), and
each batch event's `prev` is its batch's head.

The heads are kept in a table of the audit's scratch file (`Heads`): a chunk of entries
reads the heads of the batches it names in one query and writes back the ones it moved, so
memory holds one chunk's. The keys are kept in memory: there is one per registered key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.audit_entries import NO_LEAF, Checked, Row, Summary, Verified, check_entry
from ledger.audit_report import AuditReport
from ledger.audit_scratch import ScratchDatastore
from ledger.crypto import decode_public_key, key_id

Head = tuple[str, int]  # envelope hash, seq of a batch's latest entry
Judged = list[tuple[Checked, Verified]]
_IN = 500  # parameters per query


class Heads:
    """Each batch's head, in the scratch table `heads`; a chunk's are read into memory."""

    def __init__(self, datastore: ScratchDatastore) -> None:
        self.datastore = datastore
        self.loaded: dict[str, Head] = {}
        self.moved: set[str] = set()
        with datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "CREATE TABLE heads (batch TEXT PRIMARY KEY, hash TEXT NOT NULL, "
                "seq INTEGER NOT NULL) WITHOUT ROWID"
            )

    def load(self, batches: Iterable[str]) -> None:
        wanted = sorted(set(batches))
        with self.datastore.transaction(commit=False) as cursor:
            for start in range(0, len(wanted), _IN):
                part = wanted[start : start + _IN]
                marks = ",".join("?" * len(part))  # placeholders only: the names are parameters
                cursor.execute(f"SELECT batch, hash, seq FROM heads WHERE batch IN ({marks})", part)  # noqa: S608
                self.loaded.update((row[0], (row[1], row[2])) for row in cursor.fetchall())

    def get(self, batch: str) -> Head | None:
        return self.loaded.get(batch)

    def move(self, batch: str, head: Head) -> None:
        self.loaded[batch] = head
        self.moved.add(batch)

    def save(self) -> None:
        """Write the heads moved since the last load, and forget the chunk's."""
        rows = [(batch, *self.loaded[batch]) for batch in self.moved]
        with self.datastore.transaction(commit=True) as cursor:
            cursor.executemany("INSERT OR REPLACE INTO heads VALUES (?,?,?)", rows)
        self.loaded.clear()
        self.moved.clear()


def _batches(summary: Summary | None) -> tuple[str, ...]:
    """The batches whose heads an entry reads or moves."""
    if summary is None or summary.batch is None:
        return ()
    return (summary.batch, *summary.children)


@dataclass
class _Key:
    party: str
    raw: bytes
    revoked_seq: int | None = None


class InOrder:
    """Phase 2, chunk after chunk of phase 1's results, in seq order."""

    def __init__(self, origin: str, report: AuditReport, heads: Heads) -> None:
        self.origin, self.report, self.heads = origin, report, heads
        self.keys: dict[str, _Key] = {}
        self.size = 0  # entries judged, and gaps found, so far

    def judge(
        self, chunk: list[Checked], rows: list[Row], keys: dict[str, bytes]
    ) -> tuple[Judged, list[bytes]]:
        """Each entry of a chunk with the signatures found to verify, and the chunk's leaves
        (a missing entry's is `NO_LEAF`)."""
        self.heads.load(batch for checked in chunk for batch in _batches(checked.summary))
        leaves: list[bytes] = []
        judged = [
            (c, self._entry(c, row, keys, leaves)) for c, row in zip(chunk, rows, strict=True)
        ]
        self.heads.save()
        return judged, leaves

    def _entry(
        self, checked: Checked, row: Row, keys: dict[str, bytes], leaves: list[bytes]
    ) -> Verified:
        report, seq, summary = self.report, checked.seq, checked.summary
        for missing in range(self.size, seq):
            report.add("entry", "the log has no entry here: its row is missing", seq=missing)
            leaves.append(NO_LEAF)
        leaves.append(checked.leaf)
        self.size = seq + 1
        for what, message in checked.problems:
            report.add(what, message, seq=seq)
        if summary is None:
            return checked.verified
        new = {key_id(decode_public_key(text)) for text, _ in summary.introduced}
        for kid in summary.signers:
            if kid not in new:
                self._key_in_force(seq, kid, self.keys.get(kid))
        verified = checked.verified
        if any(kid in self.keys for kid in checked.unknown):  # the store hid a key: check again
            keys.update((kid, key.raw) for kid, key in self.keys.items())
            again = check_entry(self.origin, keys, seq, row[1], False)
            for what, message in set(again.problems) - set(checked.problems):
                report.add(what, message, seq=seq)
            verified = again.verified
        report.signatures += len(verified)
        self._follow(seq, summary)
        return verified

    def _key_in_force(self, seq: int, kid: str, key: _Key | None) -> None:
        if key is None:
            self.report.add("key", f"key {kid} signs it, but no party held that key", seq=seq)
        elif key.revoked_seq is not None:
            self.report.add(
                "key",
                f"key {kid} of {key.party!r} signs it, but that key was "
                f"revoked at seq {key.revoked_seq}, before it",
                seq=seq,
            )

    def _follow(self, seq: int, summary: Summary) -> None:
        """The keys registered and revoked, and each batch's head, after this entry."""
        for text, party in summary.introduced:
            raw = decode_public_key(text)
            self.keys.setdefault(key_id(raw), _Key(party, raw))
        if summary.revoked is not None:
            key = self.keys.get(summary.revoked[1])
            if key is not None and key.party == summary.revoked[0] and key.revoked_seq is None:
                key.revoked_seq = seq
        if summary.batch is None:
            return
        head = self.heads.get(summary.batch)
        if summary.prev is not None and (head is None or summary.prev != head[0]):
            latest = f"seq {head[1]}, envelope hash {head[0]}" if head else "none"
            self.report.add(
                "prev",
                f"its prev {summary.prev} is not the envelope hash of the "
                f"latest entry of batch {summary.batch!r} ({latest})",
                seq=seq,
            )
        for batch in (summary.batch, *summary.children):
            self.heads.move(batch, (summary.envelope_hash, seq))
