"""Parameter validation happens before any kernel starts: unknown, missing, mistyped, secret-looking."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from rollbook import runner
from rollbook.errors import ParameterError, UsageError

TYPED = '''incident: str = None  # required: the incident id
dry_run: bool = True  # only print what would change
count: int = 3  # how many pods to inspect
ratio: float = 0.5  # share of traffic
label: str = "007"  # a label kept verbatim
owner: Optional[str] = None  # (required) who owns the rollout
run_dir: str = ""  # the run folder'''


def _notebook(folder: Path, name: str, params: str) -> Path:
    """Write a one-parameter-cell notebook into folder."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell, nbformat.v4.new_code_cell("pass")]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


@pytest.fixture
def books(tmp_path: Path) -> Path:
    """A runbooks folder with one typed notebook and one that declares only the basics."""
    _notebook(tmp_path / "rb", "01-typed.ipynb", TYPED)
    _notebook(tmp_path / "rb", "02-basic.ipynb", 'namespace: str = "default"  # where\nnote: str = ""  # free text')
    return tmp_path / "rb"


def _spec(books: Path, **kw: object) -> runner.RunSpec:
    base: dict[str, object] = dict(incident="INC-7", namespace="prod", rollout="api", runbooks_dir=books,
                                   params={"owner": "team-a"})
    base.update(kw)
    return runner.RunSpec(**base)  # type: ignore[arg-type]


def test_cli_strings_are_coerced_strictly_per_declared_type(books: Path) -> None:
    vr = runner.validate(_spec(books, params={"owner": "team-a", "dry_run": "false", "count": "007",
                                              "ratio": "1e-1", "label": "007"}))
    p = vr.params[1]
    assert p["dry_run"] is False and p["count"] == 7 and p["ratio"] == 0.1
    assert p["label"] == "007"  # a str parameter stays a string (papermill's -p would make it 7)
    assert p["incident"] == "INC-7" and "namespace" not in p  # spec fields only where declared
    assert vr.params[2] == {"namespace": "prod"}
    assert 1 in vr.declares_run_dir and 2 not in vr.declares_run_dir


def test_typed_python_values_pass_and_int_widens_to_float(books: Path) -> None:
    vr = runner.validate(_spec(books, params={"owner": "x", "dry_run": True, "ratio": 2}))
    assert vr.params[1]["dry_run"] is True
    assert vr.params[1]["ratio"] == 2.0 and isinstance(vr.params[1]["ratio"], float)


@pytest.mark.parametrize(("name", "value", "expected_type"), [
    ("dry_run", "yes", "bool"), ("dry_run", 1, "bool"), ("count", "3.0", "int"), ("count", True, "int"),
    ("ratio", "half", "float"), ("ratio", "nan", "float"), ("label", 7, "str"),
])
def test_wrong_type_names_parameter_and_quotes_help(books: Path, name: str, value: object, expected_type: str) -> None:
    with pytest.raises(ParameterError) as e:
        runner.validate(_spec(books, params={"owner": "x", name: value}))
    assert e.value.parameter == name
    assert f"must be {expected_type}" in str(e.value)
    help_text = {"dry_run": "only print what would change", "count": "how many pods to inspect",
                 "ratio": "share of traffic", "label": "a label kept verbatim"}[name]
    assert f'"{help_text}"' in str(e.value)
    assert e.value.exit_code == 2


def test_unknown_parameter_is_refused_with_the_known_ones(books: Path) -> None:
    with pytest.raises(ParameterError) as e:
        runner.validate(_spec(books, params={"owner": "x", "dryrun": "false"}))
    assert e.value.parameter == "dryrun"
    assert "dry_run" in str(e.value)  # the hint lists what exists


def test_missing_required_parameter(books: Path) -> None:
    with pytest.raises(ParameterError) as e:
        runner.validate(_spec(books, params={}))
    assert e.value.parameter == "owner"
    assert "required" in str(e.value) and '"(required) who owns the rollout"' in str(e.value)


