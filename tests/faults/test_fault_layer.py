"""Each fault the sandbox injects, as the real clients meet it (kubernetes client, httpx via MC,
Prometheus and the outbound stand-ins): retried and recovered where a retry is safe, else a typed error
that names the object and the next step, within a bounded time. No kernels: one sandbox for the module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rollbook import outbound
from rollbook.cluster import connect
from rollbook.cluster.actions import retry
from rollbook.errors import RollbookError
from rollbook.evidence import MCClient, Secret
from rollbook.prometheus import PrometheusClient
from rollbook.sandbox.faults import FaultPlan
from rollbook.sandbox.server import Sandbox

OK = "recovered"


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    plan = FaultPlan()
    with Sandbox("evidence-gap", tmp_path_factory.mktemp("faults") / "sb", faults=plan) as sandbox:
        yield sandbox


def _kube_read(sb: Sandbox) -> Callable[[], Any]:
    ns, name = sb.rollouts[0]
    cluster = connect(context="sandbox", kubeconfig=sb.kubeconfig, timeout=2.0)
    return lambda: cluster.get("rollouts", ns, name)["metadata"]["name"]


def _kube_patch(sb: Sandbox) -> Callable[[], Any]:
    ns, name = sb.rollouts[0]
    cluster = connect(context="sandbox", kubeconfig=sb.kubeconfig, timeout=2.0)
    return lambda: retry(cluster, ns, name, dry_run=True).requests[-1].status  # the status PATCH, server-side dry run


def _mc(sb: Sandbox) -> Callable[[], Any]:
    mc = MCClient(sb.mc_url, Secret(sb.mc_read_token), timeout=1.0)
    return lambda: mc.verdict("api-1.42.0", "production").release_id


def _prometheus(sb: Sandbox) -> Callable[[], Any]:
    prom = PrometheusClient(sb.prometheus_url, timeout=1.0)
    return lambda: prom.query("up")


def _slack(sb: Sandbox) -> Callable[[], Any]:
    assert sb.services is not None
    url = f"{sb.services_url}{sb.services.slack_path}"
    req = outbound.Outbound("slack", "POST", url, json_body={"text": "canary aborted"}, idempotent=False,
                           display_url=outbound.mask_url_path(url))  # as paging.send_slack: the path is the secret
    return lambda: outbound.deliver(req, dry_run=False, timeout=outbound.httpx.Timeout(1.0)).status


def _pagerduty(sb: Sandbox) -> Callable[[], Any]:
    assert sb.services is not None
    body = {"routing_key": sb.services.routing_key, "event_action": "trigger", "dedup_key": "rb-fault",
            "payload": {"summary": "canary aborted", "source": "rollbook", "severity": "critical"}}
    req = outbound.Outbound("pagerduty", "POST", f"{sb.services_url}/v2/enqueue", json_body=body, idempotent=True)
    return lambda: outbound.deliver(req, dry_run=False, timeout=outbound.httpx.Timeout(1.0)).status


# (case id, client, fault rule, expected: OK or the error class name)
CASES: list[tuple[str, Callable[[Sandbox], Callable[[], Any]], dict[str, Any], str]] = [
    ("kube read 503 once", _kube_read, dict(service="kube", path="*/rollouts/*", status=503), OK),
    ("kube read 500 twice", _kube_read, dict(service="kube", path="*/rollouts/*", status=500, count=2), OK),
    ("kube read 429 Retry-After 1", _kube_read, dict(service="kube", path="*/rollouts/*", status=429, retry_after=1), OK),
    ("kube read 503 always", _kube_read, dict(service="kube", path="*/rollouts/*", status=503, count=None),
     "ClusterUnavailable"),
    ("kube read 403", _kube_read, dict(service="kube", path="*/rollouts/*", status=403), "Forbidden"),
    ("kube read 401", _kube_read, dict(service="kube", path="*/rollouts/*", status=401), "Unauthorized"),
    ("kube read 409", _kube_read, dict(service="kube", path="*/rollouts/*", status=409), "Conflict"),
    ("kube read +1 s latency", _kube_read, dict(service="kube", path="*/rollouts/*", fault="latency", delay=1.0), OK),
    ("kube read hang once (past the 2 s timeout)", _kube_read,
     dict(service="kube", path="*/rollouts/*", fault="hang", delay=4.0), OK),
    ("kube read reset mid-body", _kube_read, dict(service="kube", path="*/rollouts/*", fault="reset"), OK),
    ("kube read truncated body", _kube_read, dict(service="kube", path="*/rollouts/*", fault="truncate"), OK),
    ("kube read 200 not JSON", _kube_read, dict(service="kube", path="*/rollouts/*", fault="not_json"), "ClusterError"),
    ("kube read 200 HTML login page", _kube_read, dict(service="kube", path="*/rollouts/*", fault="html_login"),
     "ClusterError"),
    ("kube status PATCH 503 (never repeated)", _kube_patch,
     dict(service="kube", method="PATCH", path="*/status", status=503), "ClusterUnavailable"),
    ("kube status PATCH 409", _kube_patch, dict(service="kube", method="PATCH", path="*/status", status=409),
     "Conflict"),
    ("kube status PATCH 403", _kube_patch, dict(service="kube", method="PATCH", path="*/status", status=403),
     "Forbidden"),
    ("kube status PATCH reset", _kube_patch, dict(service="kube", method="PATCH", path="*/status", fault="reset"),
     "ClusterUnavailable"),
    ("MC 503 twice then recovers", _mc, dict(service="mc", status=503, count=2), OK),
    ("MC 429 Retry-After 1", _mc, dict(service="mc", status=429, retry_after=1), OK),
    ("MC hang once (past the 1 s timeout)", _mc, dict(service="mc", fault="hang", delay=3.0), OK),
    ("MC hang always", _mc, dict(service="mc", fault="hang", delay=3.0, count=None), "MCUnavailable"),
    ("MC 200 HTML login page", _mc, dict(service="mc", fault="html_login"), "MCProtocolError"),
    ("MC 200 not JSON", _mc, dict(service="mc", fault="not_json"), "MCProtocolError"),
    ("MC 401", _mc, dict(service="mc", status=401), "MCAuthError"),
    ("MC reset mid-body", _mc, dict(service="mc", fault="reset"), OK),
    ("Prometheus 503 once", _prometheus, dict(service="prometheus", status=503), OK),
    ("Prometheus down (503 always)", _prometheus, dict(service="prometheus", status=503, count=None),
     "PrometheusUnavailable"),
    ("Prometheus 200 HTML login page", _prometheus, dict(service="prometheus", fault="html_login"),
     "PrometheusProtocolError"),
    ("Slack 500 (a POST Slack may have taken: not repeated)", _slack, dict(service="slack", status=500),
     "ServiceUnavailable"),
    ("Slack 429 Retry-After 1", _slack, dict(service="slack", status=429, retry_after=1), OK),
    ("PagerDuty 503 once (deduplicated: retried)", _pagerduty, dict(service="pagerduty", status=503), OK),
    ("PagerDuty 403", _pagerduty, dict(service="pagerduty", status=403), "ServiceRejected"),
]


@pytest.mark.parametrize("case, client, rule, expected", CASES, ids=[c[0] for c in CASES])
def test_fault_seen_by_the_real_client(sb: Sandbox, case: str, client: Callable[[Sandbox], Callable[[], Any]],
                                       rule: dict[str, Any], expected: str, row) -> None:  # type: ignore[no-untyped-def]
    plan = sb.faults
    assert plan is not None
    call = client(sb)
    plan.clear()
    fired_before = len(plan.injected)
    plan.add(**rule)
    try:
        call()
        observed, message = OK, ""
    except RollbookError as e:
        observed, message = type(e).__name__, str(e)
    finally:
        plan.clear()
    fired = len(plan.injected) - fired_before
    ok = observed == expected and fired >= 1 and (observed == OK or len(message) > 40)
    row("faults-client", case, expected, f"{observed} after {fired} injected fault(s)"
        + (f": {message[:110]}" if message else ""), ok)
    assert fired >= 1, "the fault never reached the client"
    assert observed == expected, message
    if observed != OK:
        assert len(message) > 40  # a sentence naming what failed, not a bare code
