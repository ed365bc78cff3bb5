"""What `rollbook run` and `rollbook demo` do, between the thin CLI and the runner."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rollbook import history, runner
from rollbook.config import load as load_config
from rollbook.errors import UsageError

DEMO_APPROVER, DEMO_TICKET = "demo-operator", "DEMO-1"


def default_runbooks() -> Path:
    """`$ROLLBOOK_RUNBOOKS`, else the project's runbooks/ beside lib/, else ./runbooks."""
    env = os.environ.get("ROLLBOOK_RUNBOOKS")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "runbooks"
    return beside if beside.is_dir() else Path("runbooks")


def snapshot_for(spec: runner.RunSpec, config: str | None) -> Any:
    """The snapshot callable the runner runs first: the objects as they are before any step."""
    def take() -> Mapping[str, Any]:
        from rollbook.steps import snapshot
        from rollbook.steps.core import Incident

        incident = Incident(spec.namespace, spec.rollout, spec.context, spec.mc_url, None, spec.incident,
                            load_config(config))
        return snapshot.capture(incident)
    return take


def config_secrets(config: str | None) -> list[str]:
    """Every secret the config references, resolved, so the record can be scrubbed of them."""
    cfg = load_config(config)
    found = []
    for svc in (cfg.mc, cfg.prometheus, cfg.grafana, cfg.pagerduty, cfg.slack, cfg.webhook, cfg.jira,
                cfg.ticket_webhook):
        for ref in (svc.secret, svc.user):
            value = ref.value()
            if value:
                found.append(value)
    return found + kubeconfig_secrets(cfg.kubeconfig)


