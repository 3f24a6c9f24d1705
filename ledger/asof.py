"""`as_of` on state reads (PROTOCOL.md section 6): a `seq` N, or an RFC 3339 time T.

N means the entries 0..N; T means the entries whose `at` is at or before T, folded in `seq`
order. Past the end of the log, N is 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ledger.errors import BadRequest, NotFound
from ledger.wire import parse_time


@dataclass(frozen=True)
class AsOf:
    seq: int | None = None
    at: datetime | None = None

    @classmethod
    def parse(cls, text: str | None, size: int) -> AsOf | None:
        if text is None:
            return None
        if re.fullmatch(r"[0-9]+", text):  # ASCII digits only; no int() of a huge text
            digits = text.lstrip("0") or "0"
            if len(digits) > len(str(size)) or int(digits) >= size:
                shown = text if len(text) <= 24 else f"{text[:20]}..."
                raise NotFound(f"as_of {shown} is past the end of the log (size {size})")
            return cls(seq=int(digits))
        try:
            return cls(at=parse_time(text))
        except ValueError:
            raise BadRequest(
                f"as_of {text!r} is neither a seq (an integer) nor an RFC 3339 UTC time"
            ) from None

    def includes(self, seq: int, at: datetime) -> bool:
        return (self.seq is None or seq <= self.seq) and (self.at is None or at <= self.at)
