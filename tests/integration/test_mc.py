"""The MC client against the MC stand-in over real HTTP on 127.0.0.1 (one fresh server per test)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rollbook.errors import (
    MCAuthError,
    MCConflict,
    MCNotFound,
    MCProtocolError,
    MCUnavailable,
    MCValidationError,
)
from rollbook.evidence import EvidenceItem, MCClient, Secret, parse_verdict
from rollbook.sandbox.mc import MCAPIError, MCServer, fake_digest

READ, WRITE = "mc-read-3c9e1f0b7a", "mc-write-8d2b6a4e51"
OLD, NEW, BARE = "api-1.41.3", "api-1.42.0", "api-1.43.0"
OLD_DIGEST = "sha256:" + "41" * 32

# Written the way a scenario author writes mc.yaml: ids, created_at and one digest left out.
MC_YAML = f"""
services:
  api:
    environments:
      production:
        policy: production/v3
        required:
          - {{name: test-report, type: junit}}
          - {{name: security-scan, type: security-scan, max_critical: 0}}
releases:
  - {{release_id: {OLD}, service: api, artifact_digest: "{OLD_DIGEST}"}}
  - {{release_id: {NEW}, service: api}}
  - {{release_id: {BARE}, service: api}}
evidence:
  {OLD}:
    - {{name: test-report, type: junit, summary: {{total: 400, failures: 0, errors: 0}}}}
    - {{name: security-scan, type: security-scan, summary: {{critical: 0}}}}
  {NEW}:
    - {{name: security-scan, type: security-scan, summary: {{critical: 0}}}}
current:
  production: {{api: {OLD}}}
