"""Quantum tasks in pieces: reading programs, declaring devices, placing, charging, sessions.

The emulators really run where a task runs (Qiskit Aer here, the fastest to start);
the end-to-end runs of all three emulators through the CLI are in test_quantum_e2e.py.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from grappe.backends.base import Launch
from grappe.backends.quantum import QuantumBackend
from grappe.domain.accounting import charge
from grappe.domain.jobs import JobRequest, JobState
from grappe.domain.quantum import QuantumNeed
from grappe.domain.resources import Resources
from grappe.domain.sites import SiteSnapshot
from grappe.placement import place
from grappe.placement.declared import declared_snapshots
from grappe.quantum.programs import ProgramError, read_program
from grappe.spec.errors import SpecError
from grappe.spec.factory import FactorySpec
from tests.conftest import World, missing, open_world
from tests.test_quantum_e2e import BELL, HOM, quantum_site


def _need(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            missing(f"{module} is not installed (pip install -e '.[quantum]')")


def sites(**kwargs: Any) -> list:
    return FactorySpec.model_validate({"sites": [quantum_site(**kwargs)]}).to_domain()


def request(modality: str = "gate", qubits: int = 2, shots: int = 100, **kw: Any) -> JobRequest:
    need = QuantumNeed(modality, qubits, shots, "qasm2", kw.pop("device", None))
    return JobRequest("1", kw.pop("project", "demo"), Resources(), 60, quantum=need, **kw)


# ------------------------------------------------------------------ programs


def test_programs_report_their_size() -> None:
    _need("qiskit", "perceval")
    assert read_program("qasm2", BELL).qubits == 2
    qasm3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nh q[0];\n'
    assert read_program("qasm3", qasm3).qubits == 3
    assert read_program("perceval", json.dumps(HOM)).qubits == 2


@pytest.mark.parametrize(
    ("fmt", "text", "line", "column"),
    [
        # Qiskit points at the statement that holds the error.
        ("qasm2", BELL.replace("cx q[0],q[1];", "cx q[0] q[1];"), 6, 1),
        ("qasm3", "OPENQASM 3.0;\nqubit[2] q;\nh q[0] $$;\n", 3, 8),
        ("qasm3", "OPENQASM 3.0;\nqubit[2] q;\nh q[0]\nbit[2] c;\n", 4, 1),
        ("pulser", '{"register": [\n  1,,\n]}', 2, 5),
        ("perceval", '{"modes": 2,\n "input": [1 1]}', 2, 14),
    ],
)
def test_invalid_programs_say_where(fmt: str, text: str, line: int, column: int) -> None:
    _need("qiskit", "openqasm3")
    with pytest.raises(ProgramError) as caught:
        read_program(fmt, text)
    assert (caught.value.line, caught.value.column) == (line, column), str(caught.value)


def test_photonic_circuits_are_checked_against_their_modes() -> None:
    bad = {**HOM, "components": [{"type": "BS", "modes": [1, 2]}]}
    with pytest.raises(ProgramError, match="uses mode 2; the circuit has modes 0..1"):
        read_program("perceval", json.dumps(bad))
    with pytest.raises(ProgramError, match="input"):
        read_program("perceval", json.dumps({**HOM, "input": [1]}))


# ------------------------------------------------------------------ devices and placement


def test_quantum_site_devices_become_pools() -> None:
    (site,) = sites()
    assert site.backend == "quantum"
    aer = site.pool("aer")
    assert aer is not None and aer.device is not None
    assert (aer.device.modality, aer.device.qubits, aer.device.max_shots) == ("gate", 5, 50_000)
    assert site.pool("photons").device.modality == "photonic"  # type: ignore[union-attr]


def test_a_device_with_an_unknown_engine_is_refused() -> None:
    spec = quantum_site()
    spec["backend"]["devices"][0]["engine"] = "ibm"
    with pytest.raises((SpecError, ValueError), match=r"backend.devices\[0\].engine"):
        FactorySpec.model_validate({"sites": [spec]})


def test_placement_filters_devices_by_modality_size_and_shots() -> None:
    snaps = declared_snapshots(sites())

    def reasons(job: JobRequest) -> dict[str, str]:
        return {r.pool or "": r.reason for r in place(job, snaps, {}).rejected}

    best = place(request(), snaps, {}).best
    assert best is not None and best.pool == "aer"
    assert "the program uses 6" in reasons(request(qubits=6))["aer"]
    assert "at most 50000 shots" in reasons(request(shots=60_000))["aer"]
    assert "is photonic; the task is gate" in reasons(request())["photons"]
    assert place(request("photonic"), snaps, {}).best.pool == "photons"  # type: ignore[union-attr]
    plain = JobRequest("2", "demo", Resources(), 60)
    assert "runs quantum tasks only" in reasons(plain)["aer"]


def test_a_session_keeps_other_projects_off_the_device() -> None:
    snaps = declared_snapshots(sites())
    held = [
        SiteSnapshot(
            s.site,
            tuple(replace(c, reserved_for="team") if c.pool == "aer" else c for c in s.pools),
        )
        for s in snaps
    ]
    other = place(request(project="demo"), held, {})
    assert other.best is None
    assert "reserved for project team's session" in other.summary()
    assert place(request(project="team"), held, {}).best.pool == "aer"  # type: ignore[union-attr]


def test_shots_and_seconds_are_charged_at_the_device_price() -> None:
    (site,) = sites()
    aer = site.pool("aer")
    assert aer is not None
    cost = charge(Resources(), site, aer, 10.0, None, shots=1000)
    assert (cost.qpu_shots, cost.qpu_seconds) == (1000, 10.0)
    assert cost.eur == pytest.approx(1.0)  # 0.001 EUR per shot, no per-second price


# ------------------------------------------------------------------ the backend


def test_a_task_survives_a_restart_of_its_backend(tmp_path: Path) -> None:
    _need("qiskit", "qiskit_aer")
    (site,) = sites()
    task = {"program": BELL, "format": "qasm2", "shots": 500, "modality": "gate", "qubits": 2}
    launch = Launch("7", 1, "bell", "demo", "aer", Resources(), "", 60, quantum=task)
    first = QuantumBackend(site, tmp_path)
    handle = first.submit(launch)
    assert first.submit(launch) == handle  # idempotent
    first.close()
    second = QuantumBackend(site, tmp_path)  # as after a control-plane restart
    deadline = time.monotonic() + 60
    while (status := second.poll([handle])[handle]).state.active:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status.state == JobState.SUCCEEDED, second.logs(handle).decode()
    result = second.result(handle)
    assert result is not None and sum(result["counts"].values()) == 500
    assert set(result["counts"]) <= {"00", "11"}


# ------------------------------------------------------------------ through the API


def _world(tmp_path: Path, store_url: str) -> World:
    _need("qiskit", "qiskit_aer")
    return open_world(tmp_path, store_url, sites=[quantum_site()])


def test_sessions_let_their_project_in_and_keep_others_waiting(
    tmp_path: Path, store_url: str
) -> None:
    w = _world(tmp_path, store_url)
    try:
        admin = w.client()
        made = admin.post(
            "/api/v1/projects", json={"name": "team", "gpu_hours": 0, "cpu_hours": 10}
        )
        assert made.status_code == 201, made.text
        session = admin.post(
            "/api/v1/quantum/sessions",
            json={"project": "team", "backend": "emulators/aer", "minutes": 30},
        )
        assert session.status_code == 201, session.text
        clash = admin.post(
            "/api/v1/quantum/sessions", json={"project": "demo", "backend": "aer", "minutes": 5}
        )
        assert clash.status_code == 409 and "reserved for project team" in clash.text
        listed = admin.get("/api/v1/quantum/sessions").json()
        assert [s["project"] for s in listed] == ["team"]

        body = {"program": BELL, "shots": 200}
        demo = admin.post("/api/v1/quantum/tasks", json={**body, "project": "demo"}).json()
        team = admin.post("/api/v1/quantum/tasks", json={**body, "project": "team"}).json()
        done = w.run_until(team["id"], {"SUCCEEDED", "FAILED"}, timeout=90)
        assert done["state"] == "SUCCEEDED"
        waiting = admin.get(f"/api/v1/jobs/{demo['id']}").json()
        assert waiting["state"] == "PENDING"
        assert "reserved for project team's session" in waiting["reason"]
    finally:
        w.factory.close()


def test_shot_allocations_are_enforced_and_used(tmp_path: Path, store_url: str) -> None:
    w = _world(tmp_path, store_url)
    try:
        admin = w.client()
        granted = admin.post("/api/v1/quantum/allocations", json={"project": "demo", "shots": 300})
        assert granted.status_code == 201 and granted.json()["qpu_shots"] == 300
        first = admin.post("/api/v1/quantum/tasks", json={"program": BELL, "shots": 250}).json()
        done = w.run_until(first["id"], {"SUCCEEDED", "FAILED"}, timeout=90)
        assert done["state"] == "SUCCEEDED"
        view = admin.get(f"/api/v1/quantum/tasks/{first['id']}").json()
        assert view["charged"]["qpu_shots"] == 250 and sum(view["counts"].values()) == 250
        over = admin.post("/api/v1/quantum/tasks", json={"program": BELL, "shots": 100})
        assert over.status_code == 409
        assert "50 of its 300 shots left" in over.json()["error"]["message"]
        member = w.client(w.user("ada"))
        refused = member.post("/api/v1/quantum/allocations", json={"project": "demo", "shots": 9})
        assert refused.status_code == 403
    finally:
        w.factory.close()


def test_a_job_spec_with_a_quantum_section_is_held_to_the_same_rules(
    tmp_path: Path, store_url: str
) -> None:
    w = _world(tmp_path, store_url)
    try:
        admin = w.client()
        spec = {"name": "bell", "quantum": {"program": BELL, "shots": 300}}
        plan = admin.post("/api/v1/jobs/plan", json=spec).json()
        assert plan["candidates"][0]["pool"] == "aer"
        broken = {"name": "bad", "quantum": {"program": BELL.replace(";\nh", "\nh"), "shots": 3}}
        refused = admin.post("/api/v1/jobs", json=broken)
        assert refused.status_code == 422
        problem = refused.json()["error"]["problems"][0]
        assert (problem["field"], problem["value"]) == ("program", "line 5, column 1")
        made = admin.post("/api/v1/jobs", json=spec).json()
        assert made["resources"] == "1 CPU"
        done = w.run_until(made["id"], {"SUCCEEDED", "FAILED"}, timeout=90)
        assert done["state"] == "SUCCEEDED"
        stored = admin.get(f"/api/v1/jobs/{made['id']}").json()["spec"]["quantum"]
        assert (stored["qubits"], stored["format"], stored["modality"]) == (2, "qasm2", "gate")
        counts = admin.get(f"/api/v1/quantum/tasks/{made['id']}").json()["counts"]
        assert set(counts) <= {"00", "11"} and sum(counts.values()) == 300
    finally:
        w.factory.close()
