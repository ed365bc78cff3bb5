"""What `rollbook run` and `rollbook demo` do, between the thin CLI and the runner."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rollbook import atomic, history, runner
from rollbook.config import load as load_config
from rollbook.errors import UsageError
from rollbook.record import StepResult

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
        for user in doc.get("users") or [] if isinstance(doc, dict) else []:
            found += _user_secrets((user or {}).get("user") or {}, Path(p).expanduser().parent)
    return found


def _user_secrets(fields: Mapping[str, Any], folder: Path) -> list[str]:
    """One kubeconfig user's secrets: token, password, client key (inline or its file), token file, exec env."""
    import base64
    import binascii

    found = [str(fields[k]) for k in ("token", "password", "client-key-data") if fields.get(k)]
    if fields.get("client-key-data"):
        try:  # the key as it would appear decoded (PEM lines), not only as the base64 in the file
            found += [line for line in base64.b64decode(str(fields["client-key-data"])).decode().splitlines()
                      if len(line) >= 16 and not line.startswith("-----")]
        except (binascii.Error, UnicodeDecodeError):
            pass
    for key in ("client-key", "tokenFile"):
        if fields.get(key):
            try:
                found += [line for line in (folder / str(fields[key])).read_text(encoding="utf-8").splitlines()
                          if len(line.strip()) >= 16 and not line.startswith("-----")]
            except OSError:
                pass
    exec_ = fields.get("exec") or {}
    # only variables named like a credential: scrubbing e.g. AWS_PROFILE=production would mangle every file
    found += [str(e.get("value")) for e in exec_.get("env") or [] if isinstance(e, dict) and e.get("value")
              and re.search(r"(?i)token|secret|password|passwd|key|credential", str(e.get("name") or ""))]
    return found


NextStep = Callable[[runner.ValidatedRun, Sequence[StepResult]], "str | None"]


def run(spec: runner.RunSpec, *, config: str | None = None, apply_closeout: bool = False,
        progress: Any = None, next_step: NextStep | None = None, kernels: Any = None) -> runner.RunResult:
    """Validate and precheck (exit 2 before any kernel), snapshot, run the steps, write the record, update the ticket.

    `kernels`: a warm pool's `take` (rollbook serve); None: the runner starts a kernel per step."""
    from rollbook.errors import ConfigError

    validated = runner.validate(spec)
    try:
        cfg = load_config(config)  # a broken config file is a usage error before anything runs
    except ConfigError as e:
        raise UsageError(f"Cannot start the run: {e.message}", hint=e.hint) from e
    precheck(validated, cfg)
    result = runner.run(validated, snapshot=snapshot_for(spec, config), secrets=config_secrets(config),
                        progress=progress, next_step=next_step or follow_up, kernels=kernels)
    history.index_quietly(result.record_dir)  # every record (run, demo, serve) lands in <out>/history.sqlite
    if spec.ticket and (cfg.jira.enabled or cfg.ticket_webhook.enabled):
        update_ticket(result.record_dir, cfg, spec.ticket, apply=apply_closeout)
    return result


def precheck(validated: runner.ValidatedRun, cfg: Any) -> None:
    """Before any kernel (about a second): context, MC, cluster, namespace, Rollout, input files; else exit 2.

    A typo must cost one clear line, not a record folder and four steps failing on the same NotFound."""
    from rollbook.errors import ConfigError
    from rollbook.steps.core import Incident

    spec = validated.spec
    check_out_dir(spec.out)
    check_input_files(spec)
    incident = Incident(spec.namespace, spec.rollout, spec.context, spec.mc_url, None, spec.incident, cfg)
    try:
        cluster = incident.cluster  # resolving it loads the kubeconfig and context
        if cfg.action_context:
            incident.action_cluster  # noqa: B018
        incident.mc  # noqa: B018 - resolving it finds the URL and the token (file)
        check_target(cluster, spec.namespace, spec.rollout, kubeconfig=cfg.kubeconfig)
        if _follow_up_retry(validated) and not spec.params.get("evidence_file"):
            check_evidence_not_needed(incident)
    except ConfigError as e:
        raise UsageError(f"Cannot start the run: {e.message}", hint=e.hint) from e
    finally:
        for name in ("mc", "cluster", "action_cluster"):
            if name in incident.__dict__:
                incident.__dict__[name].close()


def _follow_up_retry(validated: runner.ValidatedRun) -> bool:
    """A follow-up that starts at step 4 with `--approve-retry`: the run exists to send the retry.

    A full run is also the triage record: there step 4 records why it refused instead."""
    first = validated.steps[0].name if validated.steps else ""
    return validated.spec.approve_retry and first == "remediate-and-retry"


MIN_FREE_BYTES = 32 << 20  # a record is ~1-5 MiB; less free space than this would fail mid-run


