"""What operators do with models: deploy them, register or launch replicas, set project terms.

A replica is an OpenAI-compatible server: registered by URL (vLLM, TGI, llama.cpp
server, Ollama), or launched by Grappe as a long-running service job on a site,
which enters the rotation once its health check passes.
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grappe
from grappe.catalog import model_cards
from grappe.gateway import engine as eng
from grappe.services.auth import Principal
from grappe.services.errors import Conflict, Invalid, NotFound
from grappe.spec.jobspec import JobSpec
from grappe.store import gateway as store_gw
from grappe.store import project_repo

ENGINES = ("grappe", "vllm", "llama.cpp")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "[::1]", "ip6-localhost"}
SERVICE_RUNTIME = "30d"


def _replica_view(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "url": r.url,
        "upstream_model": r.upstream_model,
        "site": r.site,
        "jurisdiction": r.jurisdiction,
        "healthy": r.healthy,
        "checked_at": r.checked_at.isoformat() if r.checked_at else None,
        "last_error": r.last_error,
        "job_id": r.job_id,
    }


def list_deployments(gateway: Any) -> list[dict[str, Any]]:
    """Every deployment with its replicas, their health and their load as the router sees it."""
    out = []
    with gateway.store.session() as s:
        rows = {d.model: d for d in store_gw.deployments(s)}
        reps = store_gw.replicas(s)
    for model, d in sorted(gateway.deployments.items()):
        row = rows.get(model)
        live = {r.id: r for r in gateway.router.of(model)}
        replicas = []
        for r in reps:
            if row is not None and r.deployment_id == row.id:
                view = _replica_view(r)
                known = live.get(r.id)
                if known is not None:
                    view.update(
                        healthy=known.healthy,
                        outstanding=known.outstanding,
                        latency_ms=round(known.latency_s * 1000, 2),
                        served=known.served,
                        failed=known.failed,
                    )
                replicas.append(view)
        out.append(
            {
                "model": model,
                "engine": d.engine,
                "task": d.task,
                "path": d.path,
                "jurisdiction": gateway.local_jurisdiction if d.engine == "local" else None,
                "replicas": replicas,
            }
        )
    return out


def deploy(
    gateway: Any,
    actor: Principal,
    model: str,
    path: str | None = None,
    url: str | None = None,
    upstream_model: str | None = None,
    jurisdiction: str | None = None,
    task: str = "chat",
) -> dict[str, Any]:
    """Serve ``model`` in-process from ``path``, or add the replica at ``url`` (operators)."""
    actor.require_staff("deploying models")
    if not model or len(model) > 128 or any(c.isspace() for c in model):
        raise Invalid("model", model, "give a name without spaces, 128 characters at most")
    if task not in ("chat", "embedding"):
        raise Invalid("task", task, "use chat or embedding")
    if (path is None) == (url is None):
        raise Invalid("url", url, "give either a path (in-process engine) or a url (a replica)")
    if path is not None:
        if not (Path(path) / "config.json").is_file():
            raise Invalid(
                "path", path, "not a model directory (no config.json); save it with save_pretrained"
            )
        with gateway.store.session() as s:
            if store_gw.deployment(s, model) is not None:
                raise Conflict(f"model {model!r} is deployed already")
            store_gw.add_deployment(
                s,
                model=model,
                engine="local",
                path=str(Path(path).resolve()),
                task=task,
                created_by=actor.name,
            )
            project_repo.audit(s, actor.name, "model.deploy", model, path=path)
        gateway.reload()
        return next(d for d in list_deployments(gateway) if d["model"] == model)
    base = check_url(url or "", gateway.factory.settings)
    return add_replica(gateway, actor, model, base, upstream_model, jurisdiction, task)


def add_replica(
    gateway: Any,
    actor: Principal,
    model: str,
    url: str,
    upstream_model: str | None,
    jurisdiction: str | None,
    task: str = "chat",
    site: str | None = None,
    job_id: int | None = None,
) -> dict[str, Any]:
    if model == eng.EMBEDDING_MODEL:
        raise Conflict(f"model {model!r} is served in-process; pick another name")
    with gateway.store.session() as s:
        d = store_gw.deployment(s, model)
        if d is None:
            d = store_gw.add_deployment(
                s, model=model, engine="replicas", task=task, created_by=actor.name
            )
        elif d.engine != "replicas":
            raise Conflict(f"model {model!r} is served in-process; it takes no replicas")
        row = store_gw.add_replica(
            s,
            deployment_id=d.id,
            url=url,
            upstream_model=upstream_model,
            site=site,
            jurisdiction=(jurisdiction or gateway.local_jurisdiction).upper(),
            job_id=job_id,
        )
        project_repo.audit(s, actor.name, "model.replica.add", model, url=url, site=site)
        view = _replica_view(row)
    gateway.reload()
    return {"model": model, "replica": view}


def remove_replica(gateway: Any, actor: Principal, replica_id: int) -> dict[str, Any]:
    actor.require_staff("removing replicas")
    from grappe.store.tables import ModelReplicaRow

    with gateway.store.session() as s:
        row = s.get(ModelReplicaRow, replica_id)
        if row is None:
            raise NotFound(f"replica {replica_id} does not exist; see `grappe models deployments`")
        view = _replica_view(row)
        s.delete(row)
        project_repo.audit(s, actor.name, "model.replica.remove", str(replica_id), url=view["url"])
    gateway.reload()
    return view


def check_url(url: str, settings: Any) -> str:
    """An upstream's base URL (without ``/v1``); never the control plane itself."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url", url, "give the server's http(s) URL, e.g. http://10.0.0.5:8000/v1")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port == settings.port and _is_this_machine(parts.hostname, settings.host):
        raise Invalid(
            "url", url, "this is the factory's own address; give the model server's URL instead"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _addresses(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` resolves to here (127.1, 2130706433 and names included)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return set()
    found = set()
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        found.add(ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip)
    return found


def _is_this_machine(host: str, bound: str) -> bool:
    """Whether ``host`` reaches this machine: loopback, unspecified, its name or its addresses."""
    name = host.lower().rstrip(".")
    if name in LOOPBACK or name in (bound.lower(), socket.gethostname().lower()):
        return True
    found = _addresses(name)
    own = _addresses(bound) | _addresses(socket.gethostname())
    return any(ip.is_loopback or ip.is_unspecified or ip in own for ip in found)


def set_policy(
    gateway: Any, actor: Principal, project: str, tokens: int | None, jurisdiction: str | None
) -> dict[str, Any]:
    """A project's token budget and the jurisdiction its model requests stay in (operators)."""
    actor.require_staff("setting a project's model terms")
    if tokens is not None and tokens < 0:
        raise Invalid("tokens", tokens, "give a budget of zero or more tokens")
    with gateway.store.session() as s:
        p = project_repo.project_by_name(s, project)
        if p is None:
            raise NotFound(f"project {project!r} does not exist; see `grappe projects`")
        juris = jurisdiction.upper() if jurisdiction else None
        store_gw.set_policy(s, p.id, tokens, juris)
        used = store_gw.tokens_used(s, p.id)
        project_repo.audit(
            s, actor.name, "model.policy", project, tokens=tokens, jurisdiction=juris
        )
    gateway.forget_keys()
    gateway.ledger.forget(p.id)
    return {"project": project, "token_budget": tokens, "jurisdiction": juris, "tokens_used": used}


def catalog() -> list[dict[str, Any]]:
    return [dict(card) for card in model_cards()]


def serve_command(engine: str, model: str, path: str, port: int) -> str:
    """The shell line a service job runs: an OpenAI-compatible server on ``port``."""
    if engine == "grappe":
        argv = [
            sys.executable,
            "-m",
            "grappe.gateway.serve",
            "--model",
            model,
            "--path",
            path,
            "--port",
            str(port),
        ]
    elif engine == "vllm":
        argv = [
            "vllm",
            "serve",
            path,
            "--served-model-name",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    else:
        argv = [
            "llama-server",
            "-m",
            path,
            "--alias",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    return "exec " + shlex.join(argv)


def service_spec(
    model: str, site: str, project: str, command: str, cpus: int, index: int
) -> JobSpec:
    name = "serve-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in model)[:48]
    # The server runs the same Grappe as the factory that launched it.
    package_root = str(Path(grappe.__file__).resolve().parents[1])
    return JobSpec.model_validate(
        {
            "name": f"{name}-{index}",
            "project": project,
            "resources": {"cpus": cpus},
            "env": {"PYTHONPATH": package_root},
            "run": command,
            "max_runtime": SERVICE_RUNTIME,
            "constraints": {"sites": {"allow": [site]}},
        }
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(
    gateway: Any,
    actor: Principal,
    model: str,
    site: str,
    replicas: int = 1,
    path: str | None = None,
    engine: str = "grappe",
    project: str | None = None,
    cpus: int = 1,
    task: str = "chat",
) -> dict[str, Any]:
    """Launch ``replicas`` service jobs on ``site``, each an OpenAI-compatible server of ``model``.

    Each replica is registered at once and enters the rotation when its health check passes.
    """
    from grappe.services.jobs import resolve_project, submit_job

    actor.require_staff("launching model servers")
    where = gateway.factory.sites.get(site)
    if where is None:
        known = ", ".join(sorted(gateway.factory.sites))
        raise Invalid("site", site, f"no such site; use one of {known}")
    if where.backend != "local":
        raise Invalid(
            "site",
            site,
            f"replicas are launched on sites run by the local backend ({site} is run by "
            f"{where.backend}); start the server there and register it with "
            "`grappe models deploy MODEL --url URL`",
        )
    if engine not in ENGINES:
        raise Invalid("engine", engine, f"use one of {', '.join(ENGINES)}")
    if not 1 <= replicas <= 16:
        raise Invalid("replicas", replicas, "give 1 to 16 replicas")
    if engine == "grappe" and not (path or task == "embedding"):
        raise Invalid("path", path, "give the model's directory (saved with save_pretrained)")
    if engine == "grappe" and path and not (Path(path) / "config.json").is_file():
        raise Invalid(
            "path", path, "not a model directory (no config.json); save it with save_pretrained"
        )
    if engine != "grappe" and not path:
        raise Invalid("path", path, f"give the weights {engine} loads (a directory or a GGUF file)")
    with gateway.store.session() as s:
        known_project = project is not None and project_repo.project_by_name(s, project) is not None
    charged = resolve_project(actor, project, known_project)
    launched = []
    for index in range(replicas):
        port = free_port()
        command = serve_command(engine, model, str(Path(path).resolve()) if path else "", port)
        if engine == "grappe" and not path:
            command = command.replace(" --path ''", "") + " --task embedding"
        spec = service_spec(model, site, charged, command, cpus, index)
        job, _ = submit_job(gateway.factory, actor, spec)
        added = add_replica(
            gateway,
            actor,
            model,
            f"http://127.0.0.1:{port}",
            None,
            where.jurisdiction,
            task,
            site=site,
            job_id=job["id"],
        )
        launched.append({**added["replica"], "job_id": job["id"]})
    return {"model": model, "site": site, "replicas": launched}
