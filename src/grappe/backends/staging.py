"""Staging: copy a job's dataset versions into its directory and verify every SHA-256.

Each input lands in ``<inputs_dir>/<sector>/<name>/`` and the job sees
``GRAPPE_INPUTS_DIR`` (the parent) and ``GRAPPE_INPUT_<SECTOR>_<NAME>`` (its
directory). Files are read through fsspec from where the catalog keeps them.
A file whose size or checksum differs from the catalog's fails staging with
a reason that names the dataset, the version and the file: the job never starts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import fsspec

from grappe.domain.datasets import DataFile, DataInput

CHUNK = 1 << 20


class StagingFailed(Exception):
    """An input could not be staged as the catalog describes it; the message says which."""


def input_env(inputs: tuple[DataInput, ...], inputs_dir: str) -> dict[str, str]:
    """The variables a job reads to find its inputs."""
    if not inputs:
        return {}
    env = {"GRAPPE_INPUTS_DIR": inputs_dir}
    env.update({i.env_name: f"{inputs_dir}/{i.dataset}" for i in inputs})
    return env


def _mismatch(item: DataInput, f: DataFile, size: int, sha: str) -> str | None:
    where = f"input {item.dataset} version {item.version}, file {f.name}"
    if size != f.size:
        return f"{where}: {size} bytes read, the catalog says {f.size}; the stored copy is damaged"
    if sha != f.sha256:
        return (
            f"{where}: checksum mismatch (SHA-256 {sha}, the catalog says {f.sha256}); "
            "the stored copy is damaged: an operator must upload this version again"
        )
    return None


def _copy(item: DataInput, f: DataFile, write: Callable[[bytes], None]) -> None:
    digest, size = hashlib.sha256(), 0
    try:
        with fsspec.open(f.url, "rb") as src:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                digest.update(chunk)
                write(chunk)
    except (OSError, ValueError) as exc:
        raise StagingFailed(
            f"input {item.dataset} version {item.version}, file {f.name}: cannot read it ({exc})"
        ) from exc
    problem = _mismatch(item, f, size, digest.hexdigest())
    if problem:
        raise StagingFailed(problem)


def stage_local(inputs: tuple[DataInput, ...], inputs_dir: str) -> dict[str, str]:
    """Copy every input under ``inputs_dir`` on this machine; returns the job's variables."""
    for item in inputs:
        target = os.path.join(inputs_dir, *item.dataset.split("/"))
        os.makedirs(target, mode=0o700, exist_ok=True)
        for f in item.files:
            path = os.path.join(target, f.name)
            with open(path, "wb") as out:
                _copy(item, f, out.write)
            os.chmod(path, 0o400)  # inputs are read, never changed
    return input_env(inputs, inputs_dir)


def read_verified(item: DataInput, f: DataFile) -> bytes:
    """The file's bytes, checked against the catalog (for sites reached through a shell)."""
    parts: list[bytes] = []
    _copy(item, f, parts.append)
    return b"".join(parts)
