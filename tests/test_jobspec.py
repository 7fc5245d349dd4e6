"""The job spec: the forms users write, the problems they get back, and safe YAML loading."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from grappe.spec.errors import MAX_SPEC_BYTES, Problem, SpecError, load_yaml, validate
from grappe.spec.jobspec import GpuRequest, JobSpec

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "train", "run": "python train.py", **fields}


def problems(data: Any) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        validate(JobSpec, data)
    assert info.value.problems, "a SpecError must carry at least one problem"
    return info.value.problems


def only_problem(data: Any) -> Problem:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


# --- GPU requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forms", "expected"),
    [
        (["H100:8", "H100: 8", {"model": "H100", "count": 8}], GpuRequest(model="H100", count=8)),
        ([8, "8", {"count": 8}], GpuRequest(model=None, count=8)),
        (["H100", "H100:1", {"model": "H100", "count": 1}], GpuRequest(model="H100", count=1)),
        ([None, 0, "0"], GpuRequest(model=None, count=0)),
    ],
)
def test_gpu_forms_give_the_same_request(forms: list[Any], expected: GpuRequest) -> None:
    for form in forms:
        got = validate(JobSpec, spec(resources={"gpus": form})).resources.gpus
        assert got == expected, form


@pytest.mark.parametrize("form", ["h100:2", "H100:2", {"model": "h100", "count": 2}, " h100 :2"])
def test_gpu_model_names_are_case_insensitive(form: Any) -> None:
    gpus = validate(JobSpec, spec(resources={"gpus": form})).resources.gpus
    assert (gpus.model, gpus.count) == ("H100", 2)


def test_no_gpus_by_default() -> None:
    r = validate(JobSpec, spec()).resources.to_domain()
    assert (r.gpus, r.gpu_model, r.cpus, r.nodes, r.memory_bytes) == (0, None, 1, 1, 0)


def test_to_request_carries_resources_and_constraints() -> None:
    job = validate(
        JobSpec,
        spec(
            resources={"gpus": "H100:16", "cpus": 64, "memory": "1T", "nodes": 2},
            constraints={
                "jurisdiction": "EU",
                "certifications": ["HDS"],
                "sites": {"allow": ["a", "b"], "deny": ["c"]},
                "max_price_eur_gpu_hour": 3.5,
            },
            objective="carbon",
            max_runtime="2h30m",
            retries=2,
        ),
    )
    request = job.to_request("j-1", "demo")
    r = request.resources
    assert (r.gpus, r.gpu_model, r.cpus, r.memory_bytes, r.nodes) == (16, "H100", 64, 1024**4, 2)
    assert request.max_runtime_s == 9000
    assert request.objective == "carbon"
    assert request.jurisdiction == "EU"
    assert request.certifications == ("HDS",)
    assert (request.sites_allow, request.sites_deny) == (("a", "b"), ("c",))
    assert request.max_price_eur_gpu_hour == 3.5
    assert (request.id, request.project) == ("j-1", "demo")
    assert job.retries == 2


def test_default_max_runtime_is_one_hour() -> None:
    assert validate(JobSpec, spec()).max_runtime_s == 3600


# --- problems name the field, the value and a fix ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "value", "fix"),
    [
        (spec(resources={"gpus": "X100:2"}), "resources.gpus.model", "X100", "use one of"),
        (
            spec(resources={"gpus": {"model": "tpu", "count": 1}}),
            "resources.gpus.model",
            "tpu",
            "H100",
        ),
        (spec(resources={"gpus": "H100:-1"}), "resources.gpus.count", -1, "greater than or equal"),
        (spec(resources={"gpus": -2}), "resources.gpus.count", -2, "greater than or equal"),
        (spec(resources={"gpus": "H100:x"}), "resources.gpus", "H100:x", "e.g. H100:8"),
        (spec(resources={"gpus": True}), "resources.gpus", True, "H100:8"),
        (spec(resources={"cpus": 0}), "resources.cpus", 0, "greater than or equal to 1"),
        (spec(resources={"nodes": 0}), "resources.nodes", 0, "greater than or equal to 1"),
        (spec(resources={"memory": "lots"}), "resources.memory", "lots", "64G"),
        (spec(name="bad name"), "name", "bad name", "letters, digits"),
        (spec(name="-leading-dash"), "name", "-leading-dash", "start with a letter or digit"),
        (spec(name="x" * 64), "name", "x" * 64, "63 characters"),
        (spec(project="no/slash"), "project", "no/slash", "grappe projects"),
        (spec(env={"1BAD": "x"}), "env", {"1BAD": "x"}, "not starting with a digit"),
        (spec(env={"MY-VAR": "x"}), "env", {"MY-VAR": "x"}, "letters, digits and '_'"),
        (spec(max_runtime="forever"), "max_runtime", "forever", "2h30m"),
        (spec(max_runtime=0), "max_runtime", 0, "at least one second"),
        (spec(objective="fast"), "objective", "fast", "'time', 'cost' or 'carbon'"),
        (spec(retries=11), "retries", 11, "less than or equal to 10"),
        (spec(gpu=8), "gpu", 8, "remove it or check its spelling"),
        (spec(resources={"gpu": 8}), "resources.gpu", 8, "remove it or check its spelling"),
        (spec(constraints={"region": "EU"}), "constraints.region", "EU", "unknown field"),
        (
            spec(constraints={"max_price_eur_gpu_hour": -1}),
            "constraints.max_price_eur_gpu_hour",
            -1,
            "greater than or equal to 0",
        ),
        (spec(resources="lots"), "resources", "lots", "mapping"),
    ],
)
def test_problem_names_field_value_and_fix(data: dict, field: str, value: Any, fix: str) -> None:
    problem = only_problem(data)
    assert problem.field == field
    assert problem.value == value
    assert fix in problem.message
    assert str(problem).startswith(f"{field}: ")


def test_unknown_gpu_model_lists_the_catalog() -> None:
    problem = only_problem(spec(resources={"gpus": "X100:2"}))
    assert "'X100'" in problem.message
    for model in ("A100", "H100", "MI300X"):
        assert model in problem.message


def test_missing_fields_are_named() -> None:
    found = {p.field: p for p in problems({"resources": {"cpus": 2}})}
    assert set(found) == {"name", "run"}
    assert found["run"].message == "run is required; add it"


def test_several_problems_are_reported_at_once() -> None:
    found = problems(spec(name="bad name", resources={"cpus": 0}, colour="red"))
    assert {p.field for p in found} == {"name", "resources.cpus", "colour"}


def test_gpus_not_divisible_by_nodes_is_explained() -> None:
    problem = only_problem(spec(resources={"gpus": 3, "nodes": 2}))
    assert problem.field == "resources"
    assert "gpus 3" in problem.message
    assert "2 nodes" in problem.message
    assert "multiple of nodes" in problem.message


def test_gpus_divisible_by_nodes_is_fine() -> None:
    r = validate(JobSpec, spec(resources={"gpus": "H100:16", "nodes": 2})).resources
    assert r.to_domain().per_node().gpus == 8


def test_gpus_not_divisible_by_nodes_names_the_field() -> None:
    problem = only_problem(spec(resources={"gpus": 3, "nodes": 2}))
    assert problem.field in ("resources", "resources.gpus", "resources.nodes")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (spec(max_runtime=1.5), "max_runtime"),
        (spec(resources={"memory": 1.5}), "resources.memory"),
        (spec(resources={"memory": [64]}), "resources.memory"),
    ],
)
def test_union_field_problem_names_the_field(data: dict, field: str) -> None:
    problem = only_problem(data)
    assert problem.field == field


def test_spec_error_carries_source_and_problems_as_dicts() -> None:
    with pytest.raises(SpecError) as info:
        validate(JobSpec, spec(name="bad name"), source="job.yaml")
    assert str(info.value).startswith("job.yaml: name: ")
    assert info.value.problems[0].as_dict()["field"] == "name"


@pytest.mark.parametrize("document", [["a", "b"], "just text", 42, None])
def test_document_must_be_a_mapping(document: Any) -> None:
    problem = only_problem(document)
    assert problem.field == ""
    assert "mapping" in problem.message


def test_long_values_are_shortened_in_problems() -> None:
    problem = only_problem(spec(name="x" * 500))
    assert isinstance(problem.value, str) and len(problem.value) <= 200
    assert problem.value.endswith("...")


# --- examples ---------------------------------------------------------------------------------


def test_there_are_examples() -> None:
    assert EXAMPLES, "examples/*.yaml should hold at least one job spec"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path: Path) -> None:
    job = validate(JobSpec, load_yaml(path.read_text(), str(path)), str(path))
    assert job.max_runtime_s > 0
    assert job.to_request("example", job.project or "demo").resources.cpus >= 1


# --- safe YAML --------------------------------------------------------------------------------


def test_load_yaml_reads_a_spec() -> None:
    data = load_yaml("name: hello\nrun: echo hi\nresources:\n  gpus: H100:8\n")
    assert data == {"name": "hello", "run": "echo hi", "resources": {"gpus": "H100:8"}}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: x\nresources: [1, 2\nrun: echo", "line 3, column"),
        ("name: x\nrun: a: b", "line 2, column 7"),
        ("name: x\n\tbad: tab", "line 2, column 1"),
    ],
)
def test_broken_yaml_gives_line_and_column(text: str, where: str) -> None:
    with pytest.raises(SpecError) as info:
        load_yaml(text, source="job.yaml")
    problem = info.value.problems[0]
    assert problem.message.startswith("not valid YAML: ")
    assert where in problem.message
    assert str(info.value).startswith("job.yaml: ")


def test_load_yaml_refuses_python_tags() -> None:
    with pytest.raises(SpecError):
        load_yaml("!!python/object/apply:os.system ['true']")


def _bomb(levels: int, width: int) -> str:
    """A 'billion laughs': each level is a list of ``width`` aliases of the level below."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [" + ", ".join(["lol"] * width) + "]"]
    for below, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{below}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("levels", "width"), [(10, 12), (60, 2)])
