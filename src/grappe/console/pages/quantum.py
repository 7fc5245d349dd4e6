"""Quantum: the devices, a program editor to submit a task, the task list and each task's result.

A task is a job with a ``quantum`` section (``grappe.quantum.tasks``), so it
shares the queue and the ledger; its page refreshes its state every two
seconds until it ends, then shows the counts as an SVG histogram and offers
``result.json``. Operators grant projects shots from the operator page.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from grappe.console import i18n, nav
from grappe.console.charts import histogram
from grappe.console.web import ConsoleRoute, Ctx, MemberDep, StaffDep, see_other
from grappe.domain.jobs import JobState
from grappe.quantum import tasks
from grappe.quantum.checks import devices
from grappe.services import jobs
from grappe.services.errors import Invalid, ServiceError

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

FORMATS = ("qasm2", "qasm3", "pulser", "perceval")
BELL = """\
OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""
# Two photons on a balanced beam splitter leave together (Hong-Ou-Mandel): only |2,0> and |0,2>.
HOM = """\
{"modes": 2, "input": [1, 1],
 "components": [{"type": "BS", "modes": [0, 1], "theta": 1.5707963267948966}]}
"""
EXAMPLES = {"bell": BELL, "hom": HOM}
TASKS_SHOWN = 50
WHERE = re.compile(r"line (\d+)")


def quantum_sites(ctx: Ctx) -> set[str]:
    return {site for site, _ in devices(ctx.factory)}


def my_tasks(ctx: Ctx) -> list[dict[str, Any]]:
    """The member's projects' quantum tasks, newest first (all of them for operators).

    A job is a task when it ran on a quantum site; one not placed yet is read in
    full to see whether its spec holds a ``quantum`` section.
    """
    sites = quantum_sites(ctx)
    found = []
    for job in jobs.list_jobs(ctx.factory, ctx.principal, limit=200):
        if job["site"] is None:
            spec = jobs.get_job(ctx.factory, ctx.principal, job["id"]).get("spec") or {}
            if not spec.get("quantum"):
                continue
        elif job["site"] not in sites:
            continue
        found.append(job)
        if len(found) == TASKS_SHOWN:
            break
    return found


def _form_page(
    ctx: Ctx, form: dict[str, Any] | None = None, problems: list[Any] | None = None, status=200
) -> Response:
    me = ctx.principal
    values = {"program": BELL, "format": "", "shots": 1000, "backend": "", "project": ""}
    values.update(form or {})
    return ctx.render(
        "quantum.html",
        status=status,
        devices=tasks.backends(ctx.factory),
        tasks=my_tasks(ctx),
        form=values,
        formats=FORMATS,
        projects=sorted(me.projects),
        problems=problems or [],
        examples=EXAMPLES,
    )


@router.get("/quantum")
def quantum_page(ctx: MemberDep, example: str = "") -> Response:
    return _form_page(ctx, {"program": EXAMPLES[example]} if example in EXAMPLES else None)


@router.get("/quantum/rows")
def task_rows(ctx: MemberDep) -> Response:
    """The task list's rows alone, for the page to refresh itself."""
    return ctx.render("_quantum_rows.html", tasks=my_tasks(ctx))


