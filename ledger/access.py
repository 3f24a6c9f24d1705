"""Who reads what (PROTOCOL.md section 6): the one place where reads are allowed or hidden.

A reader is a party known by its session token, or everyone (a ledger served with open reads).
Authorities and investigators read everything. Any other party reads the batches it has ever
owned, held or been consignee of (a split child with its parent), its own allocation, the
flags on those batches or naming it, the licenses it holds, and the rule packs; the whole log
is for authorities and investigators. Anything else is answered exactly as if it did not
exist (404), so a read never hints at what a party may not see.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ledger.errors import NotAuthorized

SEES_ALL = ("authority", "investigator")


@dataclass(frozen=True)
class Reader:
    party: str | None = None  # None: everyone (open reads)
    sees_all: bool = True

    @classmethod
    def of(cls, party: str, roles: Collection[str]) -> Reader:
        return cls(party, any(role in SEES_ALL for role in roles))


EVERYONE = Reader()


def sees_batch(
    reader: Reader,
    batch_id: str,
    involved: Callable[[str, list[str]], bool],
    parent_of: Callable[[str], str | None],
) -> bool:
    """Whether `reader` sees the batch: involved with it, or with an ancestor it split from
    (`involved(party, batches)`: was the party ever involved with any of them)."""
    if reader.sees_all:
        return True
    assert reader.party is not None
    lineage: list[str] = []
    current: str | None = batch_id
    while current is not None and current not in lineage:
        lineage.append(current)
        current = parent_of(current)
    return involved(reader.party, lineage)


def sees_party(reader: Reader, party: str) -> bool:
    return reader.sees_all or reader.party == party


def sees_flag(reader: Reader, flag: dict[str, Any], sees: Callable[[str], bool]) -> bool:
    if reader.sees_all or flag.get("party") == reader.party:
        return True
    batch = flag.get("batch")
    return isinstance(batch, str) and sees(batch)


def needs_all(reader: Reader, what: str) -> None:
    """An endpoint for authorities and investigators only: 403 for any other party."""
    if not reader.sees_all:
        raise NotAuthorized(f"{what} is for authorities and investigators, not {reader.party!r}")
