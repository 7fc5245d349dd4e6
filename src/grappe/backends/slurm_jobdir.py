"""An attempt's directory on a Slurm site, and Grappe's local index of them.

``prepare`` writes ``job.sh`` and unpacks the workdir archive into ``work/``
through the account's shell (Python's tarfile here, GNU tar on a login node,
after checking the archive). ``Index`` keeps, under the backend's root, which
account owns each attempt and handle and where its directory is, so that a
restarted control plane finds them without asking anyone.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from grappe.backends import slurm_text as st
from grappe.backends.base import Launch, SiteUnavailable, SubmitRejected
from grappe.backends.shell import Shell
from grappe.backends.staging import (
    StagingFailed,
    check_listing,
    input_env,
    read_verified,
    stage_local,
)
from grappe.domain.datasets import DataInput

INPUTS_DIR = "inputs"  # the attempt's staged datasets (GRAPPE_INPUTS_DIR)

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def job_env(launch: Launch, site: str) -> dict[str, str]:
    """The job's own variables, then Grappe's (as the local backend sets them)."""
    env = {str(k): str(v) for k, v in launch.env.items()}
    bad = [k for k in env if not _ENV_NAME_RE.match(k)]
    if bad:
        raise SubmitRejected(f"env name {bad[0]!r} is not a valid environment variable name")
    env.update(
        GRAPPE_JOB_ID=launch.job_id,
        GRAPPE_JOB_NAME=launch.name,
        GRAPPE_PROJECT=launch.project,
        GRAPPE_ATTEMPT=str(launch.attempt),
        GRAPPE_SITE=site,
        GRAPPE_POOL=launch.pool,
    )
    if not launch.resources.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""  # Slurm sets it for GPU jobs; others see no GPU
    return env


def prepare(
    shell: Shell,
    local: bool,
    launch: Launch,
    attempt_dir: str,
    site: str,
    partition: str,
    account: str | None,
    namespace: str = "",
) -> None:
    """Write the attempt's ``job.sh`` and ``work/`` on the site.

    ``SubmitRejected`` for a job that cannot be written (bad env names, unsafe archive);
    ``SiteUnavailable`` when the site's files cannot be reached.
    """
    inputs_dir = f"{attempt_dir}/{INPUTS_DIR}"
    launch = replace(launch, env={**launch.env, **input_env(launch.inputs, inputs_dir)})
    r = launch.resources
    per_node = r.per_node()
    script = st.job_script(
        st.ScriptRequest(
            job_id=launch.job_id,
            attempt=launch.attempt,
            attempt_dir=attempt_dir,
            partition=partition,
            nodes=max(r.nodes, 1),
            cpus_per_node=max(per_node.cpus, 1),
            memory_mb_per_node=st.memory_mb(per_node.memory_bytes),
            gpus_per_node=per_node.gpus,
            time_minutes=st.minutes(launch.max_runtime_s),
            account=account,
            env=job_env(launch, site),
            setup=launch.setup,
            run=launch.run,
            namespace=namespace,
        )
    )
    work = f"{attempt_dir}/{st.WORK_DIR}"
    try:
        if local:
            os.makedirs(work, mode=0o700, exist_ok=True)
        else:
            made = shell.run(["mkdir", "-p", "-m", "700", work])
            if not made.ok:
                raise OSError(f"mkdir {work}: {made.message()}")
        shell.put(script.encode(), f"{attempt_dir}/{st.SCRIPT_FILE}", 0o700)
        if launch.workdir_archive is not None:
            unpack(shell, local, Path(launch.workdir_archive), attempt_dir)
        stage(shell, local, launch.inputs, inputs_dir)
    except StagingFailed as exc:
        raise SubmitRejected(str(exc)) from exc
    except OSError as exc:
        raise SiteUnavailable(f"site {site}: cannot prepare {attempt_dir}: {exc}") from exc


def stage(shell: Shell, local: bool, inputs: tuple[DataInput, ...], inputs_dir: str) -> None:
    """Copy the job's datasets into ``inputs_dir`` on the site (the login node's side),
    each file's SHA-256 checked against the catalog before it is written there."""
    if not inputs:
        return
    if local:
        stage_local(inputs, inputs_dir)
        return
    for item in inputs:
        target = f"{inputs_dir}/{item.dataset}"
        if item.site_copy:
            # The site holds this version: check it there and point the job at it.
            paths = [f"{item.site_copy}/{f.name}" for f in item.files]
            summed = shell.run(["sha256sum", "--", *paths], timeout=600)
            check_listing(item, summed.stdout, summed.stderr)
            parent = target.rsplit("/", 1)[0]
            linked = shell.run(
                [
                    "sh",
                    "-c",
                    'mkdir -p -m 700 "$1" && ln -s "$2" "$3"',
                    "sh",
                    parent,
                    item.site_copy,
                    target,
                ]
            )
            if not linked.ok:
                raise OSError(f"link {target}: {linked.message()}")
            continue
        made = shell.run(["mkdir", "-p", "-m", "700", target])
        if not made.ok:
            raise OSError(f"mkdir {target}: {made.message()}")
        for f in item.files:
            shell.put(read_verified(item, f), f"{target}/{f.name}", 0o400)


def unpack(shell: Shell, local: bool, archive: Path, attempt_dir: str) -> None:
    """Unpack ``archive`` into the attempt's ``work/``, refusing members that would leave it."""
    work = f"{attempt_dir}/{st.WORK_DIR}"
    if local:
        if not hasattr(tarfile, "data_filter"):
            raise SubmitRejected("this Python cannot unpack archives safely; use 3.11.4 or later")
        try:
            with tarfile.open(archive, "r:*") as tar:
                # The "data" filter refuses members and links that would land outside work/.
                tar.extractall(work, filter="data")
        except tarfile.TarError as exc:
            raise SubmitRejected(f"workdir archive {archive.name} refused: {exc}") from exc
        return
    try:
        data = st.checked_archive(archive)
    except (tarfile.TarError, ValueError) as exc:
        raise SubmitRejected(f"workdir archive {archive.name} refused: {exc}") from exc
    remote = f"{attempt_dir}/workdir.tar.gz"
    shell.put(data, remote, 0o600)
    argv = ["tar", "-xzf", remote, "-C", work, "--no-same-owner", "--no-same-permissions"]
    unpacked = shell.run(argv, timeout=300)
    shell.run(["rm", "-f", remote])
    if not unpacked.ok:
        raise SubmitRejected(f"workdir archive {archive.name} refused: {unpacked.message()}")


class Index:
    """``root/.slurm/{attempts,handles}/<key>.json``: owner and directory of each attempt."""

    def __init__(self, root: Path) -> None:
        self.root = root / ".slurm"
        for kind in ("attempts", "handles"):
            (self.root / kind).mkdir(parents=True, exist_ok=True)

    def save(self, kind: str, key: str, user: str, attempt_dir: str) -> None:
        """Record (atomically) that ``key`` belongs to ``user`` and lives in ``attempt_dir``."""
        path = self.root / kind / f"{key}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"user": user, "dir": attempt_dir}))
        os.replace(tmp, path)

    def load(self, kind: str, key: str) -> dict[str, str] | None:
        """``{"user", "dir"}`` of ``key``, or ``None`` when unknown or unreadable."""
        try:
            data: Any = json.loads((self.root / kind / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        ok = isinstance(data, dict) and isinstance(data.get("user"), str)
        return data if ok and isinstance(data.get("dir"), str) else None
