"""Where a site's commands run: on this machine, or on the site's login node through SSH.

Engines such as Slurm are driven by their command-line tools (``sbatch``,
``squeue``, ``scancel``); a ``Shell`` runs those tools either here
(``LocalShell``) or on a login node as a given account (``SshShell`` in
``grappe.backends.ssh``). Both raise ``SiteUnavailable`` when the host cannot
be reached, so that the scheduler keeps the site's jobs and asks again later.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from grappe.backends.base import SiteAccount, SiteUnavailable

__all__ = ["LocalShell", "Result", "Shell", "SiteAccount"]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def message(self) -> str:
        """The engine's own words about a failure, for the user."""
        text = (self.stderr.strip() or self.stdout.strip())[-2000:]
        return text or f"exit code {self.returncode}"


class Shell(Protocol):
    """Runs commands and moves files on one host, as one account."""

    @property
    def user(self) -> str: ...

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60) -> Result:
        """Run ``argv`` as given (no shell on this side); ``SiteUnavailable`` if unreachable."""
        ...

    def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of a file from ``offset``; ``b''`` when it does not exist yet."""
        ...

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write ``data`` to ``path`` on the host (parents created), atomically where possible."""
        ...

    def close(self) -> None: ...


class LocalShell:
    """Commands on this machine, as the user running Grappe, with extra environment."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = {**os.environ, **(env or {})}

    @property
    def user(self) -> str:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60) -> Result:
        try:
            proc = subprocess.run(
                list(argv), input=input, capture_output=True, timeout=timeout, env=self.env
            )
        except FileNotFoundError as exc:
            raise SiteUnavailable(f"{argv[0]} is not installed here ({exc.strerror})") from None
        except subprocess.TimeoutExpired:
            raise SiteUnavailable(
                f"{shlex.join(argv)} did not answer within {timeout:.0f}s"
            ) from None
        return Result(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )

    def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        try:
            with open(os.path.expanduser(path), "rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        target = Path(os.path.expanduser(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)

    def close(self) -> None:
        pass
