"""Run one quantum task on its emulator: ``python -m grappe.quantum.execute ATTEMPT_DIR``.

Started by the quantum backend as the job of a detached runner (the local
backend's), so a restart of the control plane loses nothing. Reads the task
from ``launch.json`` and writes ``result.json``: the counts of each outcome,
the shots, the engine and the seconds the emulation itself took.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grappe.quantum.programs import pulser_sequence, qasm2_circuit, qasm3_circuit

RESULT_FILE = "result.json"
_SECONDS: list[float] = []  # the device time of this process's task, without imports


@contextmanager
def _device_time() -> Iterator[None]:
    """Count the time the emulator itself takes: what a QPU would bill, not SDK imports."""
    started = time.monotonic()
    try:
        yield
    finally:
        _SECONDS.append(time.monotonic() - started)


def run_aer(fmt: str, program: str, shots: int, seed: int | None) -> dict[str, int]:
    """Counts of a gate circuit on Qiskit Aer; a circuit without measurement is measured."""
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    circuit = qasm2_circuit(program) if fmt == "qasm2" else qasm3_circuit(program)
    if circuit.num_clbits == 0:
        circuit.measure_all()
    simulator = AerSimulator(seed_simulator=seed) if seed is not None else AerSimulator()
    compiled = transpile(circuit, simulator)
    with _device_time():
        result = simulator.run(compiled, shots=shots).result()
    return {str(k): int(v) for k, v in result.get_counts().items()}


def run_qutip(fmt: str, program: str, shots: int, seed: int | None) -> dict[str, int]:
    """Bitstrings of a Pulser sequence (1 = Rydberg state) sampled from pulser-simulation."""
    import numpy as np
    from pulser.backend import BitStrings
    from pulser_simulation import QutipBackendV2, QutipConfig

    if seed is not None:
        np.random.seed(seed)  # pulser-simulation samples with NumPy's global generator
    sequence = pulser_sequence(program)
    config = QutipConfig(observables=[BitStrings(evaluation_times=[1.0], num_shots=shots)])
    backend = QutipBackendV2(sequence, config=config)
    with _device_time():
        result = backend.run()
    return {str(k): int(v) for k, v in result.final_bitstrings.items()}


def run_slos(fmt: str, program: str, shots: int, seed: int | None) -> dict[str, int]:
    """Fock states counted by Perceval's SLOS simulator of a linear-optical circuit."""
    import perceval as pcvl

    from grappe.quantum.photonic import read_circuit

    if seed is not None:
        pcvl.random_seed(seed)
    described = read_circuit(program)
    processor = pcvl.Processor("SLOS", described.perceval())
    processor.with_input(pcvl.BasicState(described.input))
    sampler = pcvl.algorithm.Sampler(processor)
    with _device_time():
        sampled = sampler.sample_count(shots)
    return {str(k): int(v) for k, v in sampled["results"].items()}


ENGINES: dict[str, Callable[[str, str, int, int | None], dict[str, int]]] = {
    "aer": run_aer,
    "qutip": run_qutip,
    "slos": run_slos,
}


def execute(attempt_dir: Path) -> dict[str, Any]:
    """Run the attempt's task and write its ``result.json``; returns what it wrote."""
    launch = json.loads((attempt_dir / "launch.json").read_text())
    task = launch.get("quantum") or {}
    engine = str(task.get("engine"))
    shots = int(task["shots"])
    print(f"grappe: {shots} shots of a {task['format']} program on {engine}", flush=True)
    counts = ENGINES[engine](task["format"], task["program"], shots, task.get("seed"))
    seconds = sum(_SECONDS)
    result = {
        "counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "shots": sum(counts.values()),
        "engine": engine,
        "device": launch.get("pool"),
        "format": task["format"],
        "seconds": round(seconds, 6),
    }
    tmp = attempt_dir / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(attempt_dir / RESULT_FILE)
    print(f"grappe: done in {seconds:.3f}s, {len(counts)} distinct outcomes", flush=True)
    return result


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m grappe.quantum.execute ATTEMPT_DIR")
    try:
        execute(Path(sys.argv[1]))
    except Exception as exc:  # noqa: BLE001 - the log shows why the task failed, in one line
        print(f"grappe: the quantum task failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
