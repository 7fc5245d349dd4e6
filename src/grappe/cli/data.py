"""``grappe data``: find datasets, ask for access, upload and download files; operators decide."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from grappe.cli.client import Client, CliError, _error_message
from grappe.cli.render import JsonOpt, guard, out, print_json, table
from grappe.domain.datasets import dataset_id_problem, file_name_problem

data_app = typer.Typer(
    help="Datasets: the catalog, access requests and grants, files.", no_args_is_help=True
)

IdArg = Annotated[str, typer.Argument(help="The dataset id, sector/name.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; the project reads it.")]
CHUNK = 1 << 20


def _check_id(dataset: str) -> str:
    problem = dataset_id_problem(dataset)
    if problem:
        raise CliError(f"dataset (got {dataset!r}): {problem}", 2)
    return dataset


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _show_list(data: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    rows = [
        [
            d["id"],
            d["sensitivity"],
            d["latest_version"] or "-",
            _size(d["size"]),
            d["licence"],
            d["title"],
        ]
        for d in data
    ]
    table(None, ["DATASET", "SENSITIVITY", "VERSION", "SIZE", "LICENCE", "TITLE"], rows)


@data_app.command("ls")
def ls(
    sector: Annotated[str | None, typer.Option(help="Only this sector (health, energy…).")] = None,
    search: Annotated[str | None, typer.Option(help="Words in the id, title or text.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The catalog: every dataset, its sensitivity, latest version, size and licence."""
    guard(lambda: _show_list(Client().get("/datasets", sector=sector, search=search), as_json))


