"""The headless runner: validate parameters, run the step notebooks with papermill, write the record.

The only importer of papermill. Traps it works around are listed in shared/docs/jupyter-notes.md:
parameters are validated against `papermill.inspect_notebook()` before any kernel starts; kernels use
the IPC transport, start ahead of their step and stop immediately; a cell timeout is marked by us.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any, Protocol

import nbformat
import papermill
import papermill.iorw
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError
from papermill.exceptions import PapermillExecutionError

from rollbook import __version__, atomic, continuation, record, terminal
from rollbook.errors import ParameterError, UsageError
from rollbook.record import STEP_RESULT_MIME, STEP_VERDICTS, StepResult


class _AtomicLocalHandler(papermill.iorw.LocalHandler):  # type: ignore[misc]
    """papermill saves the output notebook after every cell with a plain open('w'): a runner killed
    mid-save would leave half a notebook in the record. Registered for absolute paths (the runner's
    are always absolute), it writes through a temp file and os.replace instead."""

    def write(self, buf: str, path: str) -> None:
        atomic.write_text(path, buf)


papermill.iorw.papermill_io.register("/", _AtomicLocalHandler())

# --------------------------------------------------------------------------- the playbook


@dataclass(frozen=True)
class StepDef:
    """One step notebook. `parallel`: read-only and independent of earlier results, so it may run
    alongside its parallel neighbours; a step that mutates or reads results.json must not be."""

    number: int
    name: str
    notebook: Path
    parallel: bool = False
    warmup: str | None = None  # the notebook's own warm-up imports (metadata rollbook.warmup), else the run's

    @property
    def filename(self) -> str:
        """`NN-<name>.ipynb`, the name it keeps in the record."""
        return self.notebook.name


# Defaults for the six playbook steps; a notebook may override with metadata {"rollbook": {"parallel": ...}}.
PLAYBOOK: dict[str, bool] = {
    "confirm-rollback-status": True,
    "inspect-evidence": True,
    "validate-release-identity": True,
    "remediate-and-retry": False,
    "escalate": False,
    "verify-closeout": False,
}
_NOTEBOOK_RE = re.compile(r"^(\d{2})-([a-z0-9][a-z0-9-]*)\.ipynb$")


def discover(runbooks_dir: Path) -> list[StepDef]:
    """The `NN-<name>.ipynb` notebooks of a runbooks folder, in playbook order."""
    folder = Path(runbooks_dir)
    if not folder.is_dir():
        raise UsageError(f"Runbooks folder {folder} does not exist.",
                         hint="Pass the folder holding 01-confirm-rollback-status.ipynb ... (runbooks/).")
    steps = []
    for path in sorted(folder.glob("[0-9][0-9]-*.ipynb")):
        m = _NOTEBOOK_RE.match(path.name)
        if m and m[1] != "00":  # steps are 01-99; 00-preflight.ipynb is run before an incident, not in one
            meta = nbformat.read(path, as_version=4).metadata.get("rollbook", {})
            steps.append(StepDef(int(m[1]), m[2], path, bool(meta.get("parallel", PLAYBOOK.get(m[2], False))),
                                 meta.get("warmup")))
    numbers = [s.number for s in steps]
    if len(set(numbers)) != len(numbers):
        raise UsageError(f"Two notebooks in {folder} share a step number: {numbers}.",
                         hint="Give each step notebook its own NN- prefix.")
    return steps


class Policy(Protocol):
    """Decides, before a step starts, whether it is skipped: a reason, or None to run it."""

    def __call__(self, step: StepDef, done: Sequence[StepResult]) -> str | None: ...


@dataclass(frozen=True)
class PlaybookPolicy:
    """The playbook's rules: a healthy rollout skips remediation; listed steps are never skipped."""

    skip_when_healthy: frozenset[str] = frozenset({"remediate-and-retry"})
    never_skip: frozenset[str] = frozenset({"escalate"})

    def __call__(self, step: StepDef, done: Sequence[StepResult]) -> str | None:
        """Skip reason for `step` given the results so far, or None."""
        if step.name in self.never_skip:
            return None
        phase = record.merge_findings(done).get("phase")
        if step.name in self.skip_when_healthy and phase == "Healthy":
            return "the rollout is Healthy: nothing to remediate"
        return None


# --------------------------------------------------------------------------- the run's inputs


