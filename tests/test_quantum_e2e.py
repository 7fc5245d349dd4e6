"""Quantum tasks end to end: a real ``grappe up`` with the three emulators, driven by the CLI.

A Bell circuit on Qiskit Aer, a two-atom Rydberg-blockade sequence on
pulser-simulation and a Hong-Ou-Mandel beam splitter on Perceval run through
``grappe quantum run --wait --json``; the counts are checked against what the
physics predicts within five standard deviations, and the shots are charged to
the project. Bad programs and shot counts get exit code 2 and a message naming
the line and column, or the field, the value and the fix.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing
from tests.fixtures_e2e import Server, wait_for

pytestmark = pytest.mark.integration

PRICE_PER_SHOT = 0.001
BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""
HOM = {
    "modes": 2,
    "input": [1, 1],
    "components": [{"type": "BS", "modes": [0, 1], "theta": math.pi / 2}],
}


def _need(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            missing(f"{module} is not installed (pip install -e '.[quantum]')")


def quantum_site(aer_qubits: int = 5) -> dict[str, Any]:
    return {
        "name": "emulators",
        "operator": "test",
        "country": "FI",
        "jurisdiction": "EU",
        "carbon_g_per_kwh": 50,
        "backend": {
            "kind": "quantum",
            "devices": [
                {
                    "name": "aer",
                    "engine": "aer",
                    "qubits": aer_qubits,
                    "max_shots": 50_000,
                    "price_eur_per_shot": PRICE_PER_SHOT,
                },
                {"name": "atoms", "engine": "qutip", "qubits": 4, "max_shots": 10_000},
                {"name": "photons", "engine": "slos", "qubits": 6, "max_shots": 50_000},
            ],
        },
    }


def rydberg_blockade_sequence() -> str:
    """Two atoms 5 um apart, well inside the blockade radius, driven by a global pulse of
    area pi/sqrt(2): the pair goes to (|01> + |10>)/sqrt(2), never to |11>."""
    import numpy as np
    from pulser import Pulse, Register, Sequence
    from pulser.devices import DigitalAnalogDevice

    omega = 2 * np.pi  # rad/us
    register = Register.from_coordinates([(0, 0), (5, 0)], prefix="q")
    seq = Sequence(register, DigitalAnalogDevice)
    seq.declare_channel("ryd", "rydberg_global")
    # The collective Rabi frequency is sqrt(2)*omega; 352 ns is a multiple of the 4 ns clock.
    seq.add(Pulse.ConstantPulse(352, omega, 0, 0), "ryd")
    assert DigitalAnalogDevice.rydberg_blockade_radius(omega) > 5
    return str(seq.to_abstract_repr())


def within(count: int, shots: int, p: float, sigmas: float = 5) -> bool:
    """Whether ``count`` of ``shots`` agrees with probability ``p`` within ``sigmas`` sigma."""
    sigma = math.sqrt(max(p * (1 - p), 1e-12) / shots)
    return abs(count / shots - p) <= sigmas * sigma + 1e-12


@pytest.fixture
def qserver(start_server: Callable[..., Server]) -> Server:
    _need("qiskit", "qiskit_aer", "pulser", "pulser_simulation", "perceval")
    return start_server(sites=[quantum_site()])


def run_task(server: Server, tmp_path: Path, name: str, program: str, *args: str) -> dict:
    path = tmp_path / name
    path.write_text(program)
    return server.cli_json("quantum", "run", str(path), "--wait", *args, timeout=180)


def test_bell_circuit_on_aer_is_charged(qserver: Server, tmp_path: Path) -> None:
    shots = 4000
    view = run_task(qserver, tmp_path, "bell.qasm", BELL, "--shots", str(shots))
    assert set(view) == {"id", "state", "backend", "counts"}
    assert view["state"] == "SUCCEEDED"
    assert view["backend"] == "emulators/aer"
    counts = view["counts"]
    assert set(counts) <= {"00", "11"}, counts  # perfectly correlated
    assert sum(counts.values()) == shots
    assert within(counts.get("00", 0), shots, 0.5), counts
    # The same counts come back as a table, as JSON and as a download, and it was charged.
    table = qserver.cli_ok("quantum", "results", str(view["id"])).stdout
    assert "OUTCOME" in table and "SUCCEEDED" in table and f"{counts['11']}" in table
    full = qserver.cli_json("quantum", "results", str(view["id"]))
    assert full["counts"] == counts and full["qubits"] == 2
    assert full["charged"]["qpu_shots"] == shots
    assert full["charged"]["eur"] == pytest.approx(shots * PRICE_PER_SHOT, rel=1e-6)
    with qserver.api() as api:
        resp = api.get(f"/quantum/tasks/{view['id']}", params={"download": "true"})
        usage = api.get("/usage").json()
    assert resp.status_code == 200 and "attachment" in resp.headers["content-disposition"]
    assert json.loads(resp.content)["counts"] == counts
    assert "demo" in json.dumps(usage)


def test_two_atom_rydberg_blockade_on_pulser(qserver: Server, tmp_path: Path) -> None:
    shots = 2000
    view = run_task(
        qserver, tmp_path, "blockade.json", rydberg_blockade_sequence(), "--shots", str(shots)
    )
    assert view["state"] == "SUCCEEDED" and view["backend"] == "emulators/atoms"
    counts = view["counts"]
    assert sum(counts.values()) == shots
    # Blockade: at most one atom excited; the drive leaves almost none in the ground state.
    assert counts.get("11", 0) + counts.get("00", 0) <= 0.02 * shots, counts
    assert within(counts.get("01", 0), counts.get("01", 0) + counts.get("10", 0), 0.5), counts


def test_hong_ou_mandel_on_perceval(qserver: Server, tmp_path: Path) -> None:
    shots = 3000
    view = run_task(qserver, tmp_path, "hom.json", json.dumps(HOM), "--shots", str(shots))
    assert view["state"] == "SUCCEEDED" and view["backend"] == "emulators/photons"
    counts = view["counts"]
    # Two indistinguishable photons on a balanced beam splitter leave together, never apart.
    assert set(counts) <= {"|2,0>", "|0,2>"}, counts
    assert sum(counts.values()) == shots
    assert within(counts.get("|2,0>", 0), shots, 0.5), counts


def test_bad_programs_and_shots_exit_2_with_the_fix(qserver: Server, tmp_path: Path) -> None:
    broken = tmp_path / "broken.qasm"
    broken.write_text(BELL.replace("h q[0];", "h q[0]"))
    res = qserver.cli("quantum", "run", str(broken), "--wait")
    assert res.returncode == 2, res.stderr
    assert "line 6, column 1" in res.stderr and "Traceback" not in res.stderr

    qasm3 = tmp_path / "broken3.qasm"
    qasm3.write_text('OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\ncx q[0], q[1;\n')
    res = qserver.cli("quantum", "run", str(qasm3), "--wait")
    assert res.returncode == 2 and "line 4, column" in res.stderr, res.stderr

    sequence = tmp_path / "broken.json"
    sequence.write_text('{"register": [\n  {"name": "q0", "x": 0, "y": 0}\n  {"name": "q1"}]}')
    res = qserver.cli("quantum", "run", str(sequence), "--format", "pulser")
    assert res.returncode == 2 and "line 3, column 3" in res.stderr, res.stderr

    bell = tmp_path / "bell.qasm"
    bell.write_text(BELL)
    res = qserver.cli("quantum", "run", str(bell), "--shots", "60000")
    assert res.returncode == 2, res.stderr
    assert "shots" in res.stderr and "60000" in res.stderr and "50000" in res.stderr

    big = tmp_path / "ghz6.qasm"
    big.write_text(BELL.replace("q[2]", "q[6]").replace("c[2]", "c[6]"))
    res = qserver.cli("quantum", "run", str(big))
    assert res.returncode == 2, res.stderr
    assert "aer has 5 qubits; the program uses 6" in res.stderr

    with qserver.api() as api:
        assert api.get("/jobs").json() == []  # nothing bad was queued


def test_devices_and_sessions_from_the_command_line(qserver: Server) -> None:
    devices = {d["backend"]: d for d in qserver.cli_json("quantum", "backends")}
    assert set(devices) == {"emulators/aer", "emulators/atoms", "emulators/photons"}
    photons = devices["emulators/photons"]
    assert (photons["modality"], photons["qubits"], photons["unit"]) == ("photonic", 6, "modes")
    assert (photons["jurisdiction"], photons["emulator"]) == ("EU", True)
    listing = qserver.cli_ok("quantum", "backends").stdout
    assert "neutral_atom" in listing and "all-to-all" in listing
    made = qserver.cli_json(
        "quantum", "sessions", "create", "photons", "--project", "demo", "--minutes", "10"
    )
    assert (made["backend"], made["project"]) == ("emulators/photons", "demo")
    listed = qserver.cli_json("quantum", "sessions", "ls")
    assert [s["id"] for s in listed] == [made["id"]]
    clash = qserver.cli("quantum", "sessions", "create", "photons", "--project", "demo")
    assert clash.returncode == 2 and "reserved for project demo" in clash.stderr


def test_the_sampler_runs_programs_of_two_modalities(qserver: Server) -> None:
    from grappe.quantum.sampler import Sampler

    sampler = Sampler(url=qserver.url, token=qserver.admin_token)
    bell, hom = sampler.run([BELL, json.dumps(HOM)], shots=400).result(timeout=180)
    assert set(bell) <= {"00", "11"} and sum(bell.values()) == 400
    assert set(hom) <= {"|2,0>", "|0,2>"} and sum(hom.values()) == 400


def test_a_running_task_survives_a_crash_of_the_factory(qserver: Server, tmp_path: Path) -> None:
    import signal

    path = tmp_path / "bell.qasm"
    path.write_text(BELL)
    task = qserver.cli_json("quantum", "run", str(path), "--shots", "1000")
    wait_for("the task to start", lambda: qserver.job(task["id"])["state"] in {"RUNNING"}, 60)
    qserver.kill(signal.SIGKILL)  # the control plane dies; the task's runner does not
    qserver.start()

    def ended() -> dict | None:
        view = qserver.cli_json("quantum", "results", str(task["id"]))
        return view if view["state"] in {"SUCCEEDED", "FAILED"} else None

    view = wait_for("the task to end after the restart", ended, 120, every=0.5)
    assert view["state"] == "SUCCEEDED", view
    assert set(view["counts"]) <= {"00", "11"} and sum(view["counts"].values()) == 1000
    assert view["charged"]["qpu_shots"] == 1000  # charged once
