"""Commands on a site's login node, over SSH, as one member's own account.

``SshShell`` implements the ``Shell`` protocol of ``grappe.backends.shell`` with
asyncssh. Backends call it from ordinary threads (API and scheduler threads at
once), so each shell runs a private asyncio loop in a daemon thread and hands it
coroutines with ``asyncio.run_coroutine_threadsafe``. One connection is kept open
and many commands share it as SSH channels (at most ``max_sessions`` at once, below
OpenSSH's default ``MaxSessions 10``); a dropped connection is reopened on next use.

Host keys are always checked against the site's ``known_hosts`` file: a mismatch is a
security stop, never bypassed. Files are read and written with remote POSIX commands
(``tail``/``head``, ``cat``, ``mv``) rather than SFTP, so a login node that only offers
a shell works too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shlex
import threading
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from grappe.backends.base import SiteUnavailable, SubmitRejected
from grappe.backends.shell import Result

__all__ = ["SshShell"]

T = TypeVar("T")

# `~` and `~/x` mean the account's home; the rest of the path is taken literally.
_HOME = 'p=$1; case $p in "~") p=$HOME;; "~/"*) p=$HOME/${p#"~/"};; esac; '
_READ = (
    _HOME + '[ -e "$p" ] || exit 0; [ -r "$p" ] || { echo "cannot read $p" >&2; exit 3; }; '
    'tail -c +"$2" -- "$p" | head -c "$3"'
)
_PUT = (
    _HOME + 't="$p.$2.part"; mkdir -p -- "$(dirname -- "$p")" && (umask 077 && cat > "$t") '
    '&& chmod "$3" "$t" && mv -f -- "$t" "$p" || { rm -f -- "$t"; exit 1; }'
)


class SshShell:
    """Runs commands on ``host:port`` as ``user``, proving it with the private key at ``key_path``.

    Raises ``SiteUnavailable`` when the host cannot be reached, its host key does not match
    ``known_hosts``, or a command outlives its timeout; ``SubmitRejected`` when the host
    refuses the member's key (the member must register the right one).
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        key_path: Path,
        known_hosts: Path,
        connect_timeout: float = 10,
        max_sessions: int = 8,
    ) -> None:
        self.host, self.port, self._user = host, int(port), user
        self.key_path = Path(key_path).expanduser()
        self.known_hosts = Path(known_hosts).expanduser()
        if not self.known_hosts.is_file():
            raise ValueError(
                f"known_hosts: {self.known_hosts} is not a file; set the site's known_hosts "
                f"to a file holding the host key of {host}:{port} (as published by the centre)"
            )
        self.connect_timeout = connect_timeout
        self._where = f"{user}@{host}:{self.port}"
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(max_sessions)
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"ssh {self._where}", daemon=True
        )
        self._thread.start()

    @property
    def user(self) -> str:
        return self._user

    def run(self, argv: Sequence[str], input: bytes | None = None, timeout: float = 60) -> Result:
        """Run ``argv`` remotely, each argument quoted so the login shell takes it literally."""
        code, out, err = self._call(self._exec(shlex.join(argv), input, timeout), timeout)
        return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of ``path`` from ``offset``; ``b''`` when it does not exist."""
        argv = ["sh", "-c", _READ, "sh", path, str(max(offset, 0) + 1), str(max(limit, 0))]
        code, out, err = self._call(self._exec(shlex.join(argv), None, 60), 60)
        if code != 0:
            raise OSError(f"cannot read {path} on {self._where}: {err.decode(errors='replace')}")
        return out

    def put(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write ``data`` to ``path`` (parents created) through a temporary name and a rename."""
        argv = ["sh", "-c", _PUT, "sh", path, uuid.uuid4().hex[:12], format(mode, "o")]
        code, _, err = self._call(self._exec(shlex.join(argv), data, 60), 60)
        if code != 0:
            raise OSError(f"cannot write {path} on {self._where}: {err.decode(errors='replace')}")

    def close(self) -> None:
        """Close the connection and stop the loop thread; calls in flight fail."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            me = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not me:
                    task.cancel()
            if self._conn is not None:
                self._conn.close()
                await asyncio.wait_for(self._conn.wait_closed(), 5)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- inside the loop thread -------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait for it, a little longer than it may itself take."""
        if self._closed:
            coro.close()
            raise SiteUnavailable(f"the SSH connection to {self._where} is closed")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # closed by another thread meanwhile
            coro.close()
            raise SiteUnavailable(f"the SSH connection to {self._where} is closed") from None
        try:
            return future.result(3 * self.connect_timeout + timeout + 5)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise SiteUnavailable(f"{self._where} did not answer in time") from None
        except concurrent.futures.CancelledError:
            raise SiteUnavailable(f"the SSH connection to {self._where} was closed") from None

    async def _connection(self) -> asyncssh.SSHClientConnection:
        """The open connection, opening it first when there is none or it dropped."""
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = None
            where = f"{self.host}:{self.port}"
            try:
                key = asyncssh.read_private_key(self.key_path)
            except (OSError, asyncssh.KeyImportError) as exc:
                raise SubmitRejected(
                    f"cannot use the private key {self.key_path} for {self._user} ({exc}): "
                    f"check your registered key (grappe accounts add SITE --user "
                    f"{self._user} --key PATH)"
                ) from None
            try:
                self._conn = await asyncssh.connect(
                    self.host,
                    self.port,
                    username=self._user,
                    client_keys=[key],
                    known_hosts=str(self.known_hosts),
                    agent_path=None,
                    config=[],
                    preferred_auth="publickey",
                    connect_timeout=self.connect_timeout,
                    keepalive_interval=30,
                    keepalive_count_max=3,
                )
            except asyncssh.HostKeyNotVerifiable:
                raise SiteUnavailable(
                    f"the host key of {where} does not match known_hosts ({self.known_hosts}): "
                    "stopped for safety; the operator must check the login node's key with "
                    "the centre before changing known_hosts"
                ) from None
            except asyncssh.PermissionDenied:
                raise SubmitRejected(
                    f"{where} refused the key {self.key_path} for user {self._user}: check your "
                    f"registered key (grappe accounts add SITE --user {self._user} --key PATH)"
                ) from None
            except asyncssh.DisconnectError as exc:
                raise SiteUnavailable(f"{where} closed the SSH connection: {exc.reason}") from None
            except (OSError, TimeoutError) as exc:
                if isinstance(exc, ConnectionRefusedError):
                    why = "connection refused"
                elif isinstance(exc, TimeoutError):
                    why = f"no answer within {self.connect_timeout:g}s"
                else:
                    why = exc.strerror or str(exc)
                raise SiteUnavailable(f"cannot reach {where} over SSH: {why}") from None
            return self._conn

    async def _exec(
        self, command: str, input: bytes | None, timeout: float
    ) -> tuple[int, bytes, bytes]:
        """Run ``command`` through the login shell: exit status, stdout, stderr."""
        async with self._sessions:
            for attempt in range(2):
                conn = await self._connection()
                try:
                    opening = conn.create_process(
                        command,
                        input=input or None,
                        stdin=asyncssh.PIPE if input else asyncssh.DEVNULL,
                        encoding=None,
                    )
                    process = await asyncio.wait_for(opening, self.connect_timeout)
                    break
                except asyncssh.ChannelOpenError as exc:
                    if not conn.is_closed():  # the host refused a session on a live connection
                        raise SiteUnavailable(f"{self._where}: {exc.reason}") from None
                    error: Exception = exc
                except (asyncssh.Error, OSError, TimeoutError) as exc:
                    error = exc
                # The command did not start: the connection was stale; try a fresh one once.
                self._forget(conn)
                if attempt:
                    raise SiteUnavailable(f"{self._where}: cannot start a command: {error}")
            try:
                done = await process.wait(timeout=timeout)
            except asyncssh.TimeoutError:
                with contextlib.suppress(asyncssh.Error, OSError):
                    process.terminate()  # where the host honours signal requests
                process.close()
                raise SiteUnavailable(
                    f"{command[:200]} did not finish within {timeout:.0f}s on {self._where}"
                ) from None
            except (asyncssh.Error, OSError) as exc:
                self._forget(conn)
                raise SiteUnavailable(f"lost the connection to {self._where}: {exc}") from None
            if done.returncode is None:  # neither exit status nor signal: the link broke
                self._forget(conn)
                raise SiteUnavailable(
                    f"lost the connection to {self._where} during {command[:200]}"
                )
            return done.returncode, bytes(done.stdout or b""), bytes(done.stderr or b"")

    def _forget(self, conn: asyncssh.SSHClientConnection) -> None:
        """Drop ``conn`` so that the next call reconnects."""
        if self._conn is conn:
            self._conn = None
        conn.abort()
