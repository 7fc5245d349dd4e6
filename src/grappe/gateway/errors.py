"""Errors in the OpenAI shape: ``{"error": {"message", "type", "code"}}`` with their status."""

from __future__ import annotations

import json
from typing import Any


class GatewayError(Exception):
    """A request the gateway answers with an error; ``retry_after`` becomes a header (seconds)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def sse(self) -> bytes:
        """The error as the last server-sent event of a stream that cannot go on."""
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", "invalid_value", param)


def unknown_model(model: str, known: list[str]) -> GatewayError:
    shown = ", ".join(known) or "none is deployed yet"
    return GatewayError(
        404,
        f"model {model!r} is not served here; use one of: {shown} (see GET /v1/models)",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def unavailable(message: str) -> GatewayError:
    return GatewayError(503, message, "service_unavailable", "no_healthy_replica", retry_after=5)
