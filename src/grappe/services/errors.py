"""Errors that use cases raise for the edges to render (HTTP status, CLI exit code)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request that cannot be served as asked; ``status`` is the HTTP status to answer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Invalid(ServiceError):
    """A user's input that names a field, its value and the fix (422)."""

    status = 422
    code = "invalid"

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(
            f"{field}: {message}", problems=[{"field": field, "value": value, "message": message}]
        )
