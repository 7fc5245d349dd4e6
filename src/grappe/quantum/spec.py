"""The ``quantum:`` section of a job spec: the program, its format, the shots, the device."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grappe.domain.quantum import FORMAT_MODALITY, QuantumNeed

MAX_PROGRAM_BYTES = 1 << 20
MAX_SHOTS = 10_000_000
Format = Literal["qasm2", "qasm3", "pulser", "perceval"]
Modality = Literal["gate", "neutral_atom", "photonic"]


def guess_format(program: str) -> str | None:
    """The format a program is written in, from its first words; ``None`` when unclear."""
    head = program.lstrip()
    if head.startswith("{"):
        # Pulser's abstract representation always holds a register; ours for Perceval, modes.
        if '"register"' in program:
            return "pulser"
        if '"modes"' in program:
            return "perceval"
        return None
    lines = [ln.strip() for ln in program.splitlines() if ln.strip()]
    first = next((ln for ln in lines if not ln.startswith("//")), "")
    if first.startswith("OPENQASM 2"):
        return "qasm2"
    if first.startswith("OPENQASM 3") or first.startswith("OPENQASM"):
        return "qasm3"
    return None


class QuantumSpec(BaseModel):
    """A quantum task: ``program`` is the text of an OpenQASM 2/3 circuit, a Pulser
    sequence in Pulser's JSON (abstract representation), or a photonic circuit in
    Grappe's JSON description (see docs/quantum.md)."""

    model_config = ConfigDict(extra="forbid")

    program: str = Field(min_length=1, max_length=MAX_PROGRAM_BYTES)
    format: Format | None = Field(default=None, description="guessed from the program if unset")
    shots: int = Field(default=1000, ge=1, le=MAX_SHOTS)
    modality: Modality | None = Field(default=None, description="follows from the format")
    device: str | None = Field(default=None, description="a device name, or any that fits")
    # Qubits, atoms or modes the program uses: the factory reads them from the program.
    qubits: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _format_and_modality(self) -> QuantumSpec:
        if self.format is None:
            guessed = guess_format(self.program)
            if guessed is None:
                raise ValueError(
                    "quantum.format is not set and the program does not say it; set format "
                    "to qasm2, qasm3, pulser or perceval"
                )
            self.format = guessed  # type: ignore[assignment]
        wanted = FORMAT_MODALITY[str(self.format)]
        if self.modality is None:
            self.modality = wanted  # type: ignore[assignment]
        elif self.modality != wanted:
            raise ValueError(
                f"quantum.modality {self.modality!r} cannot run a {self.format} program "
                f"(written for {wanted}); drop --modality or use {wanted}"
            )
        return self

    def need(self) -> QuantumNeed:
        return QuantumNeed(
            modality=str(self.modality),
            qubits=self.qubits or 0,
            shots=self.shots,
            format=str(self.format),
            device=self.device,
        )
