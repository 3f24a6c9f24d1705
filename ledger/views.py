"""What the ledger answers: typed views, shared by the HTTP API and the command line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ledger.batch import AT_A_SITE, Batch
from ledger.readmodels import Tally


class View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Receipt(View):
    """PROTOCOL.md section 6, the answer of `POST /v1/events`."""

    seq: int
    id: str
    type: str
    recorded_at: str
    envelope_hash: str
    leaf_hash: str
    findings: list[dict[str, Any]]


class Outcome(View):
    """A receipt, and whether it is a repeat of an envelope accepted before."""

    receipt: Receipt
    repeated: bool


class Authority(View):
    party: str | None
    key: str


class LedgerInfoView(View):
    origin: str
    log_key: str
    authority: Authority
    size: int
    version: int


class LogEntry(View):
    seq: int
    envelope: dict[str, Any]


class LogEntries(View):
    entries: list[LogEntry]


class InclusionView(View):
    """`GET /v1/log/inclusion`: RFC 9162 inclusion proof of leaf `seq` in the tree of `size`."""

    seq: int
    size: int
    leaf_hash: str
    hashes: list[str]


class ConsistencyView(View):
    """`GET /v1/log/consistency`: RFC 9162 consistency proof between two tree sizes."""

    from_: int = Field(alias="from")  # built with model_validate({"from": ...})
    to: int
    hashes: list[str]


class BatchView(View):
    """A batch's state (PROTOCOL.md section 6); optional fields are left out when empty."""

    batch: str
    model: str
    quantity: int
    missing: int
    status: str
    owner: str
    holder: str
    to: str | None = None
    country: str | None = None
    site: str | None = None
    license: str | None = None
    parent: str | None = None
    children: list[str] | None = None
    serials_known: bool
    head: str
    last_seq: int

    @classmethod
    def of(cls, batch: Batch) -> BatchView:
        at_site = batch.status in AT_A_SITE
        return cls(
            batch=batch.batch_id, model=batch.model, quantity=batch.quantity,
            missing=batch.missing, status=batch.status, owner=batch.owner, holder=batch.holder,
            to=batch.to if batch.status == "in_transit" else None,
            country=batch.country if at_site else None, site=batch.site if at_site else None,
            license=batch.license, parent=batch.parent, children=batch.children or None,
            serials_known=batch.serials is not None, head=batch.head, last_seq=batch.last_seq,
        )  # fmt: skip


class HistoryEntry(View):
    seq: int
    recorded_at: str
    envelope: dict[str, Any]
    event: dict[str, Any]


class HistoryView(View):
    batch: str
    entries: list[HistoryEntry]


class SerialView(View):
    serial: str
    batch: str


class AllocationView(View):
    party: str
    total: int
    by_status: dict[str, int]
    by_country: dict[str, int]
    by_site: dict[str, int]
    by_model: dict[str, int]
    batches: list[str]

    @classmethod
    def of(cls, party: str, counts: Tally) -> AllocationView:
        return cls(
            party=party, total=counts.total, by_status=dict(counts.by_status),
            by_country=dict(counts.by_country), by_site=dict(counts.by_site),
            by_model=dict(counts.by_model), batches=sorted(counts.batches),
        )  # fmt: skip


class FlagsView(View):
    """`GET /v1/flags`: flags in `seq` order (PROTOCOL.md section 6)."""

    flags: list[dict[str, Any]]


class LicenseView(View):
    """`GET /v1/licenses/{id}`: the terms as granted, plus what has moved under them."""

    id: str
    holder: str
    destinations: list[str]
    consignees: list[str]
    models: list[str]
    max_quantity: int
    valid_from: str
    valid_until: str
    conditions: dict[str, Any]
    used_quantity: int
    status: str


class PolicyEntry(View):
    id: str
    effective_from: str
    seq: int


class PoliciesView(View):
    policies: list[PolicyEntry]


class CheckView(View):
    """`POST /v1/checks`: what acceptance would answer, nothing stored."""

    accepted: bool
    error: dict[str, str] | None = None
    findings: list[dict[str, Any]]


class SessionView(View):
    """`POST /v1/sessions`: a bearer token for reads, whose party it is, when it expires."""

    token: str
    party: str
    expires_at: str
