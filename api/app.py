"""`create_app(ledger)`: the FastAPI application of PROTOCOL.md section 6.

Routes parse the request, call one `Ledger` method and return its view. Bodies are read as
raw bytes (the ledger checks JSON strictness itself) with the section 5 size limits enforced
before the body is read whole.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from api import errors
from api.openapi import BATCH_BODY, ENVELOPE_BODY
from ledger.access import EVERYONE, Reader
from ledger.application import MAX_BATCH_BYTES, MAX_ENVELOPE_BYTES, Ledger
from ledger.bundles import Bundle
from ledger.errors import TooLarge, Unauthenticated
from ledger.views import (
    AllocationView,
    BatchView,
    CheckView,
    ConsistencyView,
    FlagsView,
    HistoryView,
    InclusionView,
    LedgerInfoView,
    LicenseView,
    LogEntries,
    PoliciesView,
    Receipt,
    SerialView,
    SessionView,
)

AsOfParam = Annotated[
    str | None,
    Query(
        description="A seq N (the state after entries 0..N) or an RFC 3339 UTC time T "
        "(the entries whose `at` is at or before T)."
    ),
]


def reader_of(request: Request, authorization: Annotated[str | None, Header()] = None) -> Reader:
    """Who a read is made as: everyone when the ledger is served with open reads, else the
    party of the bearer token (`Ledger.reader` says what that party sees, in `ledger/`)."""
    if request.app.state.open_reads:
        return EVERYONE
    token = None
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        token = value.strip()
    ledger: Ledger = request.app.state.ledger
    return ledger.reader(token)


Who = Annotated[Reader, Depends(reader_of)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(ledger: Ledger, open_reads: bool = False) -> FastAPI:
    app = FastAPI(
        title="chipledger",
        version="1",
        description="A signed custody ledger for export-controlled AI chips (PROTOCOL.md).",
    )
    errors.install(app)
    app.state.ledger, app.state.open_reads = ledger, open_reads
    app.include_router(_ledger_router(ledger))
    app.include_router(_events_router(ledger))
    app.include_router(_log_router(ledger))
    app.include_router(_custody_router(ledger))
    app.include_router(_rules_router(ledger))
    app.include_router(_bundles_router(ledger))
    app.include_router(_sessions_router(ledger))
    if open_reads:

        @app.middleware("http")
        async def say_open(request: Request, call_next: Any) -> Response:
            response: Response = await call_next(request)
            response.headers["X-Chipledger-Open-Reads"] = "true"
            return response

    return app


def _ledger_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["ledger"])

    @router.get("/ledger", response_model=LedgerInfoView)
    def get_ledger() -> LedgerInfoView:
        return ledger.ledger_info()

    return router


def _events_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1/events", tags=["events"])

    @router.post(
        "",
        status_code=201,
        response_model=Receipt,
        openapi_extra=ENVELOPE_BODY,
        responses={200: {"description": "a repeat: the original receipt", "model": Receipt}},
    )
    async def post_event(request: Request) -> JSONResponse:
        body = await read_body(request, MAX_ENVELOPE_BYTES)
        outcome = await run_in_threadpool(ledger.submit, body)
        status = 200 if outcome.repeated else 201
        return JSONResponse(outcome.receipt.model_dump(mode="json"), status_code=status)

    @router.post("/batch", status_code=201, openapi_extra=BATCH_BODY)
    async def post_batch(request: Request) -> dict[str, list[Receipt]]:
        body = await read_body(request, MAX_BATCH_BYTES)
        outcomes = await run_in_threadpool(ledger.submit_batch, body)
        return {"receipts": [o.receipt for o in outcomes]}

    return router


def _log_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1/log", tags=["log"])

    @router.get("/entries", response_model=LogEntries)
    def get_entries(
        reader: Who,
        start: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> LogEntries:
        return ledger.log_entries(start, limit, reader)

    @router.get("/key", response_class=PlainTextResponse)
    def get_key() -> str:
        return ledger.info.log_key + "\n"

    @router.get("/checkpoint", response_class=PlainTextResponse)
    def get_checkpoint() -> str:
        return ledger.checkpoint()

    @router.get("/inclusion", response_model=InclusionView)
    def get_inclusion(
        seq: Annotated[int, Query(ge=0)],
        size: Annotated[int | None, Query(ge=1)] = None,
    ) -> InclusionView:
        return ledger.inclusion(seq, size)

    @router.get("/consistency", response_model=ConsistencyView)
    def get_consistency(
        from_: Annotated[int, Query(alias="from", ge=1)],
        to: Annotated[int, Query(ge=1)],
    ) -> ConsistencyView:
        return ledger.consistency(from_, to)

    return router


def _custody_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["custody"])

    @router.get("/batches/{batch_id}", response_model=BatchView, response_model_exclude_none=True)
    def get_batch(batch_id: str, reader: Who, as_of: AsOfParam = None) -> BatchView:
        return ledger.batch(batch_id, ledger.as_of(as_of), reader)

    @router.get("/batches/{batch_id}/history", response_model=HistoryView)
    def get_history(batch_id: str, reader: Who, as_of: AsOfParam = None) -> HistoryView:
        return ledger.history(batch_id, ledger.as_of(as_of), reader)

    @router.get("/serials/{serial}", response_model=SerialView)
    def get_serial(serial: str, reader: Who, as_of: AsOfParam = None) -> SerialView:
        return ledger.serial(serial, ledger.as_of(as_of), reader)

    @router.get("/parties/{party_id}/allocation", response_model=AllocationView)
    def get_allocation(party_id: str, reader: Who, as_of: AsOfParam = None) -> AllocationView:
        return ledger.allocation(party_id, ledger.as_of(as_of), reader)

    return router


def _rules_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["rules"])

    @router.post(
        "/checks",
        response_model=CheckView,
        response_model_exclude_none=True,
        openapi_extra=ENVELOPE_BODY,
    )
    async def post_check(request: Request, reader: Who) -> CheckView:
        body = await read_body(request, MAX_ENVELOPE_BYTES)
        return await run_in_threadpool(ledger.check, body, reader)

    @router.get("/flags", response_model=FlagsView)
    def get_flags(
        reader: Who,
        batch: str | None = None,
        party: str | None = None,
        rule: str | None = None,
        license: str | None = None,
        site: str | None = None,
        as_of: AsOfParam = None,
    ) -> FlagsView:
        given = {"batch": batch, "party": party, "rule": rule, "license": license, "site": site}
        where = {key: value for key, value in given.items() if value is not None}
        return ledger.flags(where, ledger.as_of(as_of), reader)

    @router.get("/licenses/{license_id}", response_model=LicenseView)
    def get_license(license_id: str, reader: Who, as_of: AsOfParam = None) -> LicenseView:
        return ledger.license(license_id, ledger.as_of(as_of), reader)

    @router.get("/policies", response_model=PoliciesView)
    def get_policies(reader: Who) -> PoliciesView:
        return ledger.policies()

    @router.get("/policies/current")
    def get_current_policy(reader: Who, as_of: AsOfParam = None) -> dict[str, Any]:
        return ledger.current_policy(ledger.as_of(as_of))

    return router


def _bundles_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1/bundles", tags=["bundles"])

    @router.get("/batches/{batch_id}", response_model=Bundle)
    def get_batch_bundle(batch_id: str, reader: Who) -> Bundle:
        """The evidence bundle of PROTOCOL.md section 9 (`chipledger verify` checks it)."""
        return ledger.bundle(batch_id, reader)

    return router


def _sessions_router(ledger: Ledger) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["sessions"])

    @router.post("/sessions", status_code=201, response_model=SessionView,
                 openapi_extra=ENVELOPE_BODY)  # fmt: skip
    async def post_session(request: Request) -> SessionView:
        """A read token for the party whose key signed a fresh `session.requested` envelope;
        the request is never stored in the log."""
        body = await read_body(request, MAX_ENVELOPE_BYTES)
        return await run_in_threadpool(ledger.open_session, body)

    return router