@dataclass(frozen=True)
class RunSpec:
    """Everything `rollbook run` was asked to do. Credentials are never part of it."""

    incident: str
    namespace: str
    rollout: str
    context: str | None = None
    mc_url: str | None = None
    release_id: str | None = None
    out: Path = Path("outputs")
    steps: Sequence[int] | None = None  # None: every notebook in runbooks_dir
    params: Mapping[str, Any] = field(default_factory=dict)  # --param KEY=VALUE (strings are coerced)
    approve_retry: bool = False
    approver: str | None = None
    ticket: str | None = None
    runbooks_dir: Path = Path("runbooks")
    step_timeout: float = 600.0  # wall-clock bound per step, seconds
    cell_timeout: float | None = None  # per cell; None: the step timeout
    max_parallel: int = 3  # kernels of parallel steps running at once
    start_timeout: float = 60.0  # kernel start-up bound
    # imported in each kernel while it waits for its step (the step notebooks' own first import)
    warmup: str = "import rollbook.steps"

    def __post_init__(self) -> None:
        # Resolved once, here: kernels do not run in the caller's folder's terms (papermill, temp dirs), so
        # a relative `outputs/` or `reports/junit.xml` would silently point elsewhere inside a step.
        object.__setattr__(self, "out", absolute(self.out))
        object.__setattr__(self, "runbooks_dir", absolute(self.runbooks_dir))
        object.__setattr__(self, "params", {k: str(absolute(v)) if is_path_param(k) and isinstance(v, str) and v
                                            else v for k, v in self.params.items()})


# Parameters that name a file or folder: resolved against the caller's working directory.
PATH_PARAMS = frozenset({"config", "evidence_file"})


def is_path_param(name: str) -> bool:
    """A parameter holding a path: a known one, or named `*_file`, `*_dir`, `*_path`."""
    return name in PATH_PARAMS or name.endswith(("_file", "_dir", "_path"))


def absolute(path: str | Path) -> Path:
    """`path` as an absolute path (`~` expanded) in the caller's working directory."""
    return Path(os.path.abspath(Path(path).expanduser()))


@dataclass(frozen=True)
class Param:
    """A parameter a notebook declares: `name: type = default  # help`."""

    name: str
    type_name: str
    default: str
    help: str

    @property
    def required(self) -> bool:
        """Default None and help starting with 'required' or containing '(required)'."""
        return self.default == "None" and bool(_REQUIRED_RE.search(self.help))


@dataclass(frozen=True)
class ValidatedRun:
    """A spec whose steps and parameters were checked; nothing has run yet."""

    spec: RunSpec
    steps: tuple[StepDef, ...]
    params: Mapping[int, Mapping[str, Any]]  # step number -> typed values (run_dir added at run time)
    declares_run_dir: frozenset[int]
    parameters: Mapping[str, Any]  # what record.json shows


@dataclass(frozen=True)
class RunResult:
    """What a run produced: where the record is, the exit code and the result of every step it ran."""

    record_dir: Path
    exit_code: int
    steps: tuple[StepResult, ...]
    partial: bool
    continued_from: Mapping[str, Any] | None = None  # the earlier record this run continued
    next_step: str | None = None  # what to do next (the NEXT: line)


# --------------------------------------------------------------------------- validation

_REQUIRED_RE = re.compile(r"^\s*required\b|\(required\)", re.IGNORECASE)
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


# --------------------------------------------------------------------------- kernels


READY_POLL = 0.2  # seconds to wait for an IOPub message that proves the subscription is live


class QuickReadyClient(AsyncKernelClient):
    """A kernel client whose wait_for_ready does not idle 0.2 s for IOPub to fall silent.

    jupyter_client's wait_for_ready ends by reading IOPub until nothing arrives for 0.2 s; nbclient
    calls it once per step, on the critical path. Messages left on IOPub are harmless there (nbclient
    reads only replies to its own requests), so we keep the checks that matter: a kernel_info reply
    on shell and one message on IOPub (the subscription is connected), within the same bound.
    """

    async def _ready_once(self) -> bool:
        """One kernel_info round trip; True when shell answered and IOPub delivered a message."""
        self.kernel_info()
        try:
            msg = await self.shell_channel.get_msg(timeout=1)
        except Empty:
            return False
        if msg["msg_type"] != "kernel_info_reply":
            return False
        try:
            await self.iopub_channel.get_msg(timeout=READY_POLL)
        except Empty:
            return False  # IOPub not connected yet: ask again (as jupyter_client does)
        self._handle_kernel_info_reply(msg)
        return True

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        """Return once the kernel answers kernel_info and IOPub is connected; bounded by `timeout`."""
        deadline = time.monotonic() + (60.0 if timeout is None else timeout)
        while not await self._ready_once():
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")