"""


def junit(path: Path, total: int, failures: int = 0) -> Path:
    cases = "".join(f'<testcase name="t{i}">{"<failure/>" if i < failures else ""}</testcase>'
                    for i in range(total))
    path.write_text(f'<testsuite name="api" tests="{total}" failures="{failures}" errors="0">{cases}</testsuite>')
    return path


@pytest.fixture
def state() -> dict[str, Any]:
    loaded = yaml.safe_load(MC_YAML)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture
def mc(state: dict[str, Any]) -> Iterator[MCServer]:
    server = MCServer(state, read_token=READ, write_token=WRITE, admin=True)
    server.start()
    yield server
    server.stop()


def make_client(mc: MCServer, token: str = WRITE, **kw: Any) -> MCClient:
    kw.setdefault("backoff", 0.01)
    assert mc.url
    return MCClient(mc.url, Secret(token), **kw)


@pytest.fixture
def writer(mc: MCServer) -> Iterator[MCClient]:
    with make_client(mc) as c:
        yield c


@pytest.fixture
def reader(mc: MCServer) -> Iterator[MCClient]:
    with make_client(mc, READ) as c:
        yield c


def raw(mc: MCServer) -> httpx.Client:
    """A plain HTTP client for what MCClient deliberately hides (headers, admin routes, bad requests)."""
    assert mc.url
    return httpx.Client(base_url=mc.url, timeout=5, verify=False)  # plain http; skips loading a CA bundle


def admin(mc: MCServer, method: str, path: str, body: Any = None) -> httpx.Response:
    with raw(mc) as c:
        return c.request(method, path, json=body)


# --------------------------------------------------------------------------- verdicts


def test_pass(reader: MCClient, mc: MCServer) -> None:
    v = reader.verdict(OLD)
    assert v.ok and v.status == "passed" and v.missing == () and v.invalid == ()
    assert v.policy == "production/v3" and v.service == "api"
    assert mc.url and v.details_url and v.details_url.startswith(mc.url)


def test_missing(reader: MCClient) -> None:
    v = reader.verdict(NEW)
    assert (v.ok, v.status, v.missing) == (False, "missing_evidence", ("test-report",))
    assert v.reason == "missing required evidence: test-report (junit)"


def test_several_missing_slots_in_policy_order(reader: MCClient) -> None:
    v = reader.verdict(BARE)
    assert v.missing == ("test-report", "security-scan")
    assert v.reason == "missing required evidence: test-report (junit), security-scan (security-scan)"


def test_verdict_http_headers(mc: MCServer) -> None:
    with raw(mc) as c:
        r = c.get(f"/api/v1/releases/{NEW}/evidence-status", params={"environment": "production"},
                  headers={"Authorization": f"Bearer {READ}"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    assert READ not in r.text and WRITE not in r.text
    assert len(r.content) < 1024  # copied verbatim into the AnalysisRun


def test_invalid_failing_junit_wins_over_missing(writer: MCClient, tmp_path: Path) -> None:
    result = writer.attach_file(BARE, junit(tmp_path / "report.xml", total=12, failures=3), "test-report")
    v = result.verdict
    assert result.created and result.item.state == "invalid"
    assert v.status == "invalid_evidence" and v.invalid == ("test-report",) and v.missing == ("security-scan",)
    assert v.reason.startswith("invalid evidence: test-report (junit): junit report has 3 failures")
    assert v.reason.endswith("missing required evidence: security-scan (security-scan)")


def test_wrong_subject_digest_is_invalid(writer: MCClient, tmp_path: Path) -> None:
    wrong = "sha256:" + "ee" * 32
    item = EvidenceItem("test-report", "junit", {"total": 10, "failures": 0, "errors": 0},
                        digest="sha256:" + "01" * 32, subject_digest=wrong)
    result = writer.attach(NEW, item)
    assert result.item.state == "invalid" and "subject digest" in (result.item.reason or "")
    right = writer.release(NEW).artifact_digest
    fixed = writer.attach(NEW, EvidenceItem("test-report", "junit", {"total": 10, "failures": 0, "errors": 0},
                                            digest="sha256:" + "02" * 32, subject_digest=right))
    assert fixed.verdict.ok  # the latest item per name counts


def test_attach_then_pass(writer: MCClient, reader: MCClient, mc: MCServer, tmp_path: Path) -> None:
    assert not reader.verdict(NEW).ok
    result = writer.attach_file(NEW, junit(tmp_path / "report.xml", total=120), "test-report")
    assert result.created and result.verdict.ok and result.verdict.status == "passed"
    assert result.item.summary == {"total": 120, "failures": 0, "errors": 0, "skipped": 0}
    assert reader.verdict(NEW).ok and mc.verdict(NEW)["ok"] is True  # evaluated at read time
    listing = reader.listing(NEW)
    assert listing.missing == () and [s.state for s in listing.slots] == ["valid", "valid"]


def test_idempotent_reattach(writer: MCClient, mc: MCServer, tmp_path: Path) -> None:
    report = junit(tmp_path / "report.xml", total=5)
    first = writer.attach_file(NEW, report, "test-report")
    again = writer.attach_file(NEW, report, "test-report")
    assert first.created and not again.created and again.item.id == first.item.id
    stored = [i for i in mc.state["evidence"][NEW] if i["name"] == "test-report"]
    assert len(stored) == 1
    posts = [r for r in mc.requests if r.method == "POST"]
    assert [r.status for r in posts] == [201, 200] and posts[0].idempotency_key == posts[1].idempotency_key


def test_attach_applied_but_reply_lost_is_not_stored_twice(mc: MCServer, tmp_path: Path) -> None:
    # the server applies the first POST after the client has given up on it; the retry must find it
    admin(mc, "POST", "/admin/faults", {"path_prefix": f"/api/v1/releases/{NEW}/evidence", "times": 1,
                                        "delay": 0.3})
    with make_client(mc, timeout=0.15, retries=2, backoff=0.4) as c:
        result = c.attach_file(NEW, junit(tmp_path / "report.xml", total=7), "test-report")
    assert result.created is False and result.verdict.ok
    assert len([i for i in mc.state["evidence"][NEW] if i["name"] == "test-report"]) == 1


def test_listing_extra_items(writer: MCClient, reader: MCClient) -> None:
    writer.attach(NEW, {"name": "sbom", "type": "sbom", "digest": "sha256:" + "5b" * 32})
    listing = reader.listing(NEW)
    assert listing.extra == ("sbom",) and listing.missing == ("test-report",)
    assert [r.name for r in listing.required] == ["test-report", "security-scan"]
    assert listing.required[1].params == {"max_critical": 0}


# --------------------------------------------------------------------------- errors


def test_unknown_release(reader: MCClient) -> None:
    with pytest.raises(MCNotFound) as err:
        reader.verdict("api-9.9.9")
    assert err.value.code == "release_not_found" and err.value.status == 404 and err.value.request_id
    assert "release-id label" in str(err.value)


def test_unknown_environment_has_no_policy(reader: MCClient) -> None:
    with pytest.raises(MCNotFound) as err:
        reader.verdict(NEW, "staging")
    assert err.value.code == "policy_not_found"


def test_401(mc: MCServer) -> None:
    bad = "not-a-valid-token-77"
    with make_client(mc, bad) as c, pytest.raises(MCAuthError) as err:
        c.verdict(NEW)
    assert err.value.status == 401 and bad not in str(err.value)
    with raw(mc) as c:
        reply = c.get(f"/api/v1/releases/{NEW}")
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(reply.json()) == {"error", "message", "details", "request_id"}
    seen = json.dumps(admin(mc, "GET", "/admin/requests").json())
    assert bad not in seen and READ not in seen and WRITE not in seen and "Bearer ***" in seen


def test_403_read_token_cannot_write(reader: MCClient, mc: MCServer) -> None:
    before = mc.state["evidence"]
    with pytest.raises(MCAuthError, match="evidence:write") as err:
        reader.attach(NEW, {"name": "test-report", "type": "junit", "summary": {"total": 1}})
    assert err.value.status == 403 and err.value.code == "forbidden"
    assert mc.state["evidence"] == before


def test_malformed_payload_is_422_with_fields(writer: MCClient, mc: MCServer) -> None:
    with pytest.raises(MCValidationError) as err:
        writer.attach(NEW, {"name": "test-report", "type": "xunit", "digest": "md5:abc"})
    assert err.value.status == 422 and set(err.value.details["fields"]) == {"type", "digest"}
    with raw(mc) as c:
        r = c.post(f"/api/v1/releases/{NEW}/evidence", content=b"name=x",
                   headers={"Authorization": f"Bearer {WRITE}", "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


def test_503_then_recover(mc: MCServer) -> None:
    fault = {"path_prefix": "/api/v1/releases", "times": 2, "status": 503, "retry_after": 0}
    assert admin(mc, "POST", "/admin/faults", fault).status_code == 201
    with make_client(mc, READ, retries=3) as c:
        assert c.verdict(NEW).status == "missing_evidence"
    assert [r.status for r in mc.requests] == [503, 503, 200]


def test_429_with_retry_after(mc: MCServer) -> None:
    admin(mc, "POST", "/admin/faults", {"path_prefix": "/api", "times": 1, "status": 429, "retry_after": 1})
    slept: list[float] = []
    with make_client(mc, READ, sleep=slept.append) as c:
        assert c.verdict(OLD).ok
    assert slept == [1.0] and [r.status for r in mc.requests] == [429, 200]


def test_timeout_ends_in_mc_unavailable(mc: MCServer) -> None:
    admin(mc, "POST", "/admin/faults", {"path_prefix": "/api", "times": 5, "delay": 10.0})
    started = time.monotonic()
    with make_client(mc, READ, timeout=0.2, retries=1) as c, pytest.raises(MCUnavailable) as err:
        c.verdict(NEW)
    assert time.monotonic() - started < 8   # one slow answer alone would take 10 s: the client gave up, bounded
    assert "2 attempt(s)" in str(err.value) and "timed out" in str(err.value)


def test_connection_refused_ends_in_mc_unavailable(state: dict[str, Any]) -> None:
    server = MCServer(state, read_token=READ, write_token=WRITE)
    url = server.start()
    server.stop()  # nothing listens there any more
    with MCClient(url, Secret(READ), retries=1, backoff=0.01, timeout=1) as c, pytest.raises(MCUnavailable):
        c.verdict(NEW)
    assert not MCClient(url, Secret(READ), timeout=1).health()


def test_html_200_is_a_protocol_error(mc: MCServer, reader: MCClient) -> None:
    admin(mc, "POST", "/admin/faults", {"path_prefix": "/api", "times": 1, "html": True})
    with pytest.raises(MCProtocolError, match="text/html"):
        reader.verdict(OLD)


# --------------------------------------------------------------------------- bundle and deployments


def test_current_bundle(reader: MCClient, mc: MCServer) -> None:
    bundle = reader.current("api")
    assert bundle.current.release_id == OLD and bundle.current.artifact_digest == OLD_DIGEST
    assert bundle.current.evidence_ok is True and bundle.current.kind == "promotion" and bundle.previous is None
    assert mc.current("production", "api")["current"]["release_id"] == OLD
    with pytest.raises(MCNotFound) as err:
        reader.current("web")
    assert err.value.code == "service_not_found"


def test_rollback_report_moves_the_pointer(writer: MCClient, mc: MCServer) -> None:
    new_digest = writer.release(NEW).artifact_digest
    assert new_digest == fake_digest(NEW)  # derived, stable, well-formed
    writer.report_deployment("api", NEW, new_digest, "promotion", "test: canary promoted")
    promoted = writer.current("api")
    assert promoted.current.release_id == NEW and promoted.current.evidence_ok is False
    assert promoted.previous and promoted.previous.release_id == OLD
    dep = writer.report_deployment("api", OLD, OLD_DIGEST, "rollback", "test: undo")
    assert dep.kind == "rollback"
    bundle = writer.current("api")
    assert (bundle.current.release_id, bundle.current.kind) == (OLD, "rollback")
    assert bundle.previous and bundle.previous.release_id == NEW
    assert mc.current("production", "api")["current"]["release_id"] == OLD


def test_digest_mismatch_409(writer: MCClient, mc: MCServer) -> None:
    with pytest.raises(MCConflict) as err:
        writer.report_deployment("api", NEW, "sha256:" + "99" * 32, "promotion", "test")
    assert err.value.status == 409 and err.value.code == "digest_mismatch"
    assert err.value.details["expected"] == fake_digest(NEW)
    assert mc.current("production", "api")["current"]["release_id"] == OLD


def test_retried_deployment_report_moves_the_pointer_once(mc: MCServer) -> None:
    body = {"service": "api", "release_id": NEW, "artifact_digest": fake_digest(NEW), "kind": "promotion",
            "source": "test", "observed_at": "2026-08-21T10:00:00Z"}
    headers = {"Authorization": f"Bearer {WRITE}", "Idempotency-Key": "k-1"}
    with raw(mc) as c:
        first, second = (c.post("/api/v1/environments/production/deployments", json=body, headers=headers)
                         for _ in range(2))
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert len(mc.state["deployments"]) == 1
    assert mc.current("production", "api")["previous"]["release_id"] == OLD


# --------------------------------------------------------------------------- parse_verdict, admin, server


def test_parse_verdict_of_argo_style_value(reader: MCClient, mc: MCServer) -> None:
    value = json.dumps(mc.verdict(NEW), sort_keys=True, separators=(",", ":"))  # as Argo stores {$}
    parsed = parse_verdict(value)
    direct = reader.verdict(NEW)
    assert parsed is not None
    assert (parsed.release_id, parsed.ok, parsed.status, parsed.reason, parsed.missing) == \
        (direct.release_id, direct.ok, direct.status, direct.reason, direct.missing)
    assert parse_verdict(json.dumps(mc.verdict(NEW)["ok"])) is None


def test_reset_restores_the_initial_state(writer: MCClient, mc: MCServer) -> None:
    initial = mc.state
    writer.attach(NEW, {"name": "test-report", "type": "junit", "summary": {"total": 1}})
    assert mc.verdict(NEW)["ok"]
    assert admin(mc, "POST", "/admin/reset").status_code == 200
    assert mc.state == initial and not mc.verdict(NEW)["ok"]


def test_admin_routes_only_when_asked(state: dict[str, Any]) -> None:
    with MCServer(state, read_token=READ, write_token=WRITE) as plain, raw(plain) as c:
        assert c.post("/admin/reset").status_code == 404
        assert c.get("/health").json() == {"status": "ok"}  # open, no token
        assert plain.url and MCClient(plain.url, Secret(READ)).health()


def test_accessors_raise_for_unknown_release(mc: MCServer) -> None:
    with pytest.raises(MCAPIError) as err:
        mc.verdict("api-0.0.1")
    assert err.value.status == 404 and err.value.code == "release_not_found"


def test_concurrent_attaches_are_all_kept(mc: MCServer) -> None:
    errors: list[BaseException] = []

    def attach(n: int) -> None:
        try:
            with make_client(mc) as c:
                c.attach(NEW, {"name": f"note-{n}", "type": "generic", "digest": "sha256:" + f"{n:02d}" * 32})
        except BaseException as e:  # noqa: BLE001 - collected and asserted below; a thread cannot fail the test
            errors.append(e)

    threads = [threading.Thread(target=attach, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert errors == []
    items = mc.state["evidence"][NEW]
    assert len({i["id"] for i in items}) == len(items) == 17


def test_loopback_only(state: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="loopback"):
        MCServer(state, read_token=READ, write_token=WRITE, host="0.0.0.0")
    with MCServer(state, read_token=READ, write_token=WRITE) as server:
        assert server.url and server.url.startswith("http://127.0.0.1:")


def test_pinned_pending_state_and_yaml_timestamps_survive() -> None:
    pinned = yaml.safe_load("""
