"""What the Slurm backend writes for Slurm and reads back from its commands.

Pure functions, no I/O: the batch script (``job.sh``), the parsers of
``squeue``/``scontrol``/``sacct`` output and of the ``exit_code`` file, the
mapping of Slurm's job states to Grappe's, and the check of a workdir archive
before it is unpacked on a login node.
"""

from __future__ import annotations

import io
import math
import re
import shlex
import signal
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from grappe.backends.base import Status
from grappe.domain.jobs import JobState

SCRIPT_FILE = "job.sh"
LOG_FILE = "output.log"
EXIT_FILE = "exit_code"
ID_FILE = "slurm_id"
WORK_DIR = "work"

# A field separator that never occurs in Slurm's states, reasons, times or numbers.
SEP = "|"

_SUBMITTED = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
# Slurm's ends that are failures, with words for the user.
_FAILED = {
    "FAILED": "",
    "NODE_FAIL": "a node of the job failed",
    "OUT_OF_MEMORY": "the job ran out of memory",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "the job reached its deadline",
    "PREEMPTED": "the job was preempted",
    "REVOKED": "the job was revoked (it ran on another cluster of the federation)",
}
# Messages of Slurm's commands that mean the controller (or its authentication) did not answer.
_UNREACHABLE = (
    "unable to contact slurm controller",
    "connect failure",
    "connection refused",
    "timed out",
    "zero bytes were transmitted",
    "communication connection failure",
    "unable to establish",
    "network is unreachable",
    "no route to host",
    "munge",
    "slurmctld is not responding",
    "not responding",
    "could not establish a configuration source",
    "resource temporarily unavailable",
    "transport endpoint",
    "standby mode",
)

_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][\w:/.\-]*)=")
_UNITS_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def unreachable(message: str) -> bool:
    """Whether a command's error says the controller did not answer (try again later)."""
    text = message.lower()
    return any(pattern in text for pattern in _UNREACHABLE)


def unknown_job(message: str) -> bool:
    """Whether a command's error says Slurm does not know the job (any more)."""
    return "invalid job id" in message.lower()


@dataclass(frozen=True)
class ScriptRequest:
    """What ``job.sh`` asks of Slurm, per node, already mapped to the site's names."""

    job_id: str
    attempt: int
    attempt_dir: str
    partition: str
    nodes: int
    cpus_per_node: int
    memory_mb_per_node: int  # 0: Slurm's default
    gpus_per_node: int
    time_minutes: int  # 0: no --time, the partition's default
    account: str | None
    env: Mapping[str, str]
    setup: str | None
    run: str
    namespace: str = ""  # the factory's id, so two factories on one site never mix jobs


def job_name(job_id: str, attempt: int, namespace: str = "") -> str:
    """The Slurm job name of an attempt, which ``find`` looks up after a crash."""
    return f"grappe-{namespace}-{job_id}-{attempt}" if namespace else f"grappe-{job_id}-{attempt}"


def minutes(seconds: int) -> int:
    """Slurm's ``--time`` in whole minutes, rounded up (its granularity)."""
    return max(math.ceil(seconds / 60), 1) if seconds > 0 else 0


def memory_mb(num_bytes: int) -> int:
    """Slurm's ``--mem`` in MiB, rounded up."""
    return math.ceil(num_bytes / 1024**2) if num_bytes > 0 else 0


