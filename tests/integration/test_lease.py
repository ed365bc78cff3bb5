"""Two runners on one Rollout: a Lease (coordination.k8s.io/v1, served by the sandbox) lets exactly one
mutate; the other is refused with the holder's name and nothing sent (issue 11, part 6)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from rollbook.cluster import connect
from rollbook.cluster import lease as lease_mod
from rollbook.cluster.actions import StaleRollout, retry
from rollbook.cluster.lease import LeaseHeld
from rollbook.errors import RollbookError
from rollbook.sandbox.server import Sandbox


def _patches(sb: Sandbox, name: str) -> list[str]:
    """Real (not dry-run) PATCHes of the Rollout the API server received."""
    assert sb.apiserver is not None
    return [r.path for r in sb.apiserver.requests
            if r.method == "PATCH" and f"/rollouts/{name}" in r.path and r.query.get("dryRun") != "All"]


@pytest.fixture
def target(sandbox_factory: Callable[..., Sandbox]) -> tuple[Sandbox, str, str, str]:
    sb = sandbox_factory("evidence-gap")
    ns, name = sb.rollouts[0]
    rv = str(sb.store.get("rollouts", ns, name)["metadata"]["resourceVersion"])
    return sb, ns, name, rv


def test_while_one_runner_holds_the_lease_the_other_is_refused_with_its_name(target) -> None:  # type: ignore[no-untyped-def]
    sb, ns, name, rv = target
    a = connect(context="sandbox", kubeconfig=sb.kubeconfig)
    b = connect(context="sandbox", kubeconfig=sb.kubeconfig)
    with lease_mod.held(a, ns, name, "runner-A INC-1 (approved by alice, CHG-1)"):
        with pytest.raises(LeaseHeld) as refused:
            retry(b, ns, name, expected_resource_version=rv, holder="runner-B")
        assert refused.value.holder == "runner-A INC-1 (approved by alice, CHG-1)"
        assert "is being changed by runner-A INC-1 (approved by alice, CHG-1)" in str(refused.value)
        assert f"Lease {ns}/rollbook-{name}" in str(refused.value) and "nothing was sent" in str(refused.value)
        assert _patches(sb, name) == []
        sent = retry(a, ns, name, expected_resource_version=rv, holder="runner-A INC-1 (approved by alice, CHG-1)")
    assert sent.requests[-1].status == 200 and len(_patches(sb, name)) == 1
    assert sb.store.list("leases", ns)[0] == []  # released after the mutation
    # B, once the lease is free, re-reads and finds the Rollout changed under it: still refused
    with pytest.raises(StaleRollout):
        retry(b, ns, name, expected_resource_version=rv, holder="runner-B")
    assert len(_patches(sb, name)) == 1


def test_a_lease_left_by_a_dead_runner_expires_and_is_taken_over(target) -> None:  # type: ignore[no-untyped-def]
    sb, ns, name, rv = target
    cluster = connect(context="sandbox", kubeconfig=sb.kubeconfig)
    old = (datetime.now(UTC) - timedelta(seconds=lease_mod.LEASE_SECONDS + 5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sb.store.create("leases", ns, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                   "metadata": {"name": f"rollbook-{name}", "namespace": ns},
                                   "spec": {"holderIdentity": "killed-runner", "leaseDurationSeconds": 60,
                                            "acquireTime": old, "renewTime": old}})
    retry(cluster, ns, name, expected_resource_version=rv, holder="runner-B")
    assert len(_patches(sb, name)) == 1


def test_two_runners_at_once_exactly_one_sends(target) -> None:  # type: ignore[no-untyped-def]
    sb, ns, name, rv = target
    start = threading.Barrier(2, timeout=30)
    outcomes: dict[str, str] = {}

    def runner(who: str) -> None:
        cluster = connect(context="sandbox", kubeconfig=sb.kubeconfig)
        start.wait()
        try:
            retry(cluster, ns, name, expected_resource_version=rv, holder=who)
            outcomes[who] = "sent"
        except RollbookError as e:
            outcomes[who] = type(e).__name__

    threads = [threading.Thread(target=runner, args=(w,)) for w in ("runner-A", "runner-B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes.values())[-1] == "sent" and list(outcomes.values()).count("sent") == 1, outcomes
    assert set(outcomes.values()) - {"sent"} <= {"LeaseHeld", "StaleRollout"}
    assert len(_patches(sb, name)) == 1


def test_a_lease_released_between_the_conflict_and_the_read_is_taken(target) -> None:  # type: ignore[no-untyped-def]
    """The interleaving the two-runner race hit once (B's create met A's lease, A released it, B's read
    found nothing): forced here, over real HTTP, by releasing A's lease just before B reads it."""
    sb, ns, name, rv = target
    a = connect(context="sandbox", kubeconfig=sb.kubeconfig)
    b = connect(context="sandbox", kubeconfig=sb.kubeconfig)
    a_rv = lease_mod.acquire(a, ns, name, "runner-A")
    real_get = b.get
    released: list[str] = []

    def get_after_a_released(plural: str, namespace: str, obj: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if plural == "leases" and not released:
            lease_mod.release(a, ns, name, a_rv)
            released.append(obj)
        return real_get(plural, namespace, obj, *args, **kwargs)

    b.get = get_after_a_released  # type: ignore[method-assign]
    b_rv = lease_mod.acquire(b, ns, name, "runner-B")
    assert released == [f"rollbook-{name}"]
    lease = sb.store.get("leases", ns, f"rollbook-{name}")
    assert lease["spec"]["holderIdentity"] == "runner-B" and str(lease["metadata"]["resourceVersion"]) == b_rv