def check_out_dir(out: Path) -> None:
    """`--out` can hold a new record: the folder (or its nearest existing parent) is a writable directory
    with room; checked without writing anything, so a refused run leaves no trace."""
    existing = Path(out)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, not a folder; the record cannot be written there.",
                         hint="Pass --out a folder (it is created if missing).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: folder {existing} is not writable by this user; nothing was run.",
                         hint="Pass a --out you can write to, or fix the folder's permissions.")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise UsageError(f"--out {out}: only {free >> 20} MiB free on the disk of {existing}; a record needs more "
                         "and a run that fills the disk mid-way would leave it partial. Nothing was run.",
                         hint="Free some space, or pass a --out on another disk.")


def check_input_files(spec: runner.RunSpec) -> None:
    """Every path parameter given names an existing file (`--param evidence_file=...`)."""
    for name, value in spec.params.items():
        if runner.is_path_param(name) and isinstance(value, str) and value and not Path(value).is_file():
            raise UsageError(f"--param {name}={value}: no such file.",
                             hint="Give the path of an existing file (relative paths are read from the folder "
                                  "you run rollbook in).")


def check_target(cluster: Any, namespace: str, rollout: str, *, kubeconfig: str | None = None) -> None:
    """The cluster answers, and Rollout `rollout` exists in `namespace`; else one line naming what exists."""
    from rollbook.cluster import list_rollouts
    from rollbook.errors import ClusterError, ClusterUnavailable, NotFound

    where = f"context {cluster.context!r}"
    try:
        cluster.get("rollouts", namespace, rollout)
        return
    except ClusterUnavailable as e:
        raise UsageError(f"The cluster at {cluster.host} ({where}) does not answer: {_cause(e)}.",
                         hint=_unreachable_hint(kubeconfig)) from None
    except NotFound:
        pass
    except ClusterError as e:
        raise UsageError(f"Cannot read Rollout {rollout!r} in namespace {namespace!r} ({where}): {e.message}",
                         hint=e.hint) from None
    try:
        existing = [r.name for r in list_rollouts(cluster, namespace)]
    except ClusterError as e:
        raise UsageError(f"Rollout {rollout!r} not found in namespace {namespace!r} ({where}), and the Rollouts "
                         f"there cannot be listed: {e.message}", hint="Check --namespace and --rollout.") from None
    if existing:
        raise UsageError(f"Rollout {rollout!r} not found in namespace {namespace!r} ({where}); "
                         f"Rollouts there: {', '.join(existing)}.", hint="Check --rollout.")
    raise UsageError(f"Rollout {rollout!r} not found: namespace {namespace!r} has no Rollouts or does not exist "
                     f"({where}); {_rollouts_elsewhere(cluster)}.", hint="Check --namespace and --rollout.")


def _rollouts_elsewhere(cluster: Any) -> str:
    """Where Rollouts do exist (`kubectl get rollouts -A`), or what to run when we may not list them."""
    from rollbook.errors import ClusterError

    try:
        found = cluster.list("rollouts", "")
    except ClusterError:
        return f"list them with: kubectl get rollouts -A --context {cluster.context}"
    names = sorted(f"{(r.get('metadata') or {}).get('namespace')}/{(r.get('metadata') or {}).get('name')}"
                   for r in found)
    return f"Rollouts in the cluster: {', '.join(names[:20])}{' …' if len(names) > 20 else ''}" if names \
        else "the cluster has no Rollouts at all"