def job_script(req: ScriptRequest) -> str:
    """``job.sh``: ``#SBATCH`` options, the job's environment, ``setup`` then ``run`` verbatim.

    The user's code runs in a subshell so that its ``exit`` or ``trap`` cannot skip the
    last lines, which write the outcome to ``exit_code`` next to ``output.log``.
    """
    d = req.attempt_dir
    options = [
        f"--job-name={job_name(req.job_id, req.attempt, req.namespace)}",
        f"--output={d}/{LOG_FILE}",
        f"--chdir={d}/{WORK_DIR}",
        # A requeued job appends to its log, so that offsets already read stay valid.
        "--open-mode=append",
        f"--partition={req.partition}",
        f"--nodes={req.nodes}",
        f"--ntasks={req.nodes}",
        f"--cpus-per-task={req.cpus_per_node}",
    ]
    if req.memory_mb_per_node:
        options.append(f"--mem={req.memory_mb_per_node}M")
    if req.gpus_per_node:
        options.append(f"--gres=gpu:{req.gpus_per_node}")
    if req.time_minutes:
        options.append(f"--time={req.time_minutes}")
    if req.account:
        options.append(f"--account={req.account}")
    exit_file = shlex.quote(f"{d}/{EXIT_FILE}")
    lines = [
        "#!/usr/bin/env bash",
        *(f"#SBATCH {option}" for option in options),
        f"# Grappe job {req.job_id}, attempt {req.attempt}.",
        "# --- environment ---",
        *(f"export {name}={shlex.quote(value)}" for name, value in req.env.items()),
        "__grappe_started=$(date -u +%Y-%m-%dT%H:%M:%SZ)",
        "__grappe_signal=",
        # A cancel or the time limit sends SIGTERM: note it, then record the end below.
        "trap '__grappe_signal=TERM' TERM",
        "(",
    ]
    if req.setup:
        lines += [
            "# --- setup ---",
            req.setup.rstrip("\n"),
            "__grappe_rc=$?",
            'if [ "$__grappe_rc" -ne 0 ]; then',
            '  echo "grappe: setup failed with exit code $__grappe_rc" >&2',
            '  exit "$__grappe_rc"',
            "fi",
        ]
    lines += [
        "# --- run ---",
        req.run.rstrip("\n"),
        ")",
        "__grappe_rc=$?",
        "# --- end: the outcome outlives Slurm's memory of the job ---",
        'printf "%s\\nstarted=%s\\nended=%s\\nsignal=%s\\n" "$__grappe_rc" "$__grappe_started" '
        f'"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$__grappe_signal" > {exit_file}.part '
        f"&& mv -f {exit_file}.part {exit_file}",
        'exit "$__grappe_rc"',
        "",
    ]
    return "\n".join(lines)


def parse_fields(line: str) -> dict[str, str]:
    """``Key=value`` pairs of one ``scontrol show ... -o`` line (values may hold spaces)."""
    matches = list(_KEY_RE.finditer(line))
    fields = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields[match.group(1)] = line[match.end() : end].strip()
    return fields


def parse_tres(text: str) -> dict[str, str]:
    """``cpu=4,mem=4000M,gres/gpu=4`` as a mapping; empty for ``(null)`` or nothing."""
    out = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


