"""``grappe models``, ``grappe keys`` and ``grappe serve``: open models as a service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from grappe.cli.client import Client
from grappe.cli.render import JsonOpt, guard, out, print_json, table

models_app = typer.Typer(
    help="Open-weight models: the catalog, what the gateway serves, and project terms.",
    invoke_without_command=True,
)
keys_app = typer.Typer(help="API keys for the OpenAI-compatible /v1 API.", no_args_is_help=True)


@models_app.callback()
def catalog(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The model catalog (with no sub-command): publisher, licence, size, context, jurisdiction."""
    if ctx.invoked_subcommand is not None:
        return

    def go() -> None:
        data = Client().get("/models")
        if as_json:
            print_json(data)
            return
        rows = [
            [
                m["id"],
                m["publisher"],
                m["licence"],
                f"{m['parameters_b']:g}B"
                + (
                    f" ({m['active_parameters_b']:g}B active)"
                    if m.get("active_parameters_b")
                    else ""
                ),
                m["context_tokens"],
                m["jurisdiction"],
                m["task"],
                ",".join(m["languages"][:6]) + ("…" if len(m["languages"]) > 6 else ""),
            ]
            for m in data
        ]
        cols = ["MODEL", "PUBLISHER", "LICENCE", "PARAMS", "CONTEXT", "JURIS.", "TASK", "LANGUAGES"]
        table(None, cols, rows)

    guard(go)


@models_app.command("deployments")
def deployments(as_json: JsonOpt = False) -> None:
    """What the gateway serves now: models, engines, replicas and their health."""

    def go() -> None:
        data = Client().get("/models/deployments")
        if as_json:
            print_json(data)
            return
        rows: list[list[Any]] = []
        for d in data:
            if not d["replicas"]:
                rows.append(
                    [
                        d["model"],
                        d["engine"],
                        d["task"],
                        "",
                        d["path"] or "in-process",
                        d["jurisdiction"],
                        "up",
                        "",
                    ]
                )
            for r in d["replicas"]:
                rows.append(
                    [
                        d["model"],
                        d["engine"],
                        d["task"],
                        r["id"],
                        r["url"] + (f" (job {r['job_id']})" if r["job_id"] else ""),
                        r["jurisdiction"],
                        "up" if r["healthy"] else "down",
                        r.get("served", ""),
                    ]
                )
        table(
            None,
            ["MODEL", "ENGINE", "TASK", "REPLICA", "WHERE", "JURIS.", "HEALTH", "SERVED"],
            rows,
        )

    guard(go)


@models_app.command("deploy")
def deploy(
    model: Annotated[str, typer.Argument(help="The name clients ask for.")],
    url: Annotated[
        str | None, typer.Option(help="An OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama).")
    ] = None,
    path: Annotated[
        Path | None, typer.Option(help="A model directory served in-process (save_pretrained).")
    ] = None,
    upstream_model: Annotated[
        str | None, typer.Option(help="The model's name at the upstream, if it differs.")
    ] = None,
    jurisdiction: Annotated[
        str | None, typer.Option(help="Where the upstream runs (EU, FR …); else this factory's.")
    ] = None,
    task: Annotated[str, typer.Option(help="chat or embedding.")] = "chat",
    as_json: JsonOpt = False,
) -> None:
    """Serve a model in-process from a directory, or add an upstream replica by URL (operators)."""

    def go() -> None:
        body = {
            "model": model,
            "url": url,
            "path": str(path.resolve()) if path else None,
            "upstream_model": upstream_model,
            "jurisdiction": jurisdiction,
            "task": task,
        }
        data = Client().post("/models/deployments", body)
        if as_json:
            print_json(data)
        elif "replica" in data:
            r = data["replica"]
            out.print(
                f"model {model}: replica {r['id']} at {r['url']} ({r['jurisdiction']}); "
                "it serves once its health check passes",
                markup=False,
            )
        else:
            out.print(f"model {model}: served in-process from {data['path']}", markup=False)

    guard(go)