def test_required_parameter_only_matters_for_selected_steps(books: Path) -> None:
    vr = runner.validate(_spec(books, params={}, steps=[2]))
    assert [s.number for s in vr.steps] == [2]


@pytest.mark.parametrize("name", ["mc_token", "password", "api_key", "client_secret", "key"])
def test_secret_looking_parameter_names_are_refused(books: Path, name: str) -> None:
    with pytest.raises(ParameterError) as e:
        runner.validate(_spec(books, params={"owner": "x", name: "s3cr3t-value"}))
    assert e.value.parameter == name and "secret" in str(e.value)


def test_harmless_names_with_secret_words_inside_are_accepted() -> None:
    for name in ("monkey", "keyboard_layout", "tokenizer"):
        runner._check_secret_name(name, "test")  # no error


def test_notebook_declaring_a_secret_parameter_is_refused(tmp_path: Path) -> None:
    _notebook(tmp_path, "01-leaky.ipynb", 'mc_token: str = ""  # the MC token')
    with pytest.raises(ParameterError) as e:
        runner.validate(runner.RunSpec(incident="I", namespace="n", rollout="r", runbooks_dir=tmp_path))
    assert e.value.parameter == "mc_token" and "01-leaky.ipynb" in str(e.value)


def test_declaration_papermill_cannot_read_is_refused(tmp_path: Path) -> None:
    _notebook(tmp_path, "01-pep604.ipynb", 'ok: str = ""  # fine\nmaybe: str | None = None  # dropped by papermill')
    with pytest.raises(ParameterError) as e:
        runner.validate(runner.RunSpec(incident="I", namespace="n", rollout="r", runbooks_dir=tmp_path))
    assert e.value.parameter == "maybe" and "Optional[str]" in str(e.value)


def test_runner_owned_names_cannot_be_passed_as_params(books: Path) -> None:
    with pytest.raises(ParameterError) as e:
        runner.validate(_spec(books, params={"owner": "x", "namespace": "other"}))
    assert e.value.parameter == "namespace" and "--namespace" in str(e.value)


def test_unknown_step_numbers_and_bad_incident_are_usage_errors(books: Path) -> None:
    with pytest.raises(UsageError, match=r"\[5\]"):
        runner.validate(_spec(books, steps=[1, 5]))
    with pytest.raises(ParameterError) as e:
        runner.validate(_spec(books, incident="../etc"))
    assert e.value.parameter == "incident"


def test_approve_retry_needs_approver_and_ticket(books: Path) -> None:
    with pytest.raises(UsageError, match="--approver"):
        runner.validate(_spec(books, approve_retry=True, approver="alice"))


def test_parse_helpers() -> None:
    assert runner.parse_steps("1, 2,3") == (1, 2, 3)
    assert runner.parse_params(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(UsageError):
        runner.parse_steps("1,two")
    with pytest.raises(ParameterError):
        runner.parse_params(["novalue"])


def test_playbook_concurrency_is_declared_per_step(tmp_path: Path) -> None:
    for n, name in enumerate(["confirm-rollback-status", "inspect-evidence", "remediate-and-retry"], 1):
        _notebook(tmp_path, f"0{n}-{name}.ipynb", "x: int = 1  # x")
    override = _notebook(tmp_path, "04-custom.ipynb", "x: int = 1  # x")
    nb = nbformat.read(override, as_version=4)
    nb.metadata["rollbook"] = {"parallel": True}
    nbformat.write(nb, override)
    steps = runner.discover(tmp_path)
    assert [(s.number, s.parallel) for s in steps] == [(1, True), (2, True), (3, False), (4, True)]
    batches = runner._batches(steps, max_parallel=3)
    assert [[s.number for s in b] for b in batches] == [[1, 2], [3], [4]]
    assert [[s.number for s in b] for b in runner._batches(steps, max_parallel=1)] == [[1], [2], [3], [4]]


def test_validation_starts_no_kernel(books: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a kernel was started")
    monkeypatch.setattr(runner.IPCKernelManager, "start_kernel", boom)
    with pytest.raises(ParameterError):
        runner.run(_spec(books, params={"owner": "x", "count": "many"}), progress=lambda _: None)
