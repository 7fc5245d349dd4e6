"""``factory.yaml``: the sites of the federation and their pools, as the operator declares them.

Without a file, the factory is this machine, registered as the site ``local``
with one pool sized from the machine's CPUs, memory and GPUs, and the site
``emulators`` holding its quantum emulators.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grappe.catalog import canonical_gpu_model, gpu_model, gpu_models
from grappe.domain.datasets import DEFAULT_BANDWIDTH_BYTES_S, parse_bandwidth
from grappe.domain.resources import parse_memory
from grappe.domain.sites import Pool, Site
from grappe.quantum.devices import device_pools, emulator_site_spec, with_devices
from grappe.spec.errors import Problem, SpecError, load_yaml, validate
from grappe.spec.jobspec import NAME_RE

# Engines Grappe drives; each backend validates its own settings (the other keys).
BACKEND_KINDS = ("local", "slurm", "ray", "quantum")


class PoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    gpu_model: str | None = None
    nodes: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=0, ge=0)
    gpu_memory_gb: int | None = Field(default=None, ge=1)
    cpus_per_node: int | Literal["auto"] = "auto"
    memory_per_node: str | int = "auto"
    price_eur_gpu_hour: float = Field(default=0.0, ge=0)
    price_eur_cpu_hour: float = Field(default=0.0, ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"pool name {value!r} must hold only letters, digits, '.', '_', '-'")
        return value

    @field_validator("gpu_model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return canonical_gpu_model(value)

    @field_validator("cpus_per_node", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            if isinstance(value, int) and value < 1:
                raise ValueError(f"cpus_per_node {value} must be at least 1")
            return value
        raise ValueError(f"cpus_per_node {value!r} must be a whole number or auto")

    @field_validator("memory_per_node", mode="before")
    @classmethod
    def _memory_type(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"memory_per_node {value!r} must be a size such as 512G, or auto")
        return value

    @field_validator("memory_per_node")
    @classmethod
    def _memory(cls, value: str | int) -> str | int:
        if value != "auto":
            parse_memory(value)
        return value

    @model_validator(mode="after")
    def _gpus_need_model(self) -> PoolSpec:
        if self.gpus_per_node and not self.gpu_model:
            raise ValueError(
                f"pool {self.name!r} has gpus_per_node {self.gpus_per_node} but no gpu_model; "
                "add gpu_model (e.g. H100)"
            )
        return self

    def to_domain(self) -> Pool:
        cpus = (os.cpu_count() or 1) if self.cpus_per_node == "auto" else int(self.cpus_per_node)
        memory = (
            machine_memory_bytes()
            if self.memory_per_node == "auto"
            else parse_memory(self.memory_per_node)
        )
        model = gpu_model(self.gpu_model) if self.gpu_model else None
        return Pool(
            name=self.name,
            nodes=self.nodes,
            cpus_per_node=cpus,
            memory_bytes_per_node=memory,
            gpu_model=self.gpu_model,
            gpus_per_node=self.gpus_per_node,
            gpu_memory_gb=self.gpu_memory_gb or (model.memory_gb if model else None),
            price_eur_gpu_hour=self.price_eur_gpu_hour,
            price_eur_cpu_hour=self.price_eur_cpu_hour,
        )


class BackendSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in BACKEND_KINDS:
            raise ValueError(f"backend kind {value!r} is not known; use one of {BACKEND_KINDS}")
        return value

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    operator: str = ""
    country: str = Field(min_length=2, max_length=2, description="ISO 3166 code, e.g. FR")
    jurisdiction: str = Field(description="EU, CH, UK, US …")
    certifications: list[str] = Field(default_factory=list)
    carbon_g_per_kwh: float = Field(ge=0, description="carbon intensity of the local grid")
    pue: float = Field(default=1.2, ge=1.0, le=3.0)
    backend: BackendSpec
    pools: list[PoolSpec] = Field(min_length=1)
    bandwidth: str | float | None = Field(
        default=None, description="how fast datasets reach the site, e.g. 10Gbit/s (1Gbit/s)"
    )
    datasets_path: str | None = Field(
        default=None,
        description="an absolute directory on the site holding copies of datasets, read in place",
    )

    @model_validator(mode="before")
    @classmethod
    def _quantum_pools(cls, data: Any) -> Any:
        # A quantum site is made of its devices: one pool each, unless pools are written.
        backend = data.get("backend") if isinstance(data, dict) else None
        if isinstance(backend, dict) and backend.get("kind") == "quantum" and "pools" not in data:
            return {**data, "pools": device_pools(backend)}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"site name {value!r} must hold only letters, digits, '.', '_', '-'")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if not value.isalpha():
            raise ValueError(f"country {value!r} must be an ISO 3166 code such as FR or DE")
        return value.upper()

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_bandwidth(value)
        return value

    @field_validator("datasets_path")
    @classmethod
    def _datasets_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"datasets_path {value!r} must be an absolute path on the site")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _unique_pools(self) -> SiteSpec:
        names = [p.name for p in self.pools]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"site {self.name!r} declares pool {sorted(dupes)[0]!r} twice")
        return self

    def to_domain(self) -> Site:
        site = Site(
            name=self.name,
            operator=self.operator,
            country=self.country.upper(),
            jurisdiction=self.jurisdiction.upper(),
            certifications=tuple(self.certifications),
            carbon_g_per_kwh=self.carbon_g_per_kwh,
            backend=self.backend.kind,
            pools=tuple(p.to_domain() for p in self.pools),
            pue=self.pue,
            settings=self.backend.settings(),
            bandwidth_bytes_s=(
                DEFAULT_BANDWIDTH_BYTES_S
                if self.bandwidth is None
                else parse_bandwidth(self.bandwidth)
            ),
            datasets_path=self.datasets_path,
            requires_member_account=(
                self.backend.kind == "slurm"
                and self.backend.settings().get("access") == "ssh"
                and not self.backend.settings().get("allow_service_account", False)
            ),
        )
        return with_devices(site) if site.backend == "quantum" else site


class FactorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sites: list[SiteSpec] = Field(min_length=1)

    @field_validator("sites")
    @classmethod
    def _unique_sites(cls, sites: list[SiteSpec]) -> list[SiteSpec]:
        names = [s.name for s in sites]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"site {sorted(dupes)[0]!r} is declared twice; rename one")
        return sites

    def to_domain(self) -> list[Site]:
        return [s.to_domain() for s in self.sites]


def machine_memory_bytes() -> int:
    """Physical memory of this machine."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 * 1024**3


