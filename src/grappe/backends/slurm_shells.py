"""Who the Slurm backend acts as on a site, and the shells that act as them.

With ``access: local`` every command runs here as the user running Grappe.
With ``access: ssh`` each site account gets its own ``SshShell`` to the login
node, opened on first use and kept: a member's registered account for their
jobs, else the service account where the operator allows it. The service
account (when configured) also reads the site's state for everyone.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Callable
from pathlib import Path

from grappe.backends.base import Launch, SiteAccount, SiteUnavailable, SubmitRejected
from grappe.backends.shell import LocalShell, Shell
from grappe.backends.slurm_settings import UNSAFE_PATH_RE, SlurmSettings
from grappe.domain.sites import Site

DEFAULT_SSH_WORKDIR = ".grappe-jobs"  # relative to the account's home


class SiteShells:
    """The site's accounts and their shells, shared by the API and scheduler threads."""

    def __init__(
        self,
        site: Site,
        settings: SlurmSettings,
        root: Path,
        accounts: Callable[[str], SiteAccount | None] | None,
    ) -> None:
        self.site = site
        self.settings = settings
        self.root = root
        self._accounts = accounts
        self._lock = threading.Lock()
        self._shells: dict[str, Shell] = {}
        self._homes: dict[str, str] = {}
        self.local: LocalShell | None = None
        if settings.access == "local":
            self.local = LocalShell(settings.env)
            sa = settings.service_account
            if sa is not None and sa.user != self.local.user:
                raise ValueError(
                    f"site {site.name}: backend setting 'service_account' names {sa.user}, but "
                    f"access: local runs Slurm commands as {self.local.user}; remove "
                    "service_account or use access: ssh"
                )

    def acting_account(self, launch: Launch) -> SiteAccount:
        """The member's own account, else the service account where the operator allows it."""
        name = self.site.name
        if launch.account is not None:
            if self.local is not None and launch.account.user != self.local.user:
                raise SubmitRejected(
                    f"site {name} is reached locally and runs Slurm commands as "
                    f"{self.local.user}; it cannot submit as {launch.account.user}"
                )
            return launch.account
        sa = self.settings.service_account
        if self.settings.service_account_allowed:
            if sa is not None:
                return SiteAccount(sa.user, sa.key)
            if self.local is not None:
                return SiteAccount(self.local.user)
        who = launch.owner or "the member"
        raise SubmitRejected(
            f"site {name} runs jobs only under the member's own account, and {who} has none "
            f"registered there; register it with: grappe accounts add {name} --user NAME "
            "--key PATH"
        )

    def shell(self, account: SiteAccount) -> Shell:
        """The shell acting as ``account``, opened on first use and kept."""
        if self.local is not None:
            return self.local
        with self._lock:
            shell = self._shells.get(account.user)
        if shell is not None:
            return shell
        name = self.site.name
        if account.key_path is None:
            raise SubmitRejected(
                f"account {account.user} on site {name} has no SSH key; register one with: "
                f"grappe accounts add {name} --user {account.user} --key PATH"
            )
        try:
            from grappe.backends.ssh import SshShell
        except ImportError as exc:
            raise SiteUnavailable(
                f"site {name} uses access: ssh, which needs asyncssh "
                f"(pip install 'grappe[ssh]'): {exc}"
            ) from None
        s = self.settings
        assert s.host is not None and s.known_hosts is not None  # checked with the settings
        new = SshShell(
            s.host, s.port, account.user, account.key_path, s.known_hosts, s.connect_timeout
        )
        with self._lock:
            shell = self._shells.setdefault(account.user, new)
        if shell is not new:
            new.close()  # another thread opened one meanwhile
        return shell

    def for_user(self, user: str) -> Shell | None:
        """A shell acting as ``user``, else one that may read for them; ``None`` if none."""
        if self.local is not None:
            return self.local
        with self._lock:
            shell = self._shells.get(user)
        if shell is not None:
            return shell
        sa = self.settings.service_account
        account = SiteAccount(sa.user, sa.key) if sa is not None and sa.user == user else None
        if account is None and self._accounts is not None:
            account = self._accounts(user)
        if account is not None and account.key_path is not None:
            return self.shell(account)
        return self.default()

    def default(self) -> Shell | None:
        """The shell that reads the site for everyone: local, else the service account."""
        if self.local is not None:
            return self.local
        sa = self.settings.service_account
        if sa is not None and sa.key is not None:
            return self.shell(SiteAccount(sa.user, sa.key))
        return None

    def reader(self) -> Shell:
        """Any shell that can read the site's state; ``SiteUnavailable`` when there is none."""
        shell = self.default()
        if shell is None:
            with self._lock:
                shell = next(iter(self._shells.values()), None)
        if shell is None and self._accounts is not None:
            # No service account: read the site's state as any member registered there.
            account = self._accounts("")
            if account is not None and account.key_path is not None:
                shell = self.shell(account)
        if shell is None:
            raise SiteUnavailable(
                f"site {self.site.name} has no account to read its state with: configure "
                "service_account (allow_service_account: false keeps jobs off it)"
            )
        return shell

    def workdir(self, shell: Shell) -> str:
        """The absolute base of job directories for ``shell``'s account."""
        base = self.settings.workdir
        if base is None and shell is self.local:
            base = str(self.root.resolve())
        base = base or DEFAULT_SSH_WORKDIR
        if base == "~" or base.startswith("~/"):
            base = base[2:]
        if not posixpath.isabs(base):
            base = posixpath.join(self.home(shell), base)
        if UNSAFE_PATH_RE.search(base):
            raise SubmitRejected(
                f"job directory {base} on site {self.site.name} holds characters Slurm cannot "
                "take in --output; set the site's workdir to a plain path"
            )
        return posixpath.normpath(base)

    def home(self, shell: Shell) -> str:
        """The home directory of ``shell``'s account, asked once."""
        with self._lock:
            home = self._homes.get(shell.user)
        if home is not None:
            return home
        if shell is self.local:
            home = os.path.expanduser("~")
        else:
            result = shell.run(["sh", "-c", 'printf "%s" "$HOME"'])
            home = result.stdout.strip()
            if not result.ok or not home.startswith("/"):
                raise SiteUnavailable(f"cannot find the home of {shell.user}: {result.message()}")
        with self._lock:
            self._homes[shell.user] = home
        return home

    def close(self) -> None:
        """Close every SSH shell (the local one holds nothing)."""
        with self._lock:
            shells, self._shells = list(self._shells.values()), {}
        for shell in shells:
            try:
                shell.close()
            except Exception:  # noqa: BLE001, S110 - closing the others matters more
                pass
