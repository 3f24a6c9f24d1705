"""What `chipledger audit` reports: each problem found, where it is, and what was checked.

A report lists the first `LISTED` problems of each kind and counts the others, so that its
size does not grow with the store's. The audit itself is `ledger.audit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LISTED = 10  # problems listed per kind; the others are counted
Progress = Callable[[str, int, int], None]
"""Told the phase ("entries", "checkpoints", "stored events"), how much is done, of how much."""


def quiet(phase: str, done: int, total: int) -> None:
    """No progress shown."""


@dataclass(frozen=True)
class Problem:
    """One thing that does not hold, where it is, and a sentence saying what."""

    what: str  # entry, envelope, signature, key, prev, tree, checkpoint, rebuild, state, or
    # a compared table's `Table.what` (index: the event-id table, the signatures index)
    message: str
    seq: int | None = None
    index: int | None = None  # a stored-hash index of the tree
    size: int | None = None  # a checkpoint's tree size
    stream: str | None = None  # a stored event's originator id (hex) and version
    version: int | None = None

    @property
    def where(self) -> str:
        named = (("seq", self.seq), ("stored hash", self.index), ("checkpoint", self.size))
        found = [f"{name} {value}" for name, value in named if value is not None]
        return ", ".join(found) or self.what


@dataclass
class AuditReport:
    """What was checked, how long it took, and the problems (the first `LISTED` of each kind)."""

    store: str
    log_key: str
    log_key_from_store: bool  # no key was given: the one the store records is trusted
    cores: int  # usable
    workers: int  # processes that ran phase 1, besides this one
    entries: int = 0
    signatures: int = 0  # verified
    checkpoints: int = 0
    covered: int = 0  # entries covered by a good checkpoint (the ones after it, by none)
    signed_through: int = 0  # the largest tree size of a stored checkpoint, good or not
    stored_events: int = 0  # compared with the rebuild's
    rebuilt: int | None = None  # the rebuild accepted seqs below this one (None: no rebuild)
    seconds: dict[str, float] = field(default_factory=dict)  # by phase, and "total"
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # problems found, by kind
    first_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def unlisted(self) -> int:
        return sum(self.counts.values()) - len(self.problems)

    @property
    def rate(self) -> float:
        """Entries audited per second, every phase included."""
        total = self.seconds.get("total", 0.0)
        return self.entries / total if total else 0.0

    def add(self, what: str, message: str, **where: Any) -> None:
        problem = Problem(what, message, **where)
        self.counts[what] = self.counts.get(what, 0) + 1
        if self.counts[what] <= LISTED:
            self.problems.append(problem)
        seq = problem.seq
        if seq is not None and (self.first_bad_seq is None or seq < self.first_bad_seq):
            self.first_bad_seq = seq
