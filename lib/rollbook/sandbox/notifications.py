"""A SIMULATION of Argo Rollouts' notification controller: Events on a Rollout -> triggers -> webhooks.

In a real cluster there is no separate notification controller: the rollouts-controller's event recorder
(argo-rollouts utils/record/record.go) runs notifications-engine inline each time it records an Event on a
Rollout. This module plays that part for the sandbox's simulated controller (sandbox/controller.py), so
"annotate a Rollout, abort it -> rollbook serve gets the webhook" can be done and tested end to end:

- an Event ADDED on a Rollout by the rollouts-controller (`source.component`) fires the trigger
  `on-<kebab-case reason>` (translateReasonToTrigger): RolloutAborted -> on-rollout-aborted,
  AnalysisRunFailed -> on-analysis-run-failed, AnalysisRunError -> on-analysis-run-error, and any other
  reason the same way; a trigger the ConfigMap does not define is skipped;
- at delivery time it reads `argo-rollouts-notification-configmap` and `argo-rollouts-notification-secret`
  from the controller's namespace (default `argo-rollouts`; missing ones are empty, as the engine's factory
  treats them) and the Rollout as it is in the store (Argo passes its in-memory copy, written just before);
- destinations from the global `subscriptions` and the Rollout's `notifications.argoproj.io/subscribe.*`
  annotations (sandbox/notifyconfig.py); per destination each condition of the trigger: an empty `when`
  always sends (the engine's "empty condition"), `oncePer` is ignored (argo-rollouts never records it);
- the templates' `message` and `webhook.<service>` (`body`, `path`, `method`) rendered with Go
  text/template semantics (sandbox/gotemplate.py) over `.rollout`, `.analysisRuns` (the runs of the
  current pod hash and revision, newest first), `.time`, `.secrets`, `.serviceType`, `.recipient`;
- the request as pkg/services/webhook.go sends it (GET with the message unless the template's webhook
  entry says otherwise; the URL joined with `path`; headers set in order; basicAuth) and retried as
  go-retryablehttp 0.7.7 does (sandbox/notifywebhook.py): connection errors, 429 and 5xx except 501, up
  to `retryMax` retries, waits min x 2^n capped at max, a 429/503 `Retry-After` honoured.

Not simulated, and refused loudly (a failed delivery saying so) rather than got wrong: a non-empty `when`
(expr-lang), service types other than webhook, and a template feature the renderer does not have. Also
not simulated: the `notifications.argoproj.io/subscriptions` annotation form, self-service namespaces,
the template's other sections (slack, email: Go renders them too, and would fail the send on an error in
them), notifications for AnalysisRun/Experiment objects. Differences, each bounded: one thread sends
(Argo: inline in each of the controller's workers), a request times out after `request_timeout` s (Go's
client has no timeout) and a `Retry-After` is capped at `max_retry_after` s; `wait_scale` multiplies
every wait so tests stay fast.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.gotemplate import GoTemplateError, render, time_vars
from rollbook.sandbox.notifyconfig import (
    Destination,
    NotifyConfig,
    NotifyConfigError,
    WebhookService,
    destinations,
    parse_config,
    secret_values,
    trigger_for,
)
from rollbook.sandbox.notifywebhook import send_webhook
from rollbook.sandbox.store import Store

_log = logging.getLogger(__name__)

JSON = dict[str, Any]
CONTROLLER_NAMESPACE = "argo-rollouts"
CONFIGMAP = "argo-rollouts-notification-configmap"
SECRET = "argo-rollouts-notification-secret"
COMPONENT = "rollouts-controller"
HASH_LABEL = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"


@dataclass
class Delivery:
    """One send (or a refusal before it): what was requested, each attempt's answer, the outcome.
    `url` and `headers` are as the ConfigMap writes them (`$secret` references, not their values)."""

    event: str
    trigger: str
    namespace: str
    rollout: str
    service: str
    recipient: str
    templates: tuple[str, ...]
    method: str = ""
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    attempts: list[int | str] = field(default_factory=list)  # a status code, or the connection error
    ok: bool = False
    error: str = ""

    def summary(self) -> str:
        outcome = "sent" if self.ok else f"FAILED: {self.error}"
        tried = ", ".join(str(a) for a in self.attempts) or "not sent"
        return (f"notification {self.trigger} of rollout {self.namespace}/{self.rollout} -> {self.service}: "
                f"{self.method} {self.url} [{tried}] {outcome}")


@dataclass(frozen=True)
class Handled:
    """One Rollout Event the controller looked at, and how many destinations its trigger had."""

    event: str
    namespace: str
    rollout: str
    trigger: str
    destinations: int


def install(store: Store, namespace: str = CONTROLLER_NAMESPACE) -> None:
    """What Argo's install.yaml leaves in the cluster for notifications: the namespace and the empty Secret
    (the ConfigMap is the user's to apply). Kept when a scenario already has them."""
    try:
        store.get("secrets", namespace, SECRET)
    except StoreError:
        store.create("secrets", namespace, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                            "metadata": {"name": SECRET, "namespace": namespace}})