def _shots(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise Invalid("shots", raw, "write a whole number of shots, e.g. 1000") from None


@router.post("/quantum")
async def submit(ctx: MemberDep) -> Response:
    form = await ctx.request.form()
    ctx.check_form(form)
    values = {
        k: str(form.get(k, "")).replace("\r\n", "\n")
        for k in ("program", "format", "shots", "backend", "project", "name")
    }
    body: dict[str, Any] = {k: v for k, v in values.items() if v and k != "shots"}
    try:
        body["shots"] = _shots(values["shots"].strip())
        job = tasks.submit(
            ctx.factory, ctx.principal, body, str(form.get("request_id", "")) or None
        )
    except ServiceError as exc:
        found = exc.detail.get("problems") or [{"field": "", "value": None, "message": exc.message}]
        problems = []
        for p in found:
            at = WHERE.match(str(p.get("value") or ""))
            # A refusal (no shots left) says more in its message than in its field's note.
            message = p["message"] if isinstance(exc, Invalid) else exc.message
            problems.append({**p, "message": message, "line": int(at.group(1)) if at else None})
        return _form_page(ctx, values, problems, status=exc.status)
    scheduler = ctx.request.app.state.scheduler
    if scheduler is not None:
        scheduler.wake()
    return see_other(f"/quantum/tasks/{job['id']}")


def _task(ctx: Ctx, job_id: int) -> dict[str, Any]:
    view = tasks.result(ctx.factory, ctx.principal, job_id)
    view["terminal"] = JobState(view["state"]).terminal
    title = ctx.t("quantum.counts")
    view["chart"] = histogram(title, view["counts"] or {}, ctx.t("quantum.no_counts"))
    return view


@router.get("/quantum/tasks/{job_id}")
def task_page(job_id: int, ctx: MemberDep) -> Response:
    task = _task(ctx, job_id)
    job = jobs.get_job(ctx.factory, ctx.principal, job_id)
    return ctx.render("quantum_task.html", task=task, job=job)


@router.get("/quantum/tasks/{job_id}/panel")
def task_panel(job_id: int, ctx: MemberDep) -> Response:
    """The state and, once ended, the result: what the task page refreshes."""
    return ctx.render("_quantum_task.html", task=_task(ctx, job_id))


@router.get("/quantum/tasks/{job_id}/result.json")
def task_json(job_id: int, ctx: MemberDep) -> Response:
    view = tasks.result(ctx.factory, ctx.principal, job_id)
    return Response(
        json.dumps(view, indent=2) + "\n",
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="quantum-{job_id}.json"'},
    )


@router.post("/operator/quantum/allocate")
async def allocate(ctx: StaffDep) -> Response:
    """Grant a project shots (and QPU-seconds) from now for a number of days."""
    form = await ctx.request.form()
    ctx.check_form(form)

    def number(key: str, kind: type, default: str) -> Any:
        raw = str(form.get(key, "") or default).strip()
        try:
            return kind(raw)
        except ValueError:
            raise Invalid(key, raw, f"write a number, e.g. {kind(default)}") from None

    project = str(form.get("project", ""))
    tasks.allocate(
        ctx.factory,
        ctx.principal,
        project,
        number("shots", int, "10000"),
        number("seconds", float, "0"),
        number("days", int, "30"),
    )
    return see_other(f"/operator?shots={project}#quantum-grant")


nav.register("quantum", router, nav.Page("quantum", "/quantum", order=60))

i18n.add_messages(
    "en",
    {
        "nav.quantum": "Quantum",
        "quantum.title": "Quantum",
        "quantum.intro": "Run a circuit on a quantum device or emulator. Write the program "
        "(OpenQASM 2 or 3, a Pulser sequence, or a photonic circuit in JSON), pick the shots, "
        "and follow the task to its histogram.",
        "quantum.devices": "Devices",
        "quantum.device": "Device",
        "quantum.modality": "Modality",
        "quantum.size": "Size",
        "quantum.connectivity": "Connectivity",
        "quantum.max_shots": "Max shots",
        "quantum.price": "Price",
        "quantum.emulator": "emulator",
        "quantum.no_devices": "This factory has no quantum device.",
        "quantum.submit": "Submit a program",
        "quantum.program": "Program",
        "quantum.format": "Format",
        "quantum.format_auto": "from the program",
        "quantum.shots": "Shots",
        "quantum.backend": "Device",
        "quantum.any_device": "any that fits",
        "quantum.project": "Project",
        "quantum.name": "Name (optional)",
        "quantum.run": "Run",
        "quantum.examples": "Examples:",
        "quantum.example.bell": "Bell pair (OpenQASM 2)",
        "quantum.example.hom": "Hong-Ou-Mandel (photonic)",
        "quantum.tasks": "My tasks",
        "quantum.no_tasks": "No quantum task yet.",
        "quantum.task": "Quantum task {id}",
        "quantum.counts": "Counts",
        "quantum.result": "Result",
        "quantum.no_counts": "The counts appear here when the task has run.",
        "quantum.waiting": "The task is {state}; this page follows it.",
        "quantum.download": "Download result.json",
        "quantum.charged": "Charged",
        "quantum.seconds": "Device time",
        "quantum.error": "Why it failed",
        "quantum.as_job": "As a job (timeline, placement, logs)",
        "quantum.grant": "Quantum shots",
        "quantum.grant_help": "Grant a project shots (and device-seconds) from today.",
        "quantum.grant_button": "Grant shots",
        "quantum.granted": "Project {name} was granted more shots.",
        "quantum.qpu_seconds": "device-seconds",
        "operator.data_queue": "Data access queue",
    },
)
i18n.add_messages(
    "fr",
    {
        "nav.quantum": "Quantique",
        "quantum.title": "Quantique",
        "quantum.intro": "Exécutez un circuit sur un processeur ou un émulateur quantique. "
        "Écrivez le programme (OpenQASM 2 ou 3, une séquence Pulser ou un circuit photonique "
        "en JSON), choisissez le nombre de tirs et suivez la tâche jusqu'à son histogramme.",
        "quantum.devices": "Processeurs",
        "quantum.device": "Processeur",
        "quantum.modality": "Modalité",
        "quantum.size": "Taille",
        "quantum.connectivity": "Connectivité",
        "quantum.max_shots": "Tirs max.",
        "quantum.price": "Prix",
        "quantum.emulator": "émulateur",
        "quantum.no_devices": "Cette usine n'a aucun processeur quantique.",
        "quantum.submit": "Soumettre un programme",
        "quantum.program": "Programme",
        "quantum.format": "Format",
        "quantum.format_auto": "d'après le programme",
        "quantum.shots": "Tirs",
        "quantum.backend": "Processeur",
        "quantum.any_device": "n'importe lequel qui convient",
        "quantum.project": "Projet",
        "quantum.name": "Nom (facultatif)",
        "quantum.run": "Exécuter",
        "quantum.examples": "Exemples :",
        "quantum.example.bell": "Paire de Bell (OpenQASM 2)",
        "quantum.example.hom": "Hong-Ou-Mandel (photonique)",
        "quantum.tasks": "Mes tâches",
        "quantum.no_tasks": "Aucune tâche quantique pour l'instant.",
        "quantum.task": "Tâche quantique {id}",
        "quantum.counts": "Comptages",
        "quantum.result": "Résultat",
        "quantum.no_counts": "Les comptages s'affichent ici une fois la tâche exécutée.",
        "quantum.waiting": "La tâche est {state} ; cette page la suit.",
        "quantum.download": "Télécharger result.json",
        "quantum.charged": "Facturé",
        "quantum.seconds": "Temps machine",
        "quantum.error": "Cause de l'échec",
        "quantum.as_job": "En tant que tâche (chronologie, placement, journaux)",
        "quantum.grant": "Tirs quantiques",
        "quantum.grant_help": "Accorder à un projet des tirs (et des secondes machine) "
        "à partir d'aujourd'hui.",
        "quantum.grant_button": "Accorder les tirs",
        "quantum.granted": "Le projet {name} a reçu des tirs supplémentaires.",
        "quantum.qpu_seconds": "secondes machine",
        "operator.data_queue": "File des demandes d'accès aux données",
    },
)
