"""Quantum devices in ``factory.yaml``: a site with ``backend: {kind: quantum, devices: [...]}``.

Each device becomes a pool of the site (named as the device) carrying its
``QuantumDevice``, so placement, capacity and accounting treat it like any pool.
``concurrency`` is how many tasks the device runs at once (its pool's CPUs).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grappe.domain.quantum import QuantumDevice
from grappe.domain.sites import Site

# The emulator each engine name runs, and the modality it serves.
ENGINE_MODALITY = {"aer": "gate", "qutip": "neutral_atom", "slos": "photonic"}


class DeviceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    engine: Literal["aer", "qutip", "slos"]
    modality: Literal["gate", "neutral_atom", "photonic"] | None = None
    qubits: int = Field(ge=1, le=1000, description="qubits, atoms or optical modes")
    connectivity: str = "all-to-all"
    max_shots: int = Field(default=100_000, ge=1)
    price_eur_per_shot: float = Field(default=0.0, ge=0)
    price_eur_per_second: float = Field(default=0.0, ge=0)
    emulator: bool = True
    concurrency: int = Field(default=1, ge=1, le=64)

    def to_domain(self) -> QuantumDevice:
        modality = ENGINE_MODALITY[self.engine]
        return QuantumDevice(
            name=self.name,
            modality=modality,
            qubits=self.qubits,
            max_shots=self.max_shots,
            connectivity=self.connectivity,
            price_eur_per_shot=self.price_eur_per_shot,
            price_eur_per_second=self.price_eur_per_second,
            emulator=self.emulator,
            engine=self.engine,
        )


def read_devices(backend: dict[str, Any]) -> list[DeviceSpec]:
    """The devices of a quantum site's ``backend`` section; ``ValueError`` names what is wrong."""
    raw = backend.get("devices")
    if not isinstance(raw, list) or not raw:
        raise ValueError(
            "a quantum site lists its devices under backend.devices, e.g. "
            "[{name: aer, engine: aer, qubits: 24}]"
        )
    devices = []
    for i, item in enumerate(raw):
        try:
            device = DeviceSpec.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(
                f"backend.devices[{i}].{where} (got {first.get('input')!r}): {first['msg']}"
            ) from None
        if device.modality and device.modality != ENGINE_MODALITY[device.engine]:
            raise ValueError(
                f"backend.devices[{i}] {device.name}: engine {device.engine} runs "
                f"{ENGINE_MODALITY[device.engine]} programs, not {device.modality}"
            )
        devices.append(device)
    names = [d.name for d in devices]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"device {dupes[0]!r} is declared twice; rename one")
    return devices


def device_pools(backend: dict[str, Any]) -> list[dict[str, Any]]:
    """The pools a quantum site is made of: one per device."""
    return [
        {"name": d.name, "cpus_per_node": d.concurrency, "memory_per_node": "auto"}
        for d in read_devices(backend)
    ]


def with_devices(site: Site) -> Site:
    """The site with each pool carrying its device."""
    devices = {d.name: d.to_domain() for d in read_devices(site.settings)}
    pools = tuple(replace(p, device=devices.get(p.name)) for p in site.pools)
    return replace(site, pools=pools)


def emulator_site_spec() -> dict[str, Any]:
    """The default factory's quantum site: the three open-source emulators on this machine."""
    return {
        "name": "emulators",
        "operator": "this machine",
        "country": os.environ.get("GRAPPE_LOCAL_COUNTRY", "FR"),
        "jurisdiction": os.environ.get("GRAPPE_LOCAL_JURISDICTION", "EU"),
        "carbon_g_per_kwh": float(os.environ.get("GRAPPE_LOCAL_CARBON", "56")),
        "backend": {
            "kind": "quantum",
            "devices": [
                # A statevector of 28 qubits holds 2^28 complex numbers (4 GiB).
                {"name": "aer", "engine": "aer", "qubits": 28, "max_shots": 1_000_000},
                # A dense master-equation emulation: 2^N amplitudes per atom added, kept small.
                {"name": "pulser-qutip", "engine": "qutip", "qubits": 8, "max_shots": 100_000},
                {
                    "name": "perceval-slos",
                    "engine": "slos",
                    "qubits": 12,
                    "max_shots": 1_000_000,
                },
            ],
        },
    }
