"""Quantum devices, what a quantum task needs of one, and reservations of a device.

A quantum site's devices are its pools: placement picks a device the way it
picks a GPU pool, with the filters of ``placement.filters`` reading the values
below. Pure types, no SDK: the emulators live in ``grappe.quantum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

MODALITIES = ("gate", "neutral_atom", "photonic")
# The modality each program format is written for.
FORMAT_MODALITY = {
    "qasm2": "gate",
    "qasm3": "gate",
    "pulser": "neutral_atom",
    "perceval": "photonic",
}


@dataclass(frozen=True)
class QuantumDevice:
    """One quantum processor or emulator of a site, as the operator declared it.

    ``qubits`` counts qubits (gate), atoms (neutral atoms) or optical modes (photonic).
    """

    name: str
    modality: str
    qubits: int
    max_shots: int
    connectivity: str = "all-to-all"
    price_eur_per_shot: float = 0.0
    price_eur_per_second: float = 0.0
    emulator: bool = True
    engine: str = ""  # which emulator or provider runs it, e.g. aer, qutip, slos

    def price(self, shots: int, seconds: float) -> float:
        """Euros for ``shots`` shots over ``seconds`` of device time."""
        return shots * self.price_eur_per_shot + max(seconds, 0.0) * self.price_eur_per_second


@dataclass(frozen=True)
class QuantumNeed:
    """What a quantum task asks of a device: read from its program at submission."""

    modality: str
    qubits: int
    shots: int
    format: str
    device: str | None = None  # a device name the user asked for


@dataclass(frozen=True)
class QuantumSession:
    """A device reserved for one project over ``[starts, ends)``."""

    id: str
    project: str
    site: str
    device: str
    starts: datetime
    ends: datetime

    def active(self, now: datetime) -> bool:
        return self.starts <= now < self.ends

    def overlaps(self, starts: datetime, ends: datetime) -> bool:
        return self.starts < ends and starts < self.ends


def need_of(section: dict[str, Any] | None) -> QuantumNeed | None:
    """The need of a stored job spec's ``quantum`` section (as validated), or ``None``."""
    if not section:
        return None
    return QuantumNeed(
        modality=str(section.get("modality")),
        qubits=int(section.get("qubits") or 0),
        shots=int(section.get("shots") or 0),
        format=str(section.get("format")),
        device=section.get("device"),
    )
