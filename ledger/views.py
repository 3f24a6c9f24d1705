"""What the ledger answers: typed views, shared by the HTTP API and the command line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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
