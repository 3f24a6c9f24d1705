"""The one error tree of chipledger.

Every refusal the ledger makes is a `LedgerError` whose `code` is the protocol's error code
(PROTOCOL.md section 6) and whose message tells a person what was wrong and what to do.
HTTP statuses and exit codes are mapped from these classes once, in `api/` and `tools/`;
nothing here knows about either.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Something the ledger refuses; nothing was stored."""

    code = "invalid_event"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(LedgerError):
    """The bytes are not JSON, or a query parameter is malformed."""

    code = "bad_request"


class TooLarge(LedgerError):
    """A body over the documented limits (PROTOCOL.md section 5)."""

    code = "too_large"


class InvalidEvent(LedgerError):
    """The envelope or its event fails the schema, the canonical form, or the bounds."""

    code = "invalid_event"


class BadSignature(LedgerError):
    """A signature does not verify, or names an unknown or revoked key."""

    code = "bad_signature"


class Unauthenticated(LedgerError):
    """A read that needs a token has none, or an expired one."""

    code = "unauthenticated"


class NotAuthorized(LedgerError):
    """Wrong or missing signers, or a party acting outside its roles."""

    code = "not_authorized"


class NotFound(LedgerError):
    """An object the request names does not exist (or is not visible to the reader)."""

    code = "not_found"


class Conflict(LedgerError):
    """A stale `prev`, a reused id, or the same event id with other bytes."""

    code = "conflict"


class InvalidTransition(LedgerError):
    """The custody state does not allow this event."""

    code = "invalid_transition"


class BatchRefused(LedgerError):
    """One envelope of a batch was refused, so none of the batch was stored."""

    def __init__(self, index: int, cause: LedgerError) -> None:
        super().__init__(f"envelope {index} of the batch was refused: {cause.message}")
        self.index = index
        self.cause = cause
        self.code = cause.code
