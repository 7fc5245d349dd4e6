"""Datasets as placement and staging see them: pure values and rules, no I/O.

A dataset is named ``sector/name`` and has a *sensitivity*: ``open`` data may
go anywhere, ``restricted`` data only to the sites its publisher allows, and
``health`` data (personal health data) only to sites certified to host it
(HDS in France). Its *residency* lists the sites that already hold a copy:
staging there costs nothing; elsewhere it costs size over the site's bandwidth.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

DATASET_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}/[a-z0-9][a-z0-9._-]{0,62}$")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# A site's transfer rate when factory.yaml does not say: 1 Gbit/s, a common campus uplink.
DEFAULT_BANDWIDTH_BYTES_S = 125_000_000.0
HEALTH_CERTIFICATION = "HDS"
# Engines whose backend stages inputs into the job's directory; others cannot run such jobs.
STAGING_ENGINES = ("local", "slurm")


class Sensitivity(enum.StrEnum):
    OPEN = "open"
    RESTRICTED = "restricted"
    HEALTH = "health"

    @property
    def needs_grant(self) -> bool:
        return self is not Sensitivity.OPEN


def dataset_id_problem(value: str) -> str | None:
    """Why ``value`` is not a dataset id, or ``None``."""
    if DATASET_ID_RE.match(value):
        return None
    return (
        "a dataset id is sector/name in lower case, e.g. energy/iowa-electricity "
        "(letters, digits, '-', and '.' or '_' in the name)"
    )


def file_name_problem(value: str) -> str | None:
    """Why ``value`` may not name a file of a dataset version (path traversal above all)."""
    if "\x00" in value:
        return "a file name may not hold a NUL character"
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        return "a file name may not be an absolute path; give the bare name, e.g. data.csv"
    if "/" in value or "\\" in value or value in (".", ".."):
        return "a file name may not hold '/', '\\' or be '..'; give the bare name, e.g. data.csv"
    if not FILE_NAME_RE.match(value):
        return (
            "use letters, digits, '.', '_' and '-', starting with a letter or digit "
            "(200 characters at most)"
        )
    return None


def env_suffix(dataset_id: str) -> str:
    """``energy/iowa-electricity`` -> ``ENERGY_IOWA_ELECTRICITY`` (for GRAPPE_INPUT_...)."""
    return re.sub(r"[^A-Z0-9]", "_", dataset_id.upper())


@dataclass(frozen=True)
class DataNeed:
    """One input of a job: what placement must respect and what staging will cost.

    ``refusal`` is set when the job's project may not (or may no longer) read it:
    every site is then refused with that reason.
    """

    dataset: str
    version: int
    sensitivity: Sensitivity
    size_bytes: int
    residency: tuple[str, ...] = ()
    allowed_sites: tuple[str, ...] = ()
    refusal: str | None = None


def site_refusal(need: DataNeed, site: str, certifications: tuple[str, ...]) -> str | None:
    """Why ``need`` may not be processed at ``site``, or ``None``."""
    if need.refusal:
        return need.refusal
    if need.sensitivity is Sensitivity.HEALTH:
        held = {c.upper() for c in certifications}
        if HEALTH_CERTIFICATION not in held:
            return (
                f"input {need.dataset} is health data: only sites certified "
                f"{HEALTH_CERTIFICATION} may process it "
                f"(holds: {', '.join(certifications) or 'none'})"
            )
    if need.sensitivity is Sensitivity.RESTRICTED:
        allowed = need.allowed_sites or need.residency
        if site not in allowed:
            return (
                f"input {need.dataset} is restricted to the sites its publisher lists "
                f"({', '.join(allowed) or 'none'})"
            )
    return None


def staging_seconds(needs: tuple[DataNeed, ...], site: str, bandwidth_bytes_s: float) -> float:
    """Time to bring the inputs to ``site``: zero for those it holds a copy of."""
    moved = sum(n.size_bytes for n in needs if site not in n.residency)
    return moved / max(bandwidth_bytes_s, 1.0)


_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTkmgt]?)(bit|B)/s\s*$")
_SCALE = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_bandwidth(value: str | float | int) -> float:
    """``10Gbit/s``, ``500MB/s`` or a number of bytes per second -> bytes per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"bandwidth {value!r} must be more than zero")
        return float(value)
    match = _RATE_RE.match(str(value))
    if not match:
        raise ValueError(
            f"bandwidth {value!r} is not a rate; write e.g. 10Gbit/s, 500MB/s or bytes per second"
        )
    number, prefix, unit = match.groups()
    rate = float(number) * _SCALE[prefix.upper()]
    rate = rate / 8 if unit == "bit" else rate
    if rate <= 0:
        raise ValueError(f"bandwidth {value!r} must be more than zero")
    return rate


@dataclass(frozen=True)
class DataFile:
    """A file to stage: where the catalog keeps it (an fsspec URL) and what it must hash to."""

    name: str
    size: int
    sha256: str
    url: str


@dataclass(frozen=True)
class DataInput:
    """One dataset version a job reads, as its backend stages it."""

    dataset: str
    version: int
    files: tuple[DataFile, ...]
    # The site's own copy of this version, read in place (verified) instead of copied.
    site_copy: str | None = None

    @property
    def env_name(self) -> str:
        return f"GRAPPE_INPUT_{env_suffix(self.dataset)}"
