"""Map what can go wrong to clear HTTP answers: 4xx for the caller, 503 for Temporal, no traces."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from temporalio.service import RPCError, RPCStatusCode

from shopfloor.artifacts import ArtifactError

log = logging.getLogger("shopfloor.controller")


class TemporalUnavailable(Exception):
    pass


def install_error_handlers(app: FastAPI, temporal_address: str) -> None:
    def unavailable(reason: str) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            content={"detail": f"Temporal at {temporal_address} is unreachable: {reason}"},
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        # Field and reason only: never echo the input back (it may be megabytes).
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", ""))[:500],
                "type": e.get("type"),
            }
            for e in err.errors()[:20]
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(UnicodeError)
    async def _unicode(_: Request, err: UnicodeError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": f"invalid text: {err}"[:300]})

    @app.exception_handler(TemporalUnavailable)
    async def _unavailable(_: Request, err: TemporalUnavailable) -> JSONResponse:
        return unavailable(str(err))

    @app.exception_handler(TimeoutError)
    async def _timeout(_: Request, err: TimeoutError) -> JSONResponse:
        return unavailable("request timed out")

    @app.exception_handler(RPCError)
    async def _rpc(_: Request, err: RPCError) -> JSONResponse:
        if err.status == RPCStatusCode.NOT_FOUND:
            return JSONResponse(status_code=404, content={"detail": f"not found: {err.message}"})
        if _too_large(err):
            return JSONResponse(
                status_code=413,
                content={
                    "detail": "job input too large for Temporal (a payload is limited to about "
                    "2 MB): upload large files with PUT /uploads/<name> and pass the "
                    "artifact:// URI instead"
                },
            )
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            return JSONResponse(status_code=400, content={"detail": err.message})
        if err.status in (
            RPCStatusCode.UNAVAILABLE,
            RPCStatusCode.DEADLINE_EXCEEDED,
            RPCStatusCode.CANCELLED,
            RPCStatusCode.UNKNOWN,
        ):
            return unavailable(err.message)
        log.warning("temporal error %s: %s", err.status, err.message)
        return JSONResponse(status_code=502, content={"detail": f"Temporal: {err.message}"})

    @app.exception_handler(ArtifactError)
    async def _artifact(_: Request, err: ArtifactError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(err)})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(
            status_code=500, content={"detail": f"internal error ({type(err).__name__})"}
        )


def _too_large(err: RPCError) -> bool:
    message = err.message.lower()
    return err.status in (
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    ) and any(word in message for word in ("too large", "exceeds", "message larger", "size limit"))
