"""The catalogs shipped with Grappe: GPU models and open-weight model cards."""

from __future__ import annotations

import pytest

from grappe.catalog import REFERENCE_GPU, gpu_model, gpu_models, model_cards
from grappe.domain.sites import GpuModel

MODELS = ["V100", "A100", "H100", "H200", "GH200", "B200", "B300", "GB200", "MI250X", "MI300X"]


def speed(name: str) -> float:
    return gpu_models()[name].relative_speed


def test_all_ten_models_are_present() -> None:
    assert set(gpu_models()) == set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_each_model_is_complete_and_sourced(name: str) -> None:
    model = gpu_models()[name]
    assert isinstance(model, GpuModel)
    assert model.name == name
    assert model.vendor in ("NVIDIA", "AMD")
    assert model.memory_gb > 0
    assert model.relative_speed > 0
    assert model.tdp_watts > 0
    assert model.source.strip()


def test_a100_is_the_reference() -> None:
    assert REFERENCE_GPU == "A100"
    assert speed("A100") == 1.0


def test_speeds_are_ordered_sensibly() -> None:
    assert speed("V100") < speed("A100") < speed("H100") <= speed("B200")
    assert speed("H100") == speed("H200")  # same compute, more memory
    assert speed("MI250X") < speed("MI300X")
    assert speed("B200") <= speed("GB200")


def test_vendors() -> None:
    by_vendor = {name: m.vendor for name, m in gpu_models().items()}
    assert by_vendor["MI300X"] == by_vendor["MI250X"] == "AMD"
    assert by_vendor["H100"] == "NVIDIA"


def test_memory_matches_datasheets() -> None:
    assert gpu_models()["H200"].memory_gb == 141
    assert gpu_models()["H100"].memory_gb == 80
    assert gpu_models()["MI300X"].memory_gb == 192


@pytest.mark.parametrize("name", ["h100", "H100", " h100 ", "Mi300x"])
def test_lookup_is_case_insensitive(name: str) -> None:
    model = gpu_model(name)
    assert model is not None and model.name == name.strip().upper()


@pytest.mark.parametrize("name", ["X100", "", "H100:8", "TPUv5"])
def test_unknown_model_is_none(name: str) -> None:
    assert gpu_model(name) is None


def test_catalog_is_loaded_once() -> None:
    assert gpu_models() is gpu_models()


def test_model_card_languages_are_language_codes() -> None:
    # YAML 1.1 reads an unquoted `no` (Norwegian) as False: every code must stay a string.
    for card in model_cards():
        assert card["languages"], card["id"]
        for code in card["languages"]:
            assert isinstance(code, str) and code.isalpha() and code.islower(), (card["id"], code)
    (eurollm,) = [c for c in model_cards() if c["id"].startswith("eurollm")]
    assert "no" in eurollm["languages"] and False not in eurollm["languages"]
