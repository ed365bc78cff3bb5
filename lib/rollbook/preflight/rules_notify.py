"""Rules over Argo's notification to rollbook: the Rollout's subscription, the webhook, its retries.

Read in argoproj/notifications-engine:
- pkg/subscriptions/annotations.go: ``notifications.argoproj.io/subscribe.<trigger>.<service>: <recipients>``,
  ``notifications.argoproj.io/subscribe.<service>`` (no trigger: the default triggers), and
  ``notifications.argoproj.io/subscriptions`` (a YAML list of ``{trigger: [...], destinations: [{service,
  recipients}]}``);
- pkg/api/config.go and pkg/subscriptions/global.go: the ConfigMap's ``subscriptions`` (``{recipients:
  [service[:recipient]], triggers: [...], selector: <label selector>}``), ``defaultTriggers`` and
  ``defaultTriggers.<service>``, ``service.webhook.<name>``, ``trigger.<name>``;
- pkg/services/webhook.go: ``retryMax`` (0 means the default 3), ``retryWaitMin`` 1 s, ``retryWaitMax`` 5 s,
  go-retryablehttp's backoff (min x 2^attempt, capped at max).
Argo Rollouts reads ``argo-rollouts-notification-configmap`` in the controller's namespace (utils/record/
record.go), and with ``--self-service-notification-enabled`` also in the Rollout's own namespace.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from rollbook.preflight import catalogue as c
from rollbook.preflight.model import Finding, finding
from rollbook.preflight.wiring import Gate, as_int, d

SERVICE = "rollbook"  # rollbook's webhook service name: service.webhook.rollbook in the ConfigMap
TRIGGER = "on-rollout-aborted"  # utils/record/record.go: event RolloutAborted -> trigger on-rollout-aborted
CONFIGMAP = "argo-rollouts-notification-configmap"
PREFIX = "notifications.argoproj.io"
DEFAULT_RETRY_MAX, DEFAULT_WAIT_MIN, DEFAULT_WAIT_MAX = 3, 1.0, 5.0
# rollbook serve restarts (a deploy, a node drain) take well under a minute; retries must outlast that
MIN_RETRY_WINDOW_SECONDS = 60.0


def _yaml(text: Any) -> Any:
    """A YAML value of the ConfigMap, None when it does not parse."""
    try:
        return yaml.safe_load(str(text)) if text else None
    except yaml.YAMLError:
        return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (``a=b,c!=d,e in (x,y),f notin (z),g,!h``) against labels.

    Written here because no maintained Python package parses label selectors outside a client that
    sends them to a server; the grammar is small (k8s.io/apimachinery/pkg/labels).
    """
    for term in (t.strip() for t in re.split(r",(?![^()]*\))", selector or "") if t.strip()):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            values = {v.strip() for v in m[3].split(",")}
            if (labels.get(m[1]) in values) != (m[2] == "in"):
                return False
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term):
            if (labels.get(m[1]) == m[3]) != (m[2] != "!="):
                return False
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            if (m[2] in labels) == bool(m[1]):
                return False
        else:
            return False  # a selector Argo would reject matches nothing
    return True


def _defaults(data: dict[str, Any]) -> list[str]:
    """Triggers a subscription without triggers gets (service-specific first)."""
    return [str(t) for t in _as_list(_yaml(data.get(f"defaultTriggers.{SERVICE}")) or _yaml(data.get("defaultTriggers")))]


def _annotation_subscribed(annotations: dict[str, str], defaults: list[str]) -> tuple[bool, str]:
    """Whether the Rollout's annotations subscribe rollbook to on-rollout-aborted, and by which key."""
    for key, value in annotations.items():
        if key == f"{PREFIX}/subscribe.{TRIGGER}.{SERVICE}" or (key == f"{PREFIX}/subscribe.{SERVICE}" and TRIGGER in defaults):
            return True, key
        if key.startswith(f"{PREFIX}/subscriptions"):
            for sub in (s for s in _as_list(_yaml(value)) if isinstance(s, dict)):
                triggers = [str(t) for t in _as_list(sub.get("trigger"))] or defaults
                services = {str(x.get("service")) for x in _as_list(sub.get("destinations")) if isinstance(x, dict)}
                if SERVICE in services and TRIGGER in triggers:
                    return True, key
    return False, ""


