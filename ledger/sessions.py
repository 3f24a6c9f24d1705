"""Read sessions (PROTOCOL.md section 6, `POST /v1/sessions`): a party proves it holds one of
its keys by signing a `session.requested` envelope, and gets a bearer token for reads.

The request carries the common fields only; it is never stored in the log. Its `at` must be
within five minutes of the ledger's clock either way, and its `id` must never have been used,
by an accepted event or an earlier session request. Tokens are random; the store keeps only
their SHA-256, the party, the key that asked and the expiry, so a token dies when it expires
or when that key is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from ledger import wire
from ledger.errors import InvalidEvent
from ledger.wire.types import EventBase

SESSION_TYPE = "session.requested"
LIFETIME = timedelta(hours=1)
FRESH = timedelta(minutes=5)


class SessionRequested(EventBase):
    """The one event that is never accepted into the log: a party asking for a read token."""

    type: Literal["session.requested"]


_ADAPTER: TypeAdapter[SessionRequested] = TypeAdapter(SessionRequested)


def parse_request(value: Any) -> SessionRequested:
    """The payload of a session request, or InvalidEvent naming what is wrong."""
    if isinstance(value, dict) and value.get("type") != SESSION_TYPE:
        raise InvalidEvent(
            f"a session is asked for with a {SESSION_TYPE!r} event, not {value.get('type')!r}"
        )
    try:
        return _ADAPTER.validate_python(value)
    except ValidationError as exc:
        raise InvalidEvent(wire.describe(exc, "event")) from None


def check_fresh(at: datetime, now: datetime) -> None:
    """A request is good for five minutes either side of the ledger's clock (a replay of an
    old one is refused even before its id is looked up)."""
    if at < now - FRESH:
        raise InvalidEvent(
            f"'at' {wire.format_time(at)} is more than 5 minutes before the ledger's clock "
            f"({wire.format_time(now)}): a session request must be fresh; sign a new one"
        )


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of a token: never the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SessionRow:
    party: str
    keyid: str
    expires_at: datetime
