"""The `rollbook` command: a thin layer over the library (see docs/interfaces in the README)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rollbook import __version__
from rollbook.errors import RollbookError


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
def sandbox(scenario: str, state_dir: Path, port: int) -> None:
    """Start the local Kubernetes API, simulated Argo controller and MC stand-in until Ctrl-C."""
    from rollbook.sandbox.server import serve

    _guard(lambda: serve(scenario=scenario, state_dir=state_dir, port=port))


def _guard(fn: "object") -> None:
    """Run a command body; turn our errors into a readable message and their exit code."""
    try:
        fn()  # type: ignore[operator]
    except RollbookError as e:
        click.echo(f"rollbook: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
