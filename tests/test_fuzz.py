"""Every endpoint of the OpenAPI document, fuzzed (schemathesis), on SQLite and PostgreSQL.

Each operation gets generated requests, valid and not, sent as the admin (who
may call everything) to a factory with a running local site: no answer may be
a 5xx, and every answer must be one the document declares, with the declared
content type and schema. The OpenAI-compatible ``/v1`` operations are called
with a project's API key, their ``model`` drawn from the models served (a tiny
language model and the built-in embedder), streamed and not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from grappe.gateway.engine import EMBEDDING_MODEL
from tests.conftest import World, local_site, module_store, open_world
from tests.test_quantum_e2e import quantum_site
from tests.tiny_lm import build_tiny_lm

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: Any
) -> Iterator[World]:
    tmp, url = module_store(request, tmp_path_factory, postgres)
    world = open_world(tmp, url, sites=[local_site(), quantum_site()], seed_datasets=False)
    admin = world.client()
    # Something for the generated ids and names to hit now and then.
    admin.post("/api/v1/jobs", json={"name": "seed", "run": "echo seed", "max_runtime": "1m"})
    admin.post("/api/v1/datasets", json={"id": "a/a", "title": "A", "licence": "CC0-1.0"})
    # /v1 takes a project's key, and serves a small model in-process beside the embedder.
    tiny = build_tiny_lm(tmp / "tiny")
    deployed = admin.post("/api/v1/models/deployments", json={"model": "tiny", "path": str(tiny)})
    assert deployed.status_code == 201, deployed.text
    made = admin.post("/api/v1/keys", json={"project": "demo"})
    assert made.status_code == 201, made.text
    world.app.state.fuzz_key = made.json()["key"]
    yield world
    world.factory.close()


SERVED = ["tiny", EMBEDDING_MODEL]


def load_schema(world: World) -> Any:
    """The app's document, with ``/v1``'s ``model`` drawn from the served models."""
    doc = world.client().get("/api/v1/openapi.json").json()
    for path, item in doc["paths"].items():
        if path.startswith("/v1/") and "post" in item:
            body = item["post"]["requestBody"]["content"]["application/json"]["schema"]
            body["properties"]["model"] = {"enum": SERVED}
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = world.app
    return schema


def test_no_server_error_and_no_schema_violation(fuzzed: World) -> None:
    schema = load_schema(fuzzed)
    member = {"Authorization": f"Bearer {fuzzed.admin_token}"}
    keyed = {"Authorization": f"Bearer {fuzzed.app.state.fuzz_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40, [op.label for op in operations]
    v1 = {op.label for op in operations if op.path.startswith("/v1/")}
    assert v1 == {
        "GET /v1/models",
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/embeddings",
    }
    # /v1 first, while its key is good: fuzzing the rest may revoke it or spend its budget.
    operations.sort(key=lambda op: not op.path.startswith("/v1/"))
    failures = []
    answered: dict[str, set[tuple[int, str]]] = {label: set() for label in v1}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            headers = keyed if case.path.startswith("/v1/") else member
            resp = case.call_and_validate(headers=headers, checks=CHECKS)
            if case.operation.label in answered:
                kind = str(resp.headers.get("content-type", [""])[0]).split(";")[0]
                answered[case.operation.label].add((resp.status_code, kind))

        try:
            fuzz()
        except BaseException as exc:  # every operation's failures (a group), in one report
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    # The key and the served models were really used: each /v1 operation answered 200.
    assert all((200, "application/json") in got for got in answered.values()), answered


@pytest.mark.parametrize(
    "method, url, body",
    [
        ("GET", "/api/v1/jobs/99999999999999999999", None),  # beyond a 64-bit id
        ("GET", "/api/v1/jobs/9223372036854775807", None),
        ("GET", "/api/v1/jobs/9223372036854775807/logs", None),
        ("GET", "/api/v1/quantum/tasks/9223372036854775808", None),
        ("POST", "/api/v1/data/requests/9223372036854775808/grant", {}),
        ("GET", "/api/v1/datasets?search=a%00b", None),
        ("GET", "/api/v1/jobs?project=a%00b", None),
        ("POST", "/api/v1/projects", {"name": "p", "gpu_hours": 1, "days": 10**12}),
        ("POST", "/api/v1/projects/demo/allocations", {"gpu_hours": 1, "days": 10**9}),
        ("POST", "/api/v1/quantum/allocations", {"project": "demo", "days": 10**12}),
        (
            "POST",
            "/api/v1/quantum/sessions",
            {"project": "demo", "backend": "x", "minutes": 10**12},
        ),
        ("POST", "/api/v1/jobs/plan", {"name": "x", "run": "true", "project": "nope"}),
    ],
)
def test_what_fuzzing_found_is_answered_4xx(world: World, method: str, url: str, body: Any) -> None:
    resp = world.client().request(method, url, json=body)
    if "%00" in url and resp.status_code == 200:  # SQLite holds NUL: nothing matches
        assert resp.json() == []
        return
    assert resp.status_code in (404, 422), (resp.status_code, resp.text)
    assert resp.json()["error"]["message"]


HELLO = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    "path, body, status, content_type",
    [
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": HELLO, "max_tokens": 3},
            200,
            "json",
        ),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": HELLO, "max_tokens": 3, "stream": True},
            200,
            "text/event-stream",
        ),
        (
            "/v1/completions",
            {"model": "tiny", "prompt": "the", "max_tokens": 3, "stream": True},
            200,
            "text/event-stream",
        ),
        ("/v1/embeddings", {"model": EMBEDDING_MODEL, "input": ["a", "b"]}, 200, "json"),
        ("/v1/chat/completions", {"model": "nope", "messages": HELLO}, 404, "json"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "json"),
    ],
)
def test_v1_streams_and_errors_are_the_ones_the_document_declares(
    fuzzed: World, path: str, body: dict, status: int, content_type: str
) -> None:
    """What random bodies seldom hit (a stream of a served model), checked against the document."""
    case = load_schema(fuzzed)[path]["POST"].Case(body=body, media_type="application/json")
    # A fresh project and key: the fuzzing may have revoked keys or set budgets.
    admin = fuzzed.client()
    admin.post("/api/v1/projects", json={"name": "streams", "gpu_hours": 1})
    made = admin.post("/api/v1/keys", json={"project": "streams"})
    assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['key']}"}
    resp = case.call_and_validate(headers=headers, checks=CHECKS)
    assert resp.status_code == status, resp.text
    assert content_type in resp.headers["content-type"][0]
    if content_type == "text/event-stream":
        assert resp.text.rstrip().endswith("data: [DONE]"), resp.text
    elif status != 200:
        assert resp.json()["error"]["message"]