services: {api: {environments: {production: {policy: p/1, required: [{name: approval, type: approval}]}}}}
releases: [{release_id: api-2.0.0, service: api, created_at: 2026-08-21T10:00:00Z}]
evidence:
  api-2.0.0: [{name: approval, type: approval, state: pending, reason: awaiting CAB, created_at: 2026-08-21T10:05:00Z}]
current: {production: {api: {release_id: api-2.0.0, since: 2026-08-21T10:06:00Z, kind: promotion}}}
""")
    with MCServer(pinned, read_token=READ, write_token=WRITE) as server, make_client(server, READ) as c:
        v = c.verdict("api-2.0.0")
        assert (v.status, v.ok, v.reason) == ("pending", False, "evidence pending evaluation: approval (approval)")
        assert c.release("api-2.0.0").raw["created_at"] == "2026-08-21T10:00:00Z"
        assert c.current("api").raw["current"]["since"] == "2026-08-21T10:06:00Z"
        assert server.state["evidence"]["api-2.0.0"][0]["state"] == "pending"


def test_bad_scenario_state_is_refused(state: dict[str, Any]) -> None:
    state["evidence"]["api-7.0.0"] = [{"name": "test-report", "type": "junit"}]
    with pytest.raises(ValueError, match="api-7.0.0"):
        MCServer(state, read_token=READ, write_token=WRITE)
