"""The running factory: settings, store, sites and their backends, wired once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grappe.backends import Backend, SiteAccount, make_backend
from grappe.catalog import gpu_models
from grappe.domain.sites import GpuModel, Site, SiteSnapshot
from grappe.settings import Settings
from grappe.spec.factory import load_factory
from grappe.store import job_repo, project_repo
from grappe.store.db import Store


def _accounts(store: Store, site: str) -> Callable[[str], SiteAccount | None]:
    """How a backend finds the key of a member's account on its site (after a restart)."""

    def resolve(remote_user: str) -> SiteAccount | None:
        """The account of that user name on the site; ``""`` asks for any member's account."""
        with store.session() as s:
            row = project_repo.site_account_by_remote(s, site, remote_user or None)
        if row is None:
            return None
        return SiteAccount(row.remote_user, Path(row.key_path) if row.key_path else None)

    return resolve


@dataclass
class Factory:
    settings: Settings
    store: Store
    sites: dict[str, Site]
    backends: dict[str, Backend]
    gpus: dict[str, GpuModel] = field(default_factory=gpu_models)
    factory_id: str = ""

    @classmethod
    def open(cls, settings: Settings, migrate: bool = True) -> Factory:
        """Read factory.yaml, connect the store (migrating it) and make one backend per site."""
        settings.home.mkdir(parents=True, exist_ok=True)
        sites = {s.name: s for s in load_factory(settings.factory).to_domain()}
        store = Store(settings.store_url)
        if migrate:
            store.migrate()
        with store.session() as s:
            # Names this factory gives its jobs on shared engines (Slurm job names, Ray ids).
            factory_id = job_repo.factory_id(s, uuid.uuid4().hex[:8])
        backends = {
            name: make_backend(site, settings.site_root(name), _accounts(store, name), factory_id)
            for name, site in sites.items()
        }
        return cls(settings, store, sites, backends, factory_id=factory_id)

    def snapshots(self) -> list[SiteSnapshot]:
        """Live capacity of every site (a site that does not answer says so in its snapshot)."""
        return [self.backends[name].capacity() for name in self.sites]

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.store.close()
