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
