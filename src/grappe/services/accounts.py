"""Members' own accounts on sites: HPC centres give each person theirs, reached with their key.

A member registers their user name on a site and a private key that the
site's login node accepts; Grappe then submits that member's jobs as them.
Keys are kept under ``$GRAPPE_HOME/site-keys`` (mode 0600), never in the
database and never shown again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from grappe.backends import SiteAccount
from grappe.runtime import Factory
from grappe.services.auth import Principal
from grappe.services.errors import Invalid, NotFound
from grappe.store import project_repo

REMOTE_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
MAX_KEY_BYTES = 16_384


def _key_file(factory: Factory, user_id: int, site: str) -> Path:
    return factory.settings.home / "site-keys" / f"{user_id}-{site}.key"


def _check_key(text: str) -> None:
    if len(text.encode()) > MAX_KEY_BYTES or "PRIVATE KEY" not in text:
        raise Invalid("private_key", "(hidden)", "send an OpenSSH or PEM private key file's text")
    try:
        import asyncssh
    except ImportError:  # without the ssh extra the key is checked by the site on first use
        return
    try:
        asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise Invalid(
            "private_key",
            "(hidden)",
            f"not a usable private key ({exc}); a key with a passphrase cannot be used unattended",
        ) from None


def add_account(
    factory: Factory, actor: Principal, site: str, remote_user: str, private_key: str | None
) -> dict[str, Any]:
    """Register (or replace) the caller's account on ``site``."""
    known = factory.sites.get(site)
    if known is None:
        raise Invalid("site", site, f"no such site; use one of {', '.join(sorted(factory.sites))}")
    if not REMOTE_USER_RE.match(remote_user):
        raise Invalid("user", remote_user, "a site user name: lower-case letters, digits, _ . -")
    ssh = known.settings.get("access") == "ssh"
    if ssh and not private_key:
        raise Invalid("private_key", None, f"site {site} is reached over SSH: send your key")
    key_path: str | None = None
    if private_key:
        _check_key(private_key)
        path = _key_file(factory, actor.user_id, site)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private_key if private_key.endswith("\n") else private_key + "\n")
        os.replace(tmp, path)
        key_path = str(path)
    with factory.store.session() as s:
        project_repo.put_site_account(s, actor.user_id, site, remote_user, key_path)
        project_repo.audit(s, actor.name, "site_account.add", site, remote_user=remote_user)
    return {"site": site, "user": remote_user, "member": actor.name, "has_key": bool(key_path)}


def list_accounts(factory: Factory, actor: Principal) -> list[dict[str, Any]]:
    with factory.store.session() as s:
        rows = project_repo.list_site_accounts(s, None if actor.staff else actor.user_id)
    return [
        {"member": name, "site": r.site, "user": r.remote_user, "has_key": bool(r.key_path)}
        for name, r in rows
    ]


def remove_account(factory: Factory, actor: Principal, site: str) -> dict[str, Any]:
    with factory.store.session() as s:
        if not project_repo.delete_site_account(s, actor.user_id, site):
            raise NotFound(f"you have no account registered on site {site!r}")
        project_repo.audit(s, actor.name, "site_account.remove", site)
    _key_file(factory, actor.user_id, site).unlink(missing_ok=True)
    return {"site": site, "removed": True}


def account_for(factory: Factory, user_id: int, site: str) -> SiteAccount | None:
    """The member's account on ``site`` as a backend uses it, or ``None``."""
    with factory.store.session() as s:
        row = project_repo.site_account(s, user_id, site)
    if row is None:
        return None
    return SiteAccount(row.remote_user, Path(row.key_path) if row.key_path else None)
