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
    if item.site_copy:
        where += f" (the site's copy in {item.site_copy})"
    if size != f.size:
        return f"{where}: {size} bytes read, the catalog says {f.size}; the copy is damaged"
    if sha != f.sha256:
        return (
            f"{where}: checksum mismatch (SHA-256 {sha}, the catalog says {f.sha256}); "
            "the copy is damaged: an operator must upload or copy this version again"
        )
    return None


def _copy(
    item: DataInput, f: DataFile, write: Callable[[bytes], None], source: str | None = None
) -> None:
    digest, size = hashlib.sha256(), 0
    try:
        with fsspec.open(source or f.url, "rb") as src:
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
        if item.site_copy:
            # The site holds this version: check it in place and point the job at it.
            for f in item.files:
                _copy(item, f, lambda _: None, os.path.join(item.site_copy, f.name))
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            os.symlink(item.site_copy, target)
            continue
        os.makedirs(target, mode=0o700, exist_ok=True)
        for f in item.files:
            path = os.path.join(target, f.name)
            with open(path, "wb") as out:
                _copy(item, f, out.write)
            os.chmod(path, 0o400)  # inputs are read, never changed
    return input_env(inputs, inputs_dir)


def check_listing(item: DataInput, listing: str, errors: str = "") -> None:
    """Check ``sha256sum``'s output for a site's copy against the catalog (``StagingFailed``)."""
    found = {}
    for line in listing.splitlines():
        sha, _, path = line.partition("  ")
        found[path.rsplit("/", 1)[-1]] = sha
    for f in item.files:
        sha = found.get(f.name)
        if sha is None:
            raise StagingFailed(
                f"input {item.dataset} version {item.version}, file {f.name}: cannot read the "
                f"site's copy in {item.site_copy} ({errors.strip()[-500:] or 'not listed'})"
            )
        if sha != f.sha256:
            raise StagingFailed(
                f"input {item.dataset} version {item.version}, file {f.name} (the site's copy in "
                f"{item.site_copy}): checksum mismatch (SHA-256 {sha}, the catalog says "
                f"{f.sha256}); copy this version to the site again"
            )


def read_verified(item: DataInput, f: DataFile) -> bytes:
    """The file's bytes, checked against the catalog (for sites reached through a shell)."""
    parts: list[bytes] = []
    _copy(item, f, parts.append)
    return b"".join(parts)
