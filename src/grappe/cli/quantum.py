"""``grappe quantum``: devices, tasks and their results, sessions, shot allocations."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from grappe.cli.client import Client, CliError
from grappe.cli.render import TERMINAL, JsonOpt, err, guard, out, print_json, state_text, table

quantum_app = typer.Typer(
    help="Quantum tasks: OpenQASM circuits, Pulser sequences and photonic circuits.",
    no_args_is_help=True,
)
sessions_app = typer.Typer(help="Reserve a device for a project's tasks.", no_args_is_help=True)
quantum_app.add_typer(sessions_app, name="sessions")

FORMATS = ("qasm2", "qasm3", "pulser", "perceval")


@quantum_app.command("backends")
def backends(as_json: JsonOpt = False) -> None:
    """Quantum devices: modality, qubits or modes, connectivity, shots, price, jurisdiction."""

    def go() -> None:
        data = Client().get("/quantum/backends")
        if as_json:
            print_json(data)
            return
        rows = [
            [
                d["backend"],
                d["modality"],
                f"{d['qubits']} {d['unit']}",
                d["connectivity"],
                d["max_shots"],
                f"{d['price_eur_per_shot']:g}/shot, {d['price_eur_per_second']:g}/s",
                d["jurisdiction"],
                "emulator" if d["emulator"] else "QPU",
            ]
            for d in data
        ]
        cols = ["BACKEND", "MODALITY", "SIZE", "CONNECTIVITY", "MAX SHOTS", "EUR", "JURIS.", "KIND"]
        table(None, cols, rows)

    guard(go)


def _wait(client: Client, job_id: int, poll: float = 0.3) -> dict[str, Any]:
    while True:
        # A restart of the factory is not the task's end: keep asking for a while.
        view = client.get(f"/quantum/tasks/{job_id}", retry_s=120)
        if view["state"] in TERMINAL:
            return view
        time.sleep(poll)


def _short(view: dict[str, Any]) -> dict[str, Any]:
    return {k: view.get(k) for k in ("id", "state", "backend", "counts")}


@quantum_app.command("run")
def run(
    program: Annotated[Path, typer.Argument(help="An OpenQASM file, or a JSON sequence/circuit.")],
    shots: Annotated[int, typer.Option(help="How many times to run and measure it.")] = 1000,
    fmt: Annotated[
        str | None, typer.Option("--format", help=f"One of {', '.join(FORMATS)}; else guessed.")
    ] = None,
    modality: Annotated[
        str | None, typer.Option(help="gate, neutral_atom or photonic; follows from the format.")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="A device (DEVICE or SITE/DEVICE); else the best one.")
    ] = None,
    project: Annotated[str | None, typer.Option(help="Charge this project.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the counts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a quantum task. With --wait, print its counts and exit 0 only if it succeeded."""

    def go() -> None:
        try:
            text = program.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"PROGRAM {program}: cannot read it ({exc}); fix the path", 2) from None
        body = {
            "program": text,
            "shots": shots,
            "format": fmt,
            "modality": modality,
            "backend": backend,
            "project": project,
            "name": program.stem[:63] or None,
        }
        client = Client()
        job = client.post(
            "/quantum/tasks",
            {k: v for k, v in body.items() if v is not None},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if not wait:
            if as_json:
                print_json(
                    {"id": job["id"], "state": job["state"], "backend": None, "counts": None}
                )
            else:
                out.print(f"Submitted quantum task [bold]{job['id']}[/] (project {job['project']})")
            return
        if not as_json:
            err.print(f"Submitted quantum task {job['id']} (project {job['project']})")
        view = _wait(client, job["id"])
        if as_json:
            print_json(_short(view))
        else:
            _print_result(view)
        if view["state"] != "SUCCEEDED":
            if as_json:
                err.print(view.get("error") or view.get("reason"), markup=False)
            raise typer.Exit(1)

    guard(go)


def _print_result(view: dict[str, Any]) -> None:
    charged = view.get("charged") or {}
    out.print(
        f"Task {view['id']} {state_text(view['state'])} on {view.get('backend') or '-'}: "
        f"{view.get('shots')} shots of a {view.get('format')} program "
        f"({view.get('qubits')} {'modes' if view.get('modality') == 'photonic' else 'qubits'})"
    )
    if view["state"] != "SUCCEEDED":
        out.print(f"  {view.get('error') or view.get('reason')}", markup=False)
    counts = view.get("counts") or {}
    total = sum(counts.values()) or 1
    rows = [[k, n, f"{n / total:.4f}"] for k, n in counts.items()]
    if rows:
        table(None, ["OUTCOME", "COUNT", "FREQUENCY"], rows)
    out.print(
        f"Charged to {view.get('project')}: {charged.get('qpu_shots', 0)} shots, "
        f"{charged.get('qpu_seconds', 0):.3f} QPU-seconds, {charged.get('eur', 0):.4f} EUR"
    )


@quantum_app.command("results")
def results(
    task_id: Annotated[int, typer.Argument(help="The task's id.")],
    as_json: JsonOpt = False,
) -> None:
    """A task's counts as a table (or JSON), with what it was charged."""

    def go() -> None:
        view = Client().get(f"/quantum/tasks/{task_id}")
        print_json(view) if as_json else _print_result(view)

    guard(go)


@quantum_app.command("allocate")
def allocate(
    project: Annotated[str, typer.Argument(help="The project.")],
    shots: Annotated[int, typer.Option(help="Shots granted.")] = 0,
    seconds: Annotated[float, typer.Option(help="QPU-seconds granted.")] = 0.0,
    days: Annotated[int, typer.Option(help="How long from now.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Grant a project shots and QPU-seconds (operators)."""

    def go() -> None:
        body = {"project": project, "shots": shots, "seconds": seconds, "days": days}
        data = Client().post("/quantum/allocations", body)
        print_json(data) if as_json else out.print(
            f"Project {project}: {data['qpu_shots']} shots, {data['qpu_seconds']:g} QPU-seconds "
            f"({data['used_shots']} shots used)"
        )

    guard(go)


@sessions_app.command("create")
def create_session(
    backend: Annotated[str, typer.Argument(help="The device (DEVICE or SITE/DEVICE).")],
    project: Annotated[str, typer.Option(help="The project the device is reserved for.")],
    minutes: Annotated[int, typer.Option(help="How long the session lasts.")] = 60,
    starts: Annotated[
        str | None, typer.Option(help="ISO 8601 start (UTC if no zone); now if unset.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reserve a device for a project: its tasks run there, other projects' tasks wait."""

    def go() -> None:
        if starts is not None:
            try:
                datetime.fromisoformat(starts)
            except ValueError:
                raise CliError(
                    f"--starts {starts!r} is not a time; write e.g. 2026-12-01T09:00", 2
                ) from None
        body = {"project": project, "backend": backend, "minutes": minutes, "starts": starts}
        data = Client().post("/quantum/sessions", {k: v for k, v in body.items() if v})
        print_json(data) if as_json else out.print(
            f"Session {data['id']}: {data['backend']} for {data['project']} "
            f"from {data['starts']} to {data['ends']}"
        )

    guard(go)


@sessions_app.command("ls")
def list_sessions(as_json: JsonOpt = False) -> None:
    """Device sessions of your projects."""

    def go() -> None:
        data = Client().get("/quantum/sessions")
        if as_json:
            print_json(data)
            return
        rows = [[d["id"], d["backend"], d["project"], d["starts"], d["ends"]] for d in data]
        table(None, ["ID", "BACKEND", "PROJECT", "STARTS", "ENDS"], rows)

    guard(go)
