"""Validation before any kernel starts: steps selected, parameters read from the notebooks (papermill's
inspector, plus the forms it misses), command-line strings typed strictly, secrets refused as names."""

from __future__ import annotations

import ast
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat
import papermill

from rollbook import record
from rollbook.errors import ParameterError, UsageError
from rollbook.runner.playbook import StepDef, discover
from rollbook.runner.spec import Param, RunSpec, ValidatedRun

_SECRET_RE = re.compile(r"(^|_)(token|password|passwd|secret|key|apikey|credentials?)s?($|_)", re.IGNORECASE)
_INT_RE = re.compile(r"^[+-]?\d+$")
_LABEL_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_OPTIONAL_RE = re.compile(r"^Optional\[(\w+)\]$")
_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
RUN_DIR = "run_dir"
# RunSpec fields a notebook receives when it declares a parameter of the same name.
SPEC_PARAMS = ("incident", "namespace", "rollout", "context", "mc_url", "release_id",
               "approve_retry", "approver", "ticket")


def parse_steps(text: str) -> tuple[int, ...]:
    """`--steps 1,2,3` -> (1, 2, 3); an empty list is refused (it would silently mean every step)."""
    try:
        steps = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        steps = ()
    if not steps:
        raise UsageError(f"--steps {text!r} is not a list of step numbers.", hint="Use e.g. --steps 1,2,3.")
    return steps


def parse_params(items: Iterable[str]) -> dict[str, str]:
    """`--param KEY=VALUE ...` -> {KEY: VALUE} (values stay strings; validate() types them)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--param {item!r} is not KEY=VALUE.", parameter=key or item,
                                 hint="Use e.g. --param dry_run=false.")
        out[key.strip()] = value
    return out


def notebook_params(notebook: Path) -> dict[str, Param]:
    """The parameters a notebook declares, as papermill reads them; refuses any papermill misses."""
    found = {n: Param(n, str(p["inferred_type_name"]), str(p["default"]), str(p["help"]))
             for n, p in _papermill_params(notebook).items()}
    for name in _assigned_names(notebook):
        if name not in found:
            # papermill's parser silently drops e.g. `x: str | None = None`; the run would ignore it
            raise ParameterError(
                f"Notebook {notebook.name} declares parameter {name!r} in a form papermill cannot read.",
                parameter=name, hint="Write it as `name: type = default  # help` (Optional[str], not str | None).")
    return found


def _papermill_params(notebook: Path) -> dict[str, Any]:
    """papermill.inspect_notebook(), also for a notebook saved without kernelspec metadata."""
    nb = nbformat.read(notebook, as_version=4)
    if nb.metadata.get("kernelspec", {}).get("name"):
        return dict(papermill.inspect_notebook(str(notebook)))
    # inspect_notebook takes only a path and refuses a notebook without a kernel name, although
    # the run itself names the kernel: inspect a copy that carries it.
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with tempfile.TemporaryDirectory(prefix="rb-inspect-") as tmp:
        copy = Path(tmp) / notebook.name
        nbformat.write(nb, copy)
        return dict(papermill.inspect_notebook(str(copy)))


def _assigned_names(notebook: Path) -> list[str]:
    """Names assigned in the cell tagged `parameters`."""
    nb = nbformat.read(notebook, as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return []
    names = []
    for node in ast.parse(cell.source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _fail(notebook: Path, p: Param, problem: str, hint: str) -> ParameterError:
    """A ParameterError naming the parameter and quoting the notebook's help for it."""
    helptext = f' Its help says: "{p.help}".' if p.help else " It has no help comment."
    return ParameterError(f"Parameter {p.name!r} of {notebook.name} {problem}.{helptext}",
                          parameter=p.name, hint=hint)


def _declared_type(p: Param) -> tuple[str | None, bool]:
    """(scalar type name or None if not a scalar we check, whether None is allowed)."""
    name, nullable = p.type_name, p.default == "None"
    if m := _OPTIONAL_RE.match(name):
        name, nullable = m[1], True
    if name == "None":  # no annotation: the default's literal type
        try:
            name = type(ast.literal_eval(p.default)).__name__
        except (ValueError, SyntaxError):
            return None, True
    return (name if name in _SCALARS else None), nullable


def coerce(notebook: Path, p: Param, value: Any) -> Any:
    """A value of the declared type: CLI strings converted strictly, typed values checked."""
    type_name, nullable = _declared_type(p)
    if value is None and nullable or type_name is None:
        return value
    if isinstance(value, str) and type_name != "str":
        return _from_text(notebook, p, value, type_name)
    ok = isinstance(value, _SCALARS[type_name]) and not (type_name != "bool" and isinstance(value, bool))
    if type_name == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise _fail(notebook, p, f"must be {type_name}, got {type(value).__name__} {value!r}",
                    f"Pass a {type_name} value.")
    return value


