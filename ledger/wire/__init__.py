"""The public byte contract as models: the DSSE envelope and every event object.

These frozen pydantic models are PROTOCOL.md sections 1-4 written as types; `schemas/` is
generated from them. They check shape only (fields, formats, bounds). Whether an event is
allowed (signers, roles, custody state) is decided by the commands in `ledger.registry` and
`ledger.custody`.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import Field, TypeAdapter, ValidationError

from ledger.errors import InvalidEvent
from ledger.wire.batches import (
    BatchDecommissioned,
    BatchDelivered,
    BatchExported,
    BatchFabricated,
    BatchInstalled,
    BatchRelocated,
    BatchReportedLost,
    BatchSplit,
    BatchTransferred,
    SplitPart,
)
from ledger.wire.registry import (
    PartyDelisted,
    PartyKeyAdded,
    PartyKeyRevoked,
    PartyListed,
    PartyRegistered,
    PartySpec,
    SiteRegistered,
    SiteSpec,
)
from ledger.wire.rules import (
    Conditions,
    LicenseGranted,
    LicenseRevoked,
    LicenseSpec,
    PolicyAdopted,
    RulePack,
    SecurityAttested,
    SiteInspected,
    parse_pack,
)
from ledger.wire.types import (
    MAX_QUANTITY,
    BatchEventBase,
    Envelope,
    EventBase,
    Signature,
    Strict,
    format_time,
    parse_time,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_QUANTITY",
    "BatchDecommissioned",
    "BatchDelivered",
    "BatchEventBase",
    "BatchExported",
    "BatchFabricated",
    "BatchInstalled",
    "BatchRelocated",
    "BatchReportedLost",
    "BatchSplit",
    "BatchTransferred",
    "Conditions",
    "Envelope",
    "Event",
    "EventBase",
    "LicenseGranted",
    "LicenseRevoked",
    "LicenseSpec",
    "PartyDelisted",
    "PartyKeyAdded",
    "PartyKeyRevoked",
    "PartyListed",
    "PartyRegistered",
    "PartySpec",
    "PolicyAdopted",
    "RulePack",
    "SecurityAttested",
    "Signature",
    "SiteInspected",
    "SiteRegistered",
    "SiteSpec",
    "SplitPart",
    "Strict",
    "describe",
    "format_time",
    "parse_envelope",
    "parse_event",
    "parse_pack",
    "parse_time",
    "type_name",
]

Event = Annotated[
    PartyRegistered
    | PartyKeyAdded
    | PartyKeyRevoked
    | PartyListed
    | PartyDelisted
    | SiteRegistered
    | BatchFabricated
    | BatchExported
    | BatchDelivered
    | BatchInstalled
    | BatchRelocated
    | BatchTransferred
    | BatchSplit
    | BatchDecommissioned
    | BatchReportedLost
    | LicenseGranted
    | LicenseRevoked
    | PolicyAdopted
    | SecurityAttested
    | SiteInspected,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[type[EventBase], ...] = (
    PartyRegistered,
    PartyKeyAdded,
    PartyKeyRevoked,
    PartyListed,
    PartyDelisted,
    SiteRegistered,
    BatchFabricated,
    BatchExported,
    BatchDelivered,
    BatchInstalled,
    BatchRelocated,
    BatchTransferred,
    BatchSplit,
    BatchDecommissioned,
    BatchReportedLost,
    LicenseGranted,
    LicenseRevoked,
    PolicyAdopted,
    SecurityAttested,
    SiteInspected,
)


def type_name(model: type[EventBase]) -> str:
    """The `type` value of an event model (`party.registered` for PartyRegistered)."""
    (name,) = get_args(model.model_fields["type"].annotation)
    return str(name)


TYPE_NAMES = frozenset(type_name(model) for model in EVENT_TYPES)


def describe(exc: ValidationError, what: str) -> str:
    """One sentence naming the first few fields that fail and why."""
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        loc = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
        if loc and loc[0] in TYPE_NAMES:
            loc = loc[1:]  # the discriminator's tag, not a field
        where = ".".join(loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "union_tag_invalid":
            message = f"unknown event type {error['input'].get('type')!r}"
        elif error["type"] == "union_tag_not_found":
            message = "the event has no 'type' field"
        parts.append(f"{what}.{where}: {message}" if where else f"{what}: {message}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_envelope(value: Any) -> Envelope:
    if not isinstance(value, dict):
        raise InvalidEvent(
            "an envelope must be a JSON object with payloadType, payload, signatures"
        )
    try:
        return Envelope.model_validate(value)
    except ValidationError as exc:
        raise InvalidEvent(describe(exc, "envelope")) from None


def parse_event(value: Any) -> Event:
    if not isinstance(value, dict):
        raise InvalidEvent("the payload must be a JSON object (an event)")
    try:
        return EVENT_ADAPTER.validate_python(value)
    except ValidationError as exc:
        raise InvalidEvent(describe(exc, "event")) from None
