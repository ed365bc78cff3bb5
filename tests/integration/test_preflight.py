"""`rollbook preflight` through its three paths, against a sandbox through the real kubernetes client:
the command (text, JSON, exit codes), the library call with the identities of a rollbook.yaml, and the
notebook `runbooks/00-preflight.ipynb` (papermill, a real kernel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollbook import app
from rollbook import config as config_mod
from rollbook.preflight import run_preflight
from rollbook.sandbox.server import Sandbox

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ROLLBOOK = [sys.executable, "-m", "rollbook.cli", "preflight"]


def _cli(sb: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_CONFIG": "", "ROLLBOOK_NAMESPACE": ""}
    return subprocess.run([*ROLLBOOK, *args], capture_output=True, text=True, timeout=60, env=env)


def _config(sb: Sandbox, tmp_path: Path, **kube: str) -> config_mod.Config:
    path = tmp_path / "rollbook.yaml"
    path.write_text(yaml.safe_dump({"kube": {"kubeconfig": str(sb.kubeconfig), **kube}}), encoding="utf-8")
    return config_mod.load(path)


def test_cli_examples_are_clean_and_evidence_lost_is_an_error_naming_the_jsonpath(
        sandbox_factory: Callable[..., Sandbox]) -> None:
    clean = _cli(sandbox_factory(EXAMPLES), "--namespace", "default")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean — 0 error(s), 0 warning(s), 0 info" in clean.stdout
    sb = sandbox_factory("evidence-lost")
    ns, name = sb.rollouts[0]
    proc = _cli(sb, "-n", ns, "--rollout", name, "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    lost = [f for f in doc["findings"] if f["id"] == "evidence-jsonpath"]
    assert lost and lost[0]["severity"] == "error" and lost[0]["field"].endswith("provider.web.jsonPath")
    assert "{$.ok}" in lost[0]["message"] and lost[0]["step"] == "2" and 'jsonPath: "{$}"' in lost[0]["fix"]
    assert doc["summary"]["error"] == len([f for f in doc["findings"] if f["severity"] == "error"])
    assert doc["checked"]["rollouts"] == [f"{ns}/{name}"]


@pytest.mark.parametrize(("args", "words"), [
    ([], ["no namespace", "--all-namespaces"]),
    (["-n", "prod", "--all-namespaces"], ["exclude"]),
    (["-n", "prod", "--rollout", "nope"], ['"nope"', "kubectl get rollouts -n prod"]),
    (["--rollout", "nope", "-A"], ["nope", "kubectl get rollouts -A"]),
    (["--bogus"], ["no such option"]),
])
def test_cli_bad_usage_exits_2(sandbox_factory: Callable[..., Sandbox], args: list[str], words: list[str]) -> None:
    proc = _cli(sandbox_factory("evidence-gap"), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for word in words:
        assert word.lower() in proc.stderr.lower(), proc.stderr


def test_library_asks_each_identity_of_the_config(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory(EXAMPLES)
    good = run_preflight("default", config=_config(sb, tmp_path, read_context="sandbox-viewer", action_context="sandbox"))
    assert good.findings == () and good.exit_code == 0
    assert good.identities == {"sandbox-viewer": "viewer", "sandbox": "operator"}
    reviews = [r for r in sb.apiserver.requests if r.path.endswith("/selfsubjectaccessreviews")]
    assert {r.user for r in reviews} == {"viewer", "operator"}
    asked = {(r.user, r.json()["spec"]["resourceAttributes"]["verb"],
              r.json()["spec"]["resourceAttributes"]["resource"],
              r.json()["spec"]["resourceAttributes"].get("subresource", "")) for r in reviews}
    assert ("operator", "patch", "rollouts", "status") in asked and ("viewer", "patch", "rollouts", "status") not in asked
    assert all(r.method == "POST" or r.user == "viewer" for r in sb.apiserver.requests), "reads go as the viewer"

    bad = run_preflight("default", config=_config(sb, tmp_path, read_context="sandbox-viewer",
                                                  action_context="sandbox-viewer"))
    denied = {f.field: f for f in bad.by_id("permission")}
    assert set(denied) == {"patch rollouts/status (argoproj.io)", "patch rollouts (argoproj.io)",
                           *(f"{verb} leases (coordination.k8s.io)" for verb in ("create", "update", "delete"))}
    assert all(f.severity == ("warn" if f.field.startswith("delete leases") else "error") and f.step == "4"
               and f.object == "Context/sandbox-viewer" for f in denied.values())
    assert bad.exit_code == 1

    by_default = run_preflight("default", context="sandbox-viewer", config=_config(sb, tmp_path))
    assert {f.severity for f in by_default.by_id("permission")} == {"warn"}, "no action_context: acting is optional"


def test_the_notification_configmap_is_read_through_the_api(sandbox_factory: Callable[..., Sandbox],
                                                            tmp_path: Path) -> None:
    sb = sandbox_factory(EXAMPLES)
    cfg = _config(sb, tmp_path)
    cm = sb.store.get("configmaps", "argo-rollouts", "argo-rollouts-notification-configmap")
    service = yaml.safe_load(cm["data"]["service.webhook.rollbook"])
    service.pop("retryMax")
    sb.store.patch("configmaps", "argo-rollouts", cm["metadata"]["name"],
                   {"data": {"service.webhook.rollbook": yaml.safe_dump(service)}}, "merge")
    (hit,) = run_preflight("default", config=cfg).by_id("notification-webhook")
    assert hit.namespace == "argo-rollouts" and "3 time(s) within about 7 s" in hit.message
    sb.store.delete("configmaps", "argo-rollouts", cm["metadata"]["name"])
    report = run_preflight("default", config=cfg, controller_namespace="argo-rollouts")
    assert report.by_id("notification-webhook") == [] and report.by_id("notification-subscription") == []
    ro = sb.store.get("rollouts", "default", "api")
    sb.store.patch("rollouts", "default", "api", {"metadata": {"annotations": {
        k: None for k in ro["metadata"]["annotations"] if k.startswith("notifications.argoproj.io/")}}}, "merge")
    (hit,) = run_preflight("default", config=cfg).by_id("notification-subscription")
    assert hit.severity == "warn" and "no ConfigMap found in argo-rollouts, default" in hit.message


def _run_notebook(sb: Sandbox, tmp_path: Path, **params: Any) -> Any:
    import papermill as pm

    out = tmp_path / "00-preflight.ipynb"
    env = {"KUBECONFIG": str(sb.kubeconfig), "ROLLBOOK_CONFIG": str(sb.config_file)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pm.execute_notebook(str(app.default_runbooks() / "00-preflight.ipynb"), str(out), parameters=params,
                            kernel_name="python3", progress_bar=False, cwd=str(tmp_path), execution_timeout=120)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    import nbformat

    return nbformat.read(out, as_version=4)


@pytest.mark.notebooks
def test_the_notebook_makes_the_same_call(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory("evidence-lost")
    ns, name = sb.rollouts[0]
    nb = _run_notebook(sb, tmp_path, namespace=ns, rollout=name)
    shown = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    expected = run_preflight(ns, rollout=name, config=str(sb.config_file))
    assert "Preflight verdict: BROKEN (exit 1)" in shown
    for f in expected.findings:
        assert f"`{f.id}`" in shown and f.field in shown
    assert sb.store.get("rollouts", ns, name)["status"]["abort"] is True, "preflight changes nothing"
