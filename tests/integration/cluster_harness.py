"""A sandbox with deploy/ applied (`kubectl apply -k`), ready to run incident Jobs, and helpers around it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbook.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH")
RECORDS = ("rollbook", "rollbook-records")


def kubectl(sb: Sandbox, *args: str, input: str | None = None, check: bool = True,
            context: str | None = None) -> subprocess.CompletedProcess[str]:
    """kubectl against the sandbox (its kubeconfig; `--context` when given)."""
    assert KUBECTL
    env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig)}
    ctx = ["--context", context] if context else []
    done = subprocess.run([KUBECTL, *ctx, *args], env=env, input=input, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def deploy(sb: Sandbox, records: Path) -> None:
    """What the README's "In the cluster" asks: apply the base and the namespace's grants, create the Secrets
    and point rollbook-config at this sandbox's MC; the records PVC is the folder `records`."""
    kubectl(sb, "apply", "-k", str(ROOT / "deploy"))
    kubectl(sb, "apply", "-k", str(ROOT / "deploy" / "namespace-access"))
    cfg = {"mc": {"url": sb.mc_url}, "kube": {"read_context": "in-cluster", "action_context": "in-cluster"},
           "prometheus": {"url": sb.prometheus_url}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rollbook-config", "namespace": "rollbook"},
          "data": {"rollbook.yaml": yaml.safe_dump(cfg)}}
    kubectl(sb, "apply", "-f", "-", input=json.dumps(cm))
    kubectl(sb, "-n", "rollbook", "create", "secret", "generic", "rollbook-mc-token",
            f"--from-file=token={sb.mc_write_token_file}")
    assert sb.jobs is not None
    sb.jobs.claim_dirs[RECORDS] = records


def token_context(sb: Sandbox, account: str) -> str:
    """A kubeconfig context (added to the sandbox's kubeconfig) for a ServiceAccount's TokenRequest token."""
    token = kubectl(sb, "-n", "rollbook", "create", "token", account).stdout.strip()
    cluster = kubectl(sb, "config", "view", "-o", "jsonpath={.clusters[0].name}").stdout.strip()
    kubectl(sb, "config", "set-credentials", account, f"--token={token}")
    kubectl(sb, "config", "set-context", account, f"--cluster={cluster}", f"--user={account}", "--namespace=rollbook")
    return account


def run_job(sb: Sandbox, out: Path, *args: str, context: str = "sandbox",
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`rollbook run --executor kubernetes ...` as a person would type it, submitting with `context`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLBOOK_")}
    env["KUBECONFIG"] = str(sb.kubeconfig)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "rollbook.cli", "run", "--executor", "kubernetes", "--context",
                           context, "--namespace", "prod", "--rollout", "api", "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=900)


def jobs_of(sb: Sandbox, incident: str) -> list[dict[str, Any]]:
    """The incident's Jobs in namespace rollbook, by its label."""
    return sb.store.list("jobs", "rollbook", label_selector=f"rollbook.io/incident={incident}")[0]


def record(out: Path, incident: str) -> tuple[Path, dict[str, Any]]:
    """The incident's only run folder and its record.json."""
    (run_dir,) = sorted(p for p in (out / incident).iterdir() if p.is_dir())
    return run_dir, json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
