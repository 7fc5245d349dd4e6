"""Reading job traces: the columns, the optional ones, and errors that point at the bad cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from grappe.sim.trace import TraceError, load_trace

HEADER = "job_id,submit_time_s,num_gpus,duration_s"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


def test_jobs_are_read_and_sorted_by_submission(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER},vc,extra\nb,20,8,3600.5,team-a,x\na,5,1,60,,y\n\n")
    jobs = load_trace(path)
    assert [j.job_id for j in jobs] == ["a", "b"]
    assert jobs[1].num_gpus == 8 and jobs[1].duration_s == 3600.5 and jobs[1].vc == "team-a"
    assert jobs[0].vc is None and jobs[0].group == "all"
    assert jobs[1].group == "team-a"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("a,5,two,60", "trace.csv:2: column num_gpus: 'two' is not a whole number"),
        ("a,5,1.5,60", "trace.csv:2: column num_gpus: '1.5' is not a whole number"),
        ("a,soon,1,60", "trace.csv:2: column submit_time_s: 'soon' is not a number"),
        ("a,5,1,-3", "trace.csv:2: column duration_s: '-3' must not be negative"),
        ("a,5,1", "trace.csv:2: 3 columns where the header has 4"),
        (",5,1,60", "trace.csv:2: column job_id: the job has no id"),
    ],
)
def test_a_malformed_row_names_file_line_column_and_value(
    tmp_path: Path, body: str, where: str
) -> None:
    path = write(tmp_path, f"{HEADER}\n{body}\n")
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert str(info.value) == f"{tmp_path}/{where}"


def test_a_header_without_required_columns_says_which(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="lacks column\\(s\\) num_gpus, duration_s"):
        load_trace(write(tmp_path, "job_id,submit_time_s\na,1\n"))


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read the trace"):
        load_trace(tmp_path / "nope.csv")
