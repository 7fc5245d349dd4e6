"""Reference data shipped with Grappe: the GPU catalog."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

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