def _configmap_subscribed(data: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a ``subscriptions`` entry selects the Rollout for rollbook's trigger."""
    for sub in (s for s in _as_list(_yaml(data.get("subscriptions"))) if isinstance(s, dict)):
        triggers = [str(t) for t in _as_list(sub.get("triggers"))] or _defaults(data)
        services = {str(r).split(":", 1)[0] for r in _as_list(sub.get("recipients"))}
        if SERVICE in services and TRIGGER in triggers and selector_matches(str(sub.get("selector") or ""), labels):
            return True
    return False


_SUBSCRIBE_FIX = f"""
# the Rollout: Argo posts rollbook's webhook when it aborts
metadata:
  annotations:
    {PREFIX}/subscribe.{TRIGGER}.{SERVICE}: ""
# or, for every Rollout at once, in {CONFIGMAP} (namespace argo-rollouts):
data:
  subscriptions: |
    - recipients: [{SERVICE}]
      triggers: [{TRIGGER}]
"""


def subscription(gate: Gate) -> list[Finding]:
    """Rollbook's incident starts from Argo's on-rollout-aborted notification (rollbook serve)."""
    labels = {str(k): str(v) for k, v in d(gate.rollout, "metadata", "labels").items()}
    annotations = {str(k): str(v) for k, v in d(gate.rollout, "metadata", "annotations").items()}
    readable = [(ns, f.obj) for ns, f in gate.notification if f.obj is not None]
    defaults = [t for _, obj in readable for t in _defaults(d(obj, "data"))]
    by_annotation, _ = _annotation_subscribed(annotations, defaults)
    if by_annotation or any(_configmap_subscribed(d(obj, "data"), labels) for _, obj in readable):
        return []
    problems = [f"{ns}: {f.problem}" for ns, f in gate.notification if f.problem]
    controller = next((f for ns, f in gate.notification if ns == gate.controller_namespace), None)
    if controller is not None and controller.problem:
        return [finding(c.NOTIFICATION_SUBSCRIPTION, gate.namespace, gate.object,
                        f"metadata.annotations[{PREFIX}/subscribe.{TRIGGER}.{SERVICE}]",
                        f"No annotation subscribes this Rollout to rollbook's {TRIGGER} notification, and {CONFIGMAP} "
                        f"could not be read ({'; '.join(problems)}), so a `subscriptions` entry could not be checked.",
                        _SUBSCRIBE_FIX, severity="info")]
    where = ("; no ConfigMap found in " + ", ".join(ns for ns, f in gate.notification if f.absent)) if not readable else ""
    return [finding(c.NOTIFICATION_SUBSCRIPTION, gate.namespace, gate.object,
                    f"metadata.annotations[{PREFIX}/subscribe.{TRIGGER}.{SERVICE}]",
                    f"Nothing subscribes this Rollout to rollbook's {TRIGGER} notification (no annotation, no matching "
                    f"`subscriptions` entry in {CONFIGMAP}{where}): no incident starts when the gate aborts, and the "
                    "evidence is captured only when someone runs the playbook by hand, maybe after Argo deleted the run.",
                    _SUBSCRIBE_FIX)]


def _seconds(value: Any, default: float) -> float:
    """A Go time.Duration as JSON carries it (nanoseconds), or a duration string; else the default."""
    if (n := as_int(value)) is not None:
        return n / 1e9
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*", str(value or ""))
    return float(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m[2]] if m else default


def retry_window(options: dict[str, Any]) -> tuple[int, float]:
    """(retries, seconds they span): go-retryablehttp waits min x 2^attempt, capped at max, between tries."""
    retries = as_int(options.get("retryMax")) or DEFAULT_RETRY_MAX
    low = _seconds(options.get("retryWaitMin"), DEFAULT_WAIT_MIN) or DEFAULT_WAIT_MIN
    high = _seconds(options.get("retryWaitMax"), DEFAULT_WAIT_MAX) or DEFAULT_WAIT_MAX
    return retries, sum(min(high, low * 2 ** i) for i in range(retries))


def webhook(gate: Gate) -> list[Finding]:
    """The webhook service and trigger must exist, and its retries outlast a rollbook restart."""
    readable = [(ns, f.obj) for ns, f in gate.notification if f.obj is not None]
    if not readable:
        return []
    data: dict[str, Any] = {}
    for _, found in reversed(readable):
        data |= d(found, "data")
    ns = readable[0][0]
    obj = f"ConfigMap/{CONFIGMAP}"
    out = []
    service = _yaml(data.get(f"service.webhook.{SERVICE}"))
    if not isinstance(service, dict):
        out.append(finding(c.NOTIFICATION_WEBHOOK, ns, obj, f"data[service.webhook.{SERVICE}]",
                           f"{CONFIGMAP} defines no webhook service `{SERVICE}`: a subscription to it sends nothing "
                           "(the controller logs an error) and no incident starts.", f"""
data:
  service.webhook.{SERVICE}: |
    url: http://rollbook.rollbook.svc:8686/v1/argo-rollouts
    headers:
    - name: Authorization
      value: Bearer $rollbook-token        # from argo-rollouts-notification-secret
    retryMax: 15
"""))
    else:
        retries, seconds = retry_window(service)
        if seconds < MIN_RETRY_WINDOW_SECONDS:
            out.append(finding(c.NOTIFICATION_WEBHOOK, ns, obj, f"data[service.webhook.{SERVICE}].retryMax",
                               f"The webhook to rollbook retries {retries} time(s) within about {seconds:g} s "
                               "(notifications-engine pkg/services/webhook.go): a `rollbook serve` restart longer "
                               "than that loses the abort notification, and no incident starts.", f"""
data:
  service.webhook.{SERVICE}: |
    ...
    retryMax: 15        # 1+2+4+5x12 s = 67 s of retries
"""))
    if not data.get(f"trigger.{TRIGGER}"):
        out.append(finding(c.NOTIFICATION_WEBHOOK, ns, obj, f"data[trigger.{TRIGGER}]",
                           f"{CONFIGMAP} defines no `trigger.{TRIGGER}`: the abort event triggers nothing.", f"""
data:
  trigger.{TRIGGER}: |
    - send: [rollbook-abort]          # template.rollbook-abort: deploy/argo-notifications.yaml
"""))
    return out
