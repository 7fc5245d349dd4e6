"""The console: the factory in the browser, served by ``grappe up`` at ``/``.

Server-rendered pages (Jinja2 templates, our own CSS and a small script for
live updates), in English and French, over the same services as the API. Each
page is one module of ``grappe.console.pages`` that registers its routes and
its navigation entry (``grappe.console.nav``); a new capability gets its page
by adding its module's name to ``PAGE_MODULES``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from grappe.console import nav

# Order matters where paths overlap: /jobs/new and /jobs/rows before /jobs/{id}.
PAGE_MODULES = (
    "signin",
    "overview",
    "jobs",
    "job_detail",
    "plan",
    "operator",
    "data",
    "quantum",
    "models",
)
STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the console's pages and static files to the factory's app."""
    for name in PAGE_MODULES:
        importlib.import_module(f"grappe.console.pages.{name}")
    for registered in nav.REGISTRY.values():
        app.include_router(registered.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="console-static")
