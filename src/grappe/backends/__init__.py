"""One adapter per site engine, behind the ``Backend`` protocol of ``base``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grappe.backends.base import (
    Backend,
    Launch,
    SiteAccount,
    SiteUnavailable,
    Status,
    SubmitRejected,
)
from grappe.domain.sites import Site

__all__ = [
    "Backend",
    "Launch",
    "SiteAccount",
    "SiteUnavailable",
    "Status",
    "SubmitRejected",
    "make_backend",
]


def make_backend(
    site: Site,
    root: Path,
    accounts: Callable[[str], SiteAccount | None] | None = None,
    namespace: str = "",
) -> Backend:
    """The adapter for ``site.backend``; ``root`` is where it may keep per-site files.

    ``accounts`` finds the credentials of a member's account on the site by its
    user name there, for engines that act as each member (Slurm through SSH).
    ``namespace`` is the factory's id, for engines shared with other factories.
    """
    if site.backend == "local":
        from grappe.backends.local import LocalBackend

        return LocalBackend(site, Path(site.settings.get("root", root)))
    if site.backend == "slurm":
        from grappe.backends.slurm import SlurmBackend

        return SlurmBackend(site, root, accounts, namespace)
    if site.backend == "ray":
        from grappe.backends.ray import RayBackend

        return RayBackend(site, root, namespace)
    if site.backend == "quantum":
        from grappe.backends.quantum import QuantumBackend

        return QuantumBackend(site, Path(site.settings.get("root", root)))
    raise ValueError(f"site {site.name}: backend kind {site.backend!r} is not supported")
