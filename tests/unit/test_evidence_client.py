"""MC client (rollbook.evidence) against httpx.MockTransport: parsing, retries, error mapping, secrets."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollbook.errors import (
    ConfigError,
    MCAuthError,
    MCConflict,
    MCNotFound,
    MCProtocolError,
    MCUnavailable,
    MCValidationError,
    Retryable,
)
from rollbook.evidence import (
    EvidenceItem,
    MCClient,
    ReportFileError,
    Secret,
    evidence_from_file,
    parse_verdict,
)

TOKEN = "tok-unit-5f2a9c17e3b84d"
BASE = "http://mc.test"
REL = "payments-api-1.42.0"
DIGEST = "sha256:" + "ab" * 32

Handler = Callable[[httpx.Request], httpx.Response]


def verdict_body(ok: bool = False, status: str = "missing_evidence",
                 reason: str = "missing required evidence: test-report (junit)",
                 missing: tuple[str, ...] = ("test-report",), invalid: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"release_id": REL, "service": "payments-api", "environment": "production", "ok": ok,
            "status": status, "reason": reason, "missing": list(missing), "invalid": list(invalid),
            "policy": "production/v3", "evaluated_at": "2026-08-21T10:15:02Z",
            "details_url": f"https://mc.example/ui/releases/{REL}"}


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": code, "message": message, "details": details, "request_id": "req-42"}


class Recorder:
    """A MockTransport handler that replays canned responses in order and keeps the requests."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(step, Exception):
            raise step
        return step


def client(handler: Handler, slept: list[float] | None = None, **kw: Any) -> MCClient:
    sleeps = slept if slept is not None else []
    return MCClient(BASE, Secret(TOKEN), transport=httpx.MockTransport(handler), sleep=sleeps.append, **kw)


def ok_json(obj: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=obj)


# --------------------------------------------------------------------------- verdicts


def test_verdict_pass_sends_token_and_environment() -> None:
    rec = Recorder(ok_json(verdict_body(ok=True, status="passed", reason="all required evidence is valid",
                                        missing=())))
    v = client(rec).verdict(REL, "staging")
    assert v.ok is True and v.status == "passed" and v.missing == ()
    req = rec.requests[0]
    assert req.url.path == f"/api/v1/releases/{REL}/evidence-status"
    assert req.url.params["environment"] == "staging"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["Accept"] == "application/json"
    assert v.evaluated_at is not None and v.evaluated_at.tzinfo is not None


def test_verdict_missing_keeps_reason_and_slots() -> None:
    v = client(Recorder(ok_json(verdict_body()))).verdict(REL)
    assert (v.ok, v.status, v.missing) == (False, "missing_evidence", ("test-report",))
    assert v.reason == "missing required evidence: test-report (junit)"
    assert v.raw["policy"] == "production/v3"


def test_verdict_invalid_failing_junit() -> None:
    body = verdict_body(status="invalid_evidence", missing=(), invalid=("test-report",),
                        reason="invalid evidence: test-report (junit): junit report has 3 failures")
    v = client(Recorder(ok_json(body))).verdict(REL)
    assert v.status == "invalid_evidence" and v.invalid == ("test-report",) and not v.ok


def test_verdict_of_wrong_shape_is_a_protocol_error() -> None:
    body = verdict_body()
    body["ok"] = "false"  # a string is not a verdict's boolean; never guess
    with pytest.raises(MCProtocolError, match="ok="):
        client(Recorder(ok_json(body))).verdict(REL)


def test_bad_release_id_is_refused_before_any_request() -> None:
    rec = Recorder(ok_json(verdict_body()))
    with pytest.raises(MCValidationError, match="release-id label"):
        client(rec).verdict("../admin")
    assert rec.requests == []


# --------------------------------------------------------------------------- attaching