class IPCKernelManager(AsyncKernelManager):
    """A kernel on unix sockets (no TCP port races) running this interpreter's ipykernel."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(transport="ipc", kernel_name="python3", **kwargs)
        self.client_factory = QuickReadyClient
        self.clients: list[Any] = []

    @property
    def kernel_spec(self) -> KernelSpec:
        # Pinned to sys.executable: a missing or foreign `python3` kernelspec must not pick another
        # interpreter that lacks rollbook.
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="Python 3 (ipykernel)", language="python", name="python3")

    def client(self, **kwargs: Any) -> Any:
        """Remember clients nbclient makes, so we can close them: it only does when it owns us."""
        kc = super().client(**kwargs)
        self.clients.append(kc)
        return kc


class _Kernel:
    """A kernel started ahead of its step, killable from another thread (the wall-clock timer)."""

    def __init__(self, workdir: Path, env: Mapping[str, str], cwd: Path | None = None) -> None:
        conn = workdir / f"k-{uuid.uuid4().hex[:8]}.json"
        self.km = IPCKernelManager(connection_file=str(conn))
        self.killed = False
        run_sync(self.km.start_kernel)(env=dict(env), cwd=str(cwd or workdir))

    def warm_up(self, code: str, timeout: float) -> None:
        """Run `code` (imports only) while the kernel waits for its step: the step then starts warm.

        Only the module cache is affected; a failure here is ignored, the step will meet it itself."""
        if not code:
            return
        kc = self.km.client()
        kc.start_channels()
        try:
            run_sync(kc.wait_for_ready)(timeout=timeout)
            run_sync(kc.execute_interactive)(code, timeout=timeout, store_history=False, allow_stdin=False,
                                             output_hook=lambda msg: None)
        except Exception:  # noqa: BLE001 - a warm-up is an optimisation, never a verdict
            pass
        finally:
            kc.stop_channels()
            self.km.clients.remove(kc)

    def kill(self) -> None:
        """SIGKILL the kernel process; nbclient notices within a second and raises DeadKernelError."""
        self.killed = True
        process = getattr(self.km.provisioner, "process", None)
        if process is not None:
            process.kill()

    def stop(self) -> None:
        """Close clients and stop the kernel immediately (the graceful path can stall ~3 s)."""
        for kc in self.km.clients:
            kc.stop_channels()
        try:
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        except RuntimeError:  # already dead: nothing left to stop
            run_sync(self.km.cleanup_resources)()


@dataclass
class _Context:
    """Per-run settings shared by the step workers."""

    run_dir: Path
    workdir: Path
    env: Mapping[str, str]
    step_timeout: float
    cell_timeout: float
    start_timeout: float
    warmup: str = ""
    # the caller's folder: a relative path in rollbook.yaml or $KUBECONFIG means there what it means to them
    cwd: Path | None = None
    reporter: terminal.Reporter = field(default_factory=lambda: terminal.Lines(lambda line: None))


@dataclass
class _Gate:
    """The scheduler's go/skip decision for one pre-started step."""

    opened: threading.Event = field(default_factory=threading.Event)
    skip: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    done: Future[StepResult] = field(default_factory=Future)

    def open(self, skip: str | None, params: Mapping[str, Any]) -> None:
        """Let the worker run the step (or record it as skipped)."""
        self.skip, self.params = skip, params
        self.opened.set()


# --------------------------------------------------------------------------- one step


