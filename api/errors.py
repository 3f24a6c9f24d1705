"""Ledger errors to HTTP, in one table; every error body is `{"error": {code, message}}`.

No route catches a domain error: the handlers registered here turn each `LedgerError` into
its PROTOCOL.md section 6 status, a store that is busy or unreachable into a 503 with
`Retry-After`, and anything unexpected into a 500 without a stack trace.
"""

from __future__ import annotations

import logging

from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ledger import errors

STATUS: dict[type[errors.LedgerError], int] = {
    errors.BadRequest: 400,
    errors.BadSignature: 401,
    errors.Unauthenticated: 401,
    errors.NotAuthorized: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.InvalidTransition: 409,
    errors.TooLarge: 413,
    errors.InvalidEvent: 422,
}
RETRY_AFTER_SECONDS = 1
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
log = logging.getLogger("chipledger.api")


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}}


def status_of(exc: errors.LedgerError) -> int:
    if isinstance(exc, errors.BatchRefused):
        return status_of(exc.cause)
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 422


async def ledger_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.LedgerError)
    if isinstance(exc, errors.BatchRefused):
        body = error_body(exc.cause.code, exc.message, index=exc.index)
    else:
        body = error_body(exc.code, exc.message)
    return JSONResponse(body, status_code=status_of(exc))


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "bad_request")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return JSONResponse(error_body("bad_request", f"{where}: {first['msg']}"), status_code=400)


async def unavailable(_: Request, exc: Exception) -> JSONResponse:
    """The store cannot be read or written now: a SQLite file locked by another writer past
    its busy timeout, a PostgreSQL server that does not answer. The unit of work was rolled
    back; sending the request again is safe (a recorded envelope answers its receipt)."""
    log.warning("the store is unavailable: %s", exc)
    message = (
        "the ledger's store is busy or unreachable, so nothing was done; send the request "
        f"again in {RETRY_AFTER_SECONDS} s (an envelope already recorded answers its receipt)"
    )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(error_body("unavailable", message), status_code=503, headers=headers)


async def unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    message = "the ledger failed unexpectedly; nothing was stored. Report this to its operator."
    return JSONResponse(error_body("internal", message), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.LedgerError, ledger_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(OperationalError, unavailable)  # PROTOCOL.md section 6
    app.add_exception_handler(InterfaceError, unavailable)
    app.add_exception_handler(Exception, unexpected)
