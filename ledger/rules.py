"""The rules of PROTOCOL.md section 7: each a small class, all run at the judge step.

`judge(case)` runs after an event has passed every check and been applied to the unit's
aggregates, with the batch as it was before (`case.before`), so a rule sees both sides of a
move. Each rule returns findings (flags without their `seq` and `policy`, which `judge` adds).
The numbers come from the rule pack in force for the event (`ledger.policy`), never from here.
Adding a rule is adding a class to `RULES` and its rows to the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from ledger import wire
from ledger.aggregates import License, Party, Site
from ledger.batch import Batch
from ledger.counters import COVERED, HELD, MODEL, TOTAL
from ledger.events import BatchSnapshot
from ledger.licensing import license_of
from ledger.policy import Pack
from ledger.readmodels import Held
from ledger.unit import UnitOfWork

Finding = dict[str, Any]


@dataclass(frozen=True)
class Movement:
    """A change of country or hands judged like an export (PROTOCOL.md section 7)."""

    destination: str  # the country the chips go to
    receiver: str
    via: tuple[str, ...] = ()


@dataclass
class Case:
    """One accepted event, as the rules see it."""

    event: Any
    unit: UnitOfWork
    seq: int
    pack: Pack
    before: BatchSnapshot | None  # the batch the event moves, before it (None for others)

    @property
    def batch(self) -> Batch | None:
        batch_id = getattr(self.event, "batch", None)
        return self.unit.batch(batch_id) if isinstance(batch_id, str) else None

    def party(self, party_id: str | None) -> Party | None:
        return self.unit.party(party_id) if party_id else None

    def site(self, site_id: str | None) -> Site | None:
        return self.unit.site(site_id) if site_id else None

    @property
    def movement(self) -> Movement | None:
        event, before = self.event, self.before
        if isinstance(event, wire.BatchExported):
            return Movement(event.destination, event.to, tuple(event.via or ()))
        if isinstance(event, wire.BatchTransferred) and event.site is not None:
            site = self.site(event.site)
            return Movement(site.country, event.to) if site else None
        if isinstance(event, wire.BatchRelocated) and before is not None:
            site = self.site(event.site)
            if site is not None and site.country != before.country:
                return Movement(site.country, event.actor)
        return None

    @property
    def cited(self) -> str | None:
        """The license a movement names (exports and transfers carry a `license` field)."""
        if isinstance(self.event, wire.BatchExported | wire.BatchTransferred):
            return self.event.license
        return None

    @property
    def moves_under(self) -> str | None:
        """The license an event moves under: its own, else the batch's current one."""
        return self.cited or (self.before.license if self.before else None)


class Rule:
    id: ClassVar[str]
    severity: ClassVar[str] = "breach"

    def judge(self, case: Case) -> list[Finding]:
        raise NotImplementedError

    def finding(self, message: str, severity: str | None = None, **about: Any) -> Finding:
        found = {"rule": self.id, "severity": severity or self.severity, "message": message}
        found.update({k: v for k, v in about.items() if v is not None})
        return found


def _headquarters(case: Case, party_id: str) -> str | None:
    party = case.party(party_id)
    return party.headquarters if party is not None else None


class EmbargoedDestination(Rule):
    id = "embargoed-destination"

    def judge(self, case: Case) -> list[Finding]:
        move = case.movement
        if move is None:
            return []
        embargo = case.pack.group("embargo")
        hq = _headquarters(case, move.receiver)
        hit = [c for c in (move.destination, *move.via) if c in embargo]
        if hq in embargo:
            hit.append(f"{hq} (the receiver's headquarters)")
        if not hit:
            return []
        return [self.finding(
            f"the chips go to or through an embargoed country: {', '.join(hit)}",
            batch=case.event.batch, party=move.receiver, license=case.moves_under,
        )]  # fmt: skip


class LicenseRequired(Rule):
    id = "license-required"

    def judge(self, case: Case) -> list[Finding]:
        move = case.movement
        if move is None or case.moves_under is not None:
            return []
        if EmbargoedDestination().judge(case):
            return []
        required = case.pack.group("license_required")
        hq = _headquarters(case, move.receiver)
        why = [c for c in (move.destination,) if c in required]
        if hq in required:
            why.append(f"{hq} (the receiver's headquarters)")
        if not why:
            return []
        return [self.finding(
            f"a license is required for {', '.join(why)}, and this moves under none",
            batch=case.event.batch, party=move.receiver,
        )]  # fmt: skip


