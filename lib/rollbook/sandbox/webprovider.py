"""The simulated controller's HTTP to MC: Argo's web metric provider, and the deployment reports.

Asks MC for verdicts exactly like Argo's web provider (GET with the read token, args filled into the
URL and headers, jsonPath on the body) and tells MC when the pointer moved (promotion/rollback).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from rollbook.sandbox.argo_objects import Obj, _meta, _rs_release_id, now_rfc3339
from rollbook.sandbox.measurement import DEFAULT_ERROR_LIMIT, _evaluate, _json_path, _stored_value
from rollbook.sandbox.replicas import rs_by_hash
from rollbook.sandbox.store import Store

_log = logging.getLogger(__name__)
_ARG_RE = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


class WebProvider:
    """Argo's web provider pointed at the sandbox's MC; owns the HTTP client."""

    def __init__(self, store: Store, *, mc_url: str | None, mc_token: str | None,
                 mc_write_token: str | None = None) -> None:
        self.store = store
        self.mc_url = mc_url.rstrip("/") if mc_url else None
        self._mc_token = mc_token
        self._mc_write_token = mc_write_token
        self._http: httpx.Client | None = None

    def _client(self) -> httpx.Client:
        """The HTTP client, made on first use: building its TLS context costs ~0.1 s of start-up."""
        if self._http is None:
            self._http = httpx.Client(follow_redirects=False)
        return self._http

    def close(self) -> None:
        """Close the HTTP client (a later call makes a new one)."""
        if self._http is not None:
            self._http.close()
        self._http = None

    def web_result(self, ro: Obj, run: Obj, metric: Obj, old: Obj | None) -> Obj:
        """One web measurement appended to the metric's result, as Argo's web provider stores it."""
        result = dict(old or {"name": metric["name"], "count": 0, "measurements": []})
        started = now_rfc3339()
        value, error = self._ask_mc(ro, run, metric)
        m: Obj = {"startedAt": started, "finishedAt": now_rfc3339()}
        result["count"] = int(result.get("count", 0)) + 1
        if error is not None:
            m.update(phase="Error", message=error)
            result.update(error=int(result.get("error", 0)) + 1,
                          consecutiveError=int(result.get("consecutiveError", 0)) + 1, message=error)
            limit = int(metric.get("consecutiveErrorLimit", DEFAULT_ERROR_LIMIT))
            result["phase"] = "Error" if result["consecutiveError"] > limit else "Running"
        else:
            ok = _evaluate(metric.get("successCondition", ""), value)
            m.update(phase="Successful" if ok else "Failed", value=_stored_value(value))
            key = "successful" if ok else "failed"
            result[key] = int(result.get(key, 0)) + 1
            result["consecutiveError"] = 0
            result.pop("message", None)
            failed = int(result.get("failed", 0))
            result["phase"] = "Failed" if failed > int(metric.get("failureLimit", 0)) else "Successful"
        result["measurements"] = (list(result.get("measurements") or []) + [m])[-10:]   # Argo keeps 10
        return result

    def _ask_mc(self, ro: Obj, run: Obj, metric: Obj) -> tuple[Any, str | None]:
        """GET the verdict like Argo's web provider: (selected value, None) or (None, error message)."""
        web = metric["provider"]["web"]
        url = self._web_url(ro, run, web.get("url", ""))
        headers = {h["key"]: self._fill(ro, run, h.get("value", "")) for h in web.get("headers") or []}
        if url is None:
            return None, "MC is not configured in this sandbox"
        try:
            resp = self._client().get(url, headers=headers, timeout=float(web.get("timeoutSeconds", 10)))
        except httpx.TimeoutException:
            return None, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        except httpx.HTTPError as e:
            return None, f'Get "{url}": {e}'
        if not 200 <= resp.status_code < 300:
            return None, f"received non 2xx response code: {resp.status_code}"
        try:
            body = resp.json()
        except ValueError:
            return None, "could not parse JSON body: invalid character '<' looking for beginning of value"
        return _json_path(body, web.get("jsonPath", "{$}"))

    def _web_url(self, ro: Obj, run: Obj, template: str) -> str | None:
        """The template URL with args filled in, pointed at the sandbox's MC (same path and query)."""
        if not self.mc_url:
            return None
        parts = urlsplit(self._fill(ro, run, template))
        return f"{self.mc_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _fill(self, ro: Obj, run: Obj, text: str) -> str:
        """Substitute {{args.x}}: release-id from the canary ReplicaSet, secrets -> the MC read token."""
        args = {a.get("name"): a for a in (run.get("spec") or {}).get("args") or []}

        def one(m: re.Match[str]) -> str:
            arg = args.get(m.group(1)) or {}
            if m.group(1) == "release-id" and "value" not in arg:
                return self._release_id(ro) or ""
            if "secretKeyRef" in (arg.get("valueFrom") or {}):
                return self._mc_token or ""
            return str(arg.get("value", ""))
        return _ARG_RE.sub(one, text)

    def _release_id(self, ro: Obj) -> str | None:
        """The release-id label of the canary ReplicaSet's pod template."""
        rs = rs_by_hash(self.store, _meta(ro)["namespace"], ro, (ro.get("status") or {}).get("currentPodHash"))
        return _rs_release_id(rs) if rs else None

    def report_deployment(self, ro: Obj, release_id: str | None, kind: str) -> None:
        """Tell MC the pointer moved (promotion/rollback), with the write token; failures are logged."""
        if not (self.mc_url and self._mc_write_token and release_id):
            return
        http = self._client()
        try:
            rel = http.get(f"{self.mc_url}/api/v1/releases/{release_id}", timeout=5.0,
                                 headers={"Authorization": f"Bearer {self._mc_token}"})
            rel.raise_for_status()
            body = {"service": rel.json()["service"], "release_id": release_id,
                    "artifact_digest": rel.json()["artifact_digest"], "kind": kind,
                    "source": f"argo-rollouts/{_meta(ro)['namespace']}/{_meta(ro)['name']}",
                    "observed_at": now_rfc3339()}
            resp = http.post(f"{self.mc_url}/api/v1/environments/production/deployments", json=body,
                                   timeout=5.0, headers={"Authorization": f"Bearer {self._mc_write_token}",
                                                         "Idempotency-Key": str(uuid.uuid4())})
            resp.raise_for_status()
        except (httpx.HTTPError, KeyError, ValueError) as e:
            _log.warning("controller: could not report %s of %s to MC: %s", kind, release_id, e)

