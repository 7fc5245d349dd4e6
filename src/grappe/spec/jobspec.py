"""The job spec: what a user writes in ``job.yaml`` and sends to the API.

One pydantic schema for the CLI and the API. Validation errors name the
field, the value and the fix (see ``grappe.spec.errors``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grappe.catalog import canonical_gpu_model
from grappe.domain.jobs import JobRequest
from grappe.domain.resources import Resources, parse_duration, parse_memory
from grappe.quantum.spec import QuantumSpec

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_MAX_RUNTIME_S = 3600


class GpuRequest(BaseModel):
    """``{model, count}``; ``model`` omitted means any GPU model."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    count: int = Field(ge=0, le=100_000)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return canonical_gpu_model(value)


def _parse_gpus(value: Any) -> Any:
    """Accept ``H100:8``, ``8``, ``"8"``, ``H100`` (one GPU) or a mapping."""
    if value is None:
        return {"count": 0}
    if isinstance(value, bool):
        raise ValueError(
            f"gpus {value!r} is not a GPU request; write 8, H100:8 or {{model, count}}"
        )
    if isinstance(value, int):
        return {"count": value}
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return {"count": int(text)}
        model, sep, count = text.partition(":")
        if sep and not count.strip().lstrip("-").isdigit():
            raise ValueError(
                f"gpus {value!r}: the count after ':' must be a whole number, e.g. H100:8"
            )
        return {"model": model.strip(), "count": int(count) if sep else 1}
    return value


class ResourcesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: GpuRequest = Field(default_factory=lambda: GpuRequest(count=0))
    cpus: int = Field(default=1, ge=1, le=100_000)
    memory: str | int | None = None
    nodes: int = Field(default=1, ge=1, le=10_000)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        return _parse_gpus(value)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_memory(value)
        return value

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_type(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise ValueError(f"memory {value!r} is not a size; write e.g. 512M, 64G or 1T")
        return value

    @model_validator(mode="after")
    def _gpus_over_nodes(self) -> ResourcesSpec:
        if self.gpus.count and self.gpus.count % self.nodes:
            raise ValueError(
                f"gpus {self.gpus.count} cannot be split evenly over {self.nodes} nodes; "
                "ask for a multiple of nodes"
            )
        return self

    def to_domain(self) -> Resources:
        return Resources(
            gpus=self.gpus.count,
            gpu_model=self.gpus.model,
            cpus=self.cpus,
            memory_bytes=parse_memory(self.memory) if self.memory is not None else 0,
            nodes=self.nodes,
        )


class SitesConstraint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jurisdiction: str | None = Field(
        default=None, description="EU, a country code such as FR, or another jurisdiction"
    )
    certifications: list[str] = Field(default_factory=list, description="e.g. [HDS, SecNumCloud]")
    sites: SitesConstraint = Field(default_factory=SitesConstraint)
    max_price_eur_gpu_hour: float | None = Field(default=None, ge=0)


class JobSpec(BaseModel):
    """A job as users write it. Unknown fields are refused, so typos show."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="letters, digits, '.', '_' and '-'; 63 characters at most")
    project: str | None = Field(
        default=None, description="the project charged; defaults to the member's only project"
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    run: str = Field(min_length=1, description="shell commands run in the job's directory")
    setup: str | None = Field(default=None, description="shell commands run before `run`")
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = Field(
        default=None, description="a local directory uploaded into the job's directory"
    )
    inputs: list[str] = Field(default_factory=list, description="dataset ids")
    constraints: Constraints = Field(default_factory=Constraints)
    objective: Literal["time", "cost", "carbon"] = "time"
    max_runtime: Annotated[str | int, Field(description="e.g. 30m, 2h, 1-00:00:00")] = "1h"
    retries: int = Field(default=0, ge=0, le=10)
    quantum: QuantumSpec | None = Field(default=None, description="a quantum task's program")
    preemptible: bool = Field(
        default=False,
        description="the job checkpoints: a scheduler may stop it for a more urgent job "
        "and resume it later",
    )

    @model_validator(mode="before")
    @classmethod
    def _quantum_run(cls, data: Any) -> Any:
        # A quantum task runs its program on a device, not shell commands: `run` only names it.
        if isinstance(data, dict) and data.get("quantum") and not data.get("run"):
            return {**data, "run": "quantum program"}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                f"name {value!r} must start with a letter or digit and hold only letters, "
                "digits, '.', '_' and '-' (63 characters at most)"
            )
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.match(value):
            raise ValueError(f"project {value!r} is not a project name; see `grappe projects`")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME_RE.match(key):
                raise ValueError(
                    f"env name {key!r} is not a valid variable name; use letters, digits "
                    "and '_', not starting with a digit"
                )
        return value

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _runtime(cls, value: Any) -> str | int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(
                f"max_runtime {value!r} is not a duration; write whole seconds or e.g. 30m, 2h, 1d"
            )
        parse_duration(value)
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_text(cls, value: Any) -> Any:
        # YAML reads `OMP_NUM_THREADS: 4` as a number; the process sees text anyway.
        if isinstance(value, dict):
            return {
                k: str(v).lower()
                if isinstance(v, bool)
                else str(v)
                if isinstance(v, (int, float))
                else v
                for k, v in value.items()
            }
        return value

    @property
    def max_runtime_s(self) -> int:
        return parse_duration(self.max_runtime)

    def to_request(self, job_id: str, project: str) -> JobRequest:
        c = self.constraints
        return JobRequest(
            id=job_id,
            project=project,
            resources=self.resources.to_domain(),
            max_runtime_s=self.max_runtime_s,
            objective=self.objective,
            jurisdiction=c.jurisdiction,
            certifications=tuple(c.certifications),
            sites_allow=tuple(c.sites.allow),
            sites_deny=tuple(c.sites.deny),
            max_price_eur_gpu_hour=c.max_price_eur_gpu_hour,
            quantum=self.quantum.need() if self.quantum else None,
            preemptible=self.preemptible,
        )
