"""The CLI's HTTP client: one place that knows the URL, the token and how errors look."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    """A failure to show the user without a traceback; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.transient = transient  # the factory may answer again soon (a restart)


def default_token() -> str | None:
    """``GRAPPE_TOKEN``, else the admin token that ``grappe up`` wrote on this machine."""
    token = os.environ.get("GRAPPE_TOKEN")
    if token:
        return token.strip()
    home = Path(os.environ.get("GRAPPE_HOME") or Path.home() / ".grappe")
    path = home / "admin.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


HEADERS = {"invalid": "the request is not valid", "unplaceable": "no site can run this job"}


def _error_message(resp: httpx.Response) -> str:
    """The API's error body as lines a person reads: the message, then each problem."""
    try:
        err = resp.json().get("error", {})
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:500]}"
    problems = err.get("problems") or []
    if not problems:
        return err.get("message") or f"HTTP {resp.status_code}"
    lines = [HEADERS.get(err.get("code"), err.get("message") or f"HTTP {resp.status_code}")]
    for p in problems:
        value = p.get("value")
        shown = "" if value in (None, "") else f" (got {value!r})"
        lines.append(f"  - {p.get('field') or '(document)'}{shown}: {p.get('message')}")
    return "\n".join(lines)


class Client:
    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30
    ) -> None:
        self.url = (url or os.environ.get("GRAPPE_URL") or DEFAULT_URL).rstrip("/")
        self.token = token or default_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, retry_s: float = 0, **kwargs: Any) -> Any:
        """One API call; with ``retry_s``, connection failures are retried that long."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                return self._request(method, path, **kwargs)
            except CliError as exc:
                if not exc.transient or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            raise CliError(
                f"cannot reach the factory at {self.url}; start it with `make up` "
                "(or `grappe up`), or set GRAPPE_URL",
                transient=True,
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"the factory at {self.url} did not answer in time") from None
        if resp.status_code == 401:
            raise CliError(
                _error_message(resp) + "\nset GRAPPE_TOKEN, or run on the factory's machine "
                "where $GRAPPE_HOME/admin.token is read",
                2,
            )
        if 400 <= resp.status_code < 500:
            raise CliError(_error_message(resp), 2)
        if resp.status_code >= 500:
            raise CliError(f"the factory failed (HTTP {resp.status_code}): {resp.text[:500]}")
        return resp.json()

    def get(self, path: str, retry_s: float = 0, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, retry_s=retry_s, params=query)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    def stream_logs(
        self, job_id: int, follow: bool, offset: int = 0, reconnect_s: float = 120
    ) -> Iterator[bytes]:
        """The job's output; a followed stream resumes where it was if the factory restarts."""
        attempt: int | None = None
        deadline = None
        while True:
            params: dict[str, Any] = {"offset": offset, "follow": str(follow).lower()}
            if attempt is not None:
                params["attempt"] = attempt
            try:
                with self.http.stream(
                    "GET", f"/jobs/{job_id}/logs", params=params, timeout=None
                ) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise CliError(_error_message(resp), 2 if resp.status_code < 500 else 1)
                    if attempt is None:
                        # A job not started yet (attempt 0) will stream its first attempt.
                        attempt = max(int(resp.headers.get("X-Job-Attempt", "0")), 1)
                    deadline = None
                    for chunk in resp.iter_bytes():
                        marks = list(_MARKER.finditer(chunk))
                        if marks:
                            attempt = int(marks[-1].group(1))
                            offset = len(chunk) - marks[-1].end()
                        else:
                            offset += len(chunk)
                        yield chunk
                return
            except httpx.TransportError:
                if not follow:
                    raise CliError(f"cannot reach the factory at {self.url}") from None
                # The factory restarts (or the network blinked): resume from where we were.
                deadline = deadline or time.monotonic() + reconnect_s
                if time.monotonic() > deadline:
                    raise CliError(
                        f"lost the factory at {self.url} for {reconnect_s:.0f}s; "
                        f"`grappe logs -f {job_id}` resumes"
                    ) from None
                time.sleep(1.0)


_MARKER = re.compile(rb"\n--- grappe: attempt (\d+) ---\n")
