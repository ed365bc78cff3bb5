"""The Kubernetes connection: ApiClient from kubeconfig/context or in-cluster, counted requests, errors.

This is the only module that imports ``kubernetes``. Every request goes through :meth:`Cluster.request`,
which sets an explicit timeout, counts requests and bytes, and turns failures into rollbook.errors.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from rollbook.errors import (
    ClusterError,
    ClusterUnavailable,
    ConfigError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
)

# plural -> (API prefix, kind); the only resources the runbooks read or patch
RESOURCES: dict[str, tuple[str, str]] = {
    "rollouts": ("/apis/argoproj.io/v1alpha1", "Rollout"),
    "analysisruns": ("/apis/argoproj.io/v1alpha1", "AnalysisRun"),
    "analysistemplates": ("/apis/argoproj.io/v1alpha1", "AnalysisTemplate"),
    "clusteranalysistemplates": ("/apis/argoproj.io/v1alpha1", "ClusterAnalysisTemplate"),
    "replicasets": ("/apis/apps/v1", "ReplicaSet"),
    "pods": ("/api/v1", "Pod"),
    "events": ("/api/v1", "Event"),
    "jobs": ("/apis/batch/v1", "Job"),  # not the runbooks': the Job executor's (cluster/jobs.py)
    "leases": ("/apis/coordination.k8s.io/v1", "Lease"),  # step 4's mutation lock (cluster/lease.py)
}
# The pod's service-account folder (token, ca.crt). Overridable for runtimes that mount it elsewhere, and for
# the sandbox's simulated kubelet, which runs a Job's pod as a local process and cannot write to /var/run.
SERVICEACCOUNT_DIR_ENV = "ROLLBOOK_SERVICEACCOUNT_DIR"
READ_ATTEMPTS = 3  # a GET is tried at most this often on 429/5xx/timeouts/dropped connections
READ_BACKOFF = 0.5  # seconds before the second attempt, doubled after
RETRY_AFTER_CAP = 5.0  # never wait longer than this between attempts, whatever Retry-After says
MAX_PAGES = 50  # a list is paginated at most this many times (bounded, 500 items a page)
PAGE_SIZE = 500
MAX_BODY_IN_MESSAGE = 300


@dataclass
class Stats:
    """Requests sent and response bytes received through one Cluster (for the benchmark)."""

    requests: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, nbytes: int) -> None:
        """Count one request and its response body."""
        with self._lock:
            self.requests += 1
            self.bytes_received += nbytes


@dataclass(frozen=True)
class Response:
    """What came back: status, parsed JSON (or None), the raw body and the exact URL path sent."""

    status: int
    body: bytes
    path: str
    data: Any


@dataclass(frozen=True)
class Target:
    """The object a request is about, for error messages."""

    plural: str
    namespace: str | None = None
    name: str | None = None
    verb: str = "get"

    @property
    def kind(self) -> str:
        """The Kubernetes kind of the plural."""
        return RESOURCES.get(self.plural, ("", self.plural))[1]


class Cluster:
    """One API server connection (an injected ApiClient), with counted, time-limited requests."""

    def __init__(self, api_client: Any, *, context: str | None = None, timeout: float = 10.0) -> None:
        self.api_client = api_client
        self.context = context
        self.timeout = timeout
        self.stats = Stats()

    @property
    def host(self) -> str:
        """The API server URL."""
        return str(self.api_client.configuration.host)

    def close(self) -> None:
        """Release the connection pool."""
        self.api_client.close()

    def __enter__(self) -> Cluster:  # noqa: PYI034 (3.11: typing.Self is fine too; keep it explicit)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        target: Target,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> Response:
        """Send one request; non-2xx raise a ClusterError. A GET that meets a retryable failure (429, 5xx,
        a timeout, a dropped connection) is tried again, bounded: READ_ATTEMPTS in all, backing off (or
        as long as Retry-After says, at most RETRY_AFTER_CAP s). Writes are never repeated."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return self._request_once(method, path, target, query=query, body=body, content_type=content_type,
                                          accept=accept)
            except ClusterUnavailable as e:
                if method != "GET" or attempt == READ_ATTEMPTS:
                    raise
                wait = min(float(getattr(e, "retry_after", None) or READ_BACKOFF * 2 ** (attempt - 1)),
                           RETRY_AFTER_CAP)
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _request_once(
        self,
        method: str,
        path: str,
        target: Target,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> Response:
        """One request through the kubernetes client."""
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            method_, url, hdrs, body_, _ = self.api_client.param_serialize(
                method, path, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api_client.call_api(method_, url, header_params=hdrs, body=body_,
                                            _request_timeout=self.timeout)
            raw: bytes = resp.read() or b""
        except ApiException as e:  # the REST layer reports TLS failures this way (status 0)
            self.stats.add(0)
            raise self._unreachable(target, e) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            self.stats.add(0)
            raise self._unreachable(target, e) from e
        self.stats.add(len(raw))
        full_path = url.removeprefix(self.host)
        if not 200 <= resp.status < 300:
            error = translate(resp.status, raw, target, context=self.context)
            error.retry_after = _seconds(resp.getheader("Retry-After"))  # type: ignore[attr-defined]
            raise error
        data = _json(raw) if "json" in accept else None
        if "json" in accept and raw and data is None:  # a proxy's login page, a half-written body
            ctype = resp.getheader("Content-Type") or "no content type"
            raise ClusterError(
                f"The API server {self.host} answered {resp.status} with {ctype} instead of JSON while "
                f"{_ing(target.verb)} {_describe(target)} (context {_q(self.context)}): "
                f"{_short(raw[:120].decode('utf-8', 'replace'))}",
                kind=target.kind, name=target.name, namespace=target.namespace, context=self.context,
                status=resp.status, hint="A login page or a proxy is answering instead of the API server: check the "
                "kubeconfig's server address and log in to the proxy (e.g. your SSO), then retry.")
        return Response(resp.status, raw, full_path, data)

    def _unreachable(self, target: Target, e: Exception) -> ClusterError:
        """A connection-level failure: TLS problems are final, the rest retryable."""
        what = _describe(target)
        if isinstance(e, ApiException | urllib3.exceptions.SSLError):
            return ClusterError(
                f"TLS handshake with the API server {self.host} failed while {_ing(target.verb)} {what} "
                f"(context {_q(self.context)}): {_short(str(getattr(e, 'reason', e)))}",
                kind=target.kind, name=target.name, namespace=target.namespace, context=self.context,
                hint="Check the kubeconfig's certificate-authority data for this context.",
            )
        return ClusterUnavailable(
            f"The API server {self.host} could not be reached while {_ing(target.verb)} {what} "
            f"(context {_q(self.context)}): {_short(str(e))}",
            kind=target.kind, name=target.name, namespace=target.namespace, context=self.context,
            hint="Check the network/VPN and that the cluster is up, then retry.",
        )

    # ------------------------------------------------------------------- typed helpers

    def path(self, plural: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of a resource, object or subresource (cluster-scoped when ``namespace`` is "")."""
        prefix = RESOURCES[plural][0]
        path = f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}" if namespace else f"{prefix}/{plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """GET one object."""
        target = Target(plural, namespace, name)
        data = self.request("GET", self.path(plural, namespace, name), target).data
        return data if isinstance(data, dict) else {}

    def list(
        self, plural: str, namespace: str, *, label_selector: str = "", field_selector: str = ""
    ) -> list[dict[str, Any]]:
        """LIST objects with server-side selectors, following ``continue`` tokens (bounded)."""
        items: list[dict[str, Any]] = []
        token = ""
        for _ in range(MAX_PAGES):
            query = [("limit", str(PAGE_SIZE))]
            query += [("labelSelector", label_selector)] if label_selector else []
            query += [("fieldSelector", field_selector)] if field_selector else []
            query += [("continue", token)] if token else []
            data = self.request("GET", self.path(plural, namespace), Target(plural, namespace, verb="list"),
                                query=query).data or {}
            items.extend(data.get("items") or [])
            token = (data.get("metadata") or {}).get("continue") or ""
            if not token:
                return items
        raise ClusterError(
            f"Listing {plural} in namespace {_q(namespace)} returned more than {MAX_PAGES * PAGE_SIZE} items "
            f"(context {_q(self.context)}).",
            kind=RESOURCES[plural][1], namespace=namespace, context=self.context,
            hint="Narrow the selector; rollbook stops rather than read without bound.",
        )

    def logs(self, namespace: str, pod: str, *, container: str | None = None, tail: int = 200) -> str:
        """The last ``tail`` lines of a pod's log as text."""
        query = [("tailLines", str(tail))] + ([("container", container)] if container else [])
        resp = self.request("GET", self.path("pods", namespace, pod, "log"), Target("pods", namespace, pod),
                            query=query, accept="text/plain")
        return resp.body.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- connect


def connect(
    context: str | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 10.0,
    in_cluster: bool = False,
) -> Cluster:
    """A Cluster from a kubeconfig and context (default: $KUBECONFIG, its current context) or in-cluster."""
    cfg = k8s_client.Configuration()
    # bounded and quick: connection errors are retried twice, reads and writes never (a PATCH must not repeat)
    # (a 429 is not retried here: urllib3 would hide it behind "max retries"; Cluster.request retries reads)
    cfg.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0, backoff_factor=0.1,
                                respect_retry_after_header=False)
    if in_cluster:
        try:
            folder = os.environ.get(SERVICEACCOUNT_DIR_ENV)
            if folder:
                from kubernetes.config.incluster_config import InClusterConfigLoader

                InClusterConfigLoader(token_filename=os.path.join(folder, "token"),  # type: ignore[no-untyped-call]
                                      cert_filename=os.path.join(folder, "ca.crt")).load_and_set(cfg)
            else:
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except ConfigException as e:
            raise ConfigError(f"No in-cluster Kubernetes configuration: {e}",
                              hint="Run inside a pod with a service account, or pass --context.") from e
        return Cluster(k8s_client.ApiClient(configuration=cfg), context="in-cluster", timeout=timeout)
    path = _kubeconfig_path(kubeconfig)
    try:
        api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=cfg, persist_config=False)
        name = context or k8s_config.list_kube_config_contexts(path)[1]["name"]  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        # AttributeError: a kubeconfig that is YAML but not a mapping (a list); YAMLError: not YAML at all
        raise ConfigError(
            f"Cannot use kubeconfig {path!s} with context {_q(context or '(current)')}: {_short(str(e))}",
            hint="Check the file and the context name; list contexts with: kubectl config get-contexts",
        ) from e
    return Cluster(api_client, context=name, timeout=timeout)


def _kubeconfig_path(kubeconfig: str | os.PathLike[str] | None) -> str:
    """Explicit path, else $KUBECONFIG (may hold several paths), else ~/.kube/config."""
    if kubeconfig is not None:
        return os.fspath(kubeconfig)
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


# --------------------------------------------------------------------------- errors


def translate(status: int, body: bytes, target: Target, *, context: str | None) -> ClusterError:
    """Turn a non-2xx answer into the matching rollbook error, keeping the Kubernetes Status message."""
    data = _json(body)
    is_status = isinstance(data, dict) and data.get("kind") == "Status"
    api_msg = str(data.get("message")) if is_status and isinstance(data, dict) else _short(body.decode("utf-8", "replace"))
    reason = str(data.get("reason")) if is_status and isinstance(data, dict) else None
    cls, message, hint = _wording(status, target, context, api_msg)
    return cls(message, kind=target.kind, name=target.name, namespace=target.namespace, context=context,
               status=status, reason=reason, hint=hint)


def _wording(status: int, t: Target, context: str | None, api: str) -> tuple[type[ClusterError], str, str]:
    """Error class, message and next step for one HTTP status."""
    what, ctx, ns = _describe(t), f"(context {_q(context)})", t.namespace or "default"
    if status == 404:
        if t.name is None:
            return NotFound, f"Namespace {_q(ns)} or the {t.plural} API was not found {ctx}: {api}.", (
                f"Check the namespace and that Argo Rollouts is installed: kubectl api-resources | grep {t.plural}")
        return NotFound, f"{t.kind} {_q(t.name)} not found in namespace {_q(ns)} {ctx}. The API said: {api}.", (
            f"Check the {t.kind.lower()} parameter; list them with: kubectl get {t.plural} -n {ns}")
    if status == 401:
        return Unauthorized, (
            f"The API server did not accept the credentials of context {_q(context)} while {_ing(t.verb)} {what}: {api}."
        ), "Log in again or refresh the token of this context (kubectl config view --minify shows which user)."
    if status == 403:
        return Forbidden, f"Not allowed to {t.verb} {what} {ctx}: {api}.", (
            f"Ask for the RBAC permission; check with: kubectl auth can-i {t.verb} {t.plural} -n {ns}")
    if status == 409:
        return Conflict, f"{what} changed since it was read, or already exists {ctx}: {api}.", (
            "Read the rollout again and re-check the situation before acting.")
    if status in (400, 415, 422):
        return Invalid, f"The API server rejected the request to {t.verb} {what} {ctx} ({status}): {api}.", (
            "This request is wrong for this cluster (version or schema); report it with this message.")
    if status == 429 or status >= 500:
        return ClusterUnavailable, f"The API server answered {status} while {_ing(t.verb)} {what} {ctx}: {api}.", (
            "The cluster is overloaded or failing; retry shortly.")
    return ClusterError, f"Unexpected HTTP {status} while {_ing(t.verb)} {what} {ctx}: {api}.", (
        "Check the API server and the kubeconfig of this context.")


def _ing(verb: str) -> str:
    """get -> getting, list -> listing, patch -> patching."""
    return {"get": "getting"}.get(verb, f"{verb}ing")


def _describe(t: Target) -> str:
    """E.g. ``Rollout "api" in namespace "prod"``."""
    text = f"{t.kind} {_q(t.name)}" if t.name else f"{t.plural}"
    return f"{text} in namespace {_q(t.namespace)}" if t.namespace else text


def _q(value: str | None) -> str:
    """Double-quote a name as Kubernetes messages do."""
    return f'"{value}"' if value is not None else '"(default)"'


def _short(text: str) -> str:
    """Truncate non-Status bodies so messages stay readable."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_BODY_IN_MESSAGE else text[:MAX_BODY_IN_MESSAGE] + "…"


def _seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (the HTTP-date form is not used by the API server)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _json(raw: bytes) -> Any:
    """Parsed JSON, or None when the body is not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
