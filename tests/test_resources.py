"""Domain values: memory and duration parsers, Resources, the job state machine, balances."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from grappe.domain.jobs import InvalidTransition, JobState, check_transition
from grappe.domain.projects import Allocation, Balance, Usage
from grappe.domain.resources import (
    Resources,
    format_duration,
    format_memory,
    parse_duration,
    parse_memory,
)

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


# --- memory -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64G", 64 * GiB),
        ("64g", 64 * GiB),
        ("512M", 512 * MiB),
        ("1.5T", int(1.5 * TiB)),
        ("64GiB", 64 * GiB),
        ("64GB", 64 * 1000**3),
        ("512MB", 512 * 1000**2),
        ("512MiB", 512 * MiB),
        ("4K", 4 * KiB),
        ("1TB", 1000**4),
        (" 8 G ", 8 * GiB),
        ("100", 100),
        ("100B", 100),
        (1024, 1024),
        (0, 0),
    ],
)
def test_parse_memory_accepts_the_usual_forms(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


def test_decimal_and_binary_units_differ() -> None:
    assert parse_memory("64GB") < parse_memory("64GiB") == parse_memory("64G")


@pytest.mark.parametrize("bad", ["lots", "64X", "-1G", "", "1,5G", "G64", "64 G B", -1, True])
def test_parse_memory_refuses_with_value_and_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_memory(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(bad) in message
    assert "64G" in message


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (64 * GiB, "64G"),
        (512 * MiB, "512M"),
        (int(1.5 * TiB), "1.5T"),
        (4 * KiB, "4K"),
        (1023, "1023B"),
        (0, "0B"),
    ],
)
def test_format_memory(num_bytes: int, text: str) -> None:
    assert format_memory(num_bytes) == text


@pytest.mark.parametrize("text", ["64G", "512M", "1.5T", "3G"])
def test_format_memory_round_trips(text: str) -> None:
    assert format_memory(parse_memory(text)) == text


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90),
        ("90", 90),
        ("90s", 90),
        ("30m", 30 * 60),
        ("2h", 2 * 3600),
        ("2H", 2 * 3600),
        ("2h30m", 2 * 3600 + 30 * 60),
        ("2h 30m", 2 * 3600 + 30 * 60),
        ("1.5h", 5400),
        ("1d", 86400),
        ("1d2h", 86400 + 7200),
        ("1-02:00:00", 86400 + 2 * 3600),  # Slurm days-hours:minutes:seconds
        ("02:00:00", 2 * 3600),  # Slurm hours:minutes:seconds
        ("30:00", 30 * 60),  # Slurm minutes:seconds
        ("1:30", 90),
        (2.0, 2),
    ],
)
def test_parse_duration_accepts_the_usual_forms(value: str | int, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "bad", ["forever", "", "h", "2h30", "-5m", "5 minutes", "1:2:3:4", "abc30m", True]
)
def test_parse_duration_refuses_with_value_and_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(bad) in message
    assert "30m" in message


@pytest.mark.parametrize("bad", [0, -1, "0", "0s", "0h0m", "00:00", "0-00:00:00"])
def test_parse_duration_refuses_zero_and_negative(bad: object) -> None:
    with pytest.raises(ValueError, match="at least one second") as info:
        parse_duration(bad)  # type: ignore[arg-type]
    assert str(bad) in str(info.value)


def test_slurm_days_hours_minutes() -> None:
    assert parse_duration("1-02:30") == 86400 + 2 * 3600 + 30 * 60


def test_fraction_of_a_second_is_not_a_zero_duration() -> None:
    try:
        seconds = parse_duration(0.5)
    except ValueError:
        return
    assert seconds > 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m00s"),
        (90, "1m30s"),
        (3720, "1h02m"),
        (47 * 3600 + 59 * 60, "47h59m"),
        (48 * 3600, "2d00h"),
        (3 * 86400 + 5 * 3600, "3d05h"),
    ],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


# --- Resources --------------------------------------------------------------------------------


def test_per_node_rounds_up() -> None:
    r = Resources(gpus=8, gpu_model="H100", cpus=10, memory_bytes=10 * GiB + 1, nodes=3)
    per = r.per_node()
    assert (per.gpus, per.cpus, per.nodes, per.gpu_model) == (3, 4, 1, "H100")
    assert per.memory_bytes * 3 >= r.memory_bytes
    assert per.memory_bytes == -(-(10 * GiB + 1) // 3)


def test_per_node_of_an_even_split_is_exact() -> None:
    per = Resources(gpus=16, cpus=64, memory_bytes=512 * GiB, nodes=2).per_node()
    assert (per.gpus, per.cpus, per.memory_bytes) == (8, 32, 256 * GiB)


def test_per_node_with_zero_nodes_does_not_divide_by_zero() -> None:
    assert Resources(gpus=4, nodes=0).per_node().gpus == 4


@pytest.mark.parametrize(
    ("resources", "text"),
    [
        (
            Resources(gpus=8, gpu_model="H100", cpus=32, memory_bytes=256 * GiB),
            "8xH100, 32 CPUs, 256G",
        ),
        (Resources(), "1 CPU"),
        (Resources(gpus=2, cpus=4, nodes=2), "2xGPU, 4 CPUs, 2 nodes"),
        (Resources(cpus=1, memory_bytes=512 * MiB), "1 CPU, 512M"),
    ],
)
def test_describe(resources: Resources, text: str) -> None:
    assert resources.describe() == text


# --- job state machine ------------------------------------------------------------------------

S = JobState


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.PENDING, S.SUBMITTED),
        (S.SUBMITTED, S.RUNNING),
        (S.RUNNING, S.SUCCEEDED),
        (S.RUNNING, S.PENDING),  # the site failed: place again (retry)
        (S.SUBMITTED, S.PENDING),
        (S.PENDING, S.CANCELLED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.TIMEOUT),
        (S.SUBMITTED, S.CANCELLED),
    ],
)
def test_allowed_transitions(current: JobState, new: JobState) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.SUCCEEDED, S.RUNNING),
        (S.SUCCEEDED, S.PENDING),
        (S.FAILED, S.PENDING),
        (S.CANCELLED, S.RUNNING),
        (S.PENDING, S.RUNNING),
        (S.RUNNING, S.SUBMITTED),
        (S.RUNNING, S.RUNNING),
    ],
)
def test_refused_transitions(current: JobState, new: JobState) -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition(current, new)
    assert str(current) in str(info.value) and str(new) in str(info.value)


def test_terminal_and_active_states() -> None:
    assert {s for s in JobState if s.terminal} == {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMEOUT}
    assert {s for s in JobState if s.active} == {S.SUBMITTED, S.RUNNING}


# --- balances ---------------------------------------------------------------------------------

NOW = datetime(2025, 6, 15, 12, 0)


def allocation(gpu_hours: float = 100, cpu_hours: float = 1000, days: int = 30) -> Allocation:
    return Allocation(gpu_hours, cpu_hours, NOW - timedelta(days=1), NOW + timedelta(days=days))


def test_no_allocation_is_refused_with_the_fix() -> None:
    why = Balance(None, Usage()).refusal("demo", 1, NOW)
    assert why is not None
    assert "'demo'" in why and "no allocation" in why
    assert "grappe projects allocate demo --gpu-hours" in why


def test_expired_allocation_is_refused_with_its_dates() -> None:
    old = Allocation(10, 10, datetime(2024, 1, 1), datetime(2024, 2, 1))
    why = Balance(old, Usage()).refusal("demo", 1, NOW)
    assert why is not None
    assert "2024-01-01" in why and "2024-02-01" in why and "not now" in why


def test_allocation_not_started_yet_is_refused() -> None:
    later = Allocation(10, 10, NOW + timedelta(days=1), NOW + timedelta(days=2))
    assert Balance(later, Usage()).refusal("demo", 0, NOW) is not None


def test_gpu_hours_used_up_names_the_numbers_and_the_fix() -> None:
    why = Balance(allocation(gpu_hours=10), Usage(gpu_hours=10.5)).refusal("demo", 8, NOW)
    assert why is not None
    assert "10.50" in why and "10 GPU-hours" in why
    assert "grappe projects allocate demo --gpu-hours" in why


def test_cpu_hours_used_up_refuses_cpu_jobs_only() -> None:
    balance = Balance(allocation(gpu_hours=10, cpu_hours=5), Usage(cpu_hours=6))
    why = balance.refusal("demo", 0, NOW)
    assert why is not None
    assert "6.00" in why and "5 CPU-hours" in why and "--cpu-hours" in why
    assert balance.refusal("demo", 1, NOW) is None


def test_a_balance_with_hours_left_is_not_refused() -> None:
    balance = Balance(allocation(), Usage(gpu_hours=40, cpu_hours=100))
    assert balance.refusal("demo", 8, NOW) is None
    assert balance.gpu_hours_left == 60
    assert balance.share_used == pytest.approx(0.4)
