"""What every step notebook shares: the incident's connections, the outcome type, display helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from rollbook import config as config_mod
from rollbook import record
from rollbook.cluster import Cluster, RolloutView, connect, read_rollout
from rollbook.errors import ConfigError, RollbookError, UsageError
from rollbook.evidence import MCClient
from rollbook.htmltable import HtmlTable

StepVerdict = Literal["pass", "fail", "needs_human", "escalate", "skip"]
ENV_NAMESPACE, ENV_ROLLOUT = "ROLLBOOK_NAMESPACE", "ROLLBOOK_ROLLOUT"


@dataclass(repr=False)
class Incident:
    """One incident's target and lazily opened connections (read identity, action identity, MC)."""

    namespace: str
    rollout: str
    context: str | None = None
    mc_url: str | None = None
    run_dir: Path | None = None
    incident: str | None = None
    config: config_mod.Config = field(default_factory=config_mod.Config)
    environment: str = "production"

    @cached_property
    def cluster(self) -> Cluster:
        """The read-only identity (the `--context`, else the config's read_context, else current)."""
        return _connect(self.context or self.config.read_context, self.config.kubeconfig)

    @cached_property
    def action_cluster(self) -> Cluster:
        """The identity for mutations: the config's action_context when set, else the read identity."""
        if self.config.action_context:
            return _connect(self.config.action_context, self.config.kubeconfig)
        return self.cluster

    @cached_property
    def mc(self) -> MCClient:
        """The MC client; the token comes from the environment or a file, never a parameter."""
        ref = self.config.mc.secret
        token = ref.value()
        if ref.file and not token and not (ref.env and os.environ.get(ref.env)):
            # a configured token file that is missing or empty is an error, never a silent fall-back
            path = Path(ref.file).expanduser()
            from_env = self.config.path is None or ref.file == os.environ.get("ROLLBOOK_MC_TOKEN_FILE")
            source = "$ROLLBOOK_MC_TOKEN_FILE" if from_env else f"mc.token_file in {self.config.path}"
            raise ConfigError(f"The Mission Control token file {path} ({source}) "
                              f"{'is empty' if path.is_file() else 'does not exist'}.",
                              hint="Write MC's token into it, point "
                                   f"{'ROLLBOOK_MC_TOKEN_FILE' if from_env else 'mc.token_file'} at the token "
                                   "file, or export ROLLBOOK_MC_TOKEN.")
        url = self.mc_url or self.config.mc.url
        if token is None:
            return MCClient.from_env(url)
        from rollbook.evidence import Secret

        if not url:
            raise ConfigError("No Mission Control URL.", hint="Pass --mc-url or set ROLLBOOK_MC_URL.")
        return MCClient(url, Secret(token))

    def describe(self) -> dict[str, Any]:
        """Who and where, for the notebook's first output (no secrets: references only)."""
        cfg = self.config
        return {"incident": self.incident, "rollout": f"{self.namespace}/{self.rollout}",
                "reads as": self.context or cfg.read_context or "(current context)",
                "acts as": cfg.action_context or self.context or cfg.read_context or "(current context)",
                "Mission Control": self.mc_url or cfg.mc.url, "Prometheus": cfg.prometheus.url,
                "config": str(cfg.path) if cfg.path else None, "run folder": str(self.run_dir) if self.run_dir else None}

    def __repr__(self) -> str:
        return f"Incident({', '.join(f'{k}={v!r}' for k, v in self.describe().items() if v)})"

    def _repr_markdown_(self) -> str:
        return "\n".join(f"- **{k}**: `{v}`" for k, v in self.describe().items() if v)

    def view(self) -> RolloutView:
        """Read the Rollout and its own objects now."""
        return read_rollout(self.cluster, self.namespace, self.rollout)

    def earlier(self) -> dict[str, Any]:
        """Results of the steps already run in this run (empty outside a run; missing inside one: an error)."""
        if self.run_dir is None:
            return {"steps": [], "findings": {}}
        path = self.run_dir / record.RESULTS_FILE
        if not path.is_file():
            raise MissingInputError(
                f"The earlier steps' results {path} are missing from this run's record "
                f"(rollout {self.rollout!r} in namespace {self.namespace!r}).",
                hint="`rollbook run` writes them before each step; pass the run's own absolute run_dir.")
        return record.read_results(self.run_dir)

    def snapshot_object(self, name: str) -> Any:
        """An object captured into snapshot/ at the start of the run (None outside a run; missing: an error)."""
        if self.run_dir is None:
            return None
        path = self.run_dir / "snapshot" / f"{name}.json"
        if not path.is_file():
            raise MissingInputError(
                f"The snapshot {path} is missing from this run's record (rollout {self.rollout!r} in namespace "
                f"{self.namespace!r}): the baseline this step compares against was not captured.",
                hint="record.json's snapshot_error says why the snapshot failed; fix that and run again.")
        import json

        return json.loads(path.read_text(encoding="utf-8"))


