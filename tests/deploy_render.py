"""deploy/ rendered two ways: `kubectl kustomize` (when kubectl is on PATH) and a small pure-Python reading.

The pure-Python reading covers only what deploy/'s kustomizations use (resources, namespace, labels without
selectors, images by name); it exists so the checks run where kubectl is absent, and the kubectl rendering
is checked against it, so it cannot drift from what kustomize does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBECTL = shutil.which("kubectl")


def render_python(folder: Path = DEPLOY) -> list[dict[str, Any]]:
    """The objects of a kustomization folder, transformed like kustomize does for the fields deploy/ uses."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    objs: list[dict[str, Any]] = []
    for name in kust.get("resources") or []:
        objs += [o for o in yaml.safe_load_all((folder / name).read_text(encoding="utf-8")) if o]
    images = {i["name"]: i for i in kust.get("images") or []}
    for obj in objs:
        meta = obj.setdefault("metadata", {})
        if kust.get("namespace") and obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            meta["namespace"] = kust["namespace"]
        for group in kust.get("labels") or []:
            meta.setdefault("labels", {}).update(group["pairs"])
        for pod in _pod_specs(obj):
            for c in pod.get("containers") or []:
                image = images.get(c["image"].split(":")[0])
                if image:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objs


def render_kubectl(folder: Path = DEPLOY) -> list[dict[str, Any]]:
    """`kubectl kustomize FOLDER`, parsed."""
    assert KUBECTL
    out = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True)
    return [o for o in yaml.safe_load_all(out.stdout) if o]


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] in ("Deployment", "Job"):
        return [spec["template"]["spec"]]
    return []


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """{name: object} of one kind."""
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """RBAC rules expanded to (verb, apiGroup, resource[/subresource], resourceNames) tuples."""
    return {(verb, group, res, tuple(sorted(rule.get("resourceNames") or ())))
            for rule in rules for verb in rule["verbs"] for group in rule["apiGroups"] for res in rule["resources"]}
