"""Scenario folders (plain Kubernetes YAML + optional mc.yaml) -> store objects + MC state.

A scenario is loaded the way the upstream plugin's test loader reads its testdata (every YAML file of
the folder, objects sorted by kind, file-name order kept within a kind), then made whole the way a
real cluster would be: uids, owner references and namespaces the YAML leaves out are filled in, status
is written as the controller wrote it, and ``{{now-4m}}``-style timestamps are resolved at load time.
See scenarios/README.md for the authoring rules.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import yaml

from rollbook.errors import ConfigError, UsageError
from rollbook.sandbox import kubelet
from rollbook.sandbox.store import LOG_ANNOTATION, RESOURCES, SANDBOX_NODE, StoreError, sandbox_node

BUILTIN_DIR = Path(__file__).parent / "scenarios"
HASH_LABEL = "rollouts-pod-template-hash"

# kind -> (plural, creation order). Order: what owners must exist before what they own.
KINDS: dict[str, tuple[str, int]] = {
    "Namespace": ("namespaces", 0),
    "Node": ("nodes", 0),
    "ServiceAccount": ("serviceaccounts", 1),
    "ConfigMap": ("configmaps", 1),
    "Secret": ("secrets", 1),
    "Service": ("services", 1),
    "Endpoints": ("endpoints", 1),
    "Ingress": ("ingresses", 1),
    "PodDisruptionBudget": ("poddisruptionbudgets", 1),
    "HorizontalPodAutoscaler": ("horizontalpodautoscalers", 1),
    "AnalysisTemplate": ("analysistemplates", 1),
    "ClusterAnalysisTemplate": ("clusteranalysistemplates", 1),
    "Deployment": ("deployments", 2),
    "StatefulSet": ("statefulsets", 2),
    "DaemonSet": ("daemonsets", 2),
    "Job": ("jobs", 2),
    "CronJob": ("cronjobs", 2),
    "Rollout": ("rollouts", 3),
    "ReplicaSet": ("replicasets", 4),
    "Pod": ("pods", 5),
    "Experiment": ("experiments", 6),
    "AnalysisRun": ("analysisruns", 7),
    "Event": ("events", 8),
}

# Old API versions a real server still converts to apps/v1 (the upstream blue-green fixture uses one).
_LEGACY_APPS = ("extensions/v1beta1", "apps/v1beta1", "apps/v1beta2")

_NOW_RE = re.compile(r"\{\{\s*now\s*(?:([+-])\s*((?:\d+\s*[smhd]\s*)+))?\}\}")
_PART_RE = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Obj = dict[str, Any]

# libyaml's safe loader is ~7x faster than the pure-Python one; start-up must stay well under a second.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_log = logging.getLogger(__name__)


class StoreLike(Protocol):
    """The part of ``sandbox.store.Store`` the loader needs."""

    def create(self, plural: str, namespace: str | None, obj: Obj, *, dry_run: bool = False,
               system: bool = False) -> Obj: ...

    def get(self, plural: str, namespace: str | None, name: str) -> Obj: ...

    def patch(self, plural: str, namespace: str | None, name: str, body: Any, patch_type: str) -> Obj: ...

    def set_status(self, plural: str, namespace: str | None, name: str, status: Obj) -> Obj: ...

    def set_pod_log(self, namespace: str, pod: str, text: str) -> None: ...


class UnknownScenario(UsageError):
    """The scenario is neither a built-in name nor a folder."""


class ScenarioError(ConfigError):
    """A scenario folder holds something the loader cannot turn into objects."""


@dataclass(frozen=True)
class ScenarioInfo:
    """What a loaded scenario contains."""

    name: str
    path: Path
    namespaces: list[str]
    rollouts: list[tuple[str, str]]          # (namespace, name)
    mc_state: dict[str, Any] | None
    counts: dict[str, int] = field(default_factory=dict)   # plural -> objects created
    skipped: list[str] = field(default_factory=list)       # objects not loaded (refused, or a kind not served), and why


@dataclass
class _Doc:
    """One YAML document and where it came from (for error messages)."""

    obj: Obj
    source: str


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped in scenarios/."""
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def resolve(name_or_path: str | Path) -> Path:
    """A built-in name or a folder path -> the scenario folder."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    builtin = BUILTIN_DIR / str(name_or_path)
    if "/" not in str(name_or_path) and builtin.is_dir():
        return builtin
    raise UnknownScenario(
        f"Scenario {str(name_or_path)!r} is neither a built-in scenario nor a folder.",
        hint=f"Use one of: {', '.join(builtin_scenarios())}; or pass a folder of Kubernetes YAML.")


def load_scenario(store: StoreLike, name_or_path: str | Path, *, now: datetime | None = None) -> ScenarioInfo:
    """Load a scenario folder into ``store``; return what it holds (MC state included)."""
    folder = resolve(name_or_path)
    at = now or datetime.now(UTC)
    unserved: list[str] = []
    docs = [_Doc(resolve_times(d.obj, at), d.source) for d in read_folder(folder, unserved)]
    mc_state = read_mc_state(folder, at)
    objs = _complete([d.obj for d in docs])
    created, skipped = _create_all(store, objs)
    _add_nodes(store, [o for o in created if o["kind"] == "Pod"], at)
    _complete_pods(store, [o for o in created if o["kind"] == "Pod"])
    rollouts = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in created if o["kind"] == "Rollout"]
    namespaces = sorted(o["metadata"]["name"] for o in created if o["kind"] == "Namespace")
    counts: dict[str, int] = {}
    for o in created:
        counts[KINDS[o["kind"]][0]] = counts.get(KINDS[o["kind"]][0], 0) + 1
    return ScenarioInfo(folder.name, folder, namespaces, rollouts, mc_state, counts, unserved + skipped)


# --------------------------------------------------------------------------- reading


# Not Kubernetes: the MC stand-in's state and the Prometheus stand-in's series.
STATE_FILES = ("mc", "prometheus")


def read_folder(folder: Path, unserved: list[str] | None = None) -> list[_Doc]:
    """Every object of every YAML file but the stand-ins' state files, sorted by kind, file-name order.

    Objects of a kind the sandbox does not serve (a service mesh's VirtualService, a ServiceMonitor...)
    are left out with a warning and listed in ``unserved``: the rest of the world still loads.
    """
    docs: list[_Doc] = []
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.stem not in STATE_FILES)
    for path in files:
        for doc in _read_file(path):
            if doc.obj["kind"] in KINDS:
                docs.append(doc)
                continue
            why = (f"{doc.obj['kind']} {doc.obj['metadata']['name']!r} from {path.name}: the sandbox does not serve "
                   f"{doc.obj.get('apiVersion', '?')} {doc.obj['kind']}")
            _log.warning("scenario: skipped %s", why)
            if unserved is not None:
                unserved.append(why)
    if not docs:
        raise ScenarioError(f"Scenario folder {folder} holds no Kubernetes objects.",
                            hint="Add YAML files with Rollouts, ReplicaSets, Pods, AnalysisRuns, ...")
    return sorted(docs, key=lambda d: KINDS[d.obj["kind"]][1])   # stable: keeps file order


def _read_file(path: Path) -> list[_Doc]:
    """The objects of one (multi-document) YAML file; `kind: List` is unpacked."""
    try:
        raw = [d for d in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER) if d]
    except yaml.YAMLError as e:
        raise ScenarioError(f"Scenario file {path} is not valid YAML: {e}",
                            hint="Fix the file; check it with: python -c 'import yaml,sys; "
                                 "list(yaml.safe_load_all(open(sys.argv[1])))' FILE") from e
    out: list[_Doc] = []
    for doc in raw:
        items = doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        out.extend(_Doc(_check(item, path), str(path)) for item in items)
    return out


def _check(obj: Any, path: Path) -> Obj:
    """Refuse documents that are not Kubernetes objects (a kind the sandbox does not serve is the caller's call)."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if not isinstance(kind, str) or not kind:
        raise ScenarioError(f"Scenario file {path} holds a document without a kind: {str(obj)[:80]!r}.",
                            hint=f"Every document needs apiVersion, kind and metadata.name; served kinds: "
                                 f"{', '.join(KINDS)}.")
    if not obj.get("metadata", {}).get("name"):
        raise ScenarioError(f"Scenario file {path} holds a {kind} without metadata.name.",
                            hint="Give every object a name.")
    return dict(obj)


def read_mc_state(folder: Path, at: datetime) -> dict[str, Any] | None:
    """The MC stand-in's state from mc.yaml, or None when the scenario has none."""
    path = folder / "mc.yaml"
    if not path.exists():
        return None
    try:
        state = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as e:
        raise ScenarioError(f"MC state {path} is not valid YAML: {e}", hint="Fix mc.yaml.") from e
    if not isinstance(state, dict):
        raise ScenarioError(f"MC state {path} is not a mapping.",
                            hint="See docs/sandbox.md for the shape (services, releases, evidence, current).")
    resolved: dict[str, Any] = resolve_times(state, at)
    return resolved


# --------------------------------------------------------------------------- relative times


def rfc3339(at: datetime) -> str:
    """RFC 3339 UTC with second precision, as Kubernetes writes timestamps."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_times(value: Any, at: datetime) -> Any:
    """Replace every ``{{now}}`` / ``{{now-4m}}`` / ``{{now+1h30m}}`` in strings with an RFC 3339 time."""
    if isinstance(value, str):
        return _NOW_RE.sub(lambda m: rfc3339(at + _offset(m.group(1), m.group(2))), value) \
            if "{{" in value else value
    if isinstance(value, dict):
        return {k: resolve_times(v, at) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_times(v, at) for v in value]
    return value


def _offset(sign: str | None, spec: str | None) -> timedelta:
    """'-', '1h30m' -> timedelta(-5400 s)."""
    if not spec:
        return timedelta(0)
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART_RE.findall(spec))
    return timedelta(seconds=-seconds if sign == "-" else seconds)


# --------------------------------------------------------------------------- completing the world


def _complete(objs: list[Obj]) -> list[Obj]:
    """Fill in what a real cluster would have: namespaces, uids, owner references, event uids."""
    for o in objs:   # fresh from YAML and resolve_times: ours to change in place
        meta = o.setdefault("metadata", {})
        if o["kind"] in ("ReplicaSet", "Deployment") and o.get("apiVersion") in _LEGACY_APPS:
            o["apiVersion"] = "apps/v1"
        for volatile in ("resourceVersion", "selfLink"):   # from `kubectl get -o yaml`; the store owns these
            meta.pop(volatile, None)
        if RESOURCES[KINDS[o["kind"]][0]].namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        meta.setdefault("uid", str(uuid.uuid4()))
    objs = _missing_namespaces(objs) + objs
    for o in objs:
        _link_owner(o, objs)
        if o["kind"] == "Event":
            _link_event(o, objs)
    return objs


def _missing_namespaces(objs: list[Obj]) -> list[Obj]:
    """Namespace objects for namespaces used but not declared."""
    declared = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    used = sorted({o["metadata"]["namespace"] for o in objs if o["metadata"].get("namespace")} - declared)
    return [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": ns, "uid": str(uuid.uuid4()), "labels": {"kubernetes.io/metadata.name": ns}}}
            for ns in used]


def _link_owner(obj: Obj, objs: list[Obj]) -> None:
    """Add the controller owner reference a ReplicaSet, AnalysisRun or Pod would carry."""
    meta = obj["metadata"]
    if meta.get("ownerReferences") or obj["kind"] not in ("ReplicaSet", "AnalysisRun", "Pod"):
        return
    owner = _pod_owner(obj, objs) if obj["kind"] == "Pod" else _rollout_owner(obj, objs)
    if owner is not None:
        meta["ownerReferences"] = [{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def _same_ns(obj: Obj, objs: list[Obj], kind: str) -> list[Obj]:
    """Objects of ``kind`` in obj's namespace."""
    ns = obj["metadata"]["namespace"]
    return [o for o in objs if o["kind"] == kind and o["metadata"]["namespace"] == ns]


def _rollout_owner(obj: Obj, objs: list[Obj]) -> Obj | None:
    """The Rollout of the same namespace whose spec.selector.matchLabels match obj's labels."""
    labels = obj["metadata"].get("labels") or {}
    for ro in _same_ns(obj, objs, "Rollout"):
        wanted = ((ro.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if wanted and all(labels.get(k) == v for k, v in wanted.items()):
            return ro
    return None


def _pod_owner(pod: Obj, objs: list[Obj]) -> Obj | None:
    """The ReplicaSet whose pod-template hash label the pod carries."""
    labels = pod["metadata"].get("labels") or {}
    key = HASH_LABEL if HASH_LABEL in labels else "pod-template-hash"
    if key not in labels:
        return None
    for rs in _same_ns(pod, objs, "ReplicaSet"):
        if (rs["metadata"].get("labels") or {}).get(key) == labels[key]:
            return rs
    return None


def _link_event(event: Obj, objs: list[Obj]) -> None:
    """Fill involvedObject.uid (and namespace) from the object the event names."""
    inv = event.setdefault("involvedObject", {})
    inv.setdefault("namespace", event["metadata"]["namespace"])
    if inv.get("uid"):
        return
    for o in objs:
        m = o["metadata"]
        if o["kind"] == inv.get("kind") and m["name"] == inv.get("name") and m.get("namespace") == inv["namespace"]:
            inv["uid"] = m["uid"]
            return


# --------------------------------------------------------------------------- writing


def _create_all(store: StoreLike, objs: list[Obj]) -> tuple[list[Obj], list[str]]:
    """Create every object (system write: uids, timestamps, status kept) and the pod logs.

    Objects a real API server refuses (422, e.g. the upstream fixture named ``canary-demo-workloadRef``,
    loaded there through a fake clientset that skips validation) are skipped and reported, not fatal.
    """
    created: list[Obj] = []
    skipped: list[str] = []
    for obj in objs:
        try:
            _create_one(store, obj)
        except StoreError as e:
            if e.code != 422:
                raise ScenarioError(f"Could not load {obj['kind']} {obj['metadata']['name']!r}: {e.message}",
                                    hint="Fix the scenario YAML (names must be unique per kind and namespace).") from e
            _log.warning("scenario: skipped %s %r: %s", obj["kind"], obj["metadata"]["name"], e.message)
            skipped.append(e.message)
            continue
        created.append(obj)
    return created, skipped


def _add_nodes(store: StoreLike, pods: list[Obj], now: datetime) -> None:
    """A Ready Node for every ``spec.nodeName`` the pods name (and the controller's), unless the scenario has it."""
    names = dict.fromkeys([str((p.get("spec") or {}).get("nodeName")) for p in pods
                           if (p.get("spec") or {}).get("nodeName")] + [SANDBOX_NODE])
    created = (now - timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for index, name in enumerate(names, start=1):
        if not _exists(store, name, "nodes"):
            store.create("nodes", None, sandbox_node(name, created, index), system=True)


def _complete_pods(store: StoreLike, pods: list[Obj]) -> None:
    """What the kubelet would have reported and the scenario left out (IPs, container and image IDs, QoS)."""
    for pod in pods:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        current = store.get("pods", ns, name)
        status = kubelet.complete_pod(current, store)["status"]
        if status != current.get("status"):
            store.set_status("pods", ns, name, status)


def _exists(store: StoreLike, name: str, plural: str = "namespaces") -> bool:
    """Whether the store already holds this cluster-scoped object."""
    try:
        store.get(plural, None, name)
    except StoreError as e:
        if e.code == 404:
            return False
        raise
    return True


def _create_one(store: StoreLike, obj: Obj) -> None:
    """Create one object, its status and (for pods) its log text."""
    plural = KINDS[obj["kind"]][0]
    log = (obj["metadata"].get("annotations") or {}).pop(LOG_ANNOTATION, None)
    ns = obj["metadata"].get("namespace") if RESOURCES[plural].namespaced else None
    if obj["kind"] == "Namespace" and _exists(store, obj["metadata"]["name"]):
        # The cluster already has it (a sandbox made with its namespace): take the scenario's labels.
        meta = {k: obj["metadata"][k] for k in ("labels", "annotations") if obj["metadata"].get(k)}
        store.patch("namespaces", None, obj["metadata"]["name"], {"metadata": meta}, "merge")
        return
    result = store.create(plural, ns, obj, system=True)
    if obj.get("status") and result.get("status") != obj["status"]:
        store.set_status(plural, ns, obj["metadata"]["name"], obj["status"])
    if log is not None and ns is not None:
        store.set_pod_log(ns, obj["metadata"]["name"], str(log))