def detect_gpus() -> tuple[str | None, int]:
    """(catalog model, count) of this machine's NVIDIA GPUs, from ``nvidia-smi -L``."""
    if not shutil.which("nvidia-smi"):
        return None, 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None, 0
    lines = [line for line in out.splitlines() if line.startswith("GPU ")]
    model = None
    for name in sorted(gpu_models(), key=len, reverse=True):
        if lines and name in lines[0].upper():
            model = name
            break
    return model, len(lines) if model else 0


def local_site_spec() -> dict[str, Any]:
    """The default factory: this machine as the site ``local``."""
    model, count = detect_gpus()
    pool: dict[str, Any] = {"name": "default", "cpus_per_node": "auto", "memory_per_node": "auto"}
    if count:
        pool.update(gpu_model=model, gpus_per_node=count)
    return {
        "name": "local",
        "operator": "this machine",
        "country": os.environ.get("GRAPPE_LOCAL_COUNTRY", "FR"),
        "jurisdiction": os.environ.get("GRAPPE_LOCAL_JURISDICTION", "EU"),
        "certifications": [],
        # France's grid averaged about 56 gCO2/kWh in 2023 (Ember, European Electricity Review).
        "carbon_g_per_kwh": float(os.environ.get("GRAPPE_LOCAL_CARBON", "56")),
        "backend": {"kind": "local"},
        "pools": [pool],
    }


def load_factory(path: Path | None) -> FactorySpec:
    """Read ``factory.yaml`` or, with no path, the default: this machine and its emulators."""
    if path is None:
        return FactorySpec.model_validate({"sites": [local_site_spec(), emulator_site_spec()]})
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(
            [Problem("GRAPPE_FACTORY", str(path), f"cannot read it ({exc.strerror}); fix the path")]
        ) from None
    data = load_yaml(text, source=str(path))
    return validate(FactorySpec, data, source=str(path))