def mb(text: str | None) -> float:
    """A Slurm memory amount (``4000M``, ``1.5G``, ``4000``: MiB) in MiB; 0 when unreadable."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)\s*", text or "")
    if not match:
        return 0.0
    return float(match.group(1)) * _UNITS_MB[match.group(2) or "M"]


def gres_gpus(text: str | None) -> int:
    """GPUs in a gres or TRES text: ``gpu:4``, ``gpu:h100:2(IDX:0,2)``, ``gres/gpu=2``."""
    if not text:
        return 0
    total = 0
    # Parenthesized details (socket or index lists) may hold commas: drop them first.
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        item = item.strip()
        for prefix in ("gres:", "gres/"):
            item = item.removeprefix(prefix)
        parts = re.split(r"[:=]", item)
        if parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else "1"
        match = re.match(r"\d+", count)
        total += int(match.group()) if match else 1
    return total


def duration_s(text: str | None) -> float | None:
    """Seconds of a Slurm duration (``1:00``, ``2:00:00``, ``1-02:00:00``); ``None`` if none."""
    text = (text or "").strip()
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
        parts = text.split(":")
        if not all(p.isdigit() for p in parts) or len(parts) > 3:
            return None
        h, m, s = ([int(p) for p in parts] + [0, 0])[:3]
        return float(days * 86400 + h * 3600 + m * 60 + s)
    parts = text.split(":")
    if not text or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None  # UNLIMITED, NOT_SET, N/A, INVALID
    values = [int(p) for p in parts]
    if len(values) == 1:
        return float(values[0] * 60)  # a bare number is minutes
    if len(values) == 2:
        return float(values[0] * 60 + values[1])  # Slurm prints M:SS under an hour
    return float(values[0] * 3600 + values[1] * 60 + values[2])


def timestamp(text: str | None) -> datetime | None:
    """A Slurm time printed under ``TZ=UTC`` (the backend sets it) as an aware datetime."""
    try:
        value = datetime.fromisoformat((text or "").strip())
    except ValueError:
        return None  # Unknown, N/A, None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def status_of(
    state: str,
    reason: str = "",
    exit_code: str = "",
    start: str = "",
    end: str = "",
    time_limit: str = "",
) -> Status:
    """Grappe's view of a Slurm job from its state, Reason, ExitCode and times."""
    base = (state.split() or ["UNKNOWN"])[0].rstrip("+").upper()  # "CANCELLED by 0"
    reason = "" if reason in ("None", "(null)", "N/A") else reason
    started = timestamp(start)
    if base in _SUBMITTED:
        return Status(JobState.SUBMITTED, reason if reason else base.lower())
    if base in _RUNNING:
        note = "" if base == "RUNNING" else base.lower()
        return Status(JobState.RUNNING, note, started_at=started)
    ended = timestamp(end)
    code, sig = _exit_parts(exit_code)
    if base == "COMPLETED":
        return Status(JobState.SUCCEEDED, "", 0, started, ended)
    if base == "CANCELLED":
        return Status(JobState.CANCELLED, "cancelled", None, started, ended)
    if base == "TIMEOUT":
        limit = f" of {time_limit}" if time_limit and duration_s(time_limit) else ""
        return Status(JobState.TIMEOUT, f"exceeded its time limit{limit}", None, started, ended)
    if base in _FAILED:
        words = [_FAILED[base]] if _FAILED[base] else []
        if sig:
            words.append(f"killed by {_signal_name(sig)}")
        elif code is not None:
            words.append(f"exit code {code}")
        if reason:
            words.append(f"Slurm: {reason}")
        text = "; ".join(words) or base.lower()
        return Status(JobState.FAILED, text, None if sig else code, started, ended)
    # A state this version does not know: not an end, so nothing is decided on it.
    return Status(JobState.SUBMITTED, f"Slurm state {base}")


def _exit_parts(text: str) -> tuple[int | None, int]:
    """``(exit code, signal)`` from Slurm's ``ExitCode=3:0``."""
    code, _, sig = (text or "").partition(":")
    return (int(code) if code.isdigit() else None), (int(sig) if sig.isdigit() else 0)


def status_from_exit_file(content: bytes) -> Status | None:
    """The outcome ``job.sh`` wrote, for a job Slurm no longer remembers; ``None`` if none."""
    lines = content.decode(errors="replace").split("\n")
    if not lines or not lines[0].strip().lstrip("-").isdigit():
        return None
    code = int(lines[0].strip())
    extra = dict(line.partition("=")[::2] for line in lines[1:] if "=" in line)
    started, ended = timestamp(extra.get("started")), timestamp(extra.get("ended"))
    if extra.get("signal"):
        return Status(
            JobState.FAILED,
            f"ended by SIG{extra['signal']} (a cancel, its time limit or a node shutdown); "
            "Slurm no longer remembers which",
            None,
            started,
            ended,
        )
    if code == 0:
        return Status(JobState.SUCCEEDED, "", 0, started, ended)
    reason = f"exit code {code}"
    if code > 128 and _signal_name(code - 128).startswith("SIG"):
        reason += f" (likely a command killed by {_signal_name(code - 128)})"
    return Status(JobState.FAILED, reason, code, started, ended)


def checked_archive(path: Path) -> bytes:
    """The bytes of a ``.tar.gz`` whose members all stay inside the directory it unpacks in.

    Used before sending an archive to a login node, where GNU tar unpacks it: members
    with absolute paths or ``..``, links leading out, and device files are refused.
    """
    data = Path(path).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(f"member {member.name!r} would land outside the job directory")
            if member.issym() or member.islnk():
                target = PurePosixPath(member.linkname)
                if target.is_absolute() or ".." in target.parts:
                    raise ValueError(
                        f"link {member.name!r} -> {member.linkname!r} leads outside the job "
                        "directory"
                    )
            elif not (member.isfile() or member.isdir()):
                raise ValueError(f"member {member.name!r} is not a file, directory or link")
    return data