class MissingInputError(RollbookError):
    """Inside a run, an input a step needs (snapshot, earlier results, a picture) is not in the record.

    Never a silent skip: a step that cannot compare against the snapshot must not report that nothing changed."""


IN_CLUSTER = "in-cluster"


def _connect(context: str | None, kubeconfig: str | None) -> Cluster:
    """A kubeconfig context, or the pod's service account when the context is `in-cluster`."""
    if context == IN_CLUSTER:
        return connect(in_cluster=True)
    return connect(context, kubeconfig)


def open_incident(namespace: str = "", rollout: str = "", context: str = "", mc_url: str = "",
                  run_dir: str = "", incident: str = "", config: str = "") -> Incident:
    """An Incident from notebook parameters; empty values fall back to the environment (sandbox env.sh)."""
    ns = namespace or os.environ.get(ENV_NAMESPACE, "")
    name = rollout or os.environ.get(ENV_ROLLOUT, "")
    if not ns or not name:
        missing = "namespace" if not ns else "rollout"
        raise UsageError(f"No {missing} given.",
                         hint=f"Set the `{missing}` parameter (or ${ENV_NAMESPACE}/${ENV_ROLLOUT}, which "
                              "`source .sandbox/env.sh` sets for the sandbox).")
    if run_dir and not Path(run_dir).is_absolute():
        # the kernel's working directory is not the caller's: a relative record folder would point elsewhere
        raise UsageError(f"run_dir {run_dir!r} is not an absolute path.",
                         hint="`rollbook run` passes the record folder as an absolute path; do the same.")
    return Incident(namespace=ns, rollout=name, context=context or None, mc_url=mc_url or None,
                    run_dir=Path(run_dir) if run_dir else None, incident=incident or None,
                    config=config_mod.load(config or None))


@dataclass
class Outcome:
    """A step's verdict with a one-sentence reason, the facts behind it and the record's findings."""

    step: int
    name: str
    verdict: StepVerdict
    reason: str
    facts: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def result(self) -> dict[str, Any]:
        """What the runner reads from the executed notebook."""
        return {"verdict": self.verdict, "reason": self.reason, "facts": _jsonable(self.facts),
                "findings": _jsonable(self.findings)}

    def show(self) -> None:
        """Display the verdict for people and hand the machine-readable result to the runner."""
        from IPython.display import Markdown, display

        word = {"pass": "PASS", "fail": "FAIL", "needs_human": "NEEDS A HUMAN", "escalate": "ESCALATE",
                "skip": "SKIP"}[self.verdict]
        # bold, not a heading: report.html folds each step under its own summary line already
        lines = [f"**Step {self.step} verdict: {word}** (`{self.verdict}`) — {self.reason}", ""]
        lines += [f"- {n}" for n in self.notes]
        display(Markdown("\n".join(lines)))
        display({record.STEP_RESULT_MIME: self.result()}, raw=True)


def _jsonable(value: Any) -> Any:
    """Facts as plain JSON values (datetimes and tuples included)."""
    import json

    return json.loads(json.dumps(value, default=str))


def table(rows: list[dict[str, Any]] | dict[str, Any]) -> HtmlTable:
    """Rows (or one mapping as field/value rows) as a table for display: no index, nothing cut.

    Nested values are written out as `key: value` lines (never a Python repr) and long text wraps."""
    if isinstance(rows, dict):
        return HtmlTable([{"field": k, "value": cell_text(v)} for k, v in rows.items()], ["field", "value"])
    return HtmlTable([{k: cell_text(v) for k, v in r.items()} for r in rows])


def cell_text(value: Any, depth: int = 0) -> Any:
    """A table cell as people read it: lists joined, mappings as `key: value` lines, JSON below that."""
    import json

    if value is None or isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if depth >= 2:
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {cell_text(v, depth + 1) if v is not None else '—'}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple, set)):
        items = [str(cell_text(v, depth + 1)) for v in value]
        joiner = "\n" if any(isinstance(v, dict) or "\n" in i for v, i in zip(value, items, strict=True)) else ", "
        return joiner.join(items) or "none"
    return str(value)


def status_line(view: RolloutView) -> str:
    """`Degraded — RolloutAborted: …`, or just the phase when Argo gives no message (escalation, pages)."""
    return f"{view.phase} — {view.message}" if view.message else view.phase
