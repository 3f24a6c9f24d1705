"""The transparency log of PROTOCOL.md section 8: the tree's rows and checkpoints of a commit,
and the reads of the log (checkpoints, inclusion and consistency proofs).

Every accepted envelope is leaf `seq` of an RFC 6962 tree; the hashes `ledger.merkle` says to
store are written with the entries, in the same transaction, and so is a checkpoint signed by
the log key for the new size when this process holds that key. A process without it (a
benchmark, a tool writing to the store directly) leaves the checkpoint to the next process
that holds the key and is asked for one.

`Log` keeps the tree's right edge (one stored hash per complete subtree of the current size)
in memory, so a commit reads nothing from the store; proofs read O(log n) stored hashes in
one query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger import merkle
from ledger.crypto import Signer
from ledger.errors import BadRequest, NotFound
from ledger.notes import checkpoint_text, sign_note
from ledger.recorders import CheckpointRow, Recorder, TreeRow


class TreeDamaged(RuntimeError):
    """A stored hash the tree needs is not in the store: a server fault (500), not the
    client's; opening the ledger again rebuilds the tree from the log."""


def right_edge(size: int) -> list[int]:
    """The stored-hash indexes of the complete subtrees that make up a tree of `size` leaves:
    all that appending to it, or its root, needs."""
    return [
        merkle.stored_hash_index(level, (size >> level) - 1)
        for level in range(size.bit_length())
        if size >> level & 1
    ]


@dataclass
class Log:
    recorder: Recorder
    origin: str
    signer: Signer | None = None
    edge: dict[int, bytes] = field(default_factory=dict)  # committed stored hashes, cached

    def forget(self) -> None:
        """Another writer moved the log on: read the edge from the store next time."""
        self.edge.clear()

    def rows(
        self, start: int, envelopes: Sequence[str]
    ) -> tuple[list[TreeRow], CheckpointRow | None]:
        """The stored hashes for leaves `start`.. (canonical envelope texts), and the
        checkpoint of the new size when this process holds the log key."""
        leaves = [merkle.leaf_hash(envelope.encode()) for envelope in envelopes]
        tree = merkle.append(start, leaves, self.read)
        size = start + len(leaves)
        if self.signer is None:
            return tree, None
        pending = dict(tree)
        root = merkle.tree_hash(size, lambda wanted: self.read(wanted, pending))
        return tree, (size, self.sign(size, root))

    def committed(self, size: int, tree: Sequence[TreeRow]) -> None:
        self.edge.update(tree)
        keep = set(right_edge(size))
        for index in [index for index in self.edge if index not in keep]:
            del self.edge[index]

    def sign(self, size: int, root: bytes) -> str:
        assert self.signer is not None
        return sign_note(checkpoint_text(self.origin, size, root), self.origin, self.signer)

    def read(self, indexes: Sequence[int], pending: dict[int, bytes] | None = None) -> list[bytes]:
        """The stored hashes at `indexes`: from the rows being written, the cached edge, then
        the store (one query)."""
        found = {**self.edge, **(pending or {})}
        missing = [index for index in indexes if index not in found]
        if missing:
            found.update(self.recorder.select_tree(missing))
        lost = [index for index in indexes if index not in found]
        if lost:
            raise TreeDamaged(
                f"the log's tree lacks stored hashes {lost[:5]}: the store was damaged; "
                "`chipledger rebuild` restores them from the log, `chipledger audit` checks it"
            )
        return [found[index] for index in indexes]

    # -- reads ----------------------------------------------------------------------------------

    def checkpoint(self, size: int) -> CheckpointRow:
        """The latest signed checkpoint; one for `size` is signed and kept first when this
        process holds the key and the latest is older (entries written without the key)."""
        latest = self.recorder.latest_checkpoint()
        if self.signer is not None and (latest is None or latest[0] < size):
            row = (size, self.sign(size, merkle.tree_hash(size, self.read)))
            self.recorder.write_log((), row)
            return row
        if latest is None:
            raise NotFound("no checkpoint has been signed yet: the server holds no log key")
        return latest

    def inclusion(self, seq: int, size: int) -> tuple[bytes, list[bytes]]:
        """The leaf hash of entry `seq` and its inclusion proof in the tree of `size`."""
        if not 0 <= seq < size:
            raise BadRequest(f"seq {seq} is not in a tree of size {size} (0 <= seq < size)")
        leaf = self.read([merkle.stored_hash_index(0, seq)])[0]
        return leaf, merkle.inclusion_proof(size, seq, self.read)

    def consistency(self, old: int, new: int) -> list[bytes]:
        if not 1 <= old <= new:
            raise BadRequest(f"from {old} and to {new}: a consistency proof needs 1 <= from <= to")
        return merkle.consistency_proof(old, new, self.read)
