"""The CLI's HTTP client: one place that knows the URL, the token and how errors look."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    """A failure to show the user without a traceback; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise CliError(
                f"cannot reach the factory at {self.url}; start it with `make up` "
                "(or `grappe up`), or set GRAPPE_URL"
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

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    def stream_logs(self, job_id: int, follow: bool, offset: int = 0) -> Iterator[bytes]:
        params = {"offset": offset, "follow": str(follow).lower()}
        try:
            with self.http.stream(
                "GET", f"/jobs/{job_id}/logs", params=params, timeout=None
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise CliError(_error_message(resp), 2 if resp.status_code < 500 else 1)
                yield from resp.iter_bytes()
        except httpx.ConnectError:
            raise CliError(f"cannot reach the factory at {self.url}") from None
