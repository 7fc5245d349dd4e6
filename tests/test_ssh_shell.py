"""SshShell against a real OpenSSH server on 127.0.0.1 (deploy/dev/ssh), no mocks."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from grappe.backends.base import SiteUnavailable, SubmitRejected
from grappe.backends.ssh import SshShell
from tests.conftest import free_port
from tests.fixtures_ssh import Sshd

pytestmark = pytest.mark.integration


def shell_for(sshd: Sshd, name: str, **kwargs: object) -> SshShell:
    user, key = sshd.user(name)
    return SshShell(sshd.host, sshd.port, user, key, sshd.known_hosts, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def alice(sshd: Sshd) -> Iterator[SshShell]:
    shell = shell_for(sshd, "alice")
    yield shell
    shell.close()


@pytest.fixture
def scratch(alice: SshShell) -> Iterator[str]:
    """A directory under alice's home, removed afterwards."""
    name = f"grappe-test-{uuid.uuid4().hex[:8]}"
    yield name
    alice.run(["rm", "-rf", "--", name])


def test_each_member_runs_as_their_own_account(sshd: Sshd, alice: SshShell) -> None:
    bob = shell_for(sshd, "bob")
    try:
        assert alice.user == "grappe-t-alice"
        assert alice.run(["id", "-un"]).stdout.strip() == "grappe-t-alice"
        assert bob.run(["id", "-un"]).stdout.strip() == "grappe-t-bob"
    finally:
        bob.close()


def test_arguments_arrive_literally(alice: SshShell) -> None:
    marker = Path(f"/tmp/grappe-pwned-{uuid.uuid4().hex[:8]}")
    args = [
        "a b",
        "it's",
        'say "hi"',
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"; touch {marker}",
        f"&& touch {marker} #",
        "$HOME",
        "~/x",
        "*",
        "back\\slash",
        "",
        "two\nlines",
    ]
    done = alice.run(["printf", "[%s]", *args])
    assert done.ok, done.message()
    assert done.stdout == "".join(f"[{a}]" for a in args)
    assert not marker.exists()


def test_stdin_exit_codes_and_stderr(alice: SshShell) -> None:
    data = bytes(range(256)) * 10
    done = alice.run(["sh", "-c", "wc -c"], input=data)
    assert done.stdout.strip() == str(len(data))
    assert alice.run(["cat"], timeout=10).stdout == ""  # no input: stdin is at its end
    failed = alice.run(["sh", "-c", "echo out; echo oops >&2; exit 3"])
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "oops\n")
    assert not failed.ok and failed.message() == "oops"
    missing = alice.run(["no-such-command-grappe"])
    assert missing.returncode == 127


def test_command_timeout_is_site_unavailable(alice: SshShell) -> None:
    start = time.monotonic()
    with pytest.raises(SiteUnavailable, match="did not finish within"):
        alice.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - start < 5
    assert alice.run(["true"]).ok  # the connection is still usable


def test_put_and_read(alice: SshShell, scratch: str) -> None:
    path = f"~/{scratch}/deep/dir/file.bin"
    data = bytes(range(256)) * 4
    alice.put(data, path, mode=0o640)
    assert alice.read(path) == data
    assert alice.read(path, offset=10, limit=5) == data[10:15]
    assert alice.read(path, offset=len(data) + 10) == b""
    assert alice.read(path, limit=0) == b""
    mode = alice.run(["stat", "-c", "%a", f"{scratch}/deep/dir/file.bin"]).stdout.strip()
    assert mode == "640"
    alice.put(b"", f"~/{scratch}/empty")
    assert alice.read(f"~/{scratch}/empty") == b""
    assert alice.run(["test", "-f", f"{scratch}/empty"]).ok
    alice.put(b"second", path)  # replaced whole, nothing left behind
    assert alice.read(path) == b"second"
    assert alice.run(["ls", "-A", f"{scratch}/deep/dir"]).stdout.split() == ["file.bin"]
    home = alice.run(["sh", "-c", 'printf %s "$HOME"']).stdout
    assert alice.read(f"{home}/{scratch}/deep/dir/file.bin", offset=3) == b"ond"
    odd = f"~/{scratch}/a dir/it's $(x) ; *.txt"
    alice.put(b"odd", odd)
    assert alice.read(odd) == b"odd"
    assert alice.read(f"~/{scratch}/nope.txt") == b""
    assert alice.read("/nonexistent-grappe/x") == b""
    big = b"x" * (3 << 20)
    alice.put(big, f"~/{scratch}/big")
    assert len(alice.read(f"~/{scratch}/big")) == 1 << 20


