"""Reading quantum programs: their size (qubits, atoms, modes) and, when invalid, where.

Each format is read by its own SDK (Qiskit for OpenQASM 2 and 3, Pulser for
its JSON sequences) or, for photonic circuits, by ``photonic.Circuit``. A
program that does not parse raises ``ProgramError`` with its line and column
(1-based) where the reader gives them.

Programs are read on one long-lived thread: Qiskit's OpenQASM reader crashed the
process when called from a thread other than the one that first used it once
that thread had ended (a web server's request threads come and go).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

_QASM_POS = re.compile(r":(\d+),(\d+):\s*(.*)", re.S)  # qiskit.qasm2: "<input>:5,0: message"
_QASM3_POS = re.compile(r"^L(\d+):C(\d+):\s*(.*)", re.S)  # openqasm3: "L3:C8: message"


class ProgramError(Exception):
    """A program that cannot be read; ``line``/``column`` are 1-based when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)
        self.message = message
        self.line = line
        self.column = column


class SdkMissing(Exception):
    """The SDK a format needs is not installed on the factory."""


@dataclass(frozen=True)
class ProgramInfo:
    qubits: int  # qubits, atoms or modes


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SdkMissing(
            f"{package} is not installed on this factory; install the quantum extra "
            "(pip install 'grappe[quantum]')"
        ) from None


def load_json(text: str) -> Any:
    """The JSON document ``text``; a syntax error says where."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProgramError(exc.msg, exc.lineno, exc.colno) from None


def qasm2_circuit(text: str) -> Any:
    qasm2 = _require("qiskit.qasm2", "qiskit")
    try:
        return qasm2.loads(text)
    except qasm2.QASM2ParseError as exc:
        found = _QASM_POS.search(str(getattr(exc, "message", exc)))
        if found:
            # Qiskit counts columns from 0.
            raise ProgramError(found[3], int(found[1]), int(found[2]) + 1) from None
        raise ProgramError(str(exc)) from None


def _qasm3_syntax(text: str) -> None:
    """Raise ``ProgramError`` at the first syntax error of an OpenQASM 3 program."""
    openqasm3 = _require("openqasm3", "openqasm3[parser]")
    try:
        openqasm3.parse(text)
    except openqasm3.parser.QASM3ParsingError as exc:
        found = _QASM3_POS.match(str(exc))
        if found:
            raise ProgramError(found[3], int(found[1]), int(found[2]) + 1) from None
        # The parser gave up on a token: ANTLR's exception holds it.
        cause = exc.__cause__
        inner = cause.args[0] if cause is not None and cause.args else None
        token = getattr(inner, "offendingToken", None)
        if token is not None:
            raise ProgramError(f"unexpected {token.text!r}", token.line, token.column + 1) from None
        raise ProgramError(f"not valid OpenQASM 3 ({exc})") from None


def qasm3_circuit(text: str) -> Any:
    _qasm3_syntax(text)
    qasm3 = _require("qiskit.qasm3", "qiskit")
    try:
        return qasm3.loads(text)
    except Exception as exc:  # noqa: BLE001 - the importer raises several kinds for bad programs
        raise ProgramError(f"{type(exc).__name__}: {exc}") from None


def pulser_sequence(text: str) -> Any:
    load_json(text)  # syntax errors with their position, before Pulser's schema check
    pulser = _require("pulser", "pulser")
    try:
        return pulser.Sequence.from_abstract_repr(text)
    except Exception as exc:  # noqa: BLE001 - schema and device checks raise several kinds
        path = "/".join(str(p) for p in getattr(exc, "absolute_path", ()) or ())
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f" at {path}" if path else ""
        raise ProgramError(f"not a valid Pulser sequence{where}: {first}") from None


# One worker that lives as long as the process: every SDK call comes from the same thread.
_READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grappe-program-reader")


def read_program(fmt: str, text: str) -> ProgramInfo:
    """The size of a program in format ``fmt``; ``ProgramError`` when it does not parse."""
    return _READER.submit(_read_program, fmt, text).result()


def _read_program(fmt: str, text: str) -> ProgramInfo:
    if fmt == "qasm2":
        return ProgramInfo(qasm2_circuit(text).num_qubits)
    if fmt == "qasm3":
        return ProgramInfo(qasm3_circuit(text).num_qubits)
    if fmt == "pulser":
        return ProgramInfo(len(pulser_sequence(text).register.qubit_ids))
    if fmt == "perceval":
        from grappe.quantum.photonic import read_circuit

        return ProgramInfo(read_circuit(text).modes)
    raise ProgramError(f"format {fmt!r} is not one of qasm2, qasm3, pulser, perceval")
