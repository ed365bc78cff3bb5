"""The `rollbook` command: a thin layer over the library (see docs/interfaces in the README)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rollbook.jobrun import JobOutcome
    from rollbook.runner import RunResult

from rollbook import __version__
from rollbook.errors import RollbookError, UsageError
from rollbook.record import EXIT_MEANING


@click.group()
@click.version_option(__version__, prog_name="rollbook")
def main() -> None:
    """Runbooks for an Argo Rollouts canary aborted by its analysis gate."""


@main.command()
@click.option("--scenario", default="evidence-gap", show_default=True,
              help="A built-in scenario name or a folder of Kubernetes YAML (+ optional mc.yaml).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=Path(".sandbox"), show_default=True,
              help="Where kubeconfig, env.sh and ready.json are written.")
@click.option("--port", type=int, default=0, show_default=True,
              help="Port of the Kubernetes API (0 picks a free one).")
@click.option("--faults", "faults_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML/JSON fault rules injected at the HTTP layer (see rollbook/sandbox/faults.py).")
def sandbox(scenario: str, state_dir: Path, port: int, faults_file: Path | None) -> None:
    """Start the local Kubernetes API, simulated Argo controller and MC stand-in until Ctrl-C."""
    from rollbook.errors import UsageError
    from rollbook.sandbox.faults import FaultError, FaultPlan
    from rollbook.sandbox.server import serve

    def body() -> None:
        try:
            plan = FaultPlan.load(faults_file) if faults_file else None
        except FaultError as e:
            raise UsageError(str(e), hint="Fix the rule; fields: service, fault, method, path, status, "
                                          "retry_after, delay, after, count, probability.") from None
        serve(scenario=scenario, state_dir=state_dir, port=port, faults=plan)

    _guard(body)


@main.command("run")
@click.option("--incident", required=True, envvar="ROLLBOOK_INCIDENT", help="Incident id, e.g. INC-1234.")
@click.option("--namespace", "-n", required=True, envvar="ROLLBOOK_NAMESPACE", help="Namespace of the Rollout.")
@click.option("--rollout", required=True, envvar="ROLLBOOK_ROLLOUT", help="Name of the Argo Rollout.")
@click.option("--context", default=None, envvar="ROLLBOOK_CONTEXT", help="Kube context (default: current).")
@click.option("--mc-url", default=None, envvar="ROLLBOOK_MC_URL", help="Mission Control base URL.")
@click.option("--release-id", default=None, help="Expected release id of the canary (cross-checked in step 3).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True,
              help="Folder of incident records.")
@click.option("--steps", "steps_", default=None, help="Steps to run, e.g. 1,2,3 (default: all).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A notebook parameter (repeatable).")
@click.option("--approve-retry", is_flag=True, help="Allow step 4 to send the retry when its preconditions hold.")
@click.option("--approve-undo", is_flag=True, help="Allow step 4 to send the undo recommended for an SLO regression.")
@click.option("--notify", is_flag=True, help="Send the escalation to the configured targets (default: dry run).")
@click.option("--apply-closeout", is_flag=True,
              help="Report a missed rollback to MC and update the ticket (default: dry run, payloads recorded).")
@click.option("--approver", default=None, help="Who approved the mutation (required with --approve-*).")
@click.option("--ticket", default=None, help="Ticket of the approval (required with --approve-*).")
@click.option("--config", default=None, envvar="ROLLBOOK_CONFIG", help="rollbook.yaml (services, contexts).")
@click.option("--runbooks", type=click.Path(path_type=Path), default=None, help="Folder of step notebooks.")
@click.option("--step-timeout", type=float, default=600.0, show_default=True, help="Wall-clock bound per step (s).")
@click.option("--executor", type=click.Choice(["local", "kubernetes"]), default="local", show_default=True,
              help="Where the steps run (kubernetes: one Job in namespace rollbook; --context is who submits it).")
def run_cmd(incident: str, namespace: str, rollout: str, context: str | None, mc_url: str | None,
            release_id: str | None, out: Path, steps_: str | None, params: tuple[str, ...], approve_retry: bool,
            approve_undo: bool, notify: bool, apply_closeout: bool, approver: str | None, ticket: str | None,
            config: str | None,
            runbooks: Path | None, step_timeout: float, executor: str) -> None:
    """Run the playbook's step notebooks headless and write one incident record."""
    from rollbook import app, runner

    def body() -> None:
        extra: dict[str, object] = dict(runner.parse_params(params))
        for flag, on in (("approve_undo", approve_undo), ("notify", notify), ("apply_closeout", apply_closeout)):
            if on:
                extra[flag] = True
        if config:
            extra["config"] = config
        if (approve_retry or approve_undo) and not (approver and ticket):
            raise UsageError("--approve-retry/--approve-undo need --approver and --ticket.",
                                    hint="Say who approved it and under which ticket; both are recorded.")
        spec = runner.RunSpec(
            incident=incident, namespace=namespace, rollout=rollout, context=context, mc_url=mc_url,
            release_id=release_id, out=out, steps=runner.parse_steps(steps_) if steps_ is not None else None,
            params=extra,
            approve_retry=approve_retry, approver=approver, ticket=ticket,
            runbooks_dir=runbooks or app.default_runbooks(), step_timeout=step_timeout)
        if executor == "kubernetes":
            from rollbook import jobrun

            _finish_job(jobrun.run(spec, apply_closeout=apply_closeout))
        result = app.run(spec, config=config, apply_closeout=apply_closeout)
        _finish(result)

    _guard(body)