def _worker(step: StepDef, ctx: _Context, gate: _Gate, gate_bound: float,
            on_warm: Callable[[], None] = lambda: None) -> None:
    """Start a kernel, wait for the go, run the step, hand back the result, then stop the kernel."""
    kernel: _Kernel | None = None
    start_error: str | None = None
    try:
        kernel = _Kernel(ctx.workdir, ctx.env, ctx.cwd)
        kernel.warm_up(step.warmup if step.warmup is not None else ctx.warmup, ctx.start_timeout)
    except Exception as e:  # any start failure is this step's error, reported below
        start_error = f"the kernel did not start: {type(e).__name__}: {e}"
    try:
        on_warm()  # the next batch's kernels may start now (a failed start counts: it frees the CPU too)
        if not gate.opened.wait(gate_bound):
            gate.skip = "not run: the runner never reached this step"
        gate.done.set_result(_outcome(step, ctx, gate, kernel, start_error))
    except BaseException as e:  # the scheduler must always get an answer
        gate.done.set_result(_result(step, "error", f"runner failure: {type(e).__name__}: {e}", None, 0.0))
    finally:
        if kernel is not None:
            kernel.stop()


def _outcome(step: StepDef, ctx: _Context, gate: _Gate, kernel: _Kernel | None, start_error: str | None) -> StepResult:
    """Skip, kernel-start error, or the executed step's result."""
    if gate.skip is not None:
        return _result(step, "skip", gate.skip, None, 0.0)
    if kernel is None:
        return _result(step, "error", start_error or "the kernel did not start", record.utc_now(), 0.0)
    return _execute(step, ctx, kernel, gate.params)


def _result(step: StepDef, verdict: record.Verdict, reason: str, started: str | None, seconds: float,
            **extra: Any) -> StepResult:
    """A StepResult for `step`."""
    return StepResult(step.number, step.name, step.filename, verdict, reason, started, seconds, **extra)


def _execute(step: StepDef, ctx: _Context, kernel: _Kernel, params: Mapping[str, Any]) -> StepResult:
    """Run one notebook through papermill in the pre-started kernel, bounded by cell and wall timeouts."""
    started, t0 = record.utc_now(), time.monotonic()
    out = ctx.run_dir / step.filename
    timer = threading.Timer(ctx.step_timeout, kernel.kill)
    timer.start()
    try:
        papermill.execute_notebook(
            str(step.notebook), str(out), parameters=dict(params), kernel_name="python3",
            km=kernel.km, progress_bar=False, request_save_on_cell_execute=True,
            execution_timeout=ctx.cell_timeout, start_timeout=ctx.start_timeout,
            shutdown_kernel="immediate",
            # what the step prints (a bounded wait's progress) reaches the terminal as it happens
            stdout_file=terminal.LineWriter(functools.partial(ctx.reporter.output, step.number)),
        )
        verdict, reason, extra = _read_result(out)
    except PapermillExecutionError as e:
        verdict, reason, extra = "error", f"cell {e.exec_count} raised {e.ename}: {e.evalue}", {}
    except CellTimeoutError:
        reason = f"a cell ran longer than the cell timeout of {ctx.cell_timeout:g} s and was stopped"
        verdict, extra = "error", {"timed_out": True}
        _mark_timeout(out, "CellTimeoutError", reason)
    except Exception as e:  # kernel death (ours, on the wall clock, or its own) and papermill failures
        verdict, reason, extra = _died(e, kernel, ctx, out)
    finally:
        timer.cancel()
    return _result(step, verdict, reason, started, time.monotonic() - t0, **extra)  # type: ignore[arg-type]


def _died(e: Exception, kernel: _Kernel, ctx: _Context, out: Path) -> tuple[str, str, dict[str, Any]]:
    """Verdict for an execution that ended in an exception other than a cell error or cell timeout."""
    if kernel.killed:
        reason = f"the step ran longer than its wall-clock bound of {ctx.step_timeout:g} s; its kernel was stopped"
        _mark_timeout(out, "StepTimeout", reason)
        return "error", reason, {"timed_out": True}
    return "error", f"the step failed to execute: {type(e).__name__}: {e}", {}


def _mark_timeout(out: Path, ename: str, reason: str) -> None:
    """papermill saves a timed-out cell as if it completed: put the error on it ourselves."""
    if not out.exists():
        return
    nb = nbformat.read(out, as_version=4)
    ran = [c for c in nb.cells if c.get("metadata", {}).get("papermill", {}).get("status") not in (None, "pending")]
    if ran:
        cell = ran[-1]
        cell.metadata["papermill"]["status"] = "failed"
        cell.metadata["papermill"]["exception"] = True
        cell.setdefault("outputs", []).append(
            nbformat.v4.new_output("error", ename=ename, evalue=reason, traceback=[f"{ename}: {reason}"]))
    nb.metadata.setdefault("papermill", {})["exception"] = True
    nbformat.write(nb, out)


