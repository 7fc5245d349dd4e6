"""``grappe``: the command line, a thin client of the API (``GRAPPE_URL``, ``GRAPPE_TOKEN``)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from grappe.cli.client import Client, CliError
from grappe.domain.resources import format_duration
from grappe.spec.errors import SpecError, load_yaml, validate
from grappe.spec.jobspec import JobSpec

app = typer.Typer(
    help="Grappe: one front door to sovereign compute. Run jobs where they fit best.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
projects_app = typer.Typer(help="Projects, members and allocations.")
users_app = typer.Typer(help="Members of the factory and their tokens.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(users_app, name="users")
accounts_app = typer.Typer(
    help="Your own accounts on sites (HPC centres give each member theirs).",
    no_args_is_help=True,
)
app.add_typer(accounts_app, name="accounts")

# Tables keep their rows on one line when piped (Rich would wrap them at 80 columns).
_WIDTH = None if sys.stdout.isatty() else 200
out = Console(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, width=_WIDTH)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
STATE_STYLE = {
    "PENDING": "yellow",
    "SUBMITTED": "cyan",
    "RUNNING": "blue",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "TIMEOUT": "red",
}


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    out.print(table)


def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def _problem_text(head: str, exc: SpecError) -> str:
    """A heading, then one line per problem: field, the value given, and the fix."""
    lines = [head]
    lines += [
        f"  - {p.field or '(document)'}"
        + ("" if p.value in (None, "") else f" (got {p.value!r})")
        + f": {p.message}"
        for p in exc.problems
    ]
    return "\n".join(lines)


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
        raise CliError(_problem_text(f"{path}: the job spec is not valid", exc), 2) from None
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


def _run(fn: Any) -> Any:
    try:
        return fn()
    except CliError as exc:
        err.print(exc.message, markup=False, highlight=False)
        raise typer.Exit(exc.code) from None


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
        err.print(_problem_text(head, exc), markup=False)
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
            _print_json(job) if as_json else out.print(
                f"Submitted job [bold]{job['id']}[/] ({job['name']}, project {job['project']}): "
                f"{_state(job['state'])} {job['reason']}"
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
            _print_json(job)
        else:
            err.print(f"Job {job['id']} {job['state']}: {job['reason']}", markup=False)
        if job["state"] != "SUCCEEDED":
            raise typer.Exit(1)

    _run(go)


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
            _print_json(result)
            return
        _print_plan(result)

    _run(go)


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
        raise CliError(_problem_text(head, exc), 2) from None
    request = spec.to_request("plan", spec.project or "")
    return place(request, declared_snapshots(sites), gpu_models()).as_dict()


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
                format_duration(c["runtime_s"]),
                f"{c['cost_eur']:.2f}",
                f"{c['kg_co2'] * 1000:.1f}",
                f"{c['score']:.3f}",
                " + ".join(f"{k.split('_')[0]} {v['points']:.2f}" for k, v in b.items()),
            ]
        )
    _table(
        f"Candidates (objective: {result['objective']}; lower score is better)",
        ["#", "SITE", "POOL", "GPU", "START", "RUNTIME", "EUR", "G CO2", "SCORE", "BREAKDOWN"],
        rows,
    )
    if result["rejected"]:
        _table(
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
            _print_json(jobs)
            return
        _table(
            None,
            ["JOBID", "NAME", "PROJECT", "USER", "STATE", "SITE", "RESOURCES", "REASON"],
            [
                [
                    j["id"],
                    j["name"],
                    j["project"],
                    j["owner"],
                    _state(j["state"]),
                    f"{j['site']}/{j['pool']}" if j["site"] else "",
                    j["resources"],
                    j["reason"],
                ]
                for j in jobs
            ],
        )

    _run(go)


@app.command("job")
def show_job(
    job_id: Annotated[int, typer.Argument(help="The job id.")], as_json: JsonOpt = False
) -> None:
    """Show one job: its spec, placement and every state change with its reason."""

    def go() -> None:
        job = Client().get(f"/jobs/{job_id}")
        if as_json:
            _print_json(job)
            return
        out.print(
            f"[bold]Job {job['id']}[/] {job['name']}  project {job['project']}  "
            f"owner {job['owner']}"
        )
        out.print(f"state {_state(job['state'])}  {job['reason']}")
        out.print(
            f"site {job['site'] or '-'}/{job['pool'] or '-'}  resources {job['resources']}  "
            f"attempt {job['attempt']}  exit code {job['exit_code']}"
        )
        _table(
            "History",
            ["AT", "STATE", "SITE", "REASON"],
            [
                [h["at"][:19].replace("T", " "), _state(h["state"]), h["site"] or "", h["reason"]]
                for h in job["history"]
            ],
        )
        if job.get("placement"):
            _print_plan(job["placement"])

    _run(go)


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

    _run(go)


@app.command()
def cancel(
    job_id: Annotated[int, typer.Argument(help="The job id.")], as_json: JsonOpt = False
) -> None:
    """Cancel a job, waiting or running (its whole process tree is stopped)."""

    def go() -> None:
        job = Client().post(f"/jobs/{job_id}/cancel")
        _print_json(job) if as_json else out.print(
            f"Job {job['id']}: {_state(job['state'])} {job['reason']}"
        )

    _run(go)


@app.command()
def sites(as_json: JsonOpt = False) -> None:
    """The federation's sites and pools with live free capacity."""

    def go() -> None:
        data = Client().get("/sites")
        if as_json:
            _print_json(data)
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
        _table(
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

    _run(go)


@projects_app.command("ls")
def projects_ls(as_json: JsonOpt = False) -> None:
    """Projects you belong to (all of them for operators), with allocation and use."""
    _run(lambda: _show_projects(Client().get("/projects"), as_json))


def _show_projects(data: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json(data)
        return
    rows = []
    for p in data:
        a = p["allocation"] or {}
        rows.append(
            [
                p["name"],
                ",".join(p["members"]),
                f"{p['used']['gpu_hours']:.2f}/{a.get('gpu_hours', 0):g}",
                f"{p['used']['cpu_hours']:.2f}/{a.get('cpu_hours', 0):g}",
                (a.get("ends") or "")[:10],
                p["priority"],
            ]
        )
    _table(None, ["PROJECT", "MEMBERS", "GPU-H USED", "CPU-H USED", "UNTIL", "PRIO"], rows)


@projects_app.callback(invoke_without_command=True)
def projects_default(ctx: typer.Context) -> None:
    """Projects, members and allocations (`grappe projects` lists them)."""
    if ctx.invoked_subcommand is None:
        projects_ls(False)


@projects_app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="The project's name.")],
    gpu_hours: Annotated[float, typer.Option("--gpu-hours", help="GPU-hours granted.")] = 0.0,
    cpu_hours: Annotated[float, typer.Option("--cpu-hours", help="CPU-hours granted.")] = 0.0,
    days: Annotated[int, typer.Option(help="Length of the allocation period.")] = 365,
    member: Annotated[
        list[str] | None, typer.Option("--member", "-m", help="Add a member.")
    ] = None,
    priority: Annotated[int, typer.Option(help="Queue priority (-100..100).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Create a project with an allocation (operators)."""
    body = {
        "name": name,
        "gpu_hours": gpu_hours,
        "cpu_hours": cpu_hours,
        "days": days,
        "members": member or [],
        "priority": priority,
    }
    _run(lambda: _show_projects([Client().post("/projects", body)], as_json))


@projects_app.command("allocate")
def projects_allocate(
    name: Annotated[str, typer.Argument(help="The project's name.")],
    gpu_hours: Annotated[float, typer.Option("--gpu-hours")] = 0.0,
    cpu_hours: Annotated[float, typer.Option("--cpu-hours")] = 0.0,
    days: Annotated[int, typer.Option()] = 365,
    as_json: JsonOpt = False,
) -> None:
    """Grant a new allocation from now on (operators); it replaces the current one."""
    body = {"gpu_hours": gpu_hours, "cpu_hours": cpu_hours, "days": days}
    _run(lambda: _show_projects([Client().post(f"/projects/{name}/allocations", body)], as_json))


@projects_app.command("add-member")
def projects_add_member(
    name: Annotated[str, typer.Argument(help="The project's name.")],
    user: Annotated[str, typer.Argument(help="The member to add.")],
    as_json: JsonOpt = False,
) -> None:
    """Add a member to a project (operators)."""
    _run(
        lambda: _show_projects(
            [Client().post(f"/projects/{name}/members", {"user": user})], as_json
        )
    )


@app.command()
def usage(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What each project has used: GPU-hours, CPU-hours, EUR and CO2, by site."""

    def go() -> None:
        data = Client().get("/usage", project=project)
        if as_json:
            _print_json(data)
            return
        _show_projects(data["projects"], False)
        _table(
            "By site",
            ["PROJECT", "SITE", "JOBS", "GPU-H", "CPU-H", "EUR", "KG CO2"],
            [
                [
                    r["project"],
                    r["site"],
                    r["jobs"],
                    f"{r['gpu_hours']:.3f}",
                    f"{r['cpu_hours']:.3f}",
                    f"{r['eur']:.2f}",
                    f"{r['kg_co2']:.4f}",
                ]
                for r in data["by_site"]
            ],
        )

    _run(go)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="The member's user name.")],
    role: Annotated[str, typer.Option(help="member, operator or admin.")] = "member",
    project: Annotated[str | None, typer.Option(help="Make them a member of this project.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a member and print their token (shown once; operators)."""

    def go() -> None:
        data = Client().post("/users", {"name": name, "role": role, "project": project})
        _print_json(data) if as_json else out.print(
            f"user {data['name']} ({data['role']}) token: {data['token']}", markup=False
        )

    _run(go)


@users_app.command("token")
def users_token(
    name: Annotated[str | None, typer.Argument(help="Whose token (yourself by default).")] = None,
) -> None:
    """Issue a new token (for yourself, or for another member as an operator)."""
    _run(lambda: out.print(Client().post("/tokens", {"user": name})["token"], markup=False))


@accounts_app.command("add")
def accounts_add(
    site: Annotated[str, typer.Argument(help="The site, as `grappe sites` names it.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Your user name on that site.")],
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="A private key its login node accepts.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register your account on a site; your jobs there then run as you."""

    def go() -> None:
        text = None
        if key is not None:
            try:
                text = key.expanduser().read_text()
            except OSError as exc:
                raise CliError(f"--key (got '{key}'): cannot read it ({exc.strerror})", 2) from None
        data = Client().post("/site-accounts", {"site": site, "user": user, "private_key": text})
        _print_json(data) if as_json else out.print(
            f"jobs of {data['member']} on {data['site']} will run as {data['user']}", markup=False
        )

    _run(go)


@accounts_app.command("ls")
def accounts_ls(as_json: JsonOpt = False) -> None:
    """Your registered site accounts (everyone's, for operators)."""

    def go() -> None:
        data = Client().get("/site-accounts")
        if as_json:
            _print_json(data)
            return
        _table(
            None,
            ["MEMBER", "SITE", "SITE USER", "KEY"],
            [[a["member"], a["site"], a["user"], "yes" if a["has_key"] else "-"] for a in data],
        )

    _run(go)


@accounts_app.command("rm")
def accounts_rm(site: Annotated[str, typer.Argument(help="The site.")]) -> None:
    """Forget your account on a site (and its key)."""
    _run(lambda: out.print(f"removed: {Client().request('DELETE', f'/site-accounts/{site}')}"))


@app.command()
def whoami() -> None:
    """Who the current token belongs to."""
    _run(lambda: _print_json(Client().get("/whoami")))


@app.command()
def sim(
    trace: Annotated[Path, typer.Option("--trace", help="Job trace CSV to replay.")],
    federation: Annotated[
        Path, typer.Option("--federation", help="factory.yaml of the simulated sites.")
    ],
    policies: Annotated[
        str, typer.Option("--policy", help="Policies to compare, comma-separated.")
    ] = "grappe,fifo",
    load: Annotated[
        float | None, typer.Option("--load", help="Rescale arrivals to this offered load.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Replay only the first N jobs.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a job trace through the scheduler on a virtual clock (no server needed)."""
    from grappe.scheduler.policies import POLICIES
    from grappe.sim.metrics import summarise
    from grappe.sim.replay import replay
    from grappe.sim.trace import TraceError, load_trace
    from grappe.spec.factory import load_factory

    def go() -> None:
        names = [n.strip() for n in policies.split(",") if n.strip()]
        unknown = [n for n in names if n not in POLICIES]
        if unknown or not names:
            raise CliError(
                f"unknown policy {', '.join(unknown) or '(none given)'}; "
                f"use one of {', '.join(POLICIES)}",
                2,
            )
        if load is not None and load <= 0:
            raise CliError(f"--load {load} must be above 0", 2)
        try:
            jobs = load_trace(trace)
        except TraceError as exc:
            raise CliError(str(exc), 2) from None
        if limit is not None:
            jobs = jobs[: max(limit, 0)]
        try:
            sites = load_factory(federation).to_domain()
        except SpecError as exc:
            problem = _problem_text(f"{federation}: the federation is not valid", exc)
            raise CliError(problem, 2) from None
        rows = [summarise(replay(jobs, sites, name, load)) for name in names]
        if as_json:
            _print_json(rows)
            return
        _table(
            f"{len(jobs)} jobs of {trace.name}" + (f" at load {load:g}" if load else ""),
            [
                "POLICY",
                "JOBS",
                "AVG JCT",
                "P50 JCT",
                "P99 JCT",
                "AVG WAIT",
                "P99 WAIT",
                "MAKESPAN",
                "UTIL",
                "JAIN",
                "VIOL",
                "WALL S",
                "STARTS/S",
            ],
            [
                [
                    r["policy"],
                    r["jobs"],
                    *(
                        format_duration(int(r[k]))
                        for k in (
                            "avg_jct_s",
                            "p50_jct_s",
                            "p99_jct_s",
                            "avg_wait_s",
                            "p99_wait_s",
                            "makespan_s",
                        )
                    ),
                    f"{r['utilization']:.1%}",
                    f"{r['jain_fairness']:.3f}",
                    r["violations"],
                    f"{r['wall_s']:.1f}",
                    f"{r['decisions_per_s']:.0f}",
                ]
                for r in rows
            ],
        )

    _run(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