def test_attach_then_pass_posts_payload_with_idempotency_key() -> None:
    item = {"id": "ev-1", "release_id": REL, "name": "test-report", "type": "junit", "state": "valid",
            "reason": "120 tests", "digest": DIGEST, "summary": {"total": 120, "failures": 0, "errors": 0},
            "annotations": {}, "created_at": "2026-08-21T10:16:00Z"}
    rec = Recorder(ok_json({"item": item, "verdict": verdict_body(ok=True, status="passed", missing=())}, 201))
    mc = client(rec)
    result = mc.attach(REL, EvidenceItem("test-report", "junit", {"total": 120, "failures": 0, "errors": 0},
                                         digest=DIGEST))
    assert result.created and result.verdict.ok and result.item.state == "valid"
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == f"/api/v1/releases/{REL}/evidence"
    assert json.loads(req.content) == {"name": "test-report", "type": "junit", "digest": DIGEST,
                                       "summary": {"total": 120, "failures": 0, "errors": 0}}
    assert req.headers["Content-Type"] == "application/json"
    key = req.headers["Idempotency-Key"]
    mc.attach(REL, {"name": "test-report", "type": "junit", "digest": DIGEST})
    assert rec.requests[1].headers["Idempotency-Key"] == key  # same (release, name, digest): same key
    mc.attach(REL, {"name": "test-report", "type": "junit", "digest": "sha256:" + "cd" * 32})
    assert rec.requests[2].headers["Idempotency-Key"] != key


def test_idempotent_reattach_reports_not_created() -> None:
    item = {"name": "test-report", "type": "junit", "digest": DIGEST, "state": "valid"}
    rec = Recorder(ok_json({"item": item, "verdict": verdict_body(ok=True, status="passed", missing=())}, 200))
    assert client(rec).attach(REL, item).created is False


def test_attach_retries_a_5xx_with_the_same_key() -> None:
    item = {"name": "test-report", "type": "junit", "digest": DIGEST, "state": "valid"}
    rec = Recorder(httpx.Response(503, json=error_body("unavailable", "down")),
                   ok_json({"item": item, "verdict": verdict_body(ok=True, status="passed", missing=())}, 201))
    assert client(rec).attach(REL, item).created
    keys = {r.headers["Idempotency-Key"] for r in rec.requests}
    assert len(rec.requests) == 2 and len(keys) == 1


def test_attach_wrong_subject_digest_comes_back_invalid() -> None:
    item = {"name": "test-report", "type": "junit", "digest": DIGEST, "subject_digest": "sha256:" + "00" * 32,
            "state": "invalid", "reason": "subject digest sha256:0000… is not the release's artifact digest"}
    body = verdict_body(status="invalid_evidence", missing=(), invalid=("test-report",), reason=item["reason"])
    rec = Recorder(ok_json({"item": item, "verdict": body}, 201))
    result = client(rec).attach(REL, item)
    assert result.item.state == "invalid" and result.verdict.invalid == ("test-report",)
    assert json.loads(rec.requests[0].content)["subject_digest"] == item["subject_digest"]


def test_attach_file_parses_junit_counts_and_digest(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text(
        '<?xml version="1.0"?><testsuites>'
        '<testsuite name="a" tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="x"/><testcase name="y"><failure message="boom"/></testcase>'
        '<testcase name="z"><skipped/></testcase></testsuite>'
        '<testsuite name="b"><testcase name="p"/><testcase name="q"><error/></testcase></testsuite>'
        "</testsuites>")
    item = evidence_from_file(report, "test-report")
    assert item.type == "junit"
    assert dict(item.summary) == {"total": 5, "failures": 1, "errors": 1, "skipped": 1}
    assert item.digest == "sha256:" + hashlib.sha256(report.read_bytes()).hexdigest()


def test_attach_file_reads_a_json_report(tmp_path: Path) -> None:
    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps({"summary": {"critical": 0, "high": 2}, "findings": [{"id": "CVE-1"}]}))
    rec = Recorder(ok_json({"item": {"name": "security-scan", "type": "security-scan", "state": "valid"},
                            "verdict": verdict_body(ok=True, status="passed", missing=())}, 201))
    client(rec).attach_file(REL, scan, "security-scan", "security-scan")
    sent = json.loads(rec.requests[0].content)
    assert sent["summary"] == {"critical": 0, "high": 2} and sent["type"] == "security-scan"


