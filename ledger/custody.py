"""Who may move a chip batch, and what each batch event does (PROTOCOL.md section 4).

One `Command` per `batch.*` type, called by the acceptance pipeline in the section 5 order:
`authorize` (the signer is the party the event needs: 403, after the batch itself is found),
`check` (other references 404, then `prev`, `at` order and the transition table 409), then
`apply`, which triggers the stored events. Nothing here reads a clock or touches the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from ledger import events, wire
from ledger.aggregates import stream_id
from ledger.batch import Batch
from ledger.errors import Conflict, InvalidEvent, InvalidTransition, NotAuthorized, NotFound
from ledger.licensing import cite
from ledger.policy import in_force, policy_book
from ledger.registry import OPERATOR_ROLES, Command, require_party
from ledger.unit import UnitOfWork

B = TypeVar("B", bound=wire.BatchEventBase)

# PROTOCOL.md section 4: which event may follow which status.
ALLOWED: Mapping[str, frozenset[str]] = {
    "fabricated": frozenset({"batch.exported", "batch.transferred", "batch.split",
                             "batch.decommissioned", "batch.reported_lost"}),
    "in_transit": frozenset({"batch.delivered", "batch.reported_lost"}),
    "delivered": frozenset({"batch.exported", "batch.installed", "batch.relocated",
                            "batch.transferred", "batch.split", "batch.decommissioned",
                            "batch.reported_lost"}),
    "installed": frozenset({"batch.relocated", "batch.transferred", "batch.split",
                            "batch.decommissioned", "batch.reported_lost"}),
}  # fmt: skip


def require_batch(unit: UnitOfWork, batch_id: str) -> Batch:
    batch = unit.batch(batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id!r} is recorded")
    return batch


def require_role(unit: UnitOfWork, party_id: str, roles: tuple[str, ...], doing: str) -> None:
    party = unit.party(party_id)
    if party is None or not party.has_role(*roles):
        raise NotAuthorized(
            f"{party_id!r} cannot {doing}: that needs the role {' or '.join(roles)}"
        )


def require_site(unit: UnitOfWork, site_id: str, operator: str, doing: str) -> str:
    """The site's country, if `operator` operates it (404 unknown site, 409 someone else's)."""
    site = unit.site(site_id)
    if site is None:
        raise NotFound(f"no site {site_id!r} is registered")
    if site.operator != operator:
        raise InvalidTransition(
            f"site {site_id!r} is operated by {site.operator!r}, not {operator!r}, so {doing}"
        )
    return site.country


def require_receiver(unit: UnitOfWork, party_id: str) -> None:
    require_party(unit, party_id)
    require_role(unit, party_id, OPERATOR_ROLES, "receive chips")


class BatchCommand(Command[B]):
    """The checks every event on an existing batch shares; subclasses add their own."""

    doing = "move this batch"
    roles: tuple[str, ...] = OPERATOR_ROLES

    def authorize(self, event: B, unit: UnitOfWork) -> None:
        require_role(unit, event.actor, self.roles, self.doing)  # before the batch: section 5
        batch = require_batch(unit, event.batch)
        self.authorize_on(event, batch, unit)

    def authorize_on(self, event: B, batch: Batch, unit: UnitOfWork) -> None:
        if event.actor != batch.holder:
            raise NotAuthorized(
                f"only the holder {batch.holder!r} may {self.doing}, not {event.actor!r}"
            )

    def check(self, event: B, unit: UnitOfWork) -> None:
        batch = require_batch(unit, event.batch)
        self.references(event, batch, unit)
        if event.prev != batch.head:
            raise Conflict(
                f"'prev' is not batch {batch.batch_id!r}'s latest envelope ({batch.head}); "
                "read the batch again and sign against its head"
            )
        if event.at < batch.last_at:
            raise InvalidTransition(
                f"'at' is earlier than batch {batch.batch_id!r}'s previous event "
                f"({wire.format_time(batch.last_at)})"
            )
        if event.type not in ALLOWED.get(batch.status, frozenset()):
            raise InvalidTransition(
                f"batch {batch.batch_id!r} is {batch.status}: {event.type} cannot follow"
            )
        self.state(event, batch, unit)

    def references(self, event: B, batch: Batch, unit: UnitOfWork) -> None:
        """Objects the event names besides the batch (404), and their roles (403)."""

    def state(self, event: B, batch: Batch, unit: UnitOfWork) -> None:
        """Checks of this event type against the batch's state (409)."""

    def apply(self, event: B, unit: UnitOfWork, accepted: events.Accepted) -> None:
        batch = require_batch(unit, event.batch)
        batch.record(
            self.stored,
            timestamp=unit.now,
            fact=event,
            accepted=accepted,
            **self.derived(event, unit),
        )

    stored: type[events.AggregateEvent]

    def derived(self, event: B, unit: UnitOfWork) -> dict[str, Any]:
        """What the applier needs besides the fact (it cannot look anything up)."""
        return {}


