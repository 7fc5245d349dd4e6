"""Grappe's JSON description of a linear-optical circuit, and its Perceval form.

    {"modes": 2, "input": [1, 1],
     "components": [{"type": "BS", "modes": [0, 1], "theta": 1.5707963267948966}]}

``input`` is the Fock state sent in (photons per mode). Components, applied in
order: ``BS`` (a beam splitter on two adjacent modes, Perceval's Rx convention,
``theta`` = pi/2 is balanced), ``PS`` (a phase shifter on one mode, ``phi``),
``PERM`` (a permutation of adjacent modes, ``perm``). Outcomes are Fock states
written as Perceval prints them, e.g. ``|2,0>``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grappe.quantum.programs import ProgramError, load_json


class Component(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["BS", "PS", "PERM"]
    modes: list[int] = Field(min_length=1)
    theta: float = math.pi / 2
    phi: float = 0.0
    perm: list[int] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Component:
        first, n = self.modes[0], len(self.modes)
        if self.modes != list(range(first, first + n)):
            raise ValueError(f"modes {self.modes} must be adjacent and increasing, e.g. [0, 1]")
        if self.type == "BS" and n != 2:
            raise ValueError(f"a BS acts on two modes; got {self.modes}")
        if self.type == "PS" and n != 1:
            raise ValueError(f"a PS acts on one mode; got {self.modes}")
        if self.type == "PERM" and sorted(self.perm or []) != list(range(n)):
            raise ValueError(f"perm {self.perm} must reorder 0..{n - 1}")
        return self


class Circuit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modes: int = Field(ge=1, le=64)
    input: list[int]
    components: list[Component] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fits(self) -> Circuit:
        if len(self.input) != self.modes or any(n < 0 for n in self.input):
            raise ValueError(
                f"input {self.input} must give a photon count (0 or more) for each of the "
                f"{self.modes} modes"
            )
        if not any(self.input):
            raise ValueError("input sends no photon; put at least one, e.g. [1, 0]")
        for i, comp in enumerate(self.components):
            if comp.modes[-1] >= self.modes:
                raise ValueError(
                    f"components[{i}] uses mode {comp.modes[-1]}; the circuit has modes "
                    f"0..{self.modes - 1}"
                )
        return self

    def perceval(self) -> Any:
        """The circuit as a ``perceval.Circuit``."""
        import perceval as pcvl

        circuit = pcvl.Circuit(self.modes)
        for comp in self.components:
            if comp.type == "BS":
                part = pcvl.BS(theta=comp.theta)
            elif comp.type == "PS":
                part = pcvl.PS(comp.phi)
            else:
                part = pcvl.PERM(list(comp.perm or []))
            circuit.add(comp.modes[0], part)
        return circuit


def read_circuit(text: str) -> Circuit:
    """The circuit ``text`` describes; ``ProgramError`` says where it is wrong."""
    data = load_json(text)
    try:
        return Circuit.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(circuit)"
        raise ProgramError(f"{where}: {first['msg']}") from None
