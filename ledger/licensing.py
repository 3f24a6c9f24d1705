"""Licenses: the terms an authority grants, their revocation, and the quantity moved under them.

A license is valid for events with `valid_from` <= `at` < `valid_until`, and invalid for every
event accepted after its revocation, whatever their `at`. Its `used_quantity` is the sum of the
quantities of the exports and transfers that cite it (PROTOCOL.md section 4).
"""

from __future__ import annotations

from datetime import datetime

from ledger import events, wire
from ledger.aggregates import License, stream_id
from ledger.errors import Conflict, InvalidEvent, InvalidTransition, NotFound
from ledger.policy import in_force, policy_book
from ledger.registry import Command, require_authority, require_party
from ledger.unit import UnitOfWork


def license_of(unit: UnitOfWork, license_id: str) -> License | None:
    return unit.get(License, "license", license_id)


class GrantLicense(Command[wire.LicenseGranted]):
    def authorize(self, event: wire.LicenseGranted, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)

    def check(self, event: wire.LicenseGranted, unit: UnitOfWork) -> None:
        spec = event.license
        require_party(unit, spec.holder)
        for consignee in spec.consignees:
            require_party(unit, consignee)
        if license_of(unit, spec.id) is not None:
            raise Conflict(f"license id {spec.id!r} is taken; a license id is never reused")
        pack = in_force(policy_book(unit), event.at)
        if unknown := sorted(set(spec.models) - set(pack.terms.models)):
            raise InvalidEvent(
                f"license.models: {', '.join(map(repr, unknown))} not in the rule pack in force "
                f"({pack.id!r}); license only models the pack knows"
            )

    def apply(
        self, event: wire.LicenseGranted, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        found = License._create(
            events.LicenseGranted, id=stream_id("license", event.license.id), timestamp=unit.now,
            fact=event, accepted=accepted,
        )  # fmt: skip
        unit.add(found, "license", event.license.id)


class RevokeLicense(Command[wire.LicenseRevoked]):
    def authorize(self, event: wire.LicenseRevoked, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)

    def check(self, event: wire.LicenseRevoked, unit: UnitOfWork) -> None:
        found = license_of(unit, event.license)
        if found is None:
            raise NotFound(f"no license {event.license!r} was granted")
        if found.revoked_seq is not None:
            raise InvalidTransition(
                f"license {event.license!r} was revoked at seq {found.revoked_seq} already"
            )

    def apply(
        self, event: wire.LicenseRevoked, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        found = license_of(unit, event.license)
        assert found is not None  # checked
        found.record(events.LicenseRevoked, timestamp=unit.now, fact=event, accepted=accepted)


def cite(
    unit: UnitOfWork, license_id: str | None, quantity: int, accepted: events.Accepted, at: datetime
) -> None:
    """An export or transfer moving `quantity` chips under `license_id` (if it is known)."""
    found = license_of(unit, license_id) if license_id else None
    if found is not None:
        found.record(
            events.LicenseCited, timestamp=unit.now, accepted=accepted, at=at, quantity=quantity
        )
        unit.read_changes.on_cited(found.terms.id, accepted.seq, at, quantity)
