"""retry / abort / undo, sending exactly what `kubectl argo rollouts` sends; server-side dry run.

Bodies are those of the plugin (argo-rollouts.md, "What the kubectl plugin sends"). The kubernetes
client serialises them with ``json.dumps`` (``{"status": {"abort": false}}``), which is the same JSON
as the plugin's compact Go encoding; ``ActionResult`` records the bytes actually sent.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rollbook.cluster import lease
from rollbook.cluster.connect import Cluster, Response, Target
from rollbook.cluster.rollout import HASH_LABEL, fetch_replicasets, revision_of
from rollbook.errors import Forbidden, NotFound, PreconditionError

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
Action = Literal["retry", "abort", "undo"]


class StaleRollout(PreconditionError):
    """The Rollout's resourceVersion is not the one the operator decided on: it changed meanwhile."""


class NoRevision(PreconditionError):
    """undo has no ReplicaSet to go back to (unknown revision, or only one revision)."""


@dataclass(frozen=True)
class SentRequest:
    """One request exactly as sent: method, path with query, content type and body bytes."""

    method: str
    path: str
    content_type: str
    body: bytes
    status: int


@dataclass(frozen=True)
class ActionResult:
    """What an action did: every request sent (incl. a NotFound fallback) and the resulting version."""

    action: Action
    namespace: str
    name: str
    dry_run: bool
    requests: tuple[SentRequest, ...]
    resource_version: str | None
    previous_resource_version: str | None = None
    target_revision: int | None = None
    skipped: str | None = None
    response: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def request(self) -> SentRequest | None:
        """The request that succeeded (the last one sent)."""
        return self.requests[-1] if self.requests else None

    @property
    def body_json(self) -> Any:
        """The successful request's body, parsed."""
        return json.loads(self.request.body) if self.request else None


def retry(cluster: Cluster, namespace: str, name: str, *, dry_run: bool = False,
          expected_resource_version: str | None = None, holder: str | None = None) -> ActionResult:
    """``kubectl argo rollouts retry rollout NAME``: status.abort=false (Argo re-runs the same release)."""
    return _guarded(cluster, namespace, name, dry_run, holder,
                    lambda dry: _set_abort(cluster, namespace, name, False, "retry", dry, expected_resource_version))


def abort(cluster: Cluster, namespace: str, name: str, *, dry_run: bool = False,
          expected_resource_version: str | None = None, holder: str | None = None) -> ActionResult:
    """``kubectl argo rollouts abort NAME``: status.abort=true."""
    return _guarded(cluster, namespace, name, dry_run, holder,
                    lambda dry: _set_abort(cluster, namespace, name, True, "abort", dry, expected_resource_version))


def undo(cluster: Cluster, namespace: str, name: str, to_revision: int | None = None, *, dry_run: bool = False,
         expected_resource_version: str | None = None, holder: str | None = None) -> ActionResult:
    """``kubectl argo rollouts undo NAME [--to-revision N]``: put a ReplicaSet's template back in the spec."""
    return _guarded(cluster, namespace, name, dry_run, holder,
                    lambda dry: _undo(cluster, namespace, name, to_revision, dry, expected_resource_version))


def _guarded(cluster: Cluster, namespace: str, name: str, dry_run: bool, holder: str | None,
             send: Callable[[bool], ActionResult]) -> ActionResult:
    """A real mutation (read, version check, PATCH) inside the Rollout's Lease; a dry run needs none.

    An identity that may not hold the Lease is asked the same change as a server-side dry run first: if
    that is forbidden too, the error names the Rollout (the permission that matters most), else the Lease."""
    if dry_run:
        return send(True)
    try:
        with lease.held(cluster, namespace, name, holder):
            return send(False)
    except Forbidden as e:
        if e.kind != "Lease":
            raise
        send(True)  # raises the Rollout's own Forbidden when the identity may not patch it either
        raise


def _undo(cluster: Cluster, namespace: str, name: str, to_revision: int | None, dry_run: bool,
          expected_resource_version: str | None) -> ActionResult:
    rollout = cluster.get("rollouts", namespace, name)
    before = _check_version(rollout, expected_resource_version, namespace, name)
    target = undo_target(rollout, fetch_replicasets(cluster, rollout), to_revision)
    revision = revision_of(target)
    if _same_template(rollout, target):  # as the plugin: nothing to send
        return ActionResult("undo", namespace, name, dry_run, (), before, before, revision,
                            skipped=f"current template already matches revision {revision}")
    body = [{"op": "replace", "path": "/spec/template", "value": template_without_hash(target)}]
    resp, sent = _patch(cluster, namespace, name, body, JSON_PATCH, None, dry_run, "undo")
    return _result("undo", namespace, name, dry_run, (sent,), resp, before, revision)


# --------------------------------------------------------------------------- pieces


