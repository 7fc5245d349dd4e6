"""What an operator writes to add a dataset (``grappe data add``, ``POST /api/v1/datasets``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grappe.domain.datasets import Sensitivity, dataset_id_problem
from grappe.spec.jobspec import NAME_RE


class DatasetSpec(BaseModel):
    """A dataset of the catalog; ``id`` is ``sector/name`` and its first part is the sector."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="sector/name, e.g. energy/iowa-electricity")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    publisher: str = Field(default="", max_length=200)
    licence: str = Field(min_length=1, max_length=200, description="e.g. CC-BY-4.0")
    source: str = Field(default="", max_length=2_000, description="where the data comes from")
    sensitivity: Sensitivity = Sensitivity.OPEN
    residency: list[str] = Field(default_factory=list, description="sites holding a copy")
    allowed_sites: list[str] = Field(
        default_factory=list, description="restricted data: the only sites it may go to"
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        problem = dataset_id_problem(value)
        if problem:
            raise ValueError(f"id {value!r}: {problem}")
        return value

    @field_validator("residency", "allowed_sites")
    @classmethod
    def _sites(cls, value: list[str]) -> list[str]:
        for name in value:
            if not NAME_RE.match(name):
                raise ValueError(f"site {name!r} is not a site name; see `grappe sites`")
        return value

    @model_validator(mode="after")
    def _restricted_has_sites(self) -> DatasetSpec:
        if self.sensitivity is Sensitivity.RESTRICTED and not (
            self.allowed_sites or self.residency
        ):
            raise ValueError(
                "restricted data needs allowed_sites (the sites its publisher lists); add them"
            )
        return self

    @property
    def sector(self) -> str:
        return self.id.split("/", 1)[0]
