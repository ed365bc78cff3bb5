"""The kubeconfig of the sandbox: one cluster, token users operator/viewer, contexts sandbox/sandbox-viewer."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

CLUSTER = "sandbox"


def build_kubeconfig(
    *, server: str, ca_pem: bytes, operator_token: str, viewer_token: str, namespace: str = "default",
    extra_users: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The kubeconfig as a dict; ``extra_users`` (name -> token) get contexts ``sandbox-<name>``."""
    tokens = {"operator": operator_token, "viewer": viewer_token, **(extra_users or {})}
    contexts = {"sandbox": "operator", "sandbox-viewer": "viewer"}
    contexts.update({f"sandbox-{name}": name for name in extra_users or {}})
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CLUSTER, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": name, "user": {"token": token}} for name, token in tokens.items()],
        "contexts": [{"name": ctx, "context": {"cluster": CLUSTER, "user": user, "namespace": namespace}}
                     for ctx, user in contexts.items()],
        "current-context": "sandbox",
    }


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, operator_token: str, viewer_token: str,
    namespace: str = "default", extra_users: Mapping[str, str] | None = None,
) -> Path:
    """Write the kubeconfig (mode 0600: it holds tokens) and return its path."""
    config = build_kubeconfig(server=server, ca_pem=ca_pem, operator_token=operator_token,
                              viewer_token=viewer_token, namespace=namespace, extra_users=extra_users)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    path.chmod(0o600)
    return path
