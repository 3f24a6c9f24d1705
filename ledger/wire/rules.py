"""License, rule-pack and monitoring event objects (PROTOCOL.md section 4, "Licenses, rule
packs, monitoring"), and the rule pack's own shape.

Shape only, as everywhere in `ledger.wire`: a license's window and lists, a pack's keys and
integer values. Whether a pack is retroactive, or a license's models are known to the pack in
force, is decided when the event is judged (`ledger.policy`, `ledger.licensing`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from ledger.wire.types import Country, EventBase, Id, Quantity, Strict, Text, Time, _country

Count = Annotated[int, Field(ge=0, le=2**53 - 1)]


class Conditions(Strict):
    reexport_allowed: bool
    attestation_interval_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    security_guarantee: bool
    us_investment_commitment: bool


class LicenseSpec(Strict):
    id: Id
    holder: Id
    destinations: Annotated[list[Country], Field(min_length=1, max_length=300)]
    consignees: Annotated[list[Id], Field(min_length=1, max_length=1000)]
    models: Annotated[list[Id], Field(min_length=1, max_length=100)]
    max_quantity: Quantity
    valid_from: Time
    valid_until: Time
    conditions: Conditions

    @model_validator(mode="after")
    def _window(self) -> LicenseSpec:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class LicenseGranted(EventBase):
    type: Literal["license.granted"]
    license: LicenseSpec


class LicenseRevoked(EventBase):
    type: Literal["license.revoked"]
    license: Id
    reason: Text


# -- the rule pack --------------------------------------------------------------------------


class _PackPart(Strict):
    """Exact integers, no floats, no nulls, no coercion; keys of its own are allowed."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class Groups(_PackPart):
    embargo: list[Country]
    license_required: list[Country]

    @model_validator(mode="after")
    def _other_groups(self) -> Groups:
        for name, members in (self.model_extra or {}).items():
            if not isinstance(members, list):
                raise ValueError(f"group {name!r} must be a list of country codes")
            for code in members:
                if not isinstance(code, str):
                    raise ValueError(f"groups.{name}: {code!r} is not a country code")
                try:
                    _country(code)
                except ValueError as exc:
                    raise ValueError(f"groups.{name}: {exc}") from None
        return self


class Thresholds(_PackPart):
    site_unlicensed: Count
    entity_country_strategic: Count
    late_report_hours: Count
    install_within_days: Count

    @model_validator(mode="after")
    def _other_thresholds(self) -> Thresholds:
        for name, value in (self.model_extra or {}).items():
            if type(value) is not int or value < 0:
                raise ValueError(f"thresholds.{name} must be a non-negative integer")
        return self


class ModelTerms(_PackPart):
    tpp: Count | None = None


class RulePack(_PackPart):
    id: Id
    effective_from: Time
    groups: Groups
    thresholds: Thresholds
    models: Annotated[dict[Id, ModelTerms], Field(min_length=1)]


def parse_pack(value: Any) -> RulePack:
    """A rule pack, or ValueError naming the first bad keys."""
    from ledger.wire import describe

    if not isinstance(value, dict):
        raise ValueError("a rule pack is a JSON object")
    try:
        return RulePack.model_validate(value)
    except ValidationError as exc:
        raise ValueError(describe(exc, "policy")) from None


class PolicyAdopted(EventBase):
    type: Literal["policy.adopted"]
    policy: dict[str, Any]

    @model_validator(mode="after")
    def _pack(self) -> PolicyAdopted:
        parse_pack(self.policy)
        return self

    @property
    def pack(self) -> RulePack:
        return parse_pack(self.policy)


# -- monitoring -----------------------------------------------------------------------------


class SecurityAttested(EventBase):
    type: Literal["security.attested"]
    site: Id
    period_start: Time
    period_end: Time
    statement: Text

    @model_validator(mode="after")
    def _period(self) -> SecurityAttested:
        if self.period_end < self.period_start:
            raise ValueError("period_end must not be before period_start")
        return self


class SiteInspected(EventBase):
    type: Literal["site.inspected"]
    site: Id
    observed: Annotated[dict[Id, Count], Field(max_length=100)]