def test_attach_file_refuses_a_broken_report(tmp_path: Path) -> None:
    bad = tmp_path / "report.xml"
    bad.write_text("<testsuite><testcase>")
    with pytest.raises(ReportFileError, match="report.xml"):
        evidence_from_file(bad, "test-report")
    with pytest.raises(ReportFileError, match="does not exist"):
        evidence_from_file(tmp_path / "nope.xml", "test-report")


# --------------------------------------------------------------------------- errors and retries


def test_unknown_release_is_not_found_and_not_retried() -> None:
    rec = Recorder(httpx.Response(404, json=error_body("release_not_found", f"release {REL!r} is not known",
                                                        release_id=REL)))
    with pytest.raises(MCNotFound) as err:
        client(rec).verdict(REL)
    e = err.value
    assert (e.status, e.code, e.request_id, e.details) == (404, "release_not_found", "req-42", {"release_id": REL})
    assert "release-id label" in str(e) and e.url and REL in e.url
    assert len(rec.requests) == 1 and not isinstance(e, Retryable)


def test_401_is_an_auth_error_without_the_token() -> None:
    rec = Recorder(httpx.Response(401, json=error_body("unauthorized", f"bad token {TOKEN}"),
                                  headers={"WWW-Authenticate": "Bearer"}))
    with pytest.raises(MCAuthError) as err:
        client(rec).verdict(REL)
    assert err.value.status == 401 and "ROLLBOOK_MC_TOKEN" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in repr(err.value.args)  # scrubbed even if MC echoed it
    assert len(rec.requests) == 1


def test_403_names_the_missing_scope() -> None:
    rec = Recorder(httpx.Response(403, json=error_body("forbidden", "token lacks a scope",
                                                        required_scope="evidence:write")))
    with pytest.raises(MCAuthError, match="evidence:write") as err:
        client(rec).attach(REL, {"name": "test-report", "type": "junit"})
    assert err.value.status == 403 and err.value.code == "forbidden"


def test_503_then_recover_backs_off_exponentially() -> None:
    down = httpx.Response(503, json=error_body("unavailable", "maintenance"))
    rec = Recorder(down, down, ok_json(verdict_body()))
    slept: list[float] = []
    assert client(rec, slept, backoff=0.5).verdict(REL).reason.startswith("missing required")
    assert len(rec.requests) == 3 and slept == [0.5, 1.0]


def test_429_honours_retry_after_and_caps_it() -> None:
    slow = httpx.Response(429, json=error_body("rate_limited", "slow down"), headers={"Retry-After": "2"})
    slept: list[float] = []
    client(Recorder(slow, ok_json(verdict_body())), slept, backoff=0.1).verdict(REL)
    assert slept == [2.0]
    greedy = httpx.Response(429, json=error_body("rate_limited", "go away"), headers={"Retry-After": "3600"})
    slept.clear()
    client(Recorder(greedy, ok_json(verdict_body())), slept, backoff=0.1, max_retry_after=5).verdict(REL)
    assert slept == [5]


def test_timeouts_end_in_mc_unavailable_after_bounded_retries() -> None:
    rec = Recorder(httpx.ReadTimeout("read timed out"))
    slept: list[float] = []
    with pytest.raises(MCUnavailable) as err:
        client(rec, slept, retries=3, backoff=0.25).verdict(REL)
    assert len(rec.requests) == 4 and slept == [0.25, 0.5, 1.0]
    assert "4 attempt(s)" in str(err.value) and "timed out" in str(err.value)
    assert isinstance(err.value, Retryable)