@main.command()
@click.option("--scenario", default="evidence-gap", show_default=True, help="Built-in scenario or YAML folder.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--no-approve", is_flag=True, help="Run without approving the retry (step 4 stays a dry run).")
def demo(scenario: str, out: Path, no_approve: bool) -> None:
    """Start a sandbox, run the whole playbook against it, print the summary and the record's path."""
    from rollbook import app

    _guard(lambda: _finish(app.demo(scenario, out=out, approve=not no_approve)))


@main.command()
@click.option("--namespace", "-n", default="", envvar="ROLLBOOK_NAMESPACE", help="Namespace of the Rollouts.")
@click.option("--all-namespaces", "-A", is_flag=True, help="Check the Rollouts of every namespace.")
@click.option("--rollout", default="", help="Check only this Rollout (default: every Rollout in scope).")
@click.option("--context", default="", envvar="ROLLBOOK_CONTEXT", help="Kube context that reads (default: current).")
@click.option("--config", default=None, envvar="ROLLBOOK_CONFIG", help="rollbook.yaml (read/action contexts).")
@click.option("--controller-namespace", default="argo-rollouts", show_default=True,
              help="Namespace of the Argo Rollouts controller (its notification ConfigMap).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON (README, 'Preflight').")
def preflight(namespace: str, all_namespaces: bool, rollout: str, context: str, config: str | None,
              controller_namespace: str, as_json: bool) -> None:
    """Check the gate's configuration and permissions against the playbook: exit 0 clean, 1 any error."""
    from rollbook import preflight as pf

    def body() -> None:
        if all_namespaces and namespace and click.get_current_context().get_parameter_source(
                "namespace") is click.core.ParameterSource.ENVIRONMENT:
            chosen = ""  # -A wins over $ROLLBOOK_NAMESPACE (only an explicit --namespace conflicts)
        else:
            chosen = namespace
        report = pf.run_preflight(chosen, all_namespaces, rollout, context, config, controller_namespace)
        click.echo(pf.to_json(report) if as_json else pf.text(report), nl=False)
        sys.exit(report.exit_code)

    _guard(body)


@main.command()
@click.option("--listen", default="127.0.0.1:8686", show_default=True, envvar="ROLLBOOK_SERVE_LISTEN",
              help="HOST:PORT to listen on (port 0 picks a free one; see <out>/.serve/ready.json).")
@click.option("--config", default=None, envvar="ROLLBOOK_CONFIG", help="rollbook.yaml (serve.token_file, services).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True,
              help="Folder of incident records; the queue is <out>/.serve/queue.sqlite.")
@click.option("--workers", type=int, default=2, show_default=True, help="Incidents run at once.")
@click.option("--pool", type=int, default=3, show_default=True,
              help="Warm kernels kept ready, one per step, never reused (0: a cold process per incident).")
@click.option("--queue", "queue_bound", type=int, default=100, show_default=True,
              help="Queued incidents before notifications get 429.")
@click.option("--steps", "steps_", default="1,2,3,5", show_default=True, help="Read-only steps to run (never 4).")
@click.option("--executor", type=click.Choice(["local", "kubernetes"]), default="local", show_default=True,
              help="Where incidents run (kubernetes: one Job per incident in namespace rollbook).")
@click.option("--context", default=None, envvar="ROLLBOOK_CONTEXT", help="Kube context that reads (default: config).")
@click.option("--runbooks", type=click.Path(path_type=Path), default=None, help="Folder of step notebooks.")
@click.option("--step-timeout", type=float, default=600.0, show_default=True, help="Wall-clock bound per step (s).")
@click.option("--grace", type=float, default=20.0, show_default=True,
              help="Seconds running incidents may finish after SIGTERM before they are interrupted.")
@click.option("--preflight/--no-preflight", default=True, show_default=True,
              help="Check the gate at start and on GET /v1/preflight (rollbook_preflight_findings).")