def kubeconfig_secrets(path: str | None) -> list[str]:
    """Bearer tokens, passwords and client keys in the kubeconfig(s): never to appear in a record either."""
    import yaml

    paths = [path] if path else os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")).split(os.pathsep)
    found: list[str] = []
    for p in paths:
        try:
            doc = yaml.safe_load(Path(p).expanduser().read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        for user in doc.get("users") or []:
            fields = (user or {}).get("user") or {}
            found += [str(fields[k]) for k in ("token", "password", "client-key-data") if fields.get(k)]
    return found


def run(spec: runner.RunSpec, *, config: str | None = None, apply_closeout: bool = False) -> runner.RunResult:
    """Validate (exit 2 before any kernel), snapshot, run the steps, write the record, update the ticket."""
    validated = runner.validate(spec)
    cfg = load_config(config)  # a broken config file is a usage error before anything runs
    preflight(spec, cfg)
    result = runner.run(validated, snapshot=snapshot_for(spec, config), secrets=config_secrets(config))
    history.index_quietly(result.record_dir)  # every record (run, demo, serve) lands in <out>/history.sqlite
    if spec.ticket and (cfg.jira.enabled or cfg.ticket_webhook.enabled):
        update_ticket(result.record_dir, cfg, spec.ticket, apply=apply_closeout)
    return result


def preflight(spec: runner.RunSpec, cfg: Any) -> None:
    """Before any kernel: the kube context loads and MC's URL and token resolve (no network yet)."""
    from rollbook.errors import ConfigError
    from rollbook.steps.core import Incident

    incident = Incident(spec.namespace, spec.rollout, spec.context, spec.mc_url, None, spec.incident, cfg)
    try:
        incident.cluster  # noqa: B018 - resolving it loads the kubeconfig and context
        if cfg.action_context:
            incident.action_cluster  # noqa: B018
        incident.mc  # noqa: B018 - resolving it finds the URL and the token (file)
    except ConfigError as e:
        raise UsageError(f"Cannot start the run: {e.message}", hint=e.hint) from e
    finally:
        if "mc" in incident.__dict__:
            incident.mc.close()


def update_ticket(run_dir: Path, cfg: Any, ticket: str, *, apply: bool) -> list[dict[str, Any]]:
    """Post summary.md and attach bundle.zip to the ticket (dry run unless apply); keep the answer in ticket.json."""
    import json

    from rollbook import record, tickets
    from rollbook.errors import RollbookError

    summary = (run_dir / "summary.md").read_text(encoding="utf-8")
    try:
        deliveries = [d.to_dict() for d in tickets.update_ticket(cfg, ticket, summary, run_dir / "bundle.zip",
                                                                 dry_run=not apply)]
        error = None
    except RollbookError as e:
        deliveries, error = list(getattr(e, "deliveries", []) or []), str(e)
        deliveries = [d.to_dict() if hasattr(d, "to_dict") else d for d in deliveries]
    doc = {"ticket": ticket, "applied": apply, "deliveries": deliveries, "error": error}
    (run_dir / "ticket.json").write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    record.write_manifest(run_dir)
    state = "updated" if apply and not error else ("NOT updated: " + error if error else "dry run (--apply-closeout sends)")
    print(f"ticket {ticket}: {state}", file=sys.stderr, flush=True)
    return deliveries


@contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (the kernels inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def demo_report(folder: Path) -> Path:
    """A passing junit report, the evidence the demo attaches for the missing test-report slot."""
    path = folder / "test-report.xml"
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                    '<testsuites tests="412" failures="0" errors="0" skipped="3">\n'
                    '  <testsuite name="api" tests="412" failures="0" errors="0" skipped="3" time="81.4"/>\n'
                    "</testsuites>\n", encoding="utf-8")
    return path


def demo(scenario: str = "evidence-gap", *, out: Path = Path("outputs"), approve: bool = True) -> runner.RunResult:
    """Start a sandbox in a temporary folder, run the whole playbook against it, stop it."""
    from rollbook.sandbox.server import Sandbox

    with tempfile.TemporaryDirectory(prefix="rollbook-demo-") as tmp:
        with Sandbox(scenario, Path(tmp) / "sandbox") as sb:
            target = sb.info.rollouts[0] if sb.info and sb.info.rollouts else None
            if target is None:
                raise UsageError(f"Scenario {scenario!r} has no Rollout to run the playbook on.")
            namespace, name = _target(target)
            print(f"demo: sandbox '{scenario}' up ({sb.kube_url}); running the playbook on {namespace}/{name}",
                  file=sys.stderr, flush=True)
            # the sandbox's targets are its own stand-ins, so the demo sends for real: that is what it shows
            params: dict[str, Any] = {"evidence_file": str(demo_report(Path(tmp))), "notify": True,
                                      "apply_closeout": True, "config": str(sb.config_file),
                                      "approve_undo": approve}
            spec = runner.RunSpec(
                incident=f"DEMO-{scenario}", namespace=namespace, rollout=name, out=out,
                runbooks_dir=default_runbooks(), params=params, approve_retry=approve,
                approver=DEMO_APPROVER if approve else None, ticket=DEMO_TICKET)
            env = {"KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_MC_URL": sb.mc_url,
                   "ROLLBOOK_MC_TOKEN_FILE": str(sb.mc_write_token_file), "ROLLBOOK_CONFIG": str(sb.config_file)}
            with _env(env):
                result = run(spec, config=str(sb.config_file), apply_closeout=True)
            _print_stand_ins(sb)
            return result


def _print_stand_ins(sb: Any) -> None:
    """What the sandbox's PagerDuty, Slack and Jira stand-ins received, so the demo shows it."""
    svc = sb.services
    if svc is None:
        return
    pages = len(svc.incidents)
    comments = sum(len(v) for v in svc.comments.values())
    attachments = sum(len(v) for v in svc.attachments.values())
    print(f"demo: stand-ins received {pages} PagerDuty incident(s), {comments} Jira comment(s), "
          f"{attachments} Jira attachment(s)", file=sys.stderr, flush=True)


def _target(target: Any) -> tuple[str, str]:
    """(namespace, name) of a scenario's rollout entry, whatever its shape."""
    if isinstance(target, Mapping):
        return str(target["namespace"]), str(target["name"])
    if isinstance(target, tuple):
        return str(target[0]), str(target[1])
    return str(target.namespace), str(target.name)
