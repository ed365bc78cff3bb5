"""The sandbox's one worker Node, as a kubelet reports it."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

JSON = dict[str, Any]

SANDBOX_NODE = "worker-1.cluster.internal"  # where the simulated controller schedules the pods it creates


def _hex(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _uuid(seed: str) -> str:
    return str(uuid.UUID(_hex(seed)[:32]))


def sandbox_node(name: str, created: str, index: int = 1) -> JSON:
    """A Ready worker Node as the kubelet reports it (the sandbox has no kubelets, so nodes never change)."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": created, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node-role.kubernetes.io/worker": ""}},
        "spec": {"podCIDR": f"10.244.{index}.0/24"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status", "lastHeartbeatTime": created,
                            "lastTransitionTime": created}],
            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{10 + index}"},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0",
                         "machineID": _hex(name, "machine")[:32], "systemUUID": _uuid(name),
                         "bootID": _uuid(name + "/boot"), "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0-26-amd64", "containerRuntimeVersion": "containerd://1.7.22",
                         "operatingSystem": "linux", "architecture": "amd64"},
            "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
        },
    }