def serve(listen: str, config: str | None, out: Path, workers: int, pool: int, queue_bound: int, steps_: str,
          executor: str, context: str | None, runbooks: Path | None, step_timeout: float, grace: float,
          preflight: bool) -> None:
    """Receive Argo's abort notifications and run the read-only steps for each (README, 'Start it from Argo')."""
    from rollbook import runner
    from rollbook.serve import service, settings

    def body() -> None:
        built = settings.build(listen=listen, config=config, out=out, workers=workers, queue=queue_bound,
                               steps=runner.parse_steps(steps_), executor=executor, context=context,
                               runbooks=runbooks, step_timeout=step_timeout, grace=grace, pool=pool,
                               preflight=preflight)
        sys.exit(service.serve(built))

    _guard(body)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True,
              help="Folder of incident records (the index is <out>/history.sqlite).")
@click.option("--namespace", "-n", default=None, help="Only this namespace.")
@click.option("--rollout", default=None, help="Only this Rollout.")
@click.option("--metric", default=None, help="Only records where this metric failed, e.g. ig-error-rate.")
@click.option("--since", default=None, help="Only records started within this long, e.g. 30m, 24h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--rebuild", is_flag=True, help="Rebuild the index from the records on disk first.")
def history(out: Path, namespace: str | None, rollout: str | None, metric: str | None, since: str | None,
            as_json: bool, rebuild: bool) -> None:
    """List the incident records indexed in <out>/history.sqlite, newest first."""
    import json

    from rollbook import history as hist

    def body() -> None:
        window = hist.parse_since(since)
        if rebuild:
            count, problems = hist.rebuild(out)
            for problem in problems:
                click.echo(f"rollbook: not indexed: {problem}", err=True)
            click.echo(f"rollbook: history rebuilt from {count} record(s) in {out}", err=True)
        entries = hist.query(out, namespace=namespace, rollout=rollout, metric=metric, since=window)
        if as_json:
            click.echo(json.dumps([e.to_json() for e in entries], indent=2))
        else:
            hist.print_table(entries, out_dir=out)

    _guard(body)


@main.command()
@click.argument("record", type=click.Path(exists=True, path_type=Path))
@click.option("--secret-file", "secret_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of planted values (one a line) that must appear nowhere in the record (repeatable).")
@click.option("--config", default=None, help="rollbook.yaml: every secret it references must appear nowhere either.")
def verify(record: Path, secret_files: tuple[Path, ...], config: str | None) -> None:
    """Check a record folder or bundle.zip: manifest hashes, schema, approvals, no secrets; exit 0 intact, 1 not."""
    from rollbook import verify as vf

    def body() -> None:
        report = vf.verify(record, vf.secrets_from(secret_files, config))
        click.echo(vf.text(report), nl=False)
        sys.exit(report.exit_code)

    _guard(body)


def _finish(result: RunResult) -> None:
    """Print the summary, the record's path, the record it continued and the NEXT line; exit with the run's code."""
    run_dir = result.record_dir
    summary = Path(run_dir) / "summary.md"
    if summary.is_file():
        click.echo(summary.read_text(encoding="utf-8"))
    click.echo(f"Incident record: {run_dir} (exit {result.exit_code}: {EXIT_MEANING.get(result.exit_code, '?')})")
    if result.continued_from:
        steps = ", ".join(str(n) for n in result.continued_from.get("steps") or [])
        click.echo(f"Continued record: {result.continued_from['record']} (steps {steps} and its snapshot)")
    if result.next_step:
        click.echo(f"NEXT: {result.next_step}")
    sys.exit(result.exit_code)


def _finish_job(done: JobOutcome) -> None:
    """The Job's output (the run's summary), where its record is, and the run's exit code."""
    if done.log:  # the Job's own "Incident record:" line names the path in the pod; ours follows
        from rollbook.jobrun import RECORD_LINE

        click.echo(RECORD_LINE.sub("Incident record in the Job: \\g<path> (exit \\g<code>", done.log).rstrip("\n"))
    click.echo(f"rollbook: {done.message}", err=True)
    if done.record_dir:
        click.echo(f"Incident record: {done.record_dir} (exit {done.exit_code}: "
                   f"{EXIT_MEANING.get(done.exit_code, '?')})")
    elif done.record_on_volume:
        click.echo(f"Incident record (on the records volume, PVC rollbook-records): {done.record_on_volume} "
                   f"(exit {done.exit_code}: {EXIT_MEANING.get(done.exit_code, '?')})")
    sys.exit(done.exit_code)


def _guard(fn: object) -> None:
    """Run a command body; turn our errors into a readable message and their exit code."""
    try:
        fn()  # type: ignore[operator]
    except RollbookError as e:
        click.echo(f"rollbook: {e}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:  # the disk filled or a folder became unwritable mid-run: one line, not a traceback
        click.echo(f"rollbook: cannot write {e.filename or 'a file'}: {e.strerror or e}. Free space or fix the "
                   "folder's permissions; the record may be partial (`rollbook verify` names what is missing).",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
