"""``grappe up``: open the factory, bootstrap it on first start, serve the API and scheduler."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import uvicorn
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from grappe.api.app import create_app
from grappe.data.seed import seed_catalog
from grappe.runtime import Factory
from grappe.scheduler.loop import Scheduler
from grappe.scheduler.policies import policy
from grappe.services.auth import bootstrap
from grappe.settings import Settings


class StoreUnreachable(Exception):
    """The database named by the settings cannot be opened; the message says which and why."""


def serve(settings: Settings, say: Callable[[str], None] = print) -> None:
    """Run the factory in the foreground until interrupted."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    chosen = policy(settings.policy)
    try:
        factory = Factory.open(settings)
    except (OperationalError, ArgumentError, NoSuchModuleError) as exc:
        shown = (
            settings.store_url.split("@")[-1] if "@" in settings.store_url else settings.store_url
        )
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise StoreUnreachable(
            f"cannot open the store at {shown}: {reason}; check GRAPPE_DATABASE_URL "
            "(or GRAPPE_HOME for SQLite)"
        ) from None
    first = bootstrap(
        factory.store, settings.admin_token_path, settings.demo_gpu_hours, settings.demo_cpu_hours
    )
    if settings.seed_datasets:
        seed_catalog(factory)
    # Stable across restarts of this replica, distinct between replicas (they need distinct ports).
    holder = f"{socket.gethostname()}:{settings.port}"
    scheduler = Scheduler(factory, chosen, holder=holder)
    app = create_app(factory, scheduler)
    url = f"http://{settings.host}:{settings.port}"
    say(f"Grappe factory at {url}  (API docs: {url}/api/v1/docs)")
    say(f"store: {factory.store.engine.url.render_as_string(hide_password=True)}")
    say(f"sites: {', '.join(factory.sites)}; policy: {chosen.name}")
    say(f"admin token: {settings.admin_token_path}" + (" (new)" if first else ""))
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        factory.close()