def _from_text(notebook: Path, p: Param, text: str, type_name: str) -> Any:
    """Convert a command-line string to bool/int/float without papermill's guessing."""
    if type_name == "bool" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if type_name == "int" and _INT_RE.match(text):
        return int(text)
    if type_name == "float" and _FLOAT_RE.match(text):
        return float(text)
    example = {"bool": "true or false", "int": "a whole number like 3", "float": "a number like 0.5"}
    raise _fail(notebook, p, f"must be {type_name}, got {text!r}",
                f"Pass --param {p.name}=<{example[type_name]}>.")


def _check_secret_name(name: str, where: str) -> None:
    """Refuse parameter names that look like credentials: papermill writes parameters into the record."""
    if _SECRET_RE.search(name):
        raise ParameterError(
            f"Parameter {name!r} ({where}) looks like a secret; secrets are never notebook parameters.",
            parameter=name,
            hint="Credentials come from the kubeconfig and ROLLBOOK_MC_TOKEN / ROLLBOOK_MC_TOKEN_FILE.")


def _select(spec: RunSpec) -> tuple[StepDef, ...]:
    """The steps to run, in playbook order."""
    available = discover(spec.runbooks_dir)
    if not available:
        raise UsageError(f"No step notebooks (NN-name.ipynb) in {spec.runbooks_dir}.",
                         hint="Point runbooks_dir at the runbooks/ folder.")
    if spec.steps is None:
        return tuple(available)
    by_number = {s.number: s for s in available}
    unknown = sorted(set(spec.steps) - set(by_number))
    if unknown:
        raise UsageError(f"Steps {unknown} are not in {spec.runbooks_dir}.",
                         hint=f"Choose from {sorted(by_number)}.")
    return tuple(by_number[n] for n in sorted(set(spec.steps)))


def _check_spec(spec: RunSpec) -> None:
    """Spec-level rules that do not depend on any notebook."""
    record.check_incident(spec.incident)
    if spec.approve_retry and not (spec.approver and spec.ticket):
        raise UsageError("--approve-retry needs --approver WHO and --ticket REF.",
                         hint="Name who approved the retry and the change ticket.")
    if spec.release_id is not None and not _LABEL_RE.match(spec.release_id):
        raise UsageError(f"--release-id {spec.release_id!r} is not a valid Kubernetes label value, so no Rollout "
                         "can carry it.", hint="At most 63 letters, digits, '-', '_' or '.', starting and ending "
                                               "with a letter or digit (e.g. api-1.42.0).")
    if spec.step_timeout <= 0 or (spec.cell_timeout is not None and spec.cell_timeout <= 0):
        raise UsageError("Timeouts must be positive seconds.", hint="e.g. step_timeout=600.")
    for name in spec.params:
        _check_secret_name(name, "--param")
        if name in SPEC_PARAMS or name == RUN_DIR:
            raise ParameterError(f"Parameter {name!r} is set by the runner, not by --param.",
                                 parameter=name, hint=f"Use --{name.replace('_', '-')} instead.")


def _step_params(spec: RunSpec, step: StepDef, declared: Mapping[str, Param]) -> dict[str, Any]:
    """Typed values for one notebook: the spec fields and --params it declares; required ones present."""
    offered = {k: getattr(spec, k) for k in SPEC_PARAMS if getattr(spec, k) is not None}
    offered.update(spec.params)
    values = {n: coerce(step.notebook, declared[n], v) for n, v in offered.items() if n in declared}
    for p in declared.values():
        _check_secret_name(p.name, f"declared by {step.filename}")
        if p.required and values.get(p.name) is None and p.name != RUN_DIR:
            raise _fail(step.notebook, p, "is required and was not given",
                        f"Pass --param {p.name}=VALUE (or the matching --{p.name.replace('_', '-')} option).")
    return values


def validate(spec: RunSpec) -> ValidatedRun:
    """Check steps and parameters against the notebooks; raises UsageError/ParameterError, runs nothing."""
    _check_spec(spec)
    steps = _select(spec)
    declared = {s.number: notebook_params(s.notebook) for s in steps}
    known = set().union(*declared.values())
    for name in spec.params:
        if name not in known:
            raise ParameterError(
                f"Parameter {name!r} is not declared by any selected step notebook.", parameter=name,
                hint=f"Known parameters: {', '.join(sorted(known - set(SPEC_PARAMS) - {RUN_DIR})) or 'none'}.")
    params = {s.number: _step_params(spec, s, declared[s.number]) for s in steps}
    shown = {k: getattr(spec, k) for k in SPEC_PARAMS}
    shown |= {"steps": [s.number for s in steps], "step_timeout": spec.step_timeout}
    for values in params.values():
        shown |= {k: v for k, v in values.items() if k in spec.params}
    return ValidatedRun(spec, steps, params,
                        frozenset(n for n, d in declared.items() if RUN_DIR in d), shown)
