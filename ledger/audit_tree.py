"""The transparency log's part of `chipledger audit`: the RFC 6962 tree recomputed from the
entries must equal every stored hash, and each stored checkpoint must open under the log key
with the recomputed root at its size (any two are then consistent: both are roots of the one
recomputed tree).

The recomputed tree is written, chunk by chunk, to the table `tree` of the audit's scratch
file, with only its right edge in memory; it is then merged with the store's `ledger_tree`
in index order, and each checkpoint's root is read from it (O(log n) hashes each).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from multiprocessing.pool import Pool

from ledger import merkle
from ledger.audit_report import AuditReport, Progress
from ledger.audit_scratch import ScratchDatastore
from ledger.audit_tables import Datastore, Table, merged, read_table
from ledger.errors import LedgerError
from ledger.notes import Checkpoint, open_note, parse_checkpoint
from ledger.recorders import Recorder
from ledger.transparency import right_edge

PAGE = 1000
_TREE = {
    "differs": "differs from the hash recomputed from the entries{more}",
    "missing": "is missing from the tree{more}",
    "extra": "is beyond the tree of the log's {size} entries{more}: entries are missing",
}


class Tree:
    """The tree of the leaves added so far, stored in the scratch table `tree`."""

    def __init__(self, datastore: ScratchDatastore) -> None:
        self.datastore = datastore
        self.size = 0
        self.edge: dict[int, bytes] = {}  # the stored hashes appending or a root needs
        with datastore.transaction(commit=True) as cursor:
            cursor.execute("CREATE TABLE tree (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL)")

    def add(self, leaves: Sequence[bytes]) -> None:
        """Append leaf hashes: their stored hashes go to the table, the new edge to memory."""
        pairs = merkle.append(self.size, leaves, lambda indexes: [self.edge[i] for i in indexes])
        with self.datastore.transaction(commit=True) as cursor:
            cursor.executemany("INSERT INTO tree VALUES (?,?)", pairs)
        self.size += len(leaves)
        known = {**self.edge, **dict(pairs)}
        self.edge = {index: known[index] for index in right_edge(self.size)}

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        """The stored hashes at `indexes` (a `merkle.Reader`), in one query."""
        marks = ",".join("?" * len(indexes))  # placeholders only: the indexes are parameters
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT idx, hash FROM tree WHERE idx IN ({marks})", list(indexes))  # noqa: S608
            found = {row[0]: bytes(row[1]) for row in cursor.fetchall()}
        return [found[index] for index in indexes]

    def compare(self, store: Datastore, report: AuditReport) -> None:
        """The store's stored hashes against these, one merge in index order; each kind of
        difference is reported once, at its first index, with how many there are."""
        found: dict[str, list[int]] = {}  # kind -> [first index, how many]
        ours = read_table(self.datastore, Table("tree", ("idx",)))
        theirs = read_table(store, Table("ledger_tree", ("idx",)))
        for difference in merged(theirs, ours, 1):
            found.setdefault(difference.kind, [difference.row[0], 0])[1] += 1
        for kind, (index, many) in found.items():
            level, n = merkle.split_stored_hash_index(index)
            first, last = n << level, ((n + 1) << level) - 1
            over = f"seq {first}" if level == 0 else f"seqs {first}-{last}"
            more = f", and {many - 1} more" if many > 1 else ""
            message = _TREE[kind].format(more=more, size=self.size)
            report.add("tree", f"it (over {over}) {message}", seq=first, index=index)


def open_checkpoints(vkey: str, rows: list[tuple[int, str]]) -> list[tuple[int, Checkpoint | str]]:
    """Stored checkpoints (size, note) opened under `vkey`: (size, checkpoint or why not)."""
    out: list[tuple[int, Checkpoint | str]] = []
    for size, note in rows:
        try:
            out.append((size, parse_checkpoint(open_note(note, vkey))))
        except LedgerError as exc:
            out.append((size, exc.message))
    return out


class Checkpoints:
    """Every stored checkpoint, page by page, opened on the workers, against the tree."""

    def __init__(self, recorder: Recorder, tree: Tree, origin: str, report: AuditReport) -> None:
        self.recorder, self.tree, self.origin, self.report = recorder, tree, origin, report

    def check(self, pool: Pool | None, progress: Progress) -> None:
        report, vkey = self.report, self.report.log_key
        for rows in self._pages():
            parts = [(vkey, rows[i : i + 100]) for i in range(0, len(rows), 100)]
            opened = (
                pool.starmap(open_checkpoints, parts) if pool else [open_checkpoints(vkey, rows)]
            )
            for size, found in (item for part in opened for item in part):
                self._checkpoint(size, found)
            report.checkpoints += len(rows)
            report.signed_through = max(report.signed_through, rows[-1][0])
            progress("checkpoints", report.checkpoints, report.checkpoints)

    def _pages(self) -> Iterator[list[tuple[int, str]]]:
        after = -1
        while rows := self.recorder.checkpoints(after, PAGE):
            yield rows
            after = rows[-1][0]

    def _checkpoint(self, size: int, found: Checkpoint | str) -> None:
        add, entries = self.report.add, self.tree.size
        if isinstance(found, str):
            add("checkpoint", f"it does not open under the log key: {found}", size=size)
        elif (found.origin, found.size) != (self.origin, size):
            add("checkpoint", f"it is for {found.origin} at size {found.size}", size=size)
        elif size > entries:
            add(
                "checkpoint",
                f"it covers {size} entries, but the log holds {entries}: the "
                "entries from this seq on are missing",
                seq=entries,
                size=size,
            )
        elif found.root != merkle.tree_hash(size, self.tree.read):
            add("checkpoint", "its root is not the root recomputed from the entries", size=size)
        else:
            self.report.covered = max(self.report.covered, size)
