"""The ``backend:`` settings of a Slurm site in ``factory.yaml``, checked before use.

A site reached on this machine::

    backend:
      kind: slurm
      env: {SLURM_CONF: /etc/slurm/slurm.conf}
      partitions: {gpu: gpu_h100}
      accounts: {climate: proj-climate}

A site reached through its login node, where members submit as themselves::

    backend:
      kind: slurm
      access: ssh
      host: login.hpc.example.eu
      known_hosts: /etc/grappe/known_hosts
      service_account: {user: grappe, key: /etc/grappe/keys/grappe}
      allow_service_account: false

Errors are ``ValueError`` naming the setting and the fix, for the operator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grappe.domain.sites import Site

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Characters that Slurm misreads in --output/--chdir (% patterns, quotes) or shells split on.
UNSAFE_PATH_RE = re.compile(r"[\s%\"'\\$`]")

SETTINGS = (
    "access",
    "env",
    "host",
    "port",
    "known_hosts",
    "connect_timeout",
    "service_account",
    "allow_service_account",
    "workdir",
    "accounts",
    "partitions",
)

# What to write instead, per setting, when a value is refused.
_FIXES = {
    "access": "write access: local (Slurm commands on this machine) or access: ssh (login node)",
    "env": "write env as a mapping of names to strings, e.g. {SLURM_CONF: /etc/slurm/slurm.conf}",
    "host": "write the login node's name, e.g. host: login.hpc.example.eu",
    "port": "write the login node's SSH port, e.g. port: 22",
    "known_hosts": "write the path of a known_hosts file holding the login node's key "
    "(ssh-keyscan -H HOST >> FILE, then check the fingerprint)",
    "connect_timeout": "write seconds, e.g. connect_timeout: 10",
    "service_account": "write service_account: {user: NAME, key: /path/to/private_key}",
    "allow_service_account": "write allow_service_account: true or false",
    "workdir": "write a directory path without spaces, quotes, %, $ or backslashes",
    "accounts": "write accounts as {grappe_project: slurm_account}",
    "partitions": "write partitions as {pool: slurm_partition}",
}


class ServiceAccountSettings(BaseModel):
    """The site account Grappe acts as when a member has not registered their own."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1)
    key: Path | None = None


class SlurmSettings(BaseModel):
    """The validated ``backend:`` keys of a Slurm site (all but ``kind``)."""

    model_config = ConfigDict(extra="forbid")

    access: Literal["local", "ssh"] = "local"
    env: dict[str, str] = Field(default_factory=dict)
    host: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    known_hosts: Path | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    service_account: ServiceAccountSettings | None = None
    allow_service_account: bool | None = None
    workdir: str | None = None
    accounts: dict[str, str] = Field(default_factory=dict)
    partitions: dict[str, str] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or UNSAFE_PATH_RE.search(value)):
            raise ValueError(f"{value!r} cannot be used in Slurm's --output and --chdir")
        return value

    @field_validator("accounts", "partitions")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            if not name or UNSAFE_PATH_RE.search(name) or "," in name:
                raise ValueError(f"{key}: {name!r} is not a Slurm name")
        return value

    @model_validator(mode="after")
    def _access(self) -> SlurmSettings:
        # Each message: "<setting>: <what is wrong>; <the fix>", for parse_settings.
        if self.access == "ssh":
            if not self.host:
                raise ValueError(
                    "host: is required with access: ssh; " + _FIXES["host"].replace("write", "add")
                )
            if self.known_hosts is None:
                raise ValueError(
                    "known_hosts: is required with access: ssh (host keys are always checked); "
                    + _FIXES["known_hosts"].replace("write", "add")
                )
            if self.service_account is not None and self.service_account.key is None:
                raise ValueError(
                    "service_account: needs a key with access: ssh; " + _FIXES["service_account"]
                )
            if self.allow_service_account and self.service_account is None:
                raise ValueError(
                    "allow_service_account: true needs a service_account to run jobs as; add "
                    "service_account: {user: NAME, key: PATH} or set allow_service_account: false"
                )
        elif self.host is not None or self.known_hosts is not None:
            which = "host" if self.host is not None else "known_hosts"
            raise ValueError(
                f"{which}: is only used with access: ssh; remove it, or set access: ssh"
            )
        return self

    @property
    def service_account_allowed(self) -> bool:
        """Whether jobs of members without their own account may run as the service account."""
        if self.allow_service_account is not None:
            return self.allow_service_account
        return self.access == "local"


def parse_settings(site: Site) -> SlurmSettings:
    """The site's settings, or ``ValueError`` naming the setting at fault and its fix."""
    raw: dict[str, Any] = dict(site.settings)
    try:
        settings = SlurmSettings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err.get("loc", ())]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            raise ValueError(
                f"site {site.name}: unknown backend setting {loc[0]!r} for a Slurm site; "
                f"the settings are {', '.join(SETTINGS)}"
            ) from None
        if not loc:  # a rule across settings: its message names the setting and the fix
            name, _, text = msg.partition(": ")
            raise ValueError(f"site {site.name}: backend setting {name!r} {text}") from None
        where = ".".join(loc)
        fix = _FIXES.get(loc[0], "see the Slurm backend's settings in docs")
        raise ValueError(
            f"site {site.name}: backend setting {where!r} is invalid: {msg}; {fix}"
        ) from None
    pools = {p.name for p in site.pools}
    unknown = sorted(set(settings.partitions) - pools)
    if unknown:
        raise ValueError(
            f"site {site.name}: backend setting 'partitions' names pool {unknown[0]!r}, which the "
            f"site does not declare; use one of {', '.join(sorted(pools))}"
        )
    return settings
