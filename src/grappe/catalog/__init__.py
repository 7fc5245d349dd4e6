"""Reference data shipped with Grappe: the GPU catalog and the open-weight model cards."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from grappe.domain.sites import GpuModel

# All relative speeds are against this model's dense BF16 throughput.
REFERENCE_GPU = "A100"


@lru_cache(maxsize=1)
def gpu_models() -> dict[str, GpuModel]:
    """The GPU catalog by upper-case model name (``H100``, ``MI300X`` …)."""
    raw = yaml.safe_load(resources.files(__package__).joinpath("gpus.yaml").read_text())
    reference = raw[REFERENCE_GPU]["dense_bf16_tflops"]
    return {
        name.upper(): GpuModel(
            name=name.upper(),
            vendor=entry["vendor"],
            memory_gb=entry["memory_gb"],
            relative_speed=round(entry["dense_bf16_tflops"] / reference, 3),
            tdp_watts=entry["tdp_watts"],
            source=entry["source"],
        )
        for name, entry in raw.items()
    }


def gpu_model(name: str) -> GpuModel | None:
    """One model by name, case-insensitive; ``None`` if the catalog lacks it."""
    return gpu_models().get(name.strip().upper())


def canonical_gpu_model(value: str) -> str:
    """The catalog's name for ``value`` (``h100`` -> ``H100``); ``ValueError`` listing the known."""
    known = gpu_model(value)
    if known is None:
        raise ValueError(
            f"unknown GPU model {value!r}; use one of {', '.join(sorted(gpu_models()))}"
        )
    return known.name


@lru_cache(maxsize=1)
def model_cards() -> tuple[dict[str, Any], ...]:
    """Open-weight model cards: publisher, licence, size, context, languages, jurisdiction."""
    raw = yaml.safe_load(resources.files(__package__).joinpath("models.yaml").read_text())
    return tuple(raw)