def test_alias_bomb_is_refused_quickly(levels: int, width: int) -> None:
    start = time.perf_counter()
    with pytest.raises(SpecError, match="too many values"):
        load_yaml(_bomb(levels, width))
    assert time.perf_counter() - start < 2


def test_classic_billion_laughs_is_refused_quickly() -> None:
    start = time.perf_counter()
    with pytest.raises(SpecError):
        load_yaml(_bomb(8, 9))
    assert time.perf_counter() - start < 2


def test_a_few_honest_aliases_are_fine() -> None:
    text = "base: &env {A: '1'}\nname: x\nrun: echo\nenv: *env\n"
    assert load_yaml(text)["env"] == {"A": "1"}


def test_oversized_document_is_refused() -> None:
    text = "name: x\nrun: |\n  " + "x" * MAX_SPEC_BYTES + "\n"
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_yaml(text, source="big.yaml")
    assert time.perf_counter() - start < 2
    assert f"over {MAX_SPEC_BYTES} bytes" in info.value.problems[0].message


def test_size_limit_counts_bytes_not_characters() -> None:
    text = "run: " + "é" * (MAX_SPEC_BYTES // 2 + 10)  # fewer characters than the limit
    assert len(text) < MAX_SPEC_BYTES
    with pytest.raises(SpecError):
        load_yaml(text)
