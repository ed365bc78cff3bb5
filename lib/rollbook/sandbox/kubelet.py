"""What a kubelet (and the API server's pod strategy) writes into a pod's status, for a sandbox that has none.

The simulated controller's pods and the pods a scenario loads get the fields a real node reports:
``hostIP``/``hostIPs`` (the node's InternalIP), ``podIP``/``podIPs`` (stable, inside the node's podCIDR),
``qosClass`` (from the containers' resources, as the API server computes it), and per container
``containerID`` (once it has run), ``imageID`` (the image pinned by digest), ``started``, ``lastState``,
``ready`` and ``restartCount``. Only missing fields are filled: what a scenario states is kept.
Deterministic (hashes of the pod's uid and names), so a scenario loads the same way every time.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from typing import Any, Protocol

from rollbook.sandbox.apierrors import StoreError

JSON = dict[str, Any]
RUNTIME = "containerd"
_DEFAULT_NODE_IP, _DEFAULT_CIDR = "10.0.0.10", "10.244.0.0/24"


class Nodes(Protocol):
    """The part of the store the kubelet reads (the pod's Node)."""

    def get(self, plural: str, namespace: str | None, name: str) -> JSON: ...


def _digest(*parts: object) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


def image_id(image: str) -> str:
    """The image as the runtime reports it: fully qualified and pinned by digest."""
    if "@sha256:" in image:
        name, digest = image.split("@", 1)
    else:
        name, digest = image, "sha256:" + _digest("image", image)
        last = name.rsplit("/", 1)[-1]
        name = name.rsplit(":", 1)[0] if ":" in last else name
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}@{digest}"


def qos_class(spec: JSON) -> str:
    """Guaranteed, Burstable or BestEffort from the containers' requests and limits (upstream's rules)."""
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                  if isinstance(c, dict)]
    resources = [(c.get("resources") or {}) for c in containers]
    if not any((r.get(part) or {}).get(k) for r in resources for part in ("requests", "limits") for k in ("cpu", "memory")):
        return "BestEffort"
    for r in resources:
        requests, limits = r.get("requests") or {}, r.get("limits") or {}
        if any(limits.get(k) in (None, "") for k in ("cpu", "memory")):
            return "Burstable"
        if any(str(requests.get(k, limits[k])) != str(limits[k]) for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


def _node_addresses(nodes: Nodes | None, node_name: str) -> tuple[str, str]:
    """The node's InternalIP and podCIDR (defaults when the store has no such Node)."""
    if nodes is None:
        return _DEFAULT_NODE_IP, _DEFAULT_CIDR
    try:
        node = nodes.get("nodes", None, node_name)
    except StoreError:
        return _DEFAULT_NODE_IP, _DEFAULT_CIDR
    addresses = (node.get("status") or {}).get("addresses") or []
    ip = next((a.get("address") for a in addresses if a.get("type") == "InternalIP"), _DEFAULT_NODE_IP)
    return str(ip), str((node.get("spec") or {}).get("podCIDR") or _DEFAULT_CIDR)


def _pod_ip(cidr: str, uid: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    offset = 2 + int(_digest("ip", uid), 16) % max(net.num_addresses - 3, 1)
    return str(net.network_address + offset)


def _has_sandbox(status: JSON) -> bool:
    """Whether the pod's network sandbox exists (it has run, or is running, any container)."""
    if status.get("phase") in ("Running", "Succeeded", "Failed"):
        return True
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    return any((c.get("state") or {}).get("running") or (c.get("state") or {}).get("terminated")
               or c.get("restartCount") or (c.get("lastState") or {}).get("terminated") for c in statuses)


def _container_status(pod_uid: str, container: JSON | None, status: JSON) -> JSON:
    out = dict(status)
    image = str(out.get("image") or (container or {}).get("image") or "")
    out.setdefault("image", image)
    state = out.get("state") or {}
    ran = bool(state.get("running") or state.get("terminated") or out.get("restartCount")
               or (out.get("lastState") or {}).get("terminated"))
    out.setdefault("imageID", image_id(image) if ran and image else "")
    if ran:
        out.setdefault("containerID", f"{RUNTIME}://" + _digest("container", pod_uid, out.get("name"),
                                                                 out.get("restartCount") or 0))
    out.setdefault("ready", False)
    out.setdefault("restartCount", 0)
    out.setdefault("started", bool(state.get("running")) and ran)
    out.setdefault("lastState", {})
    return out


def complete_pod(pod: JSON, nodes: Nodes | None = None) -> JSON:
    """A copy of ``pod`` whose status carries what the kubelet and API server would have set."""
    pod = copy.deepcopy(pod)
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    status = pod.setdefault("status", {})
    uid = str(meta.get("uid") or meta.get("name"))
    status.setdefault("qosClass", qos_class(spec))
    node_name = spec.get("nodeName")
    if node_name:
        host_ip, cidr = _node_addresses(nodes, str(node_name))
        status.setdefault("hostIP", host_ip)
        status.setdefault("hostIPs", [{"ip": status["hostIP"]}])
        if _has_sandbox(status) and not spec.get("hostNetwork"):
            status.setdefault("podIP", _pod_ip(cidr, uid))
        elif spec.get("hostNetwork") and _has_sandbox(status):
            status.setdefault("podIP", status["hostIP"])
        if status.get("podIP"):
            status.setdefault("podIPs", [{"ip": status["podIP"]}])
    for key, containers in (("containerStatuses", "containers"), ("initContainerStatuses", "initContainers")):
        by_name = {c.get("name"): c for c in spec.get(containers) or [] if isinstance(c, dict)}
        if status.get(key):
            status[key] = [_container_status(uid, by_name.get(c.get("name")), c) for c in status[key]]
    return pod
