"""Argo Rollouts' notification config, parsed as notifications-engine parses it (for sandbox/notifications.py).

From argoproj/notifications-engine: pkg/api/config.go (ParseConfig: `service.<type>(.<name>)`,
`trigger.<name>`, `template.<name>`, `defaultTriggers`, `defaultTriggers.<service>`, `subscriptions`;
`$key` in a service's string values replaced from the Secret, an unknown key left as it is),
pkg/subscriptions/annotations.go (GetDestinations: `notifications.argoproj.io/subscribe.<trigger>.<service>`
and `subscribe.<service>`, recipients split on `;`, an empty value is one empty recipient),
pkg/subscriptions/global.go and pkg/services/webhook.go (WebhookOptions and their defaults).

Only what the simulation delivers is typed: webhook services. Another service type is kept by name so a
send to it fails loudly ("not simulated") instead of vanishing. A malformed key fails the whole config, as
ParseConfig does: the engine then sends nothing for that namespace.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from rollbook.sandbox.apierrors import StoreError
from rollbook.sandbox.selectors import Requirement, labels_match, parse_label_selector

JSON = dict[str, Any]
ANNOTATION_PREFIX = "notifications.argoproj.io"
_SECRET_KEY = re.compile(r"[$][0-9A-Za-z_-]+")  # config.go keyPattern `[$][\w-]+` (Go's \w is ASCII)
DEFAULT_RETRY_WAIT_MIN_NS = 1_000_000_000     # webhook.go NewWebhookService: 1 s
DEFAULT_RETRY_WAIT_MAX_NS = 5_000_000_000     # 5 s
DEFAULT_RETRY_MAX = 3                         # 0 (or absent) means 3


class NotifyConfigError(Exception):
    """What ParseConfig / NewAPI would return: the namespace's notifications are all off."""


@dataclass(frozen=True)
class WebhookService:
    """service.webhook.<name>, after `$secret` substitution (`raw_*`: as the ConfigMap writes them)."""

    url: str
    headers: tuple[tuple[str, str], ...]
    raw_url: str
    raw_headers: tuple[tuple[str, str], ...]
    basic_auth: tuple[str, str] | None = None
    retry_wait_min_ns: int = DEFAULT_RETRY_WAIT_MIN_NS
    retry_wait_max_ns: int = DEFAULT_RETRY_WAIT_MAX_NS
    retry_max: int = DEFAULT_RETRY_MAX
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class Condition:
    """One entry of a trigger (pkg/triggers/service.go)."""

    send: tuple[str, ...]
    when: str = ""
    once_per: str = ""


@dataclass
class NotifyConfig:
    services: dict[str, WebhookService | str] = field(default_factory=dict)  # str: a type not simulated
    triggers: dict[str, list[Condition]] = field(default_factory=dict)
    templates: dict[str, JSON] = field(default_factory=dict)
    default_triggers: list[str] = field(default_factory=list)
    service_default_triggers: dict[str, list[str]] = field(default_factory=dict)
    subscriptions: list[tuple[list[str], list[str], list[Requirement]]] = field(default_factory=list)


def secret_values(secret: JSON | None) -> dict[str, bytes]:
    """A Secret's data (base64 in the API) as bytes, what the engine substitutes."""
    return {k: base64.b64decode(v) for k, v in ((secret or {}).get("data") or {}).items()}


