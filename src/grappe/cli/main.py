"""``grappe``: the command line, a thin client of the API (``GRAPPE_URL``, ``GRAPPE_TOKEN``)."""

from __future__ import annotations

import io
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from grappe.cli import admin
from grappe.cli.client import Client, CliError
from grappe.cli.data import data_app
from grappe.cli.models import keys_app, models_app
from grappe.cli.models import serve as serve_model
from grappe.cli.quantum import quantum_app
from grappe.cli.render import (
    TERMINAL,
    JsonOpt,
    err,
    guard,
    out,
    print_json,
    problem_text,
    state_text,
    table,
)
from grappe.cli.sim import sim
from grappe.domain.resources import format_duration
from grappe.spec.errors import SpecError, load_yaml, validate
from grappe.spec.jobspec import JobSpec

app = typer.Typer(
    help="Grappe: one front door to sovereign compute. Run jobs where they fit best.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(admin.projects_app, name="projects")
app.add_typer(admin.users_app, name="users")
app.add_typer(admin.accounts_app, name="accounts")
app.add_typer(data_app, name="data")
app.add_typer(quantum_app, name="quantum")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")


def _load_spec(path: Path, project: str | None) -> tuple[JobSpec, dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"{path}: cannot read the job spec ({exc.strerror})", 2) from None
    try:
        data = load_yaml(text, source=str(path))
        if isinstance(data, dict) and project:
            data["project"] = project
        spec = validate(JobSpec, data, source=str(path))
    except SpecError as exc:
        raise CliError(problem_text(f"{path}: the job spec is not valid", exc), 2) from None
    return spec, data


def _pack(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted(directory.rglob("*")):
            if item.is_symlink() or not (item.is_file() or item.is_dir()):
                continue
            tar.add(item, arcname=str(item.relative_to(directory)), recursive=False)
    return buf.getvalue()


def _prepare(client: Client, spec_path: Path, spec: JobSpec, data: dict[str, Any]) -> dict:
    if spec.workdir and not spec.workdir.startswith("upload:"):
        directory = (spec_path.parent / spec.workdir).resolve()
        if not directory.is_dir():
            raise CliError(
                f"{spec_path}: workdir (got {spec.workdir!r}) is not a directory next to the spec; "
                "fix the path (relative to the spec file)",
                2,
            )
        sent = client.request(
            "POST",
            "/uploads",
            content=_pack(directory),
            headers={"Content-Type": "application/gzip"},
        )
        data["workdir"] = sent["workdir"]
    return data


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Start the factory in the foreground (SQLite under $GRAPPE_HOME by default)."""
    from pydantic import ValidationError

    from grappe.server import StoreUnreachable, serve
    from grappe.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        err.print(f"invalid GRAPPE_* setting: {exc}")
        raise typer.Exit(2) from None
    if host:
        settings.host = host
    if port:
        settings.port = port
    try:
        serve(settings)
    except StoreUnreachable as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    except SpecError as exc:
        head = f"{exc.source}: not valid" if exc.source else "the factory's settings are not valid"
        err.print(problem_text(head, exc), markup=False)
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"{exc}", markup=False)
        raise typer.Exit(2) from None


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="The job spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream its output.")] = False,
    project: Annotated[str | None, typer.Option(help="Charge this project.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job. With --wait or --follow, exit 0 only if it succeeds."""

    def go() -> None:
        client = Client()
        parsed, data = _load_spec(spec, project)
        body = _prepare(client, spec, parsed, data)
        job = client.post("/jobs", body, headers={"Idempotency-Key": str(uuid.uuid4())})
        if not (wait or follow):
            print_json(job) if as_json else out.print(
                f"Submitted job [bold]{job['id']}[/] ({job['name']}, project {job['project']}): "
                f"{state_text(job['state'])} {job['reason']}"
            )
            return
        if not as_json:
            err.print(f"Submitted job {job['id']} ({job['name']}, project {job['project']})")
        if follow:
            for chunk in client.stream_logs(job["id"], follow=True):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        job = _wait(client, job["id"])
        if as_json:
            print_json(job)
        else:
            err.print(f"Job {job['id']} {job['state']}: {job['reason']}", markup=False)
        if job["state"] != "SUCCEEDED":
            raise typer.Exit(1)

    guard(go)


def _wait(client: Client, job_id: int, poll: float = 0.5) -> dict[str, Any]:
    while True:
        # A restart of the factory is not the job's end: keep asking for a while.
        job = client.get(f"/jobs/{job_id}", retry_s=120)
        if job["state"] in TERMINAL:
            return job
        time.sleep(poll)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="The job spec (YAML).")],
    federation: Annotated[
        Path | None,
        typer.Option(
            "--federation",
            help="Plan against this factory.yaml, every site as if empty, with no server: "
            "where in Europe would this run? (e.g. examples/federations/eu-ai-factories.yaml)",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show where a job would run and why, without submitting it.

    --federation FED.yaml answers "where in Europe would this run?": no server, sites as if empty.
    """

    def go() -> None:
        parsed, data = _load_spec(spec, None)
        if federation is not None:
            result = _plan_declared(federation, parsed)
        else:
            data.pop("workdir", None)  # placement does not need the directory's contents
            result = Client().post("/jobs/plan", data)
        if as_json:
            print_json(result)
            return
        _print_plan(result)

    guard(go)


def _plan_declared(federation: Path, spec: JobSpec) -> dict[str, Any]:
    """The placement of ``spec`` on the sites ``federation`` declares, each as if empty."""
    from grappe.catalog import gpu_models
    from grappe.placement.declared import declared_snapshots
    from grappe.placement.place import place
    from grappe.spec.factory import load_factory

    if not federation.is_file():
        raise CliError(f"--federation (got '{federation}'): no such file; fix the path", 2)
    try:
        sites = load_factory(federation).to_domain()
    except SpecError as exc:
        head = f"{federation}: the federation is not valid"
        raise CliError(problem_text(head, exc), 2) from None
    request = spec.to_request("plan", spec.project or "")
    return place(request, declared_snapshots(sites), gpu_models()).as_dict()


def when(iso: str) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` for tables."""
    return iso[:19].replace("T", " ")


def _print_plan(result: dict[str, Any]) -> None:
    if not result["candidates"]:
        out.print(result["summary"], markup=False)
        return
    rows = []
    for rank, c in enumerate(result["candidates"], 1):
        b = c["breakdown"]
        rows.append(
            [
                rank,
                c["site"],
                c["pool"],
                c["gpu_model"] or "-",
                "now" if c["can_start_now"] else format_duration(c["wait_s"]),
                # Data gravity: the time to bring the job's datasets there (zero where they live).
                format_duration(c["staging_s"]) if c.get("staging_s") else "-",
                format_duration(c["runtime_s"]),
                f"{c['cost_eur']:.2f}",
                f"{c['kg_co2'] * 1000:.1f}",
                f"{c['score']:.3f}",
                " + ".join(f"{k.split('_')[0]} {v['points']:.2f}" for k, v in b.items()),
            ]
        )
    table(
        f"Candidates (objective: {result['objective']}; lower score is better)",
        [
            "#",
            "SITE",
            "POOL",
            "GPU",
            "START",
            "STAGING",
            "RUNTIME",
            "EUR",
            "G CO2",
            "SCORE",
            "BREAKDOWN",
        ],
        rows,
    )
    if result["rejected"]:
        table(
            "Rejected",
            ["SITE", "POOL", "REASON"],
            [[r["site"], r["pool"] or "*", r["reason"]] for r in result["rejected"]],
        )
    out.print(result["summary"], markup=False)


@app.command("jobs")
def list_jobs(
    state: Annotated[
        list[str] | None, typer.Option("--state", "-t", help="Filter by state.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only jobs I submitted.")] = False,
    limit: Annotated[int, typer.Option(help="Most recent N jobs.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first (like squeue, with ended jobs too)."""

    def go() -> None:
        params: dict[str, Any] = {"project": project, "limit": limit, "mine": mine or None}
        jobs = Client().request(
            "GET",
            "/jobs",
            params=[(k, v) for k, v in params.items() if v is not None]
            + [("state", s.upper()) for s in state or []],
        )
        if as_json:
            print_json(jobs)
            return
        table(
            None,
            ["JOBID", "NAME", "PROJECT", "USER", "STATE", "SITE", "RESOURCES", "REASON"],
            [
                [
                    j["id"],
                    j["name"],
                    j["project"],
                    j["owner"],
                    state_text(j["state"]),
                    f"{j['site']}/{j['pool']}" if j["site"] else "",
                    j["resources"],
                    j["reason"],
                ]
                for j in jobs
            ],
        )

    guard(go)


@app.command("job")
def show_job(
    job_id: Annotated[int, typer.Argument(help="The job id.")], as_json: JsonOpt = False
) -> None:
    """Show one job: its spec, placement and every state change with its reason."""

    def go() -> None:
        job = Client().get(f"/jobs/{job_id}")
        if as_json:
            print_json(job)
            return
        out.print(
            f"[bold]Job {job['id']}[/] {job['name']}  project {job['project']}  "
            f"owner {job['owner']}"
        )
        out.print(f"state {state_text(job['state'])}  {job['reason']}")
        out.print(
            f"site {job['site'] or '-'}/{job['pool'] or '-'}  resources {job['resources']}  "
            f"attempt {job['attempt']}  exit code {job['exit_code']}"
        )
        table(
            "History",
            ["AT", "STATE", "SITE", "REASON"],
            [
                [
                    h["at"][:19].replace("T", " "),
                    state_text(h["state"]),
                    h["site"] or "",
                    h["reason"],
                ]
                for h in job["history"]
            ],
        )
        if job.get("placement"):
            _print_plan(job["placement"])

    guard(go)


@app.command()
def logs(
    job_id: Annotated[int, typer.Argument(help="The job id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until it ends.")
    ] = False,
) -> None:
    """Print a job's output (stdout and stderr)."""

    def go() -> None:
        for chunk in Client().stream_logs(job_id, follow=follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()

    guard(go)


@app.command()
def cancel(
    job_id: Annotated[int, typer.Argument(help="The job id.")], as_json: JsonOpt = False
) -> None:
    """Cancel a job, waiting or running (its whole process tree is stopped)."""

    def go() -> None:
        job = Client().post(f"/jobs/{job_id}/cancel")
        print_json(job) if as_json else out.print(
            f"Job {job['id']}: {state_text(job['state'])} {job['reason']}"
        )

    guard(go)


@app.command()
def sites(as_json: JsonOpt = False) -> None:
    """The federation's sites and pools with live free capacity."""

    def go() -> None:
        data = Client().get("/sites")
        if as_json:
            print_json(data)
            return
        rows = []
        for s in data:
            for p in s["pools"]:
                gpus = (
                    f"{p['free_gpus']}/{p['total_gpus']} {p['gpu_model']}"
                    if p["total_gpus"]
                    else "-"
                )
                rows.append(
                    [
                        s["name"],
                        p["name"],
                        s["country"],
                        s["jurisdiction"],
                        ",".join(s["certifications"]) or "-",
                        gpus,
                        f"{p['free_cpus']}/{p['total_cpus']}",
                        p["price_eur_gpu_hour"],
                        s["carbon_g_per_kwh"],
                        "up" if s["available"] else f"DOWN {s['error']}",
                    ]
                )
        table(
            None,
            [
                "SITE",
                "POOL",
                "CC",
                "JURIS.",
                "CERTS",
                "GPUS FREE",
                "CPUS FREE",
                "EUR/GPU-H",
                "gCO2/kWh",
                "STATUS",
            ],
            rows,
        )

    guard(go)


@app.command()
def whoami() -> None:
    """Who the current token belongs to."""
    guard(lambda: print_json(Client().get("/whoami")))


# Registered last so that `grappe --help` lists the job commands first.
app.command()(admin.usage)
app.command()(admin.audit)
app.command()(sim)
app.command("serve")(serve_model)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
