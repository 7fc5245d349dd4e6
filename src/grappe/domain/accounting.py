"""What running a job costs: GPU-hours, CPU-hours, euros and CO2. Shared by placement and usage."""

from __future__ import annotations

from dataclasses import dataclass

from grappe.domain.resources import Resources
from grappe.domain.sites import GpuModel, Pool, Site

# A CPU core's share of power when a job holds no GPU (a ~250 W server CPU with ~64 cores).
WATTS_PER_CPU = 4.0


@dataclass(frozen=True)
class Charge:
    gpu_hours: float
    cpu_hours: float
    eur: float
    kg_co2: float
    qpu_shots: int = 0
    qpu_seconds: float = 0.0


def charge(
    resources: Resources,
    site: Site,
    pool: Pool,
    seconds: float,
    model: GpuModel | None,
    shots: int = 0,
) -> Charge:
    """The cost of holding ``resources`` in ``pool`` of ``site`` for ``seconds``.

    Energy is the GPUs' board power plus a per-core share, times the site's PUE;
    CO2 is that energy times the carbon intensity of the site's grid. On a quantum
    device, ``shots`` and the seconds held are charged at the device's prices too.
    """
    hours = max(seconds, 0.0) / 3600
    gpu_hours = resources.gpus * hours
    cpu_hours = resources.cpus * hours
    eur = gpu_hours * pool.price_eur_gpu_hour + cpu_hours * pool.price_eur_cpu_hour
    watts = resources.gpus * (model.tdp_watts if model else 0) + resources.cpus * WATTS_PER_CPU
    kwh = watts * hours / 1000 * site.pue
    kg_co2 = kwh * site.carbon_g_per_kwh / 1000
    if pool.device is not None:
        eur += pool.device.price(shots, seconds)
        return Charge(gpu_hours, cpu_hours, eur, kg_co2, shots, max(seconds, 0.0))
    return Charge(gpu_hours, cpu_hours, eur, kg_co2)