def _not_covering(found: License, case: Case, move: Movement | None) -> list[str]:
    terms, reasons = found.terms, []
    if move is not None and move.destination not in terms.destinations:
        reasons.append(f"it does not cover the destination {move.destination}")
    receiver = move.receiver if move else getattr(case.event, "to", None)
    if receiver is not None and receiver not in terms.consignees:
        reasons.append(f"it does not name {receiver!r} as a consignee")
    model = case.before.model if case.before else None
    if model is not None and model not in terms.models:
        reasons.append(f"it does not cover the model {model}")
    return reasons


class LicenseInvalid(Rule):
    id = "license-invalid"

    def judge(self, case: Case) -> list[Finding]:
        cited = case.cited
        if cited is None:
            return []
        found = license_of(case.unit, cited)
        if found is None:
            reasons = [f"no license {cited!r} was granted"]
        else:
            reasons = []
            if found.revoked_seq is not None:
                reasons.append(f"it was revoked at seq {found.revoked_seq}")
            elif not found.valid_at(case.event.at):
                reasons.append(
                    f"it is {found.status(case.event.at)} at {wire.format_time(case.event.at)}"
                )
            if found.terms.holder != case.event.actor:
                reasons.append(f"it is held by {found.terms.holder!r}, not {case.event.actor!r}")
            reasons += _not_covering(found, case, case.movement)
        if not reasons:
            return []
        return [self.finding(
            f"license {cited!r} cannot be used here: {'; '.join(reasons)}",
            batch=getattr(case.event, "batch", None), party=case.event.actor, license=cited,
        )]  # fmt: skip


class LicenseQuantityExceeded(Rule):
    id = "license-quantity-exceeded"

    def judge(self, case: Case) -> list[Finding]:
        found = license_of(case.unit, case.cited) if case.cited else None
        if found is None or found.used_quantity <= found.terms.max_quantity:
            return []
        return [self.finding(
            f"license {found.terms.id!r} has now moved {found.used_quantity:,} chips; "
            f"its maximum is {found.terms.max_quantity:,}",
            batch=case.event.batch, party=found.terms.holder, license=found.terms.id,
        )]  # fmt: skip


class TransferNotAuthorized(Rule):
    id = "transfer-not-authorized"

    def judge(self, case: Case) -> list[Finding]:
        event, before = case.event, case.before
        if before is None or before.license is None:
            return []
        reexport = isinstance(event, wire.BatchExported) and before.status in (
            "delivered",
            "installed",
        )
        move = case.movement
        if not (
            isinstance(event, wire.BatchTransferred)
            or reexport
            or (isinstance(event, wire.BatchRelocated) and move)
        ):
            return []
        if case.cited is not None:
            cited = license_of(case.unit, case.cited)
            if (
                cited is not None
                and cited.valid_at(event.at)
                and not _not_covering(cited, case, move)
            ):
                return []
        old = license_of(case.unit, before.license)
        if old is None:
            return []
        terms = old.terms
        receiver = move.receiver if move else event.to
        destination = move.destination if move else before.country
        reasons = []
        if receiver not in terms.consignees:
            reasons.append(f"{receiver!r} is not among its consignees")
        if destination is not None and destination not in terms.destinations:
            reasons.append(f"{destination} is not among its destinations")
        if (
            not terms.conditions.reexport_allowed
            and destination is not None
            and destination != before.country
        ):
            reasons.append(f"it does not allow re-export and the chips are in {before.country}")
        if not reasons:
            return []
        return [self.finding(
            f"batch {before.batch!r} moved under license {terms.id!r}, which does not allow "
            f"this: {'; '.join(reasons)}",
            batch=before.batch, party=receiver, license=terms.id,
        )]  # fmt: skip


