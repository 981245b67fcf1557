"""Gateway errors and the one place where errors become HTTP responses.

Everything the gateway refuses is a :class:`dfd.errors.DfdError`; :func:`install` adds the
single handler that renders it as ``application/problem+json`` (RFC 9457) with a stable
``type`` URI (``urn:dfd:problem:<slug>``). Core code never raises ``HTTPException``.

    DfdError (dfd.errors)
    ├── InputError
    │   └── InvalidRequestError   malformed body, missing field, bad multipart     400
    └── GatewayError
        ├── UnauthorizedError     missing or wrong bearer key                      401
        ├── ForbiddenError        bad or expired evidence signature                403
        ├── NotFoundError         unknown or expired job, missing evidence         404
        ├── ConflictError         the job's state forbids it (cancel a finished job) 409
        ├── RateLimitedError      a per-IP limit is used up                        429
        └── TooManyUploadsError   too many uploads in flight from one IP           429
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dfd import errors as core

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:dfd:problem:"


class InvalidRequestError(core.InputError):
    type = "invalid-request"


class GatewayError(core.DfdError):
    """Base of refusals that are about the request, not the media."""

    type = "gateway"

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class UnauthorizedError(GatewayError):
    type = "unauthorized"


class ForbiddenError(GatewayError):
    type = "forbidden"


class NotFoundError(GatewayError):
    type = "not-found"


class ConflictError(GatewayError):
    type = "conflict"


class RateLimitedError(GatewayError):
    type = "rate-limited"


class TooManyUploadsError(GatewayError):
    type = "too-many-uploads"


# Most specific class first wins: looked up along the error's MRO.
_STATUS: dict[type[core.DfdError], int] = {
    InvalidRequestError: 400,
    core.TooLargeError: 413,
    core.UnsupportedMediaError: 415,
    core.RejectedURLError: 422,
    core.CorruptMediaError: 422,
    core.NoUsableSignalError: 422,
    core.InputError: 400,
    UnauthorizedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    RateLimitedError: 429,
    TooManyUploadsError: 429,
    core.TransientError: 503,
    core.ConfigurationError: 500,
    core.InternalError: 500,
    core.DfdError: 500,
}

_TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def status_for(exc: core.DfdError) -> int:
    """The HTTP status of a domain error (the nearest mapped class in its MRO)."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def problem_type(slug: str) -> str:
    return TYPE_PREFIX + slug


def problem_response(
    status: int,
    slug: str,
    detail: str,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem document."""
    body: dict[str, object] = {
        "type": problem_type(slug),
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, core.DfdError)
    status = status_for(exc)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejections.labels(type=exc.type).inc()
    if status >= 500:
        log.error(
            "request failed",
            extra={"path": request.url.path, "error_type": exc.type, "detail": str(exc)},
        )
    headers = getattr(exc, "headers", None)
    # 5xx details stay in the logs, not in the response: configuration and internal
    # errors, and a backing service being down (its message names internal hosts and
    # ports). A URL that cannot be resolved for now is about the client's own URL.
    if status < 500 or isinstance(exc, core.FetchTransientError):
        detail = str(exc)
    elif isinstance(exc, core.TransientError):
        detail = "a backing service is unavailable; retry later"
    else:
        detail = "internal error"
    return problem_response(status, exc.type, detail, request.url.path, headers)


def _body_problem(request: Request, err: dict[str, object]) -> str | None:
    """A message a person can act on for a body that is not JSON at all, or none."""
    loc: tuple[object, ...] = tuple(err.get("loc", ()))  # type: ignore[arg-type]
    if not loc or loc[0] != "body":
        return None
    content_type = request.headers.get("content-type", "")
    is_json = content_type.split(";", 1)[0].strip().lower() == "application/json"
    if err.get("type") == "string_pattern_mismatch" and str(loc[-1]).endswith("url"):
        return (
            f"{'.'.join(str(p) for p in loc[1:])}: expected an absolute URL like "
            f"https://host/path, got {err.get('input')!r}"
        )
    if err.get("type") == "json_invalid":
        why = (err.get("ctx") or {}).get("error", "invalid")  # type: ignore[attr-defined]
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"request: expected the body to be JSON, got invalid JSON{where} ({why})"
    if len(loc) == 1 and err.get("type") in ("model_attributes_type", "dict_type", "missing"):
        if err.get("type") == "missing":
            return "request: expected a JSON body, got none"
        if not is_json:
            return (
                "request: expected a JSON body with Content-Type: application/json, got "
                f"{content_type or 'no Content-Type'}"
            )
        return "request: expected the body to be a JSON object, got another JSON value"
    return None


def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        plain = _body_problem(request, err)
        if plain is not None:
            return _on_domain_error(request, InvalidRequestError(plain))
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return _on_domain_error(request, InvalidRequestError("request: " + "; ".join(parts)))


def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own refusals (no such route, wrong method) in the same format.
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(
        exc.status_code, "http-error"
    )
    return problem_response(exc.status_code, slug, str(exc.detail), request.url.path, exc.headers)


def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", extra={"path": request.url.path}, exc_info=exc)
    return problem_response(500, "internal", "internal error", request.url.path)


def install(app: FastAPI) -> None:
    """Register the error handlers on ``app``."""
    app.add_exception_handler(core.DfdError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
