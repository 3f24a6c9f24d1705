"""Registry event objects (PROTOCOL.md section 4, "Trust root and registry")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ledger.wire.types import (
    Country,
    EventBase,
    Hex64,
    Id,
    ListName,
    PublicKey,
    Role,
    Strict,
    Text,
    Time,
)


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
