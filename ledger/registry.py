"""Who may register parties, keys, listings and sites, and what each registry event does.

One `Command` per event type (PROTOCOL.md section 4, "Trust root and registry"): which keys
the event introduces and for whom, who must co-sign, the role checks (403), the references
and state checks (404, 409), and `apply`, which triggers the stored events. The pipeline in
`ledger.application` calls them in the order of section 5; nothing here touches the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from ledger import events, wire
from ledger.aggregates import Party, Site, stream_id
from ledger.crypto import decode_public_key, key_id
from ledger.errors import Conflict, InvalidTransition, NotAuthorized, NotFound
from ledger.unit import UnitOfWork

E = TypeVar("E", bound=wire.EventBase)
OPERATOR_ROLES = ("vendor", "buyer", "carrier")


class Command(Generic[E]):
    """The rules of one event type. Subclasses override what their type needs."""

    def introduced(self, event: E) -> dict[str, str]:
        """Public keys this event introduces, each with the party it is for."""
        return {}

    def cosigners(self, event: E, unit: UnitOfWork) -> set[str]:
        """Parties that must sign besides the actor."""
        return set()

    def authorize(self, event: E, unit: UnitOfWork) -> None:
        """Role checks of the actor (403)."""

    def check(self, event: E, unit: UnitOfWork) -> None:
        """Referenced objects exist (404), then the state allows the event (409)."""

    def apply(self, event: E, unit: UnitOfWork, accepted: events.Accepted) -> None:
        """Trigger the stored events; runs only after every check passed."""


def require_authority(unit: UnitOfWork, actor: str) -> Party:
    party = unit.party(actor)
    if party is None or not party.has_role("authority"):
        raise NotAuthorized(f"{actor!r} is not an authority; only an authority may do this")
    return party


def require_party(unit: UnitOfWork, party_id: str) -> Party:
    party = unit.party(party_id)
    if party is None:
        raise NotFound(f"no party {party_id!r} is registered")
    return party


def require_genesis_for_authority(unit: UnitOfWork, actor: str, target: Party | None) -> None:
    if target is not None and target.has_role("authority") and actor != unit.genesis:
        raise NotAuthorized(
            f"only the genesis authority {unit.genesis!r} may change an authority's keys"
        )


def claim_keys(unit: UnitOfWork, party_id: str, keys: list[str]) -> None:
    for text in keys:
        unit.take(f"key:{key_id(decode_public_key(text))}", party_id)


def refuse_claimed_keys(unit: UnitOfWork, keys: list[str]) -> None:
    for text in keys:
        claim = unit.claim(f"key:{key_id(decode_public_key(text))}")
        if claim is not None:
            raise Conflict(f"key {text} already belongs to party {claim.owner!r}; use a new key")


class RegisterParty(Command[wire.PartyRegistered]):
    def introduced(self, event: wire.PartyRegistered) -> dict[str, str]:
        return {key: event.party.id for key in event.party.keys}

    def authorize(self, event: wire.PartyRegistered, unit: UnitOfWork) -> None:
        if unit.genesis is None:
            self._authorize_genesis(event, unit)
            return
        require_authority(unit, event.actor)
        if "authority" in event.party.roles and event.actor != unit.genesis:
            raise NotAuthorized(
                f"only the genesis authority {unit.genesis!r} may register another authority"
            )

    @staticmethod
    def _authorize_genesis(event: wire.PartyRegistered, unit: UnitOfWork) -> None:
        spec = event.party
        if (
            event.actor != spec.id
            or "authority" not in spec.roles
            or unit.trust_root not in spec.keys
        ):
            raise NotAuthorized(
                "this ledger has no genesis yet: the first event must be the trust-root "
                "authority's own party.registered, listing and signed by the trust-root key"
            )

    def check(self, event: wire.PartyRegistered, unit: UnitOfWork) -> None:
        if unit.party(event.party.id) is not None:
            raise Conflict(f"party id {event.party.id!r} is taken; choose another id")
        refuse_claimed_keys(unit, event.party.keys)

    def apply(
        self, event: wire.PartyRegistered, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        party = Party._create(
            events.PartyRegistered,
            id=stream_id("party", event.party.id),
            timestamp=unit.now,
            fact=event,
            accepted=accepted,
        )
        unit.add(party, "party", event.party.id)
        claim_keys(unit, event.party.id, event.party.keys)
        if unit.genesis is None:
            unit.genesis = event.party.id


class AddKey(Command[wire.PartyKeyAdded]):
    def introduced(self, event: wire.PartyKeyAdded) -> dict[str, str]:
        return {event.key: event.party}

    def authorize(self, event: wire.PartyKeyAdded, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)
        require_genesis_for_authority(unit, event.actor, unit.party(event.party))

    def check(self, event: wire.PartyKeyAdded, unit: UnitOfWork) -> None:
        require_party(unit, event.party)
        refuse_claimed_keys(unit, [event.key])

    def apply(self, event: wire.PartyKeyAdded, unit: UnitOfWork, accepted: events.Accepted) -> None:
        party = require_party(unit, event.party)
        party.trigger_event(events.PartyKeyAdded, timestamp=unit.now, fact=event, accepted=accepted)
        claim_keys(unit, event.party, [event.key])


class RevokeKey(Command[wire.PartyKeyRevoked]):
    def authorize(self, event: wire.PartyKeyRevoked, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)
        require_genesis_for_authority(unit, event.actor, unit.party(event.party))

    def check(self, event: wire.PartyKeyRevoked, unit: UnitOfWork) -> None:
        party = require_party(unit, event.party)
        key = party.keys.get(event.keyid)
        if key is None:
            raise NotFound(f"party {event.party!r} has no key {event.keyid}")
        if not key.active:
            raise InvalidTransition(f"key {event.keyid} of {event.party!r} is already revoked")
        if event.party == unit.genesis and party.active_keys == [event.keyid]:
            raise InvalidTransition(
                "this is the genesis authority's last key; add another key before revoking it"
            )

    def apply(
        self, event: wire.PartyKeyRevoked, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        party = require_party(unit, event.party)
        party.trigger_event(
            events.PartyKeyRevoked, timestamp=unit.now, fact=event, accepted=accepted
        )


class ListParty(Command[wire.PartyListed]):
    def authorize(self, event: wire.PartyListed, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)

    def check(self, event: wire.PartyListed, unit: UnitOfWork) -> None:
        if event.list in require_party(unit, event.party).lists:
            raise InvalidTransition(f"{event.party!r} is already on the {event.list} list")

    def apply(self, event: wire.PartyListed, unit: UnitOfWork, accepted: events.Accepted) -> None:
        party = require_party(unit, event.party)
        party.trigger_event(events.PartyListed, timestamp=unit.now, fact=event, accepted=accepted)


class DelistParty(Command[wire.PartyDelisted]):
    def authorize(self, event: wire.PartyDelisted, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)

    def check(self, event: wire.PartyDelisted, unit: UnitOfWork) -> None:
        if event.list not in require_party(unit, event.party).lists:
            raise InvalidTransition(f"{event.party!r} is not on the {event.list} list")

    def apply(self, event: wire.PartyDelisted, unit: UnitOfWork, accepted: events.Accepted) -> None:
        party = require_party(unit, event.party)
        party.trigger_event(events.PartyDelisted, timestamp=unit.now, fact=event, accepted=accepted)


class RegisterSite(Command[wire.SiteRegistered]):
    def authorize(self, event: wire.SiteRegistered, unit: UnitOfWork) -> None:
        if event.actor == event.site.operator:
            actor = unit.party(event.actor)
            if actor is None or not actor.has_role(*OPERATOR_ROLES):
                raise NotAuthorized(
                    f"{event.actor!r} cannot operate a site: a site's operator must be a "
                    "vendor, buyer or carrier"
                )
            return
        if not (actor := unit.party(event.actor)) or not actor.has_role("authority"):
            raise NotAuthorized(
                "a site is registered by its operator or by an authority, "
                f"and {event.actor!r} is neither"
            )

    def check(self, event: wire.SiteRegistered, unit: UnitOfWork) -> None:
        operator = require_party(unit, event.site.operator)
        if not operator.has_role(*OPERATOR_ROLES):
            raise NotAuthorized(
                f"{operator.party_id!r} cannot operate a site: "
                "it must be a vendor, buyer or carrier"
            )
        if unit.site(event.site.id) is not None:
            raise Conflict(f"site id {event.site.id!r} is taken; choose another id")

    def apply(
        self, event: wire.SiteRegistered, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        site = Site._create(
            events.SiteRegistered,
            id=stream_id("site", event.site.id),
            timestamp=unit.now,
            fact=event,
            accepted=accepted,
        )
        unit.add(site, "site", event.site.id)


class AttestSecurity(Command[wire.SecurityAttested]):
    """A site's operator attests to its security for a period (PROTOCOL.md section 4)."""

    def check(self, event: wire.SecurityAttested, unit: UnitOfWork) -> None:
        site = unit.site(event.site)
        if site is None:
            raise NotFound(f"no site {event.site!r} is registered")
        if site.operator != event.actor:
            raise NotAuthorized(
                f"only the operator {site.operator!r} attests for site {event.site!r}"
            )

    def apply(
        self, event: wire.SecurityAttested, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        site = unit.site(event.site)
        assert site is not None  # checked
        site.record(events.SiteAttested, timestamp=unit.now, fact=event, accepted=accepted)


class InspectSite(Command[wire.SiteInspected]):
    """An authority records what it counted at a site."""

    def authorize(self, event: wire.SiteInspected, unit: UnitOfWork) -> None:
        require_authority(unit, event.actor)

    def check(self, event: wire.SiteInspected, unit: UnitOfWork) -> None:
        if unit.site(event.site) is None:
            raise NotFound(f"no site {event.site!r} is registered")

    def apply(self, event: wire.SiteInspected, unit: UnitOfWork, accepted: events.Accepted) -> None:
        site = unit.site(event.site)
        assert site is not None  # checked
        site.record(events.SiteInspected, timestamp=unit.now, fact=event, accepted=accepted)


REGISTRY_COMMANDS: Mapping[str, Command[Any]] = {
    "security.attested": AttestSecurity(),
    "site.inspected": InspectSite(),
    "party.registered": RegisterParty(),
    "party.key_added": AddKey(),
    "party.key_revoked": RevokeKey(),
    "party.listed": ListParty(),
    "party.delisted": DelistParty(),
    "site.registered": RegisterSite(),
}