class NotificationController:
    """Listens to the store; one thread delivers (every wait bounded, stop() interrupts them)."""

    def __init__(self, store: Store, *, namespace: str = CONTROLLER_NAMESPACE, wait_scale: float = 1.0,
                 request_timeout: float = 10.0, max_retry_after: float = 60.0, idle_poll_seconds: float = 0.5,
                 report: Callable[[Delivery], None] | None = None) -> None:
        self.store, self.namespace = store, namespace
        self.wait_scale, self.request_timeout, self.max_retry_after = wait_scale, request_timeout, max_retry_after
        self.idle_poll_seconds = idle_poll_seconds
        self.report = report
        self._queue: queue.Queue[JSON | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending = 0  # Events queued or being handled (under _lock)
        self._deliveries: list[Delivery] = []
        self._handled: list[Handled] = []
        self._thread: threading.Thread | None = None
        store.add_listener(self._on_store_event)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def handled(self) -> list[Handled]:
        with self._lock:
            return list(self._handled)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="argo-notifications", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=self.request_timeout + 5)
        self._thread = None

    def idle(self) -> bool:
        """No Event queued or being delivered."""
        with self._lock:
            return self._pending == 0

    def _on_store_event(self, event_type: str, plural: str, obj: JSON) -> None:
        """Store listener: only queue (no reads or writes inside a store callback)."""
        if plural == "events" and event_type == "ADDED" and not self._stop.is_set():
            with self._lock:
                self._pending += 1
            self._queue.put(obj)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=self.idle_poll_seconds)
            except queue.Empty:
                continue
            if event is None:
                continue
            try:
                self._on_event(event)
            except Exception:  # noqa: BLE001 - like Argo's recorder, a failed notification never stops the controller
                _log.exception("notifications: handling an Event failed")
            finally:
                with self._lock:
                    self._pending -= 1

    # ------------------------------------------------------------------ sendNotifications

    def _on_event(self, event: JSON) -> None:
        involved = event.get("involvedObject") or {}
        source = (event.get("source") or {}).get("component") or event.get("reportingComponent")
        if involved.get("kind") != "Rollout" or source != COMPONENT or not event.get("reason"):
            return
        ns, name = str(involved.get("namespace") or ""), str(involved.get("name") or "")
        trigger = trigger_for(str(event["reason"]))
        event_name = str((event.get("metadata") or {}).get("name") or "")
        secret = self._read("secrets", SECRET)
        try:
            rollout = self.store.get("rollouts", ns, name)
            cfg = parse_config(self._read("configmaps", CONFIGMAP), secret)
        except StoreError:
            return self._note(Handled(event_name, ns, name, trigger, 0))  # the Rollout is gone
        except NotifyConfigError as e:  # GetAPIsFromNamespace failed: nothing is sent for any trigger
            self._note(Handled(event_name, ns, name, trigger, 0))
            return self._record(Delivery(event_name, trigger, ns, name, "", "", (),
                                         error=f"notification config {self.namespace}/{CONFIGMAP}: {e}"))
        dests = destinations(cfg, rollout).get(trigger, [])
        self._note(Handled(event_name, ns, name, trigger, len(dests)))
        for dest in dests:
            conditions = cfg.triggers.get(trigger)
            if conditions is None:
                continue  # "trigger is not configured": skipped, as record.go does
            for cond in conditions:
                delivery = Delivery(event_name, trigger, ns, name, dest[0], dest[1], cond.send)
                if cond.when:
                    delivery.error = (f"trigger {trigger}: `when: {cond.when}` is an expr-lang condition, "
                                      "not simulated by the sandbox (remove it or test on a real cluster)")
                else:
                    self._send(cfg, secret, rollout, dest, delivery)
                self._record(delivery)

    def _read(self, plural: str, name: str) -> JSON | None:
        try:
            return self.store.get(plural, self.namespace, name)
        except StoreError:
            return None

    def _note(self, handled: Handled) -> None:
        with self._lock:
            self._handled.append(handled)

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)
        (_log.info if delivery.ok else _log.warning)("%s", delivery.summary())
        if self.report is not None:
            self.report(delivery)

    def _send(self, cfg: NotifyConfig, secret: JSON | None, rollout: JSON, dest: Destination,
              delivery: Delivery) -> None:
        """api.Send: the service, the templates formatted in order, then the webhook request."""
        service = cfg.services.get(dest[0])
        if service is None:
            delivery.error = f"notification service '{dest[0]}' is not supported"
            return
        if not isinstance(service, WebhookService):
            delivery.error = f"service type {service!r} ({dest[0]}) is not simulated by the sandbox: only webhook"
            return
        data = {"rollout": rollout, "analysisRuns": self._analysis_runs(rollout), "time": time_vars(),
                "secrets": secret_values(secret), "serviceType": dest[0], "recipient": dest[1]}
        message, webhook = "", None  # webhook: this service's entry of the last template that has one
        for name in delivery.templates:
            template = cfg.templates.get(name)
            if template is None:
                delivery.error = f"template '{name}' is not supported"
                return
            try:
                text = render(str(template.get("message") or ""), data)
                message = text or message
                for svc, spec in (template.get("webhook") or {}).items():
                    spec = spec or {}
                    rendered = {"body": render(str(spec.get("body") or ""), data),
                                "path": render(str(spec.get("path") or ""), data),
                                "method": str(spec.get("method") or "")}
                    webhook = rendered if svc == dest[0] else webhook
            except GoTemplateError as e:
                delivery.error = f"template '{name}': {e}"
                return
        method, body, url, raw_url = "GET", message, service.url, service.raw_url
        if webhook is not None:
            body, method = webhook["body"], webhook["method"] or method
            if webhook["path"]:
                url = service.url.rstrip("/") + "/" + webhook["path"].lstrip("/")
                raw_url = service.raw_url.rstrip("/") + "/" + webhook["path"].lstrip("/")
        delivery.method, delivery.url, delivery.headers, delivery.body = method, raw_url, service.raw_headers, body
        sent = send_webhook(service, method, url, body, stop=self._stop, wait_scale=self.wait_scale,
                            request_timeout=self.request_timeout, max_retry_after=self.max_retry_after)
        delivery.attempts, delivery.ok = sent.attempts, sent.ok
        delivery.error = sent.error.replace(url, raw_url)  # the URL as configured: no substituted secret

    def _analysis_runs(self, rollout: JSON) -> list[JSON] | None:
        """getAnalysisRunsFilterWithLabels: the current pod hash's runs of this revision, newest first."""
        meta, status = rollout.get("metadata") or {}, rollout.get("status") or {}
        runs = self.store.list("analysisruns", meta.get("namespace"),
                               label_selector=f"{HASH_LABEL}={status.get('currentPodHash') or ''}")[0]
        if not runs:
            return None
        revision = (meta.get("annotations") or {}).get(REVISION)
        same = [r for r in runs if ((r.get("metadata") or {}).get("annotations") or {}).get(REVISION) == revision]
        return sorted(same, key=lambda r: r["metadata"].get("creationTimestamp") or "", reverse=True)