class ListedParty(Rule):
    id = "listed-party"

    def judge(self, case: Case) -> list[Finding]:
        move = case.movement
        receiver = case.party(move.receiver) if move else None
        if receiver is None:
            return []
        out = []
        for name in sorted(receiver.lists):
            severity = "warning" if name == "unverified" else "breach"
            out.append(self.finding(
                f"the receiver {receiver.party_id!r} is on the {name} list "
                f"({receiver.lists[name].reason})",
                severity, batch=case.event.batch, party=receiver.party_id,
            ))  # fmt: skip
        return out


class LocationMismatch(Rule):
    id = "location-mismatch"

    def judge(self, case: Case) -> list[Finding]:
        event, before = case.event, case.before
        if not isinstance(event, wire.BatchDelivered) or before is None or not before.destination:
            return []
        site = case.site(event.site)
        if site is None or site.country == before.destination:
            return []
        return [self.finding(
            f"delivered in {site.country}, but exported to {before.destination}",
            batch=event.batch, party=event.actor, site=event.site, license=before.license,
        )]  # fmt: skip


class DeliveryShortfall(Rule):
    id = "delivery-shortfall"
    severity = "warning"

    def judge(self, case: Case) -> list[Finding]:
        event, before = case.event, case.before
        if not isinstance(event, wire.BatchDelivered) or before is None:
            return []
        if event.quantity >= before.quantity:
            return []
        return [self.finding(
            f"{event.quantity:,} chips received of {before.quantity:,} shipped; "
            f"{before.quantity - event.quantity:,} missing",
            batch=event.batch, party=event.actor, site=event.site,
        )]  # fmt: skip


class SerialMismatch(Rule):
    id = "serial-mismatch"
    severity = "warning"

    def judge(self, case: Case) -> list[Finding]:
        event, before = case.event, case.before
        if not isinstance(event, wire.BatchDelivered) or before is None:
            return []
        if event.serials is None or before.serials is None:
            return []
        unexpected = sorted(set(event.serials) - set(before.serials))
        if not unexpected:
            return []
        return [self.finding(
            f"{len(unexpected)} serial(s) received that were not shipped: "
            f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}",
            batch=event.batch, party=event.actor, site=event.site,
        )]  # fmt: skip


class LateReport(Rule):
    id = "late-report"
    severity = "warning"

    def judge(self, case: Case) -> list[Finding]:
        hours = case.pack.threshold("late_report_hours")
        late = case.unit.now - case.event.at
        if late <= timedelta(hours=hours):
            return []
        return [self.finding(
            f"recorded {late.total_seconds() / 3600:.1f} hours after its 'at'; "
            f"the pack allows {hours}",
            batch=getattr(case.event, "batch", None), party=case.event.actor,
        )]  # fmt: skip


class SiteThreshold(Rule):
    id = "site-threshold"

    def judge(self, case: Case) -> list[Finding]:
        batch = case.batch
        if batch is None or batch.status not in HELD or batch.site is None:
            return []
        counts, limit = case.unit.counters.site(batch.site), case.pack.threshold("site_unlicensed")
        if counts[TOTAL] <= limit or counts[COVERED] >= counts[TOTAL]:
            return []
        site = case.site(batch.site)
        return [self.finding(
            f"{counts[TOTAL]:,} chips are at site {batch.site!r}, {counts[COVERED]:,} of them "
            f"under a license naming its country and operator; more than {limit:,} need one",
            batch=batch.batch_id, party=site.operator if site else None, site=batch.site,
        )]  # fmt: skip


class EntityThreshold(Rule):
    id = "entity-threshold"

    def judge(self, case: Case) -> list[Finding]:
        batch = case.batch
        if batch is None or batch.status not in HELD or batch.country is None:
            return []
        counts = case.unit.counters.owner(batch.owner, batch.country)
        limit = case.pack.threshold("entity_country_strategic")
        if counts[TOTAL] <= limit or counts[COVERED] >= counts[TOTAL]:
            return []
        return [self.finding(
            f"{batch.owner!r} owns {counts[TOTAL]:,} chips in {batch.country}, "
            f"{counts[COVERED]:,} of them under licenses with a security guarantee and a US "
            f"investment commitment; more than {limit:,} need both",
            batch=batch.batch_id, party=batch.owner,
        )]  # fmt: skip