def test_any_5xx_is_retried_then_unavailable_with_mc_code() -> None:
    rec = Recorder(httpx.Response(501, json=error_body("internal_error", "not implemented here")))
    slept: list[float] = []
    with pytest.raises(MCUnavailable, match=r"3 attempt\(s\).*HTTP 501 internal_error") as err:
        client(rec, slept, retries=2, backoff=0.1).verdict(REL)
    assert len(rec.requests) == 3 and slept == [0.1, 0.2]
    assert (err.value.status, err.value.code, err.value.request_id) == (501, "internal_error", "req-42")


def test_connection_errors_end_in_mc_unavailable() -> None:
    rec = Recorder(httpx.ConnectError("connection refused"))
    with pytest.raises(MCUnavailable, match="connection failed"):
        client(rec, retries=1).verdict(REL)
    assert len(rec.requests) == 2


def test_html_200_is_a_protocol_error_not_evidence() -> None:
    page = httpx.Response(200, text="<html><title>Sign in</title></html>",
                          headers={"Content-Type": "text/html"})
    rec = Recorder(page)
    with pytest.raises(MCProtocolError, match="text/html") as err:
        client(rec).verdict(REL)
    assert err.value.status == 200 and len(rec.requests) == 1


def test_redirect_to_sso_is_a_protocol_error() -> None:
    rec = Recorder(httpx.Response(302, headers={"Location": "https://sso.example/login"}))
    with pytest.raises(MCProtocolError, match="sso.example"):
        client(rec).verdict(REL)


def test_422_lists_the_fields() -> None:
    rec = Recorder(httpx.Response(422, json=error_body("invalid_evidence_payload", "rejected",
                                                        fields={"type": "must be one of junit, sbom"})))
    with pytest.raises(MCValidationError, match=r"type \(must be one of junit, sbom\)"):
        client(rec).attach(REL, {"name": "test-report", "type": "xunit"})


def test_retries_are_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    down = httpx.Response(503, json=error_body("unavailable", "down"))
    with caplog.at_level(logging.DEBUG, logger="rollbook.evidence"):
        client(Recorder(down, ok_json(verdict_body()))).verdict(REL)
    assert "attempt 1 of 4" in caplog.text and TOKEN not in caplog.text


# --------------------------------------------------------------------------- bundle and deployments


def test_current_bundle() -> None:
    body = {"environment": "production", "service": "payments-api",
            "current": {"release_id": "payments-api-1.41.3", "artifact_digest": DIGEST, "evidence_ok": True,
                        "since": "2026-08-20T09:00:00Z", "kind": "promotion"}, "previous": None}
    rec = Recorder(ok_json(body))
    bundle = client(rec).current("payments-api")
    assert rec.requests[0].url.path == "/api/v1/environments/production/services/payments-api/current"
    assert bundle.current.release_id == "payments-api-1.41.3" and bundle.current.evidence_ok is True
    assert bundle.previous is None


def test_rollback_deployment_report_body() -> None:
    reply = {"id": "dep-1", "environment": "production", "service": "payments-api",
             "release_id": "payments-api-1.41.3", "artifact_digest": DIGEST, "kind": "rollback",
             "source": "rollbook INC-1", "observed_at": "2026-08-21T10:20:00Z",
             "previous": {"release_id": REL, "artifact_digest": DIGEST, "until": "2026-08-21T10:20:00Z"}}
    rec = Recorder(ok_json(reply, 201))
    dep = client(rec).report_deployment("payments-api", "payments-api-1.41.3", DIGEST, "rollback",
                                        "rollbook INC-1")
    sent = json.loads(rec.requests[0].content)
    assert sent["kind"] == "rollback" and sent["artifact_digest"] == DIGEST and sent["observed_at"].endswith("Z")
    assert "Idempotency-Key" in rec.requests[0].headers
    assert dep.kind == "rollback" and dep.release_id == "payments-api-1.41.3"