def _show_one(d: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(d)
        return
    out.print(f"[bold]{d['id']}[/]  {d['title']}", highlight=False)
    for key in ("sensitivity", "publisher", "licence", "source"):
        out.print(f"{key}: {d[key] or '-'}", markup=False, highlight=False)
    out.print(f"copies at: {', '.join(d['residency']) or '-'}", markup=False)
    if d["allowed_sites"]:
        out.print(f"allowed sites: {', '.join(d['allowed_sites'])}", markup=False)
    access = d.get("access") or {}
    out.print(f"your access: {access.get('why', '-')}", markup=False, highlight=False)
    if d["description"]:
        out.print(d["description"], markup=False, highlight=False)
    _show_versions(d.get("versions") or [], False)


@data_app.command("show")
def show(dataset: IdArg, as_json: JsonOpt = False) -> None:
    """One dataset: its rules, your access, its versions and files with SHA-256."""
    guard(lambda: _show_one(Client().get(f"/datasets/{_check_id(dataset)}"), as_json))


def _show_versions(versions: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(versions)
        return
    rows = [
        [
            v["version"],
            f["name"],
            _size(f["size"]),
            f["sha256"],
            v["created_at"][:19].replace("T", " "),
        ]
        for v in versions
        for f in v["files"]
    ]
    table(None, ["VERSION", "FILE", "SIZE", "SHA256", "ADDED"], rows)


@data_app.command("versions")
def versions(dataset: IdArg, as_json: JsonOpt = False) -> None:
    """Every version of a dataset and its files."""
    guard(lambda: _show_versions(Client().get(f"/datasets/{_check_id(dataset)}/versions"), as_json))


@data_app.command("add")
def add(
    dataset: IdArg,
    title: Annotated[str, typer.Option(help="A short title.")],
    licence: Annotated[str, typer.Option(help="Its licence, e.g. CC-BY-4.0.")],
    sensitivity: Annotated[str, typer.Option(help="open, restricted or health.")] = "open",
    description: Annotated[str, typer.Option(help="What it holds.")] = "",
    publisher: Annotated[str, typer.Option(help="Who publishes it.")] = "",
    source: Annotated[str, typer.Option(help="Where it comes from.")] = "",
    residency: Annotated[
        list[str] | None, typer.Option("--copy-at", help="A site holding a copy (repeat).")
    ] = None,
    allowed: Annotated[
        list[str] | None,
        typer.Option("--allow-site", help="Restricted data: a site it may go to (repeat)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a dataset to the catalog (operators); then `grappe data upload` its files."""
    body = {
        "id": dataset,
        "title": title,
        "licence": licence,
        "sensitivity": sensitivity,
        "description": description,
        "publisher": publisher,
        "source": source,
        "residency": residency or [],
        "allowed_sites": allowed or [],
    }
    guard(lambda: _show_list([Client().post("/datasets", body)], as_json))


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _upload(dataset: str, files: list[Path], version: int | None) -> list[dict[str, Any]]:
    _check_id(dataset)
    for path in files:
        problem = file_name_problem(path.name)
        if problem:
            raise CliError(f"{path}: file name {path.name!r}: {problem}", 2)
        if not path.is_file() or not os.access(path, os.R_OK):
            why = "not a file" if path.exists() and not path.is_file() else "cannot read it"
            raise CliError(f"{path}: {why}; give a readable file", 2)
    client = Client(timeout=600)
    if version is None:
        latest = client.get(f"/datasets/{dataset}")["latest_version"] or 0
        version = latest + 1
    sent = []
    for path in files:
        url = f"/datasets/{dataset}/versions/{version}/files/{path.name}"
        sent.append(client.request("PUT", url, content=_read_chunks(path)))
    return sent


@data_app.command("upload")
def upload(
    dataset: IdArg,
    files: Annotated[list[Path], typer.Argument(help="Files to store (their names are kept).")],
    version: Annotated[
        int | None, typer.Option(help="Add to this version (default: a new version).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store files as a new version of a dataset (operators); prints each SHA-256."""

    def run() -> None:
        sent = _upload(dataset, files, version)
        if as_json:
            print_json(sent)
            return
        table(
            None,
            ["DATASET", "VERSION", "FILE", "SIZE", "SHA256"],
            [[s["dataset"], s["version"], s["name"], s["size"], s["sha256"]] for s in sent],
        )

    guard(run)


def _download(
    dataset: str, name: str, version: int | None, project: str | None, target: Path
) -> dict[str, Any]:
    _check_id(dataset)
    problem = file_name_problem(name)
    if problem:
        raise CliError(f"file (got {name!r}): {problem}", 2)
    client = Client(timeout=600)
    params = {k: v for k, v in {"version": version, "project": project}.items() if v is not None}
    part = target.with_name(f".{target.name}.part")
    digest = hashlib.sha256()
    try:
        with client.http.stream("GET", f"/datasets/{dataset}/files/{name}", params=params) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise CliError(_error_message(resp), 2 if resp.status_code < 500 else 1)
            with open(part, "wb") as f:
                for chunk in resp.iter_bytes():
                    digest.update(chunk)
                    f.write(chunk)
            expected = resp.headers.get("X-SHA256", "")
            got_version = resp.headers.get("X-Dataset-Version")
    except httpx.TransportError:
        part.unlink(missing_ok=True)
        raise CliError(f"cannot reach the factory at {client.url}") from None
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise CliError(f"{target}: cannot write it ({exc.strerror})", 2) from None
    if digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise CliError(f"{name}: the download's SHA-256 differs from the catalog's; try again")
    os.replace(part, target)
    return {"dataset": dataset, "version": got_version, "file": str(target), "sha256": expected}


@data_app.command("download")
def download(
    dataset: IdArg,
    name: Annotated[str, typer.Argument(help="The file's name in the version.")],
    version: Annotated[int | None, typer.Option(help="A version (default: latest).")] = None,
    project: Annotated[
        str | None, typer.Option(help="The project whose grant you read it under.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write it.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch a file, checking its SHA-256; restricted data needs your project's grant."""

    def run() -> None:
        got = _download(dataset, name, version, project, output or Path(name))
        if as_json:
            print_json(got)
        else:
            out.print(f"{got['file']}  sha256 {got['sha256']}  (version {got['version']})")

    guard(run)


def _show_requests(data: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    rows = [
        [
            r["id"],
            r["dataset"],
            r["project"],
            r["requester"],
            r["state"],
            (r["expires_at"] or "")[:19],
            r["reason"] or r["purpose"],
        ]
        for r in data
    ]
    table(None, ["REQUEST", "DATASET", "PROJECT", "BY", "STATE", "EXPIRES", "PURPOSE/REASON"], rows)


@data_app.command("request")
def request(
    dataset: IdArg,
    project: Annotated[str, typer.Option(help="The project that will read it.")],
    purpose: Annotated[str, typer.Option(help="What the data is for, in a sentence.")],
    as_json: JsonOpt = False,
) -> None:
    """Ask for access to restricted or health data; an operator grants or refuses it."""
    body = {"project": project, "purpose": purpose}
    guard(
        lambda: _show_requests(
            [Client().post(f"/datasets/{_check_id(dataset)}/requests", body)], as_json
        )
    )


@data_app.command("requests")
def requests(
    state: Annotated[str | None, typer.Option(help="pending, granted, refused or revoked.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Access requests: yours, or all of them for operators (`--state pending` to decide)."""
    guard(
        lambda: _show_requests(
            Client().get("/data/requests", state=state, dataset=dataset), as_json
        )
    )


RequestArg = Annotated[int, typer.Argument(help="The request's number (`grappe data requests`).")]


@data_app.command("grant")
def grant(
    request_id: RequestArg,
    expires: Annotated[
        str | None, typer.Option(help="Until when: a duration (30d) or a date (2027-06-30).")
    ] = None,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Grant a pending request (operators)."""
    body = {"expires": expires, "reason": reason}
    guard(
        lambda: _show_requests([Client().post(f"/data/requests/{request_id}/grant", body)], as_json)
    )


@data_app.command("refuse")
def refuse(request_id: RequestArg, reason: ReasonOpt, as_json: JsonOpt = False) -> None:
    """Refuse a pending request, saying why (operators)."""
    body = {"reason": reason}
    guard(
        lambda: _show_requests(
            [Client().post(f"/data/requests/{request_id}/refuse", body)], as_json
        )
    )


@data_app.command("revoke")
def revoke(request_id: RequestArg, reason: ReasonOpt, as_json: JsonOpt = False) -> None:
    """Withdraw a grant: the project's next reads and waiting jobs are refused (operators)."""
    body = {"reason": reason}
    guard(
        lambda: _show_requests(
            [Client().post(f"/data/requests/{request_id}/revoke", body)], as_json
        )
    )
