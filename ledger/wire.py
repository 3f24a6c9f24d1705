"""The public byte contract as models: the DSSE envelope and every event object.

These frozen pydantic models are PROTOCOL.md sections 1-4 written as types; `schemas/` is
generated from them. They check shape only (fields, formats, bounds). Whether an event is
allowed (signers, roles, custody state) is decided in `ledger.registry` and friends.
Optional fields are left out, never null: a `null` anywhere is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from ledger.crypto import PAYLOAD_TYPE, decode_public_key
from ledger.errors import InvalidEvent

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
HEX64_PATTERN = r"^[0-9a-f]{64}$"
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"
MAX_QUANTITY = 2**53 - 1


def _country(code: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", code) or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


def parse_time(value: Any) -> datetime:
    """An RFC 3339 UTC time with `Z`; fractions beyond microseconds are truncated."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.fullmatch(TIME_PATTERN, value):
        raise ValueError("a time must be RFC 3339 in UTC with Z, like 2026-03-06T12:00:00Z")
    whole, _, fraction = value[:-1].partition(".")
    stamp = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return stamp.replace(microsecond=int((fraction + "000000")[:6])) if fraction else stamp


def format_time(value: datetime) -> str:
    """The protocol's text form of a time (`Z`, microseconds only when there are some)."""
    text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


def _public_key(text: str) -> str:
    try:
        decode_public_key(text)
    except InvalidEvent as exc:
        raise ValueError(exc.message) from None
    return text


Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
EventId = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
Hex64 = Annotated[str, StringConstraints(pattern=HEX64_PATTERN)]
Country = Annotated[
    str,
    AfterValidator(_country),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{2}$"}),
]
Time = Annotated[
    datetime,
    BeforeValidator(parse_time),
    WithJsonSchema({"type": "string", "pattern": TIME_PATTERN, "format": "date-time"}),
]
PublicKey = Annotated[
    str,
    AfterValidator(_public_key),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "minLength": 44}),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Role = Literal["authority", "investigator", "vendor", "buyer", "carrier"]
ListName = Literal["entity", "unverified", "denied"]


class Strict(BaseModel):
    """Exact objects: unknown fields refused, no nulls, no coercion, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None:
                    raise ValueError(f"{key!r} is null; leave an optional field out instead")
        return data

    def to_json(self) -> dict[str, Any]:
        """The object as JSON values, optional fields left out."""
        return self.model_dump(mode="json", exclude_none=True)


# -- The envelope (PROTOCOL.md section 2) ---------------------------------------------------


class Signature(Strict):
    keyid: Hex64
    sig: str


class Envelope(Strict):
    payloadType: Literal["application/vnd.chipledger.event.v1+json"]  # noqa: N815
    payload: str
    signatures: Annotated[list[Signature], Field(max_length=16)]


assert PAYLOAD_TYPE == "application/vnd.chipledger.event.v1+json"


# -- Event objects (PROTOCOL.md sections 3-4) -------------------------------------------------


class EventBase(Strict):
    id: EventId
    ledger: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    actor: Id
    at: Time


class PartySpec(Strict):
    id: Id
    name: Text
    roles: Annotated[list[Role], Field(min_length=1, max_length=5)]
    country: Country
    hq_country: Country | None = None
    keys: Annotated[list[PublicKey], Field(min_length=1, max_length=16)]

    @model_validator(mode="after")
    def _distinct(self) -> PartySpec:
        if len(set(self.roles)) != len(self.roles):
            raise ValueError("roles must be distinct")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("keys must be distinct")
        return self

    @property
    def headquarters(self) -> str:
        return self.hq_country or self.country


class SiteSpec(Strict):
    id: Id
    operator: Id
    country: Country
    name: Text


class PartyRegistered(EventBase):
    type: Literal["party.registered"]
    party: PartySpec


class PartyKeyAdded(EventBase):
    type: Literal["party.key_added"]
    party: Id
    key: PublicKey


class PartyKeyRevoked(EventBase):
    type: Literal["party.key_revoked"]
    party: Id
    keyid: Hex64
    compromised_since: Time | None = None


class PartyListed(EventBase):
    type: Literal["party.listed"]
    party: Id
    list: ListName
    reason: Text


class PartyDelisted(EventBase):
    type: Literal["party.delisted"]
    party: Id
    list: ListName


class SiteRegistered(EventBase):
    type: Literal["site.registered"]
    site: SiteSpec


Event = Annotated[
    PartyRegistered
    | PartyKeyAdded
    | PartyKeyRevoked
    | PartyListed
    | PartyDelisted
    | SiteRegistered,
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
