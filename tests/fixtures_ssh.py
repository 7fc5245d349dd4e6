"""Pytest fixtures for a real OpenSSH server on 127.0.0.1, standing in for a login node.

``sshd`` starts ``deploy/dev/ssh/up.sh`` once per session on a free port and gives
test accounts (named ``grappe-t-*``, so real users are never touched) their own keys.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "deploy" / "dev" / "ssh"
PREFIX = "grappe-t-"


class Sshd:
    """A running dev sshd: where it listens, its known_hosts, and its test accounts."""

    def __init__(self, state: Path, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.state = state
        self.known_hosts = state / "known_hosts"
        self._users: dict[str, Path] = {}

    def _script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=60
        )

    def start(self) -> None:
        done = self._script("up.sh", str(self.state), str(self.port))
        if done.returncode != 0:
            raise RuntimeError(f"up.sh failed: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        self._script("down.sh", str(self.state))

    def user(self, name: str) -> tuple[str, Path]:
        """An account on the server with its own key: ``(name, private key path)``."""
        if not name.startswith(PREFIX):
            name = PREFIX + name
        if name not in self._users:
            done = self._script("add-user.sh", str(self.state), name)
            if done.returncode != 0:
                raise RuntimeError(f"add-user.sh {name} failed: {done.stdout}{done.stderr}")
            self._users[name] = Path(done.stdout.strip().splitlines()[-1])
        return name, self._users[name]

    def drop_connections(self) -> None:
        """Kill every session process of this server (by pid), as a login node reboot would."""
        master = int((self.state / "sshd.pid").read_text())
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        todo, doomed = list(children.get(master, [])), []
        while todo:
            pid = todo.pop()
            doomed.append(pid)
            todo.extend(children.get(pid, []))
        for pid in doomed:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def forget_keys(self) -> None:
        """Remove this server's keys from its accounts' authorized_keys (accounts stay)."""
        for name, key in self._users.items():
            auth = Path(os.path.expanduser(f"~{name}")) / ".ssh" / "authorized_keys"
            try:
                ours = Path(f"{key}.pub").read_text().strip()
                lines = auth.read_text().splitlines()
                auth.write_text("".join(f"{line}\n" for line in lines if line.strip() != ours))
            except OSError:
                pass


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    from tests.conftest import free_port, missing

    if not Path("/usr/sbin/sshd").exists():
        missing(
            "openssh-server is not installed: apt-get install openssh-server (make test does this)"
        )
    if os.geteuid() != 0:
        missing("the sshd fixture creates Unix test accounts: run the tests as root")
    state = Path(tempfile.mkdtemp(prefix="grappe-sshd-"))
    server = Sshd(state, free_port())
    try:
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(state, ignore_errors=True)
        missing(f"the dev sshd could not be started: {exc}")
    yield server
    server.stop()
    server.forget_keys()
    shutil.rmtree(state, ignore_errors=True)