def _cause(e: Exception) -> str:
    """The innermost reason of a connection failure, short (e.g. 'Connection refused')."""
    text = str(e)
    for marker in ("Connection refused", "timed out", "Name or service not known", "No route to host"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text.split(": ", 1)[-1][:160]


def _unreachable_hint(kubeconfig: str | None) -> str:
    """What to do when the API server does not answer; a stopped sandbox says so."""
    paths = [kubeconfig] if kubeconfig else os.environ.get("KUBECONFIG", "").split(os.pathsep)
    for p in paths:
        if p and (Path(p).expanduser().parent / "env.sh").is_file():
            folder = Path(p).expanduser().parent
            return (f"The kubeconfig is a rollbook sandbox's ({folder}) and that sandbox is not running: start it "
                    f"with `rollbook sandbox --state-dir {folder}` and `source {folder / 'env.sh'}` again.")
    return "Check the network/VPN, the kubeconfig's server address and that the cluster is up."


def check_evidence_not_needed(incident: Any) -> None:
    """`--approve-retry` without `--param evidence_file` while MC lists missing/invalid evidence: exit 2 now.

    Step 4 could only refuse the retry after the whole run; say what is missing before anything runs."""
    from rollbook import diagnosis as dx
    from rollbook.errors import RollbookError
    from rollbook.mc_words import live_label, quoted

    try:
        view = incident.view()
        release = dx.canary_release_id(view)[0]
        verdict = incident.mc.verdict(release, incident.environment) if release and view.aborted else None
    except RollbookError:
        return  # MC or the cluster cannot say now: step 4 reports it with the record
    if verdict is None or verdict.ok:
        return
    gaps = [*verdict.missing, *verdict.invalid]
    if gaps:
        raise UsageError(
            f"--approve-retry needs --param evidence_file: Mission Control says release {verdict.release_id} "
            f"(the canary of Rollout {incident.rollout!r} in namespace {incident.namespace!r}) lacks valid "
            f"evidence ({', '.join(gaps)}): {quoted(verdict.reason, live_label(verdict.evaluated_at))}. "
            "Without a report step 4 would refuse the retry.",
            hint=f"Pass --param evidence_file=PATH (the report for {', '.join(gaps)}); nothing was run.")


def follow_up(vr: runner.ValidatedRun, results: Sequence[StepResult]) -> str:
    """The NEXT line: what to do now, as the exact command when there is one (placeholders in CAPITALS)."""
    base = _base_command(vr.spec)
    by = {r.name: r for r in results}
    failed = [r for r in results if r.verdict == "error" and not r.from_record]
    if failed:
        later = ",".join(str(s.number) for s in vr.steps if s.number >= failed[0].step)
        return f"fix what stopped step {failed[0].step} ({failed[0].reason.rstrip('.')}), then: {base} --steps {later}"
    esc = by.get("escalate")
    if esc is not None and esc.verdict == "escalate" and not esc.findings.get("escalation_sent"):
        return f"page the deployment lead and SRE now (the page was a dry run): {base} --steps 5 --notify"
    rem = by.get("remediate-and-retry")
    if rem is not None and rem.verdict in ("needs_human", "fail") and not rem.from_record:
        return _remediation_next(vr.spec, base, rem)
    close = by.get("verify-closeout")
    if close is not None and close.verdict == "fail":
        return f"close-out not verified ({close.reason.rstrip('.')}); when fixed, check again: {base} --steps 6"
    human = next((r for r in results if r.verdict in ("needs_human", "fail") and not r.from_record), None)
    if human is not None:
        return f"a human must decide (step {human.step}, {human.name}): {human.reason}"
    return "none: every step passed; attach the record's bundle.zip to the ticket (summary.md is its text)"


def _remediation_next(spec: runner.RunSpec, base: str, rem: StepResult) -> str:
    """Step 4 waits for a human: attach evidence and approve the retry, approve the undo, or decide."""
    facts = rem.facts
    who = f"--approver {shlex.quote(spec.approver or 'YOUR-NAME')} --ticket {shlex.quote(spec.ticket or 'CHANGE-TICKET')}"
    if facts.get("workload_ref"):
        ref = facts["workload_ref"]
        return f"revert {ref.get('kind')} {ref.get('name')}'s pod template to the stable release (see step 4), " \
               f"then verify: {base} --steps 6"
    if facts.get("path") == "slo":
        blockers = [b for b in facts.get("blockers") or [] if "changed since the snapshot" in b or "no longer" in b]
        if blockers:
            return f"a human must decide: {blockers[0]}"
        return f"undo to the stable release (or ship a fix): {base} --steps 4,5,6 --approve-undo {who}"
    after = facts.get("verdict_after") or {}
    gaps = [*(after.get("missing") or []), *(after.get("invalid") or [])]
    blockers = [b for b in facts.get("blockers") or [] if not b.startswith("MC still says ok=false")]
    if blockers:
        return f"a human must decide: {blockers[0]}; then: {base} --steps 4,5,6"
    evidence = f" --param evidence_file=PATH/TO/{gaps[0]}-REPORT" if gaps else ""
    return f"{'attach the missing evidence and ' if gaps else ''}approve the retry: " \
           f"{base} --steps 4,5,6{evidence} --approve-retry {who}"


def _base_command(spec: runner.RunSpec) -> str:
    """`rollbook run --incident … --namespace … --rollout …` with the options this run needed to find its record."""
    parts = ["rollbook", "run", "--incident", spec.incident, "--namespace", spec.namespace, "--rollout", spec.rollout]
    if spec.context:
        parts += ["--context", spec.context]
    if spec.out != runner.absolute("outputs"):
        parts += ["--out", str(spec.out)]
    config = spec.params.get("config")
    if config and config != str(runner.absolute(os.environ.get("ROLLBOOK_CONFIG") or "")):
        parts += ["--config", str(config)]
    return " ".join(shlex.quote(p) for p in parts)


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
    atomic.write_text(run_dir / "ticket.json", json.dumps(doc, indent=2, default=str))
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
            by_hand = (f"try it by hand: make sandbox (or rollbook sandbox --scenario {scenario}); "
                       f"source .sandbox/env.sh; rollbook run --incident INC-1 --namespace {namespace} "
                       f"--rollout {name}")
            with _env(env):
                result = run(spec, config=str(sb.config_file), apply_closeout=True,
                             next_step=lambda vr, steps: by_hand)  # the demo's sandbox is gone after it
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
