"""Operator and account commands: projects, allocations, usage, users, site accounts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from grappe.cli.client import Client, CliError
from grappe.cli.render import JsonOpt, guard, out, print_json, table

projects_app = typer.Typer(help="Projects, members and allocations.")
users_app = typer.Typer(help="Members of the factory and their tokens.", no_args_is_help=True)
accounts_app = typer.Typer(
    help="Your own accounts on sites (HPC centres give each member theirs).",
    no_args_is_help=True,
)


@projects_app.command("ls")
def projects_ls(as_json: JsonOpt = False) -> None:
    """Projects you belong to (all of them for operators), with allocation and use."""
    guard(lambda: _show_projects(Client().get("/projects"), as_json))


def _show_projects(data: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(data)
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
    table(None, ["PROJECT", "MEMBERS", "GPU-H USED", "CPU-H USED", "UNTIL", "PRIO"], rows)


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
    guard(lambda: _show_projects([Client().post("/projects", body)], as_json))


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
    guard(lambda: _show_projects([Client().post(f"/projects/{name}/allocations", body)], as_json))


@projects_app.command("add-member")
def projects_add_member(
    name: Annotated[str, typer.Argument(help="The project's name.")],
    user: Annotated[str, typer.Argument(help="The member to add.")],
    as_json: JsonOpt = False,
) -> None:
    """Add a member to a project (operators)."""
    guard(
        lambda: _show_projects(
            [Client().post(f"/projects/{name}/members", {"user": user})], as_json
        )
    )


def usage(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What each project has used: GPU-hours, CPU-hours, EUR and CO2 by site; tokens by model."""

    def go() -> None:
        data = Client().get("/usage", project=project)
        if as_json:
            print_json(data)
            return
        _show_projects(data["projects"], False)
        table(
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
        if data.get("by_model"):
            table(
                "Tokens by model",
                ["PROJECT", "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "TOKENS"],
                [
                    [
                        r["project"],
                        r["model"],
                        r["requests"],
                        r["prompt_tokens"],
                        r["completion_tokens"],
                        r["tokens"],
                    ]
                    for r in data["by_model"]
                ],
            )

    guard(go)


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
        print_json(data) if as_json else out.print(
            f"user {data['name']} ({data['role']}) token: {data['token']}", markup=False
        )

    guard(go)


@users_app.command("token")
def users_token(
    name: Annotated[str | None, typer.Argument(help="Whose token (yourself by default).")] = None,
) -> None:
    """Issue a new token (for yourself, or for another member as an operator)."""
    guard(lambda: out.print(Client().post("/tokens", {"user": name})["token"], markup=False))


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
        print_json(data) if as_json else out.print(
            f"jobs of {data['member']} on {data['site']} will run as {data['user']}", markup=False
        )

    guard(go)


@accounts_app.command("ls")
def accounts_ls(as_json: JsonOpt = False) -> None:
    """Your registered site accounts (everyone's, for operators)."""

    def go() -> None:
        data = Client().get("/site-accounts")
        if as_json:
            print_json(data)
            return
        table(
            None,
            ["MEMBER", "SITE", "SITE USER", "KEY"],
            [[a["member"], a["site"], a["user"], "yes" if a["has_key"] else "-"] for a in data],
        )

    guard(go)


@accounts_app.command("rm")
def accounts_rm(site: Annotated[str, typer.Argument(help="The site.")]) -> None:
    """Forget your account on a site (and its key)."""
    guard(lambda: out.print(f"removed: {Client().request('DELETE', f'/site-accounts/{site}')}"))


def audit(
    action: Annotated[
        str | None, typer.Option("--action", "-a", help="Only actions starting with this.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Who did what and when: the audit log (operators)."""

    def go() -> None:
        data = Client().get("/audit", limit=limit, action=action)
        if as_json:
            print_json(data)
            return
        table(
            None,
            ["WHEN", "WHO", "ACTION", "TARGET", "DETAIL"],
            [
                [
                    e["at"][:19].replace("T", " "),
                    e["actor"],
                    e["action"],
                    e["target"],
                    ", ".join(f"{k}={v}" for k, v in sorted(e["detail"].items())),
                ]
                for e in data
            ],
        )

    guard(go)
