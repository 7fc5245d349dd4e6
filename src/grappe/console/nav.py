"""The console's pages as a registry: each page module adds its entry and its router.

The navigation bar is drawn from this list, so a new capability (models, data,
quantum) becomes a page by writing one module that calls :func:`register` and
naming it in ``grappe.console.PAGE_MODULES``; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter


@dataclass(frozen=True)
class Page:
    """One entry of the navigation bar."""

    key: str  # also the message key ``nav.<key>``
    path: str
    order: int
    staff_only: bool = False


@dataclass(frozen=True)
class Registered:
    page: Page | None  # None: routes without a navigation entry (sign-in)
    router: APIRouter


REGISTRY: dict[str, Registered] = {}


def register(name: str, router: APIRouter, page: Page | None = None) -> None:
    """Add a page module's routes (and its navigation entry, if it has one)."""
    REGISTRY[name] = Registered(page, router)


def pages(staff: bool) -> list[Page]:
    """The navigation entries a member (``staff=False``) or an operator sees, in order."""
    entries = [r.page for r in REGISTRY.values() if r.page is not None]
    return sorted((p for p in entries if staff or not p.staff_only), key=lambda p: p.order)