class InspectionMismatch(Rule):
    id = "inspection-mismatch"

    def judge(self, case: Case) -> list[Finding]:
        event = case.event
        if not isinstance(event, wire.SiteInspected):
            return []
        counts = case.unit.counters.site(event.site)
        held = {k.removeprefix(MODEL): v for k, v in counts.items() if k.startswith(MODEL) and v}
        wrong = [
            f"{model}: {event.observed.get(model, 0):,} counted, {held.get(model, 0):,} recorded"
            for model in sorted(set(held) | set(event.observed))
            if event.observed.get(model, 0) != held.get(model, 0)
        ]
        if not wrong:
            return []
        site = case.site(event.site)
        return [self.finding(
            f"the inspection of site {event.site!r} disagrees with the ledger: {'; '.join(wrong)}",
            party=site.operator if site else None, site=event.site,
        )]  # fmt: skip


class KeyCompromised(Rule):
    id = "key-compromised"

    def judge(self, case: Case) -> list[Finding]:
        event = case.event
        if not isinstance(event, wire.PartyKeyRevoked) or event.compromised_since is None:
            return []
        since = wire.format_time(event.compromised_since)
        return [
            self.finding(
                f"seq {seq} was signed with key {event.keyid} after {since}, when the key "
                "was compromised",
                party=event.party,
                affected_seq=seq,
            )
            for seq in case.unit.signed_after(event.keyid, event.compromised_since)
            if seq != case.seq
        ]


RULES: tuple[Rule, ...] = (
    EmbargoedDestination(),
    LicenseRequired(),
    LicenseInvalid(),
    LicenseQuantityExceeded(),
    TransferNotAuthorized(),
    ListedParty(),
    LocationMismatch(),
    DeliveryShortfall(),
    SerialMismatch(),
    LateReport(),
    SiteThreshold(),
    EntityThreshold(),
    InspectionMismatch(),
    KeyCompromised(),
)


def judge(case: Case) -> list[Finding]:
    """Every rule's findings for one accepted event, each with its `seq` and `policy`."""
    out = []
    for rule in RULES:
        for found in rule.judge(case):
            out.append({**found, "seq": case.seq, "policy": case.pack.id})
    return out


# -- time-judged rules: evaluated when asked, never stored -------------------------------------


@dataclass(frozen=True)
class Clocked:
    """What the time-judged rules see: the batches at sites now, and how to look things up."""

    held: list[Held]
    site: Any  # site id -> Site | None
    license: Any  # license id -> License | None
    pack: Pack
    now: datetime


class NotInstalled:
    id = "not-installed"

    def judge(self, seen: Clocked) -> list[Finding]:
        days = seen.pack.threshold("install_within_days")
        out = []
        for held in seen.held:
            if held.status != "delivered" or seen.now - held.last_at <= timedelta(days=days):
                continue
            out.append({
                "rule": self.id, "severity": "warning", "seq": held.last_seq,
                "policy": seen.pack.id, "batch": held.batch, "party": held.owner,
                "site": held.site,
                "message": f"delivered since {wire.format_time(held.last_at)} and not "
                f"installed; the pack allows {days} days",
            })  # fmt: skip
        return out


class AttestationOverdue:
    id = "attestation-overdue"

    def judge(self, seen: Clocked) -> list[Finding]:
        out = []
        for held in seen.held:
            found = seen.license(held.license) if held.license else None
            interval = found.terms.conditions.attestation_interval_days if found else None
            site = seen.site(held.site)
            if interval is None or site is None:
                continue
            if site.last_attested is not None:
                seq, since, what = site.last_attested_seq, site.last_attested, "last attested"
            else:
                seq, since, what = held.arrived_seq, held.arrived_at, "arrived, never attested,"
            if seen.now - since <= timedelta(days=interval):
                continue
            out.append({
                "rule": self.id, "severity": "warning", "seq": seq, "policy": seen.pack.id,
                "batch": held.batch, "party": site.operator, "site": held.site,
                "license": held.license,
                "message": f"site {held.site!r} holds chips licensed under {held.license!r} "
                f"and {what} {wire.format_time(since)}; the license asks every {interval} days",
            })  # fmt: skip
        return out


TIME_JUDGED = (NotInstalled(), AttestationOverdue())


def judge_now(seen: Clocked) -> list[Finding]:
    return [found for rule in TIME_JUDGED for found in rule.judge(seen)]