def _read_result(out: Path) -> tuple[str, str, dict[str, Any]]:
    """The step-result the notebook displayed last: (verdict, reason, facts/findings)."""
    nb = nbformat.read(out, as_version=4)
    found = [o["data"][STEP_RESULT_MIME] for c in nb.cells for o in c.get("outputs", [])
             if STEP_RESULT_MIME in o.get("data", {})]
    if not found:
        return "error", f"the notebook displayed no {STEP_RESULT_MIME} result", {}
    res = found[-1]
    problem = _result_problem(res)
    if problem:
        return "error", f"the notebook's step result is malformed: {problem}", {}
    return res["verdict"], res["reason"], {"facts": res.get("facts") or {}, "findings": res.get("findings") or {}}


def _result_problem(res: Any) -> str | None:
    """What is wrong with a displayed step result, or None."""
    if not isinstance(res, dict):
        return "not an object"
    if res.get("verdict") not in STEP_VERDICTS:
        return f"verdict {res.get('verdict')!r} is not one of {', '.join(STEP_VERDICTS)}"
    if not isinstance(res.get("reason"), str):
        return "reason is not a string"
    bad = [k for k in ("facts", "findings") if not isinstance(res.get(k) or {}, dict)]
    return f"{', '.join(bad)} must be objects" if bad else None


# --------------------------------------------------------------------------- the run


def _batches(steps: Sequence[StepDef], max_parallel: int) -> list[list[StepDef]]:
    """Consecutive parallel steps grouped (at most max_parallel); every other step alone."""
    batches: list[list[StepDef]] = []
    for s in steps:
        if s.parallel and batches and batches[-1][-1].parallel and len(batches[-1]) < max_parallel:
            batches[-1].append(s)
        else:
            batches.append([s])
    return batches