def _yaml(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NotifyConfigError(f"failed to unmarshal {key}: {e}") from e


def _substitute(value: Any, secrets: dict[str, bytes]) -> Any:
    """replaceServiceConfigSecrets: every string scalar (keys too) with `$key` replaced from the Secret."""
    if isinstance(value, str):
        return _SECRET_KEY.sub(lambda m: secrets[m.group()[1:]].decode("utf-8", "replace")
                               if m.group()[1:] in secrets else m.group(), value)
    if isinstance(value, dict):
        return {_substitute(k, secrets): _substitute(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, secrets) for v in value]
    return value


def _field(options: JSON, name: str, kind: type, default: Any, where: str) -> Any:
    """One WebhookOptions field; encoding/json matches names case-insensitively and rejects a wrong type."""
    for key, value in options.items():
        if isinstance(key, str) and key.lower() == name.lower():
            if value is None:
                return default
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise NotifyConfigError(f"failed to render service configuration {where}: json: cannot unmarshal "
                                        f"{type(value).__name__} into Go struct field WebhookOptions.{name}")
            return value
    return default


def _headers(options: JSON, where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for header in _field(options, "headers", list, [], where):
        if not isinstance(header, dict):
            raise NotifyConfigError(f"failed to render service configuration {where}: a header is not an object")
        out.append((str(header.get("name") or ""), str(header.get("value") or "")))
    return tuple(out)


def webhook_service(key: str, text: str, secrets: dict[str, bytes]) -> WebhookService:
    raw = _yaml(key, text) or {}
    if not isinstance(raw, dict):
        raise NotifyConfigError(f"failed to render service configuration {key}: not a mapping")
    opts = _substitute(raw, secrets)
    auth = _field(opts, "basicAuth", dict, None, key)
    return WebhookService(
        url=_field(opts, "url", str, "", key), headers=_headers(opts, key),
        raw_url=_field(raw, "url", str, "", key), raw_headers=_headers(raw, key),
        basic_auth=(str(auth.get("username") or ""), str(auth.get("password") or "")) if auth else None,
        retry_wait_min_ns=_field(opts, "retryWaitMin", int, 0, key) or DEFAULT_RETRY_WAIT_MIN_NS,
        retry_wait_max_ns=_field(opts, "retryWaitMax", int, 0, key) or DEFAULT_RETRY_WAIT_MAX_NS,
        retry_max=_field(opts, "retryMax", int, 0, key) or DEFAULT_RETRY_MAX,
        insecure_skip_verify=_field(opts, "insecureSkipVerify", bool, False, key))


def _string_list(key: str, text: str) -> list[str]:
    value = _yaml(key, text) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NotifyConfigError(f"failed to unmarshal {key}: expected a list of names")
    return value


def _conditions(key: str, text: str) -> list[Condition]:
    value = _yaml(key, text) or []
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise NotifyConfigError(f"failed to unmarshal trigger {key}: expected a list of conditions")
    return [Condition(send=tuple(str(s) for s in c.get("send") or []), when=str(c.get("when") or ""),
                      once_per=str(c.get("oncePer") or "")) for c in value]


def parse_config(configmap: JSON | None, secret: JSON | None) -> NotifyConfig:
    """ParseConfig + NewAPI: a missing ConfigMap or Secret is an empty one (pkg/api/factory.go)."""
    data: dict[str, str] = dict((configmap or {}).get("data") or {})
    secrets = secret_values(secret)
    cfg = NotifyConfig()
    if "subscriptions" in data:
        for sub in _yaml("subscriptions", data["subscriptions"]) or []:
            try:
                selector = parse_label_selector(str(sub.get("selector") or ""))
            except StoreError as e:
                raise NotifyConfigError(f"subscriptions: {e.message}") from e
            cfg.subscriptions.append((list(sub.get("recipients") or []), list(sub.get("triggers") or []), selector))
    if "defaultTriggers" in data:
        cfg.default_triggers = _string_list("defaultTriggers", data["defaultTriggers"])
    for key, text in data.items():
        parts = key.split(".")
        if key.startswith("template."):
            template = _yaml(key, text) or {}
            if not isinstance(template, dict):
                raise NotifyConfigError(f"failed to unmarshal template {key[9:]}: not a mapping")
            cfg.templates[".".join(parts[1:])] = template
        elif key.startswith("service."):
            if len(parts) not in (2, 3):
                raise NotifyConfigError(f"invalid service key; expected 'service.<type>(.<name>)' but got '{key}'")
            kind, name = parts[1], parts[-1]
            cfg.services[name] = webhook_service(key, text, secrets) if kind == "webhook" else kind
        elif key.startswith("trigger."):
            cfg.triggers[".".join(parts[1:])] = _conditions(key, text)
        elif key.startswith("defaultTriggers."):
            cfg.service_default_triggers[".".join(parts[1:])] = _string_list(key, text)
    return cfg


Destination = tuple[str, str]  # (service, recipient)


def _recipients(value: str) -> list[str]:
    return [""] if value == "" else [r.strip() for r in value.split(";") if r.strip()]


def destinations(cfg: NotifyConfig, obj: JSON) -> dict[str, list[Destination]]:
    """Trigger -> destinations: the global subscriptions, then the object's annotations (sendNotifications)."""
    meta = obj.get("metadata") or {}
    out: dict[str, list[Destination]] = {}
    for recipients, triggers, selector in cfg.subscriptions:
        if not labels_match(selector, obj):
            continue
        for trigger in triggers or cfg.default_triggers:
            for recipient in recipients:
                service, _, who = str(recipient).partition(":")
                out.setdefault(trigger, []).append((service, who))
    prefix = f"{ANNOTATION_PREFIX}/subscribe."
    for key, value in (meta.get("annotations") or {}).items():
        if not key.startswith(prefix):
            continue  # (the alternative `notifications.argoproj.io/subscriptions` YAML form is not simulated)
        parts = key[len(prefix):].split(".")
        trigger, service = (parts[0], parts[1]) if len(parts) >= 2 else ("", parts[0])
        for recipient in _recipients(str(value)):
            triggers = [trigger] if trigger else cfg.service_default_triggers.get(service, cfg.default_triggers)
            for t in triggers:
                out.setdefault(t, []).append((service, recipient))
    return out


def trigger_for(reason: str) -> str:
    """translateReasonToTrigger (utils/record/record.go): RolloutAborted -> on-rollout-aborted."""
    text = re.sub(r"(.)([A-Z][a-z]+)", r"\1-\2", reason)
    return "on-" + re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", text).lower()