class Fabricate(Command[wire.BatchFabricated]):
    def authorize(self, event: wire.BatchFabricated, unit: UnitOfWork) -> None:
        require_role(unit, event.actor, ("vendor",), "fabricate chips")

    def check(self, event: wire.BatchFabricated, unit: UnitOfWork) -> None:
        pack = in_force(policy_book(unit), event.at)
        if event.model not in pack.terms.models:
            raise InvalidEvent(
                f"model {event.model!r} is not in the rule pack in force ({pack.id!r}); "
                f"it knows {', '.join(sorted(pack.terms.models))}"
            )
        if unit.batch(event.batch) is not None:
            raise Conflict(f"batch id {event.batch!r} is taken; a batch id is never reused")
        unit.prefetch("claim", (f"serial:{serial}" for serial in event.serials or []))
        for serial in event.serials or []:
            if (claim := unit.claim(f"serial:{serial}")) is not None:
                raise Conflict(f"serial {serial!r} was fabricated before, in batch {claim.owner!r}")

    def apply(
        self, event: wire.BatchFabricated, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        batch = Batch._create(
            events.BatchFabricated, id=stream_id("batch", event.batch), timestamp=unit.now,
            fact=event, accepted=accepted,
        )  # fmt: skip
        unit.add(batch, "batch", event.batch)
        for serial in event.serials or []:
            unit.take(f"serial:{serial}", event.batch)


class Export(BatchCommand[wire.BatchExported]):
    doing = "export it"
    stored = events.BatchExported

    def apply(self, event: wire.BatchExported, unit: UnitOfWork, accepted: events.Accepted) -> None:
        super().apply(event, unit, accepted)
        cite(unit, event.license, require_batch(unit, event.batch).quantity, accepted, event.at)

    def references(self, event: wire.BatchExported, batch: Batch, unit: UnitOfWork) -> None:
        require_receiver(unit, event.to)


class Deliver(BatchCommand[wire.BatchDelivered]):
    doing = "acknowledge its delivery"
    stored = events.BatchDelivered

    def authorize_on(self, event: wire.BatchDelivered, batch: Batch, unit: UnitOfWork) -> None:
        # Out of transit there is no consignee: the holder asking gets the status's 409.
        in_transit = batch.status == "in_transit" and batch.to
        expected = batch.to if in_transit else batch.holder
        if event.actor != expected:
            who = "the consignee" if in_transit else f"the holder of a batch {batch.status},"
            raise NotAuthorized(
                f"only {who} {expected!r} may acknowledge delivery of "
                f"{batch.batch_id!r}, not {event.actor!r}"
            )

    def references(self, event: wire.BatchDelivered, batch: Batch, unit: UnitOfWork) -> None:
        if unit.site(event.site) is None:
            raise NotFound(f"no site {event.site!r} is registered")

    def state(self, event: wire.BatchDelivered, batch: Batch, unit: UnitOfWork) -> None:
        require_site(unit, event.site, event.actor, "the consignee cannot receive there")
        if event.quantity > batch.quantity:
            raise InvalidTransition(
                f"{event.quantity} chips received, but only {batch.quantity} were shipped"
            )
        for serial in set(event.serials or ()) - set(batch.serials or ()):
            holder = unit.serial_holder(serial)
            if holder is not None and holder != batch.batch_id:
                raise Conflict(
                    f"serial {serial!r} is held by batch {holder!r}; a serial is unique "
                    "across the ledger"
                )

    def apply(
        self, event: wire.BatchDelivered, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        super().apply(event, unit, accepted)
        unit.prefetch("claim", (f"serial:{serial}" for serial in event.serials or ()))
        for serial in event.serials or ():
            if not unit.exists("claim", f"serial:{serial}"):
                unit.take(f"serial:{serial}", event.batch)  # first seen here: unique from now on

    def derived(self, event: wire.BatchDelivered, unit: UnitOfWork) -> dict[str, Any]:
        return {"site_country": require_site(unit, event.site, event.actor, "")}


class Install(BatchCommand[wire.BatchInstalled]):
    doing = "install it"
    stored = events.BatchInstalled

    roles = ("vendor", "buyer")  # a carrier does what a buyer does, except install

    def references(self, event: wire.BatchInstalled, batch: Batch, unit: UnitOfWork) -> None:
        if unit.site(event.site) is None:
            raise NotFound(f"no site {event.site!r} is registered")

    def state(self, event: wire.BatchInstalled, batch: Batch, unit: UnitOfWork) -> None:
        if event.site != batch.site:
            raise InvalidTransition(
                f"batch {batch.batch_id!r} is at {batch.site!r}; it can be installed only there"
            )


class Relocate(BatchCommand[wire.BatchRelocated]):
    doing = "relocate it"
    stored = events.BatchRelocated

    def references(self, event: wire.BatchRelocated, batch: Batch, unit: UnitOfWork) -> None:
        if unit.site(event.site) is None:
            raise NotFound(f"no site {event.site!r} is registered")

    def state(self, event: wire.BatchRelocated, batch: Batch, unit: UnitOfWork) -> None:
        require_site(unit, event.site, event.actor, "the holder cannot move it there")
        if event.site == batch.site:
            raise InvalidTransition(f"batch {batch.batch_id!r} is already at {event.site!r}")

    def derived(self, event: wire.BatchRelocated, unit: UnitOfWork) -> dict[str, Any]:
        return {"site_country": require_site(unit, event.site, event.actor, "")}


class Transfer(BatchCommand[wire.BatchTransferred]):
    doing = "transfer it"
    stored = events.BatchTransferred

    def cosigners(self, event: wire.BatchTransferred, unit: UnitOfWork) -> set[str]:
        return {event.to}

    def authorize_on(self, event: wire.BatchTransferred, batch: Batch, unit: UnitOfWork) -> None:
        if event.actor != batch.owner:
            raise NotAuthorized(
                f"only the owner {batch.owner!r} may transfer {batch.batch_id!r}, "
                f"not {event.actor!r}"
            )

    def references(self, event: wire.BatchTransferred, batch: Batch, unit: UnitOfWork) -> None:
        require_receiver(unit, event.to)
        if event.site is not None and unit.site(event.site) is None:
            raise NotFound(f"no site {event.site!r} is registered")

    def state(self, event: wire.BatchTransferred, batch: Batch, unit: UnitOfWork) -> None:
        if event.to == batch.owner:
            raise InvalidTransition(f"{event.to!r} already owns batch {batch.batch_id!r}")
        if event.site is None:
            return
        if batch.status == "fabricated":
            raise InvalidTransition("a fabricated batch changes hands in place only (no site)")
        require_site(unit, event.site, event.to, "the receiver cannot take it there")

    def derived(self, event: wire.BatchTransferred, unit: UnitOfWork) -> dict[str, Any]:
        if event.site is None:
            return {}
        return {"site_country": require_site(unit, event.site, event.to, "")}

    def apply(
        self, event: wire.BatchTransferred, unit: UnitOfWork, accepted: events.Accepted
    ) -> None:
        super().apply(event, unit, accepted)
        cite(unit, event.license, require_batch(unit, event.batch).quantity, accepted, event.at)


class Split(BatchCommand[wire.BatchSplit]):
    doing = "split it"
    stored = events.BatchSplit

    def state(self, event: wire.BatchSplit, batch: Batch, unit: UnitOfWork) -> None:
        unit.prefetch("batch", (part.batch for part in event.into))
        for part in event.into:
            if unit.batch(part.batch) is not None:
                raise Conflict(f"batch id {part.batch!r} is taken; a batch id is never reused")
        total = sum(part.quantity for part in event.into)
        if total != batch.quantity:
            raise InvalidTransition(
                f"the parts hold {total} chips, but batch {batch.batch_id!r} holds {batch.quantity}"
            )
        named = [s for part in event.into for s in part.serials or []]
        if batch.serials is None and named:
            raise InvalidTransition(f"batch {batch.batch_id!r}'s serials are unknown; name none")
        if batch.serials is not None and sorted(named) != sorted(batch.serials):
            raise InvalidTransition(
                f"the parts' serials must partition batch {batch.batch_id!r}'s serials exactly"
            )

    def apply(self, event: wire.BatchSplit, unit: UnitOfWork, accepted: events.Accepted) -> None:
        parent = require_batch(unit, event.batch)
        before = parent.snapshot()
        super().apply(event, unit, accepted)
        for part in event.into:
            child = Batch._create(
                events.BatchSplitFrom, id=stream_id("batch", part.batch), timestamp=unit.now,
                fact=event, accepted=accepted, parent=before, part=part,
            )  # fmt: skip
            unit.add(child, "batch", part.batch)


class Decommission(BatchCommand[wire.BatchDecommissioned]):
    doing = "decommission it"
    stored = events.BatchDecommissioned


class ReportLost(BatchCommand[wire.BatchReportedLost]):
    doing = "report it lost"
    stored = events.BatchReportedLost
    roles = (*OPERATOR_ROLES, "authority")

    def authorize_on(self, event: wire.BatchReportedLost, batch: Batch, unit: UnitOfWork) -> None:
        actor = unit.party(event.actor)
        if event.actor in (batch.holder, batch.owner) or (actor and actor.has_role("authority")):
            return
        raise NotAuthorized(
            f"only the holder {batch.holder!r}, the owner {batch.owner!r} or an authority may "
            f"report {batch.batch_id!r} lost, not {event.actor!r}"
        )


CUSTODY_COMMANDS: Mapping[str, Command[Any]] = {
    "batch.fabricated": Fabricate(),
    "batch.exported": Export(),
    "batch.delivered": Deliver(),
    "batch.installed": Install(),
    "batch.relocated": Relocate(),
    "batch.transferred": Transfer(),
    "batch.split": Split(),
    "batch.decommissioned": Decommission(),
    "batch.reported_lost": ReportLost(),
}