def _set_abort(cluster: Cluster, namespace: str, name: str, value: bool, action: Action, dry_run: bool,
               expected: str | None) -> ActionResult:
    """PATCH .../rollouts/NAME/status; on NotFound the same patch on the main resource (as the plugin)."""
    before = None
    if expected is not None:
        before = _check_version(cluster.get("rollouts", namespace, name), expected, namespace, name)
    body = {"status": {"abort": value}}
    sent: list[SentRequest] = []
    try:
        resp, first = _patch(cluster, namespace, name, body, MERGE_PATCH, "status", dry_run, action)
        sent.append(first)
    except NotFound:
        sent.append(SentRequest("PATCH", _path(cluster, namespace, name, "status", dry_run), MERGE_PATCH,
                                _wire(body), 404))
        resp, second = _patch(cluster, namespace, name, body, MERGE_PATCH, None, dry_run, action)
        sent.append(second)
    return _result(action, namespace, name, dry_run, tuple(sent), resp, before, None)


def _patch(cluster: Cluster, namespace: str, name: str, body: Any, content_type: str, subresource: str | None,
           dry_run: bool, action: Action) -> tuple[Response, SentRequest]:
    """One PATCH, with ``dryRun=All`` when asked."""
    query = [("dryRun", "All")] if dry_run else []
    path = cluster.path("rollouts", namespace, name, subresource)
    resp = cluster.request("PATCH", path, Target("rollouts", namespace, name, verb="patch"), query=query,
                           body=body, content_type=content_type)
    return resp, SentRequest("PATCH", resp.path, content_type, _wire(body), resp.status)


def _path(cluster: Cluster, namespace: str, name: str, subresource: str | None, dry_run: bool) -> str:
    """Path with query as the client builds it (for a request that failed before returning)."""
    path = cluster.path("rollouts", namespace, name, subresource)
    return path + ("?dryRun=All" if dry_run else "")


def _wire(body: Any) -> bytes:
    """The body bytes the kubernetes REST layer sends (it uses ``json.dumps``)."""
    return json.dumps(body).encode("utf-8")


def _result(action: Action, namespace: str, name: str, dry_run: bool, sent: tuple[SentRequest, ...],
            resp: Response, before: str | None, revision: int | None) -> ActionResult:
    """An ActionResult from the final response."""
    data = resp.data if isinstance(resp.data, dict) else {}
    version = (data.get("metadata") or {}).get("resourceVersion")
    return ActionResult(action, namespace, name, dry_run, sent, version, before, revision, response=data)


def _check_version(rollout: Mapping[str, Any], expected: str | None, namespace: str, name: str) -> str | None:
    """Refuse to act when the Rollout changed since the operator looked at it."""
    current = (rollout.get("metadata") or {}).get("resourceVersion")
    if expected is not None and str(current) != str(expected):
        raise StaleRollout(
            f'Rollout "{name}" in namespace "{namespace}" changed since it was read '
            f"(resourceVersion {current}, expected {expected}); nothing was sent.",
            hint="Read the rollout again and re-check the situation before acting.",
        )
    return str(current) if current is not None else None


def undo_target(rollout: Mapping[str, Any], replicasets: list[dict[str, Any]], to_revision: int | None) -> dict[str, Any]:
    """The ReplicaSet to go back to: revision ``to_revision``, else the second-highest revision."""
    name = (rollout.get("metadata") or {}).get("name")
    by_revision = sorted(replicasets, key=revision_of, reverse=True)
    if to_revision:
        found = next((rs for rs in by_revision if revision_of(rs) == to_revision), None)
        if found is None:
            known = ", ".join(str(revision_of(rs)) for rs in by_revision) or "none"
            raise NoRevision(f'Revision {to_revision} of Rollout "{name}" is not in its history (revisions: {known}).',
                             hint="Pick one of the listed revisions, or leave to_revision empty for the previous one.")
        return found
    if len(by_revision) < 2:
        raise NoRevision(f'Rollout "{name}" has no previous revision to go back to.',
                         hint="There is nothing to undo; fix forward with a new release instead.")
    return by_revision[1]


def template_without_hash(rs: Mapping[str, Any]) -> dict[str, Any]:
    """The ReplicaSet's ``spec.template`` minus the ``rollouts-pod-template-hash`` label (a copy)."""
    template: dict[str, Any] = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return template


def _same_template(rollout: Mapping[str, Any], rs: Mapping[str, Any]) -> bool:
    """The plugin's equalIgnoreHash: every field set in the Rollout's template equals the RS's."""
    current = copy.deepcopy((rollout.get("spec") or {}).get("template") or {})
    labels = (current.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return _derivative(current, template_without_hash(rs))


def _derivative(a: Any, b: Any) -> bool:
    """apimachinery's DeepDerivative: unset (zero) values in ``a`` are ignored."""
    if a in (None, "", 0, False) or a == {} or a == []:
        return True
    if isinstance(a, dict):
        return isinstance(b, dict) and all(_derivative(v, b.get(k)) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_derivative(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
