"""The value types of the public contract (PROTOCOL.md section 1), the envelope (section 2)
and the fields every event object has (section 3).

They check shape only: formats and bounds. Optional fields are left out, never null: a
`null` anywhere is refused. Whether an event is allowed is decided outside this package.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from ledger.crypto import decode_public_key
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

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (by `ledger.ahead`, between this ledger's own processes) as its fields,
        restored as they were checked, without pydantic's slower per-object state hooks."""
        return (_restore, (type(self), self.__dict__, self.__pydantic_fields_set__))


def _restore(cls: type[Strict], values: dict[str, Any], fields_set: set[str]) -> Strict:
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", values)
    object.__setattr__(model, "__pydantic_fields_set__", fields_set)
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


# -- The envelope (PROTOCOL.md section 2) ---------------------------------------------------


class Signature(Strict):
    keyid: Hex64
    sig: str


class Envelope(Strict):
    payloadType: Literal["application/vnd.chipledger.event.v1+json"]  # noqa: N815
    payload: str
    signatures: Annotated[list[Signature], Field(max_length=16)]


class EventBase(Strict):
    type: str
    id: EventId
    ledger: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    actor: Id
    at: Time


class BatchEventBase(EventBase):
    """Every batch event but `batch.fabricated` names the batch's latest envelope_hash."""

    batch: Id
    prev: Hex64
