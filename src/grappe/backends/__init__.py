"""One adapter per site engine, behind the ``Backend`` protocol of ``base``."""

from __future__ import annotations

from pathlib import Path

from grappe.backends.base import Backend, Launch, SiteUnavailable, Status, SubmitRejected
from grappe.domain.sites import Site

__all__ = ["Backend", "Launch", "SiteUnavailable", "Status", "SubmitRejected", "make_backend"]


def make_backend(site: Site, root: Path) -> Backend:
    """The adapter for ``site.backend``; ``root`` is where it may keep per-site files."""
    if site.backend == "local":
        from grappe.backends.local import LocalBackend

        return LocalBackend(site, Path(site.settings.get("root", root)))
    raise ValueError(f"site {site.name}: backend kind {site.backend!r} is not supported")