@models_app.command("remove-replica")
def remove_replica(replica: Annotated[int, typer.Argument(help="The replica's id.")]) -> None:
    """Take a replica out of its deployment (operators)."""
    guard(
        lambda: out.print(
            f"replica {Client().request('DELETE', f'/models/replicas/{replica}')['id']} removed"
        )
    )


@models_app.command("policy")
def policy(
    project: Annotated[str, typer.Argument(help="The project.")],
    tokens: Annotated[int | None, typer.Option(help="Its token budget; none for no cap.")] = None,
    jurisdiction: Annotated[
        str | None, typer.Option(help="Serve its requests only in this jurisdiction (EU, FR …).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a project's token budget and the jurisdiction its model requests stay in (operators)."""

    def go() -> None:
        data = Client().request(
            "PUT",
            f"/models/policies/{project}",
            json={"tokens": tokens, "jurisdiction": jurisdiction},
        )
        if as_json:
            print_json(data)
            return
        budget = "no cap" if data["token_budget"] is None else f"{data['token_budget']} tokens"
        where = data["jurisdiction"] or "anywhere"
        out.print(
            f"project {project}: {budget} ({data['tokens_used']} used), served {where}",
            markup=False,
        )

    guard(go)


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option("--project", "-p", help="The project charged.")],
    name: Annotated[str | None, typer.Option(help="A name to tell keys apart.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute at most.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute at most.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key for a project and print it (shown once)."""

    def go() -> None:
        data = Client().post("/keys", {"project": project, "name": name, "rpm": rpm, "tpm": tpm})
        if as_json:
            print_json(data)
        else:
            out.print(data["key"], markup=False)

    guard(go)


@keys_app.command("ls")
def keys_ls(as_json: JsonOpt = False) -> None:
    """Keys of your projects (never the secrets)."""

    def go() -> None:
        data = Client().get("/keys")
        if as_json:
            print_json(data)
            return
        rows = [
            [
                k["id"],
                k["name"],
                k["project"],
                k["prefix"] + "…",
                k["rpm"] or "-",
                k["tpm"] or "-",
                k["created_by"],
                "revoked" if k["revoked_at"] else "active",
            ]
            for k in data
        ]
        table(None, ["ID", "NAME", "PROJECT", "KEY", "RPM", "TPM", "BY", "STATE"], rows)

    guard(go)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (grappe keys ls).")],
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    guard(
        lambda: out.print(
            f"key {Client().request('DELETE', f'/keys/{key_id}')['name']} revoked", markup=False
        )
    )


def serve(
    model: Annotated[str, typer.Argument(help="The name clients ask for.")],
    site: Annotated[str, typer.Option(help="The site that runs the replicas (local backend).")],
    replicas: Annotated[int, typer.Option(help="How many servers to launch.")] = 1,
    path: Annotated[Path | None, typer.Option(help="The model's weights (a directory).")] = None,
    engine: Annotated[str, typer.Option(help="grappe, vllm or llama.cpp.")] = "grappe",
    project: Annotated[
        str | None, typer.Option(help="The project charged for the service jobs.")
    ] = None,
    cpus: Annotated[int, typer.Option(help="CPUs of each replica.")] = 1,
    task: Annotated[str, typer.Option(help="chat or embedding.")] = "chat",
    as_json: JsonOpt = False,
) -> None:
    """Launch replicas of a model as service jobs on a site; each serves once healthy."""

    def go() -> None:
        body = {
            "model": model,
            "site": site,
            "replicas": replicas,
            "path": str(path.resolve()) if path else None,
            "engine": engine,
            "project": project,
            "cpus": cpus,
            "task": task,
        }
        data = Client().post("/models/serve", body)
        if as_json:
            print_json(data)
            return
        for r in data["replicas"]:
            out.print(
                f"replica {r['id']} of {model}: job {r['job_id']} on {site}, {r['url']}",
                markup=False,
            )

    guard(go)
