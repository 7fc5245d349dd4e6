"""Health, the caller's identity, the federation's sites and the GPU catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from grappe import __version__
from grappe.api.deps import FactoryDep, PrincipalDep
from grappe.domain.resources import format_memory

router = APIRouter(tags=["factory"])


@router.get("/health")
def health(factory: FactoryDep) -> dict[str, Any]:
    """Liveness and what this factory runs on; needs no token."""
    with factory.store.session() as s:
        s.connection().exec_driver_sql("SELECT 1")
    return {
        "status": "ok",
        "version": __version__,
        "store": factory.store.engine.dialect.name,
        "sites": sorted(factory.sites),
    }


@router.get("/whoami")
def whoami(me: PrincipalDep) -> dict[str, Any]:
    return {"name": me.name, "role": str(me.role), "projects": sorted(me.projects)}


@router.get("/sites")
def list_sites(factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    """Every site with its pools and live capacity."""
    out = []
    for snap in factory.snapshots():
        site = snap.site
        pools = []
        for pool in site.pools:
            cap = snap.capacity(pool.name)
            pools.append(
                {
                    "name": pool.name,
                    "gpu_model": pool.gpu_model,
                    "nodes": pool.nodes,
                    "gpus_per_node": pool.gpus_per_node,
                    "gpu_memory_gb": pool.gpu_memory_gb,
                    "cpus_per_node": pool.cpus_per_node,
                    "memory_per_node": format_memory(pool.memory_bytes_per_node),
                    "price_eur_gpu_hour": pool.price_eur_gpu_hour,
                    "price_eur_cpu_hour": pool.price_eur_cpu_hour,
                    "total_gpus": pool.total_gpus,
                    "total_cpus": pool.total_cpus,
                    "free_gpus": cap.free_gpus if cap else None,
                    "free_cpus": cap.free_cpus if cap else None,
                    "free_memory": format_memory(max(cap.free_memory_bytes, 0)) if cap else None,
                }
            )
        out.append(
            {
                "name": site.name,
                "operator": site.operator,
                "country": site.country,
                "jurisdiction": site.jurisdiction,
                "certifications": list(site.certifications),
                "carbon_g_per_kwh": site.carbon_g_per_kwh,
                "pue": site.pue,
                "backend": site.backend,
                "available": snap.available,
                "error": snap.error,
                "pools": pools,
            }
        )
    return out


@router.get("/gpus")
def list_gpus(factory: FactoryDep, me: PrincipalDep) -> list[dict[str, Any]]:
    """The GPU catalog: memory, speed relative to an A100, power, and the public source."""
    return [
        {
            "name": g.name,
            "vendor": g.vendor,
            "memory_gb": g.memory_gb,
            "relative_speed": g.relative_speed,
            "tdp_watts": g.tdp_watts,
            "source": g.source,
        }
        for g in factory.gpus.values()
    ]
