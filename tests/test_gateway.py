"""The OpenAI-compatible gateway, as a user meets it: a real ``grappe up``, the official
``openai`` client, a key from ``grappe keys create``, the packaged embedding model and a
tiny language model built here (a real GPT-2 architecture with random weights).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures_e2e import Server, wait_for
from tests.tiny_lm import build_tiny_lm

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="runs grappe up in a subprocess"),
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def factory(start_server: Callable[..., Server]) -> Server:
    return start_server()


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=300)


def new_key(server: Server, project: str = "demo", *options: str) -> str:
    key = server.cli_ok("keys", "create", "--project", project, *options).stdout.strip()
    assert key.startswith("grpk_"), key
    return key


def test_a_user_lists_chats_completes_and_embeds_with_the_openai_client(
    factory: Server, tiny_lm: Path
) -> None:
    server = factory
    deployed = server.cli_ok("models", "deploy", "tiny", "--path", str(tiny_lm))
    assert "served in-process" in deployed.stdout
    key = new_key(server)
    ai = client(server, key)

    ids = [m.id for m in ai.models.list()]
    assert ids == ["all-MiniLM-L6-v2", "tiny"]

    # Embeddings: the client asks for base64 by default; floats when told.
    emb = ai.embeddings.create(model="all-MiniLM-L6-v2", input=["hello world", "bonjour"])
    assert [len(d.embedding) for d in emb.data] == [384, 384]
    assert emb.usage.prompt_tokens > 0
    floats = ai.embeddings.create(
        model="all-MiniLM-L6-v2", input="hello world", encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(emb.data[0].embedding, abs=1e-5)
    norm = sum(x * x for x in floats.data[0].embedding) ** 0.5
    assert norm == pytest.approx(1.0, abs=1e-3)

    chat = ai.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello world"}], max_tokens=6, seed=3
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.usage.completion_tokens >= 1
    assert chat.usage.prompt_tokens == 6  # "user : hello world assistant :" in its tokenizer

    stream = ai.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello world"}],
        max_tokens=6,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content  # same seed, same words, piece by piece
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    done = ai.completions.create(model="tiny", prompt="the factory", max_tokens=5, seed=1)
    assert done.choices[0].text and done.usage.prompt_tokens == 2
    pieces = list(
        ai.completions.create(model="tiny", prompt="the factory", max_tokens=5, seed=1, stream=True)
    )
    assert "".join(p.choices[0].text for p in pieces) == done.choices[0].text

    # Every token was charged to demo, and `grappe usage` shows them by model.
    def charged() -> dict | None:
        usage = server.cli_json("usage")
        by_model = {r["model"]: r for r in usage["by_model"] if r["project"] == "demo"}
        return by_model if by_model.get("tiny", {}).get("requests") == 4 else None

    by_model = wait_for("the tokens in the ledger", charged, timeout=15)
    assert by_model["all-MiniLM-L6-v2"]["requests"] == 2
    tiny = by_model["tiny"]
    assert tiny["completion_tokens"] == 2 * chat.usage.completion_tokens + 2 * (
        done.usage.completion_tokens
    )
    assert tiny["prompt_tokens"] == 2 * 6 + 2 * 2
    (demo,) = [p for p in server.cli_json("usage")["projects"] if p["name"] == "demo"]
    assert demo["used"]["tokens"] == tiny["tokens"] + by_model["all-MiniLM-L6-v2"]["tokens"]
    shown = server.cli_ok("usage").stdout
    assert "Tokens by model" in shown and "tiny" in shown


def test_errors_come_in_the_openai_shape(factory: Server, tiny_lm: Path) -> None:
    server = factory
    server.cli_ok("models", "deploy", "tiny", "--path", str(tiny_lm))
    key = new_key(server)
    ai = client(server, key)

    with pytest.raises(openai.NotFoundError) as unknown:
        ai.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.status_code == 404
    assert unknown.value.code == "model_not_found"
    assert "gpt-nope" in unknown.value.message and "tiny" in unknown.value.message

    with pytest.raises(openai.BadRequestError) as empty:
        ai.chat.completions.create(model="tiny", messages=[])
    assert "messages" in empty.value.message

    with pytest.raises(openai.BadRequestError) as wrong:
        ai.embeddings.create(model="tiny", input="hello")
    assert "language model" in wrong.value.message

    with pytest.raises(openai.BadRequestError) as too_long:
        ai.completions.create(model="tiny", prompt="the", max_tokens=100_000)
    assert "max_tokens" in too_long.value.message

    with pytest.raises(openai.AuthenticationError):
        client(server, "grpk_not-a-key").models.list()

    # A revoked key is refused at once.
    (listed,) = server.cli_json("keys", "ls")
    assert listed["project"] == "demo" and "key" not in listed
    server.cli_ok("keys", "revoke", str(listed["id"]))
    with pytest.raises(openai.AuthenticationError) as revoked:
        ai.models.list()
    assert "revoked" in revoked.value.message

    # The CLI's own mistakes: exit 2, the field named, no traceback.
    bad = server.cli("models", "deploy", "x", "--path", str(tiny_lm.parent / "missing"))
    assert bad.returncode == 2 and "path" in bad.stderr and "Traceback" not in bad.stderr
    own = server.cli("models", "deploy", "x", "--url", f"http://127.0.0.1:{server.port}/v1")
    assert own.returncode == 2 and "factory's own address" in own.stderr

    # Only operators deploy; an unknown endpoint answers in the OpenAI shape too.
    member = server.cli_ok("users", "create", "ann", "--project", "demo").stdout.split()[-1]
    refused = server.cli("models", "deploy", "y", "--url", "http://10.0.0.9:8000", token=member)
    assert refused.returncode == 2 and "operator" in refused.stderr
    nope = httpx.post(f"{server.url}/v1/nope", headers={"Authorization": f"Bearer {key}"})
    assert nope.status_code == 404 and nope.json()["error"]["code"] == "not_found"


def test_the_catalog_lists_open_model_cards(factory: Server) -> None:
    server = factory
    cards = {c["id"]: c for c in server.cli_json("models")}
    assert len(cards) >= 16
    publishers = {c["publisher"] for c in cards.values()}
    for wanted in ("Mistral AI", "Meta", "OpenLLM-France", "DeepSeek"):
        assert wanted in publishers
    lucie = cards["lucie-7b-instruct-v1.1"]
    assert (lucie["jurisdiction"], lucie["licence"]) == ("FR", "Apache-2.0")
    assert "fr" in lucie["languages"] and lucie["source"].startswith("https://")
    assert all(c["context_tokens"] > 0 and c["parameters_b"] > 0 for c in cards.values())
    shown = server.cli_ok("models").stdout
    assert "magistral-small-2506" in shown and "Mistral AI" in shown