def test_wrong_host_key_is_a_security_stop(sshd: Sshd, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {other}\n")
    user, key = sshd.user("alice")
    shell = SshShell(sshd.host, sshd.port, user, key, known)
    try:
        with pytest.raises(SiteUnavailable, match=f"host key of {sshd.host}:{sshd.port}"):
            shell.run(["true"])
    finally:
        shell.close()


def test_missing_known_hosts_is_a_setting_error(sshd: Sshd, tmp_path: Path) -> None:
    user, key = sshd.user("alice")
    with pytest.raises(ValueError, match="known_hosts"):
        SshShell(sshd.host, sshd.port, user, key, tmp_path / "absent")


def test_closed_port_fails_fast(sshd: Sshd, tmp_path: Path) -> None:
    user, key = sshd.user("alice")
    port = free_port()
    shell = SshShell(sshd.host, port, user, key, sshd.known_hosts, connect_timeout=3)
    try:
        start = time.monotonic()
        with pytest.raises(SiteUnavailable, match=f"{sshd.host}:{port}.*connection refused"):
            shell.run(["true"])
        assert time.monotonic() - start < 3 + 2
    finally:
        shell.close()


def test_silent_host_times_out(sshd: Sshd) -> None:
    """A port that accepts but never speaks SSH (a hung login node)."""
    user, key = sshd.user("alice")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        shell = SshShell("127.0.0.1", port, user, key, sshd.known_hosts, connect_timeout=1)
        try:
            start = time.monotonic()
            with pytest.raises(SiteUnavailable, match=f"127.0.0.1:{port}.*no answer within 1s"):
                shell.run(["true"])
            assert time.monotonic() - start < 1 + 2
        finally:
            shell.close()


def test_wrong_key_is_rejected_for_the_member(sshd: Sshd, tmp_path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stray")], check=True
    )
    user, _ = sshd.user("alice")
    shell = SshShell(sshd.host, sshd.port, user, tmp_path / "stray", sshd.known_hosts)
    try:
        with pytest.raises(SubmitRejected, match="registered key"):
            shell.run(["true"])
    finally:
        shell.close()
    gone = SshShell(sshd.host, sshd.port, user, tmp_path / "absent-key", sshd.known_hosts)
    try:
        with pytest.raises(SubmitRejected, match="key"):
            gone.run(["true"])
    finally:
        gone.close()


def test_reconnects_after_the_connection_drops(sshd: Sshd, alice: SshShell) -> None:
    assert alice.run(["true"]).ok
    sshd.drop_connections()
    time.sleep(0.2)
    assert alice.run(["id", "-un"]).stdout.strip() == "grappe-t-alice"
    # Dropped while a command runs: that command fails as unavailable, the next one works.
    errors: list[BaseException] = []

    def sleeper() -> None:
        try:
            alice.run(["sleep", "8"])
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    worker = threading.Thread(target=sleeper)
    worker.start()
    time.sleep(0.5)
    sshd.drop_connections()
    worker.join(10)
    assert not worker.is_alive() and len(errors) == 1
    assert isinstance(errors[0], SiteUnavailable), errors
    assert "lost the connection" in str(errors[0])
    assert alice.run(["echo", "back"]).stdout == "back\n"


def logins(sshd: Sshd, user: str) -> int:
    """How many SSH connections ``user`` has opened on the dev sshd so far."""
    return (sshd.state / "sshd.log").read_text().count(f"Accepted publickey for {user} ")


def test_concurrent_runs_from_threads(sshd: Sshd, alice: SshShell) -> None:
    before = logins(sshd, alice.user)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = alice.run(["sh", "-c", 'sleep 0.5; echo "$1"', "sh", str(i)]).stdout
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert results == {i: f"{i}\n" for i in range(8)}
    assert time.monotonic() - start < 3.5  # they ran side by side...
    assert logins(sshd, alice.user) == before + 1  # ...on one connection


def test_close_stops_the_loop_thread(sshd: Sshd) -> None:
    shell = shell_for(sshd, "alice")
    assert shell.run(["true"]).ok
    shell.close()
    assert not shell._thread.is_alive()
    with pytest.raises(SiteUnavailable):
        shell.run(["true"])
    shell.close()  # twice is fine
