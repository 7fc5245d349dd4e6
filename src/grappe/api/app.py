"""The FastAPI application: routers under ``/api/v1``, errors as JSON, the scheduler beside it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from grappe import __version__, console
from grappe.api import audit, data, jobs, projects, sites
from grappe.api import keys as keys_api
from grappe.api import models as models_api
from grappe.api import openai as openai_api
from grappe.api import quantum as quantum_api
from grappe.api.limits import AuthFailures, BodyLimit, body_limit
from grappe.gateway.service import Gateway
from grappe.runtime import Factory
from grappe.scheduler.loop import Scheduler
from grappe.services.errors import ServiceError
from grappe.spec.errors import problems_from_validation


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


class ErrorDetail(BaseModel):
    code: str = Field(description="not_found, invalid, forbidden, too_large, rate_limited…")
    message: str = Field(description="what is wrong and how to fix it")
    problems: list[dict[str, Any]] | None = Field(
        default=None, description="each field at fault: field, value, message"
    )


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


# Declared for every operation, so clients (and the fuzzing tests) know every answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "the request cannot be served as asked"),
        (401, "no token, or not a valid one"),
        (403, "the caller's role or project may not do this"),
        (404, "no such thing, or it belongs to a project the caller is not in"),
        (409, "the thing is not in a state that allows this"),
        (413, "the body is over its size limit"),
        (422, "a field is not valid: the problems name each one"),
        (429, "too many failed authentications from this address; see Retry-After"),
    )
}


def create_app(factory: Factory, scheduler: Scheduler | None = None) -> FastAPI:
    """The API over ``factory``; the scheduler, if given, runs while the app does."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if scheduler is not None:
            scheduler.start()
        app.state.gateway.ensure_started()  # replicas' health checks and the token ledger
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            await app.state.gateway.close()  # writes the tokens not yet charged

    app = FastAPI(
        title="Grappe",
        version=__version__,
        summary="An open-source AI factory: sovereign compute, placement and accounting.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.factory = factory
    app.state.scheduler = scheduler
    app.state.gateway = Gateway(factory, factory.settings.gateway_health_interval_s)

    settings = factory.settings
    app.add_middleware(BodyLimit, limit_for=lambda path, method: body_limit(settings, path, method))
    app.state.auth_failures = AuthFailures(settings.auth_failures_per_minute)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status,
            content=error_body(exc.code, exc.message, **exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _problems(list(exc.errors()))
        message = "; ".join(f"{p['field'] or '(body)'}: {p['message']}" for p in problems)
        return JSONResponse(
            status_code=422, content=error_body("invalid", message, problems=problems)
        )

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def unstorable(_: Request, exc: Exception) -> JSONResponse:
        # A value no store column or date can hold: the client's mistake, not a crash.
        return JSONResponse(
            status_code=422,
            content=error_body(
                "invalid",
                "a value sent cannot be stored or looked up (a NUL character, or a number "
                "or duration out of range); send smaller numbers and plain text",
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(code, str(exc.detail)),
            headers=getattr(exc, "headers", None),
        )

    app.include_router(sites.router, prefix="/api/v1")
    app.include_router(jobs.router, prefix="/api/v1")
    app.include_router(projects.router, prefix="/api/v1")
    app.include_router(data.router, prefix="/api/v1")
    app.include_router(quantum_api.router, prefix="/api/v1")
    app.include_router(keys_api.router, prefix="/api/v1")
    app.include_router(models_api.router, prefix="/api/v1")
    app.include_router(audit.router, prefix="/api/v1")
    console.install(app)  # the web console at /, over the same services
    app.add_middleware(openai_api.OpenAIEdge)  # /v1, the OpenAI-compatible gateway, goes first
    openai_api.document(app)  # ... and is described in the OpenAPI document
    return app


def _problems(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cleaned: list[dict[str, Any]] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        cleaned.append({**err, "loc": loc})
    # Format like the CLI does, so one message reads the same everywhere.
    return [p.as_dict() for p in problems_from_validation(_AsValidationError(cleaned))]  # type: ignore[arg-type]


class _AsValidationError:
    """Adapter: FastAPI hands plain error dicts; the formatter reads ``errors()``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self._errors = errors

    def errors(self, include_url: bool = False) -> list[dict[str, Any]]:
        return self._errors
