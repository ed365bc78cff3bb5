"""A Kubernetes Lease (coordination.k8s.io/v1) held around a mutation: two runners never both change one
Rollout. The second is refused with the holder's name; a lease its holder left behind (a runner killed
mid-mutation) expires after LEASE_SECONDS and is then taken over.

Lease `rollbook-<rollout>` in the Rollout's namespace. Create wins; an existing, unexpired lease held by
someone else refuses; an expired one is replaced with its resourceVersion (a 409 there means another
runner took it first: refused too); one deleted between our create and our read is created again (bounded).
Released by a delete with that resourceVersion as precondition.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from rollbook.cluster.connect import Cluster, Target
from rollbook.errors import ClusterError, Conflict, NotFound, PreconditionError

LEASE_SECONDS = 60  # longer than one mutation (a PATCH or two), short enough that a dead holder's lease expires
ATTEMPTS = 3  # creates of a lease that other runners keep taking and releasing, before refusing


class LeaseHeld(PreconditionError):
    """Another runner holds the Rollout's lease: this one must not mutate now."""

    def __init__(self, message: str, *, holder: str, hint: str | None = None) -> None:
        self.holder = holder
        super().__init__(message, hint=hint)


def default_holder(what: str = "") -> str:
    """Who we are, for the lease and for the other runner's error: `rollbook <what> on HOST pid N`."""
    return " ".join(p for p in ("rollbook", what, f"on {socket.gethostname()} pid {os.getpid()}") if p)


def lease_name(rollout: str) -> str:
    """The lease of one Rollout (object names are at most 253 characters)."""
    return f"rollbook-{rollout}"[:253]


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(t: datetime) -> str:
    """MicroTime as Kubernetes writes it."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _body(namespace: str, name: str, holder: str, seconds: int, rv: str | None = None) -> dict[str, Any]:
    now = _micro(_now())
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "rollbook"}}
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds, "acquireTime": now, "renewTime": now}}


def _refuse(namespace: str, rollout: str, spec: dict[str, Any], context: str | None) -> LeaseHeld:
    holder = str(spec.get("holderIdentity") or "(unknown)")
    renewed = _parse(spec.get("renewTime") or spec.get("acquireTime"))
    until = renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)) if renewed else None
    return LeaseHeld(
        f"Rollout {rollout!r} in namespace {namespace!r} is being changed by {holder} (Lease "
        f"{namespace}/{lease_name(rollout)}, context {context!r}"
        + (f", held until {_micro(until)[:19]}Z" if until else "") + "); nothing was sent.",
        holder=holder,
        hint="Wait for that run to finish, then re-run this step: it re-reads the Rollout first.")


def acquire(cluster: Cluster, namespace: str, rollout: str, holder: str, *, seconds: int = LEASE_SECONDS) -> str:
    """Take the Rollout's lease; its resourceVersion. LeaseHeld when someone else holds it.

    A lease its holder releases between our create (409, it exists) and our read or replace (404, it is gone)
    is created again: at most ATTEMPTS times, then refused as held (it keeps changing hands)."""
    name = lease_name(rollout)
    for _ in range(ATTEMPTS):
        try:
            resp = cluster.request("POST", cluster.path("leases", namespace), Target("leases", namespace, name, "create"),
                                   body=_body(namespace, name, holder, seconds), content_type="application/json")
            return str(resp.data["metadata"]["resourceVersion"])
        except Conflict:
            pass  # it exists: ours from before, someone else's, or expired
        try:
            return _take_over(cluster, namespace, rollout, holder, seconds)
        except NotFound:
            continue  # released meanwhile: create it
    raise LeaseHeld(
        f"Rollout {rollout!r} in namespace {namespace!r}: its Lease {namespace}/{name} was taken and released "
        f"{ATTEMPTS} times while this runner tried to take it (context {cluster.context!r}); nothing was sent.",
        holder="(changing hands)", hint="Another runner is changing this Rollout now: wait, then re-run this step.")


def _take_over(cluster: Cluster, namespace: str, rollout: str, holder: str, seconds: int) -> str:
    """The existing lease, replaced if it is ours or expired; LeaseHeld if someone else holds it; NotFound if
    it was deleted meanwhile."""
    name = lease_name(rollout)
    current = cluster.get("leases", namespace, name)
    spec = current.get("spec") or {}
    renewed = _parse(spec.get("renewTime") or spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or seconds)
    expired = renewed is None or renewed + timedelta(seconds=duration) < _now()
    if spec.get("holderIdentity") not in (None, "", holder) and not expired:
        raise _refuse(namespace, rollout, spec, cluster.context)
    rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
    try:
        resp = cluster.request("PUT", cluster.path("leases", namespace, name), Target("leases", namespace, name, "update"),
                               body=_body(namespace, name, holder, seconds, rv), content_type="application/json")
    except Conflict:  # another runner replaced it between our read and write
        raise _refuse(namespace, rollout, (cluster.get("leases", namespace, name).get("spec") or {}),
                      cluster.context) from None
    return str(resp.data["metadata"]["resourceVersion"])


def release(cluster: Cluster, namespace: str, rollout: str, resource_version: str) -> None:
    """Delete the lease if it is still the one we took (a precondition on its resourceVersion)."""
    name = lease_name(rollout)
    with contextlib.suppress(NotFound, Conflict):
        cluster.request("DELETE", cluster.path("leases", namespace, name), Target("leases", namespace, name, "delete"),
                        body={"kind": "DeleteOptions", "apiVersion": "v1",
                              "preconditions": {"resourceVersion": resource_version}},
                        content_type="application/json")


@contextlib.contextmanager
def held(cluster: Cluster, namespace: str, rollout: str, holder: str | None = None,
         *, seconds: int = LEASE_SECONDS) -> Iterator[str]:
    """Hold the Rollout's lease for the block; released after it (an expired lease covers a crash)."""
    rv = acquire(cluster, namespace, rollout, holder or default_holder(), seconds=seconds)
    try:
        yield rv
    finally:
        try:
            release(cluster, namespace, rollout, rv)
        except ClusterError:
            pass  # it expires by itself; the mutation's outcome is what matters
