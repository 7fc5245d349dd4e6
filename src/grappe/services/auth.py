"""Members, tokens and roles: who is asking, and what they may see.

Tokens are random, shown once, and stored as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta

from grappe.domain.projects import Role
from grappe.services.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from grappe.spec.jobspec import NAME_RE
from grappe.store import project_repo
from grappe.store.db import Store
from grappe.store.tables import utcnow

TOKEN_PREFIX = "grp_"


@dataclass(frozen=True)
class Principal:
    """The member behind a request, with the projects they belong to."""

    user_id: int
    name: str
    role: Role
    projects: frozenset[str]

    @property
    def staff(self) -> bool:
        return self.role.staff

    def can_see(self, project: str) -> bool:
        return self.staff or project in self.projects

    def require_staff(self, action: str) -> None:
        if not self.staff:
            raise Forbidden(f"{action} needs the operator or admin role; {self.name} is a member")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def authenticate(store: Store, token: str | None) -> Principal:
    if not token:
        raise Unauthorized("no token given; send 'Authorization: Bearer <token>'")
    with store.session() as s:
        user = project_repo.user_by_token_hash(s, hash_token(token))
        if user is None:
            raise Unauthorized("this token is not valid (unknown or revoked)")
        return Principal(
            user.id, user.name, Role(user.role), frozenset(project_repo.member_projects(s, user.id))
        )


def create_user(
    store: Store,
    actor: Principal | None,
    name: str,
    role: str = "member",
    project: str | None = None,
) -> tuple[str, str]:
    """Add a member (and make them part of ``project``); returns (name, token shown once)."""
    if actor is not None:
        actor.require_staff("creating users")
        if role == "admin" and actor.role != Role.ADMIN:
            raise Forbidden("only an admin may create another admin")
    if not NAME_RE.match(name):
        raise Invalid("name", name, "use letters, digits, '.', '_' and '-'")
    try:
        role_value = Role(role)
    except ValueError:
        raise Invalid("role", role, "use one of admin, operator, member") from None
    token = new_token()
    with store.session() as s:
        if project_repo.user_by_name(s, name):
            raise Conflict(f"user {name!r} exists already")
        user = project_repo.add_user(s, name, role_value)
        project_repo.add_token(s, user.id, hash_token(token), label="created with user")
        if project:
            p = project_repo.project_by_name(s, project)
            if p is None:
                raise Invalid("project", project, "no such project; see `grappe projects`")
            project_repo.add_member(s, p.id, user.id)
        project_repo.audit(s, actor.name if actor else "system", "user.create", name, role=role)
    return name, token


def create_token(store: Store, actor: Principal, user: str | None = None) -> str:
    """A new token for ``user`` (yourself by default; others need the operator role)."""
    target = user or actor.name
    if target != actor.name:
        actor.require_staff("creating tokens for others")
    token = new_token()
    with store.session() as s:
        row = project_repo.user_by_name(s, target)
        if row is None:
            raise NotFound(f"user {target!r} does not exist")
        project_repo.add_token(s, row.id, hash_token(token), label=f"created by {actor.name}")
        project_repo.audit(s, actor.name, "token.create", target)
    return token


def bootstrap(
    store: Store, token_path: os.PathLike[str] | str, demo_gpu_hours: float, demo_cpu_hours: float
) -> bool:
    """First start: the admin, its token file (0600) and the ``demo`` project. ``True`` if done now.

    A factory whose admin exists but whose token file is gone gets a new
    admin token written there, so the operator on this machine is never locked out.
    """
    path = os.fspath(token_path)
    created = False
    with store.session() as s:
        admin = project_repo.user_by_name(s, "admin")
        if admin is None:
            admin = project_repo.add_user(s, "admin", Role.ADMIN)
            created = True
        if created or not os.path.exists(path):
            token = new_token()
            project_repo.add_token(s, admin.id, hash_token(token), label="admin.token")
            _write_secret(path, token)
        if project_repo.project_by_name(s, "demo") is None:
            demo = project_repo.add_project(s, "demo", "Try Grappe: the examples run here.")
            now = utcnow()
            project_repo.add_allocation(
                s, demo.id, demo_gpu_hours, demo_cpu_hours, now, now + timedelta(days=365)
            )
            project_repo.add_member(s, demo.id, admin.id)
            project_repo.audit(s, "system", "project.create", "demo", gpu_hours=demo_gpu_hours)
    return created


def _write_secret(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
