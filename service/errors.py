"""Errors as the API shows them: ``{"error": {"code", "message", "request_id"}}`` with the right status.

Everything a handler raises ends up here; unexpected exceptions become a 500
that names the request id, while the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from adain.errors import AdainError, ImageError, ImageTooLarge, UnsupportedImage

from .store.interface import StoreError, StoreFull

log = logging.getLogger("adain.service")

STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                415: "unsupported_media_type", 422: "invalid_request", 500: "internal", 503: "unavailable",
                504: "deadline_exceeded", 507: "insufficient_storage"}


def retry_after(seconds: float = 1.0) -> dict[str, str]:
    """The Retry-After header for a retry in ``seconds`` (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class ErrorBody(BaseModel):
    """The body of an error."""

    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error response has this shape."""

    error: ErrorBody


class ServiceError(HTTPException):
    """An error with a status, a stable machine-readable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code


def from_adain(exc: AdainError) -> ServiceError:
    """The HTTP form of a library error: 413 too many pixels, 415 not an accepted image, else 422."""
    if isinstance(exc, ImageTooLarge):
        return ServiceError(413, "image_too_large", str(exc))
    if isinstance(exc, UnsupportedImage):
        return ServiceError(415, "unsupported_image", str(exc))
    if isinstance(exc, ImageError):
        return ServiceError(422, "invalid_image", str(exc))
    return ServiceError(422, "invalid_input", str(exc))


def error_response(request_id: str | None, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON response for an error."""
    body = ErrorResponse(error=ErrorBody(code=code, message=message, request_id=request_id))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or STATUS_CODES.get(exc.status_code, "error")
    return error_response(_request_id(request), exc.status_code, code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "header"))
        msg = err.get("msg", "invalid")
        if "Expected UploadFile" in msg:  # pydantic's words for text where a file upload belongs
            msg = f"must be a file (curl: -F {where or 'field'}=@FILE), not text"
        problems.append(f"{where}: {msg}" if where else msg)
    return error_response(_request_id(request), 422, "invalid_request", "; ".join(problems) or "invalid request")


async def _adain_error(request: Request, exc: AdainError) -> JSONResponse:
    return await _http_error(request, from_adain(exc))


async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
    log.error("request %s (%s %s): %s", _request_id(request), request.method, request.url.path, exc)
    status, code = (507, "insufficient_storage") if isinstance(exc, StoreFull) else (503, "store_unavailable")
    return await _http_error(request, ServiceError(status, code, str(exc)))


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into JSON errors."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(AdainError, _adain_error)
    app.add_exception_handler(StoreError, _store_error)