def test_digest_mismatch_is_a_conflict() -> None:
    rec = Recorder(httpx.Response(409, json=error_body("digest_mismatch", "digest differs",
                                                        expected=DIGEST, got="sha256:" + "00" * 32)))
    with pytest.raises(MCConflict) as err:
        client(rec).report_deployment("payments-api", REL, "sha256:" + "00" * 32, "promotion", "test")
    assert err.value.code == "digest_mismatch" and err.value.details["expected"] == DIGEST
    assert "MCClient.release()" in str(err.value) and len(rec.requests) == 1


def test_health() -> None:
    assert client(Recorder(ok_json({"status": "ok"}))).health() is True
    assert client(Recorder(httpx.Response(200, text="<html/>"))).health() is False
    assert client(Recorder(httpx.ConnectError("refused"))).health() is False


# --------------------------------------------------------------------------- parse_verdict


ARGO_VALUE = ('{"details_url":"https://mc.example/ui/releases/api-1.42.0","environment":"production",'
              '"evaluated_at":"2026-08-21T10:15:02Z","invalid":[],"missing":["test-report"],"ok":false,'
              '"policy":"production/v3","reason":"missing required evidence: test-report (junit)",'
              '"release_id":"api-1.42.0","service":"api","status":"missing_evidence"}')


def test_parse_verdict_full_object() -> None:
    v = parse_verdict(ARGO_VALUE)
    assert v is not None
    assert (v.release_id, v.ok, v.status, v.missing) == ("api-1.42.0", False, "missing_evidence", ("test-report",))
    assert v.reason == "missing required evidence: test-report (junit)"


@pytest.mark.parametrize("value", ["false", "true", "null"])
def test_parse_verdict_bare_value_lost_the_reason(value: str) -> None:
    assert parse_verdict(value) is None


@pytest.mark.parametrize("value", ['{"ok":false,', "[0.42]", '{"reason":"x"}', ""])
def test_parse_verdict_malformed(value: str) -> None:
    with pytest.raises(MCProtocolError):
        parse_verdict(value)


# --------------------------------------------------------------------------- configuration and secrets


def test_secret_is_masked_everywhere() -> None:
    secret = Secret(TOKEN)
    mc = MCClient(BASE, secret)
    for text in (repr(secret), str(secret), f"{secret}", repr(mc)):
        assert TOKEN not in text
    assert secret.reveal() == TOKEN
    with pytest.raises(TypeError):
        pickle.dumps(secret)  # a pickled kernel variable or cache file would carry the value
    with pytest.raises(TypeError):
        MCClient(BASE, TOKEN)  # type: ignore[arg-type]


def test_from_env_token_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROLLBOOK_MC_URL", BASE)
    monkeypatch.setenv("ROLLBOOK_MC_TOKEN", TOKEN)
    monkeypatch.delenv("ROLLBOOK_MC_TOKEN_FILE", raising=False)
    rec = Recorder(ok_json(verdict_body()))
    MCClient.from_env(transport=httpx.MockTransport(rec)).verdict(REL)
    assert rec.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    monkeypatch.delenv("ROLLBOOK_MC_TOKEN")
    token_file = tmp_path / "mc-token"
    token_file.write_text("from-file-token\n")
    monkeypatch.setenv("ROLLBOOK_MC_TOKEN_FILE", str(token_file))
    MCClient.from_env(transport=httpx.MockTransport(rec)).verdict(REL)
    assert rec.requests[1].headers["Authorization"] == "Bearer from-file-token"


def test_from_env_without_token_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLBOOK_MC_URL", BASE)
    monkeypatch.delenv("ROLLBOOK_MC_TOKEN", raising=False)
    monkeypatch.delenv("ROLLBOOK_MC_TOKEN_FILE", raising=False)
    with pytest.raises(ConfigError) as err:
        MCClient.from_env()
    assert "ROLLBOOK_MC_TOKEN " in str(err.value) and "ROLLBOOK_MC_TOKEN_FILE" in str(err.value)
    monkeypatch.delenv("ROLLBOOK_MC_URL")
    with pytest.raises(ConfigError, match="ROLLBOOK_MC_URL"):
        MCClient.from_env()