def secrets_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The MC token from ROLLBOOK_MC_TOKEN and the content of ROLLBOOK_MC_TOKEN_FILE, if any."""
    env = os.environ if environ is None else environ
    found = [env.get("ROLLBOOK_MC_TOKEN", "")]
    token_file = env.get("ROLLBOOK_MC_TOKEN_FILE")
    if token_file and Path(token_file).is_file():
        found.append(Path(token_file).read_text(encoding="utf-8").strip())
    return [s for s in found if s]


def _kernel_env(workdir: Path) -> dict[str, str]:
    """The kernels' environment: ours, with IPython/Jupyter/tmp state kept inside this run."""
    for sub in ("ipython", "runtime", "tmp"):
        (workdir / sub).mkdir(exist_ok=True)
    return {**os.environ, "IPYTHONDIR": str(workdir / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"), "TMPDIR": str(workdir / "tmp"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1"}  # silences debugpy's frozen-modules warning


def reporter_for(progress: Callable[[str], None] | terminal.Reporter | None) -> terminal.Reporter:
    """The terminal's live display by default; a plain callable gets each step's result line only."""
    if progress is None:
        return terminal.for_terminal()
    if callable(progress) and not hasattr(progress, "finished"):
        return terminal.Lines(progress)
    return progress  # type: ignore[return-value]


class _Launcher:
    """Starts each batch's kernels once, in order, ahead of their step.

    A kernel started only when the step before it begins (~0.7 s) is not warm when that step ends
    (boot + imports take 1.3-1.8 s on 2 busy cores; measured: step 5 waited ~1 s). So batch k+1 starts
    when batch k runs, or earlier, as soon as a kernel of batch k is warm (one boot at a time, so the
    boots do not crowd the running steps), never more than `ahead` batches beyond the running one
    (memory: ~150 MiB a kernel).
    """

    def __init__(self, pool: ThreadPoolExecutor, batches: Sequence[Sequence[StepDef]], ctx: _Context,
                 gate_bound: float, ahead: int = 2, on_last_warm: Callable[[], object] = lambda: None) -> None:
        self.pool, self.batches, self.ctx, self.gate_bound, self.ahead = pool, batches, ctx, gate_bound, ahead
        self.on_last_warm = on_last_warm
        self.gates: list[list[tuple[StepDef, _Gate]]] = []
        self.warm: set[int] = set()  # batches with at least one warm (or failed) kernel
        self.running = 0
        self.lock = threading.Lock()

    def _launch_next(self) -> None:
        """Submit the workers of the next unlaunched batch (the lock is held)."""
        k = len(self.gates)
        gates = [(s, _Gate()) for s in self.batches[k]]
        self.gates.append(gates)
        for s, g in gates:
            self.pool.submit(_worker, s, self.ctx, g, self.gate_bound, functools.partial(self.warmed, k))

    def _advance(self) -> None:
        """Launch every batch now allowed: its predecessor runs or has a warm kernel, within `ahead`."""
        while len(self.gates) < len(self.batches):
            k = len(self.gates)
            allowed = k <= self.running + 1 or (k - 1 in self.warm and k <= self.running + self.ahead)
            if not allowed:
                return
            self._launch_next()

    def warmed(self, k: int) -> None:
        """A kernel of batch k is warm (called from its worker thread)."""
        with self.lock:
            first = k not in self.warm
            self.warm.add(k)
            self._advance()
        if first and k == len(self.batches) - 1:
            # every kernel has booted: the report's one-off cost now competes with the last steps
            # only, instead of being paid after them
            self.on_last_warm()

    def opened(self, k: int) -> list[tuple[StepDef, _Gate]]:
        """Batch k runs now: make sure it and its successor are launched; its gates."""
        with self.lock:
            self.running = k
            self._advance()
            return self.gates[k]


class _Scheduler:
    """Runs batches in order; later batches' kernels start ahead (see _Launcher)."""

    def __init__(self, vr: ValidatedRun, ctx: _Context, policy: Policy,
                 carried: Sequence[StepResult] = (),
                 on_step: Callable[[Sequence[StepResult]], object] = lambda results: None) -> None:
        self.vr, self.ctx, self.policy, self.on_step = vr, ctx, policy, on_step
        self.results: list[StepResult] = list(carried)  # an earlier record's steps, when continuing it
        self.stop_reason: str | None = None
        self.position = {s.number: i + 1 for i, s in enumerate(vr.steps)}
        # bounded: a worker waits at most as long as every step could take before it
        self.gate_bound = len(vr.steps) * (vr.spec.step_timeout + vr.spec.start_timeout) + 60

    def _open(self, gates: Sequence[tuple[StepDef, _Gate]]) -> None:
        """Decide each step of a batch (stopped, skipped by policy, or run) and open its gate."""
        record.write_results(self.ctx.run_dir, self.results)
        for s, g in gates:
            # after a failed step the run stops, except for steps the policy never skips (escalation:
            # a broken step 2 is no reason not to tell people the service is still degraded)
            always = s.name in getattr(self.policy, "never_skip", frozenset())
            stopped = self.stop_reason and not always
            skip = f"not run: {self.stop_reason}" if stopped else self.policy(s, self.results)
            params = dict(self.vr.params[s.number])
            if s.number in self.vr.declares_run_dir:
                params[RUN_DIR] = str(self.ctx.run_dir)
            if skip is None:
                self.ctx.reporter.started(s.number, self.label(s))
            g.open(skip, params)

    def label(self, s: StepDef) -> str:
        """`[4/6] remediate-and-retry`."""
        return f"[{self.position[s.number]}/{len(self.vr.steps)}] {s.name}"

    def _collect(self, gates: Sequence[tuple[StepDef, _Gate]]) -> None:
        """Wait (bounded) for a batch, report progress, note the first failure."""
        for s, g in gates:
            r = g.done.result(timeout=self.gate_bound)
            self.results.append(r)
            self.on_step(self.results)  # record.json (still `interrupted`) lists it from now on
            self.ctx.reporter.finished(s.number, _progress_line(self.position[s.number], len(self.vr.steps), r))
            if r.verdict == "error" and self.stop_reason is None:
                self.stop_reason = f"step {r.step} ({r.name}) failed to execute"

    def run(self, take_snapshot: Callable[[], None]) -> list[StepResult]:
        """Run every batch; the snapshot is taken while the first kernels boot, before any step runs."""
        batches = _batches(self.vr.steps, self.vr.spec.max_parallel)
        # room for every kernel the launcher may keep ahead: no worker ever queues behind a later one
        workers = sum(len(b) for b in batches[:3]) if len(batches) > 1 else len(batches[0])
        with ThreadPoolExecutor(max_workers=max(workers, 2 * self.vr.spec.max_parallel)) as pool:
            launcher = _Launcher(pool, batches, self.ctx, self.gate_bound, on_last_warm=record.warm_report)
            with launcher.lock:
                launcher._launch_next()  # the first batch's kernels boot while the snapshot is taken
            self.ctx.reporter.phase(f"starting {len(batches[0])} kernel(s)")
            take_snapshot()
            self.ctx.reporter.phase("waiting for the first kernel(s) to be ready")
            for k in range(len(batches)):
                gates = launcher.opened(k)
                self._open(gates)
                self._collect(gates)
        record.write_results(self.ctx.run_dir, self.results)
        return self.results


def _progress_line(i: int, n: int, r: StepResult) -> str:
    """`[2/6] inspect-evidence … pass (1.3 s)`."""
    tail = f"skip: {r.reason}" if r.verdict == "skip" else f"{r.verdict} ({r.seconds:.1f} s)"
    if r.verdict == "error":
        tail += f": {r.reason}"
    return record.printable(f"[{i}/{n}] {r.name} … {tail}")


# Exit codes of `rollbook run` / `demo` (README, "Commands and exit codes"). 0, 2, 3 and 4 are the public
# contract (shared/docs/interfaces.md); 5 and 6 are ours. When steps end differently the first in
# EXIT_PRIORITY wins: a run that escalated exits 4 even if step 4 also needs a human.
EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_STEP_ERROR, EXIT_ESCALATE = 0, 1, 2, 3, 4
EXIT_NEEDS_HUMAN, EXIT_FAIL = 5, 6
EXIT_PRIORITY: tuple[tuple[str, int], ...] = (
    ("error", EXIT_STEP_ERROR), ("escalate", EXIT_ESCALATE), ("fail", EXIT_FAIL), ("needs_human", EXIT_NEEDS_HUMAN))


def exit_code(steps: Sequence[StepResult]) -> int:
    """3 a step failed to execute, 4 escalate, 6 a check failed, 5 a human must decide, else 0 (pass/skip).

    Steps carried from an earlier record do not count: their run already exited with its own code."""
    verdicts = {s.verdict for s in steps if not s.from_record}
    return next((code for verdict, code in EXIT_PRIORITY if verdict in verdicts), EXIT_OK)


def earlier_record(vr: ValidatedRun) -> tuple[continuation.Earlier | None, list[StepResult], tuple[str, ...]]:
    """A run that starts after step 1 continues the incident's newest earlier record (same `--out`).

    The earlier steps' results (the cause, the evidence) and its snapshot (the baseline step 4 and
    the restarts compare against) are what the later steps need; a record a service made counts too."""
    first = min(s.number for s in vr.steps)
    before = [s.number for s in discover(vr.spec.runbooks_dir) if s.number < first]
    if not before:
        return None, [], ()
    earlier = continuation.find_earlier(vr.spec.out, vr.spec.incident, vr.spec.namespace, vr.spec.rollout)
    if earlier is None:
        where = vr.spec.out / vr.spec.incident
        return None, [], (f"No earlier record of {vr.spec.incident} for {vr.spec.namespace}/{vr.spec.rollout} "
                          f"under {where}: steps {', '.join(map(str, before))} were not run and their findings "
                          "are missing (run them, or pass the --out of the earlier run).",)
    carried = earlier.steps(before)
    missing = sorted(set(before) - {s.step for s in carried})
    notes = (f"The earlier record {earlier.path} has no result for step(s) {', '.join(map(str, missing))}.",) \
        if missing else ()
    return earlier, carried, notes


def _snapshot_into(run_dir: Path, snapshot: Callable[[], Mapping[str, Any]] | None, errors: list[str],
                   reporter: terminal.Reporter) -> Callable[[], None]:
    """A thunk that writes the caller's snapshot; a failing snapshot is recorded, not fatal."""
    def take() -> None:
        if snapshot is None:
            return
        reporter.phase("taking the snapshot while the kernels start")
        try:
            record.write_snapshot(run_dir, snapshot())
        except Exception as e:  # the steps still run; record.json says why the snapshot is missing
            errors.append(f"{type(e).__name__}: {e}")
    return take


def _progress_writer(vr: ValidatedRun, run_dir: Path, started: str, continued: Mapping[str, Any] | None,
                     notes: tuple[str, ...], redactor: record.Redactor) -> Callable[[Sequence[StepResult]], None]:
    """Writes the in-progress record.json (`interrupted` until the run ends) with the steps so far."""
    def write(results: Sequence[StepResult]) -> None:
        info = record.RunInfo(
            incident=vr.spec.incident, namespace=vr.spec.namespace, rollout=vr.spec.rollout,
            context=vr.spec.context, run_id=run_dir.name, started_at=started, finished_at="",
            tool_version=__version__, parameters=vr.parameters, exit_code=EXIT_STEP_ERROR, partial=True,
            continued_from=continued, notes=notes,
            error="the run did not finish: the runner was stopped before it wrote the final record")
        record.write_progress(run_dir, info, results, redactor)
    return write


def run(
    spec: RunSpec | ValidatedRun,
    *,
    snapshot: Callable[[], Mapping[str, Any]] | None = None,
    policy: Policy | None = None,
    secrets: Iterable[str] = (),
    progress: Callable[[str], None] | terminal.Reporter | None = None,
    next_step: Callable[[ValidatedRun, Sequence[StepResult]], str | None] | None = None,
) -> RunResult:
    """Validate, run the steps, write the record (also when a step fails); never raises for a step.

    `progress`: None draws live progress on stderr; a callable gets each step's result line."""
    vr = spec if isinstance(spec, ValidatedRun) else validate(spec)
    reporter = reporter_for(progress)
    try:
        return _run(vr, reporter, snapshot, policy, secrets, next_step)
    finally:
        reporter.close()


def _run(vr: ValidatedRun, reporter: terminal.Reporter, snapshot: Callable[[], Mapping[str, Any]] | None,
         policy: Policy | None, secrets: Iterable[str],
         next_step: Callable[[ValidatedRun, Sequence[StepResult]], str | None] | None) -> RunResult:
    """The body of run(): the record folder, the continuation, the steps, the record."""
    started = record.utc_now()
    run_dir = record.new_run_dir(vr.spec.out, vr.spec.incident)
    earlier, carried, notes = earlier_record(vr)
    if earlier is not None:
        if continuation.carry(earlier, run_dir, carried):
            snapshot = None  # the incident's snapshot is the earlier one: the baseline of the first look
        reporter.note(f"continuing record {earlier.path} (steps {', '.join(str(s.step) for s in carried)} "
                      "and its snapshot)")
    for note in notes:
        reporter.note(note)
    secrets = [*secrets, *secrets_from_env()]
    progress = _progress_writer(vr, run_dir, started, earlier.describe(carried) if earlier else None, notes,
                                record.Redactor(secrets))
    progress(carried)
    workdir = Path(tempfile.mkdtemp(prefix="rb-"))  # short path: unix socket names are limited to ~100 bytes
    snap_errors: list[str] = []
    try:
        ctx = _Context(run_dir, workdir, _kernel_env(workdir), vr.spec.step_timeout,
                       vr.spec.cell_timeout or vr.spec.step_timeout, vr.spec.start_timeout, vr.spec.warmup,
                       Path.cwd(), reporter)
        sched = _Scheduler(vr, ctx, policy or PlaybookPolicy(), carried, on_step=progress)
        crash: str | None = None
        try:
            results = sched.run(_snapshot_into(run_dir, snapshot, snap_errors, reporter))
        except Exception as e:  # a bounded wait expired or a runner bug: still write what we have
            results, crash = sched.results, f"the runner stopped: {type(e).__name__}: {e}"
        reporter.phase("writing the record (summary, report, bundle)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    code = 3 if crash else exit_code(results)
    info = record.RunInfo(
        incident=vr.spec.incident, namespace=vr.spec.namespace, rollout=vr.spec.rollout,
        context=vr.spec.context, run_id=run_dir.name, started_at=started, finished_at=record.utc_now(),
        tool_version=__version__, parameters=vr.parameters, exit_code=code, partial=code == 3,
        snapshot_error=snap_errors[0] if snap_errors else None, error=crash,
        continued_from=earlier.describe(carried) if earlier else None,
        next_step=next_step(vr, results) if next_step else None, notes=notes)
    record.write_record(run_dir, info, results, secrets=secrets)
    ran = tuple(r for r in results if not r.from_record)  # the carried steps are the earlier run's
    return RunResult(run_dir, code, ran, code == 3, info.continued_from, info.next_step)
