"""`rollbook.yaml`: where every outside service is and how to reach it — never the secrets themselves.

The path comes from `--config` or `ROLLBOOK_CONFIG`; without one, everything falls back to the
environment (`ROLLBOOK_MC_URL`, `ROLLBOOK_MC_TOKEN[_FILE]`, `KUBECONFIG`) and every notification target
is off. Secrets are referenced by environment variable (`*_env`) or file path (`*_file`) only; a
literal secret in the file is refused, since the file is copied into incident records.

Example (also in the README)::

    mc:
      url: https://mc.example.internal
      token_env: ROLLBOOK_MC_TOKEN
    kube:
      kubeconfig: ~/.kube/config
      read_context: prod-eu-viewer        # steps 1-3, 5, 6
      action_context: prod-eu-operator    # only the mutating step (4)
    prometheus:
      url: http://prometheus.monitoring:9090
    grafana:
      url: https://grafana.example.internal
      token_env: GRAFANA_TOKEN
      panels:
        - {dashboard_uid: api-slo, slug: api-slo, panel_id: 4, title: p99 latency,
           vars: {namespace: "{namespace}", rollout: "{rollout}"}}
    escalation:
      pagerduty: {routing_key_env: PD_ROUTING_KEY, severity: critical}
      slack: {webhook_url_env: SLACK_WEBHOOK_URL}
      webhook: {url: https://hooks.example.internal/rollbook, token_env: HOOK_TOKEN}
    ticket:
      jira: {url: https://jira.example.internal, user_env: JIRA_USER, token_env: JIRA_TOKEN}
    record:
      link_base: https://files.example.internal/incidents
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rollbook.errors import ConfigError

_SECRET_WORDS = ("token", "password", "secret", "routing_key", "webhook_url", "api_key")


@dataclass(frozen=True, repr=False)
class SecretRef:
    """Where a secret lives: an environment variable or a file. `value()` resolves it."""

    env: str | None = None
    file: str | None = None

    def value(self) -> str | None:
        """The secret, or None when the reference is empty or points nowhere."""
        if self.env and os.environ.get(self.env):
            return os.environ[self.env].strip()
        if self.file:
            path = Path(self.file).expanduser()
            if path.is_file():
                return path.read_text(encoding="utf-8").strip()
        return None

    def describe(self) -> str:
        """Where the secret is looked for, for error messages (never the value)."""
        parts = [f"${self.env}" if self.env else "", f"file {self.file}" if self.file else ""]
        return " or ".join(p for p in parts if p) or "(not configured)"

    def __repr__(self) -> str:
        return f"SecretRef({self.describe()})"


@dataclass(frozen=True)
class Service:
    """One outside HTTP service: base URL, an optional secret, and its other settings."""

    url: str | None = None
    secret: SecretRef = field(default_factory=SecretRef)
    user: SecretRef = field(default_factory=SecretRef)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        """A service is on when it has a URL or a secret (PagerDuty needs only its routing key)."""
        return bool(self.url or self.secret.env or self.secret.file)


@dataclass(frozen=True)
class Config:
    """The parsed `rollbook.yaml` (all sections optional)."""

    path: Path | None = None
    mc: Service = field(default_factory=Service)
    kubeconfig: str | None = None
    read_context: str | None = None
    action_context: str | None = None
    prometheus: Service = field(default_factory=Service)
    grafana: Service = field(default_factory=Service)
    grafana_panels: tuple[dict[str, Any], ...] = ()
    pagerduty: Service = field(default_factory=Service)
    slack: Service = field(default_factory=Service)
    webhook: Service = field(default_factory=Service)
    jira: Service = field(default_factory=Service)
    ticket_webhook: Service = field(default_factory=Service)
    link_base: str | None = None
    serve: Service = field(default_factory=Service)  # `rollbook serve`: token_env/token_file, options


def _mapping(value: Any, where: str) -> dict[str, Any]:
    """A config section: a mapping, or empty when left out."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}.")
    return value


def _text(value: Any, where: str) -> str | None:
    """A string setting (URL, path, variable name), or None when left out."""
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {type(value).__name__} {str(value)[:40]!r}.")
    return value


def _secret(section: dict[str, Any], prefix: str, where: str) -> SecretRef:
    if section.get(prefix) not in (None, ""):
        raise ConfigError(
            f"{where}.{prefix} holds a literal secret.",
            hint=f"Use {where}.{prefix}_env (an environment variable) or {where}.{prefix}_file (a path).",
        )
    return SecretRef(env=_text(section.get(f"{prefix}_env"), f"{where}.{prefix}_env"),
                     file=_text(section.get(f"{prefix}_file"), f"{where}.{prefix}_file"))


def _service(section: Any, where: str, *, secret: str = "token", user: str | None = None) -> Service:
    if section is None:
        return Service()
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}.")
    known = {"url", secret, f"{secret}_env", f"{secret}_file"}
    if user:
        known |= {user, f"{user}_env", f"{user}_file"}
    options = {k: v for k, v in section.items() if k not in known}
    for key in options:
        if any(word in key for word in _SECRET_WORDS):
            raise ConfigError(f"{where}.{key} looks like a secret.", hint="Reference it with *_env or *_file.")
    return Service(
        url=_text(section.get("url"), f"{where}.url"),
        secret=_secret(section, secret, where),
        user=_secret(section, user, where) if user else SecretRef(),
        options=options,
    )


def load(path: str | Path | None = None) -> Config:
    """Read the config from `path`, else `$ROLLBOOK_CONFIG`, else an empty config (env only)."""
    chosen = path or os.environ.get("ROLLBOOK_CONFIG")
    if not chosen:
        return _with_env_defaults(Config())
    p = Path(chosen).expanduser()
    if not p.is_file():
        raise ConfigError(f"Config file {p} does not exist.", hint="Fix --config or ROLLBOOK_CONFIG.")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {p} must hold a mapping at the top level.")
    return _with_env_defaults(parse(raw, path=p))


def parse(raw: dict[str, Any], *, path: Path | None = None) -> Config:
    """Build a Config from an already-parsed mapping."""
    known = {"mc", "kube", "prometheus", "grafana", "escalation", "ticket", "record", "serve"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"Unknown config section(s) {unknown} in {path or 'config'}.",
                          hint=f"Known sections: {sorted(known)}.")
    kube, grafana = _mapping(raw.get("kube"), "kube"), _mapping(raw.get("grafana"), "grafana")
    esc, ticket = _mapping(raw.get("escalation"), "escalation"), _mapping(raw.get("ticket"), "ticket")
    for key in ("kubeconfig", "read_context", "action_context"):
        _text(kube.get(key), f"kube.{key}")
    if not isinstance(grafana.get("panels") or [], list):
        raise ConfigError(f"grafana.panels must be a list, got {type(grafana['panels']).__name__}.")
    _text(_mapping(raw.get("record"), "record").get("link_base"), "record.link_base")
    return Config(
        path=path,
        mc=_service(raw.get("mc"), "mc"),
        kubeconfig=kube.get("kubeconfig"),
        read_context=kube.get("read_context"),
        action_context=kube.get("action_context"),
        prometheus=_service(raw.get("prometheus"), "prometheus"),
        grafana=_service({k: v for k, v in grafana.items() if k != "panels"}, "grafana"),
        grafana_panels=tuple(grafana.get("panels") or ()),
        pagerduty=_service(esc.get("pagerduty"), "escalation.pagerduty", secret="routing_key"),
        slack=_service(esc.get("slack"), "escalation.slack", secret="webhook_url"),
        webhook=_service(esc.get("webhook"), "escalation.webhook"),
        jira=_service(ticket.get("jira"), "ticket.jira", user="user"),
        ticket_webhook=_service(ticket.get("webhook"), "ticket.webhook"),
        link_base=(raw.get("record") or {}).get("link_base"),
        serve=_service(raw.get("serve"), "serve"),
    )


def _with_env_defaults(cfg: Config) -> Config:
    """Fill MC from the environment where the file is silent (what `rollbook sandbox`'s env.sh sets)."""
    from dataclasses import replace

    mc = cfg.mc
    url = mc.url or os.environ.get("ROLLBOOK_MC_URL")
    secret = mc.secret
    if not (secret.env or secret.file):
        secret = SecretRef(env="ROLLBOOK_MC_TOKEN", file=os.environ.get("ROLLBOOK_MC_TOKEN_FILE"))
    prom = cfg.prometheus
    if not prom.url and os.environ.get("ROLLBOOK_PROMETHEUS_URL"):
        prom = replace(prom, url=os.environ["ROLLBOOK_PROMETHEUS_URL"])
    return replace(cfg, mc=replace(mc, url=url, secret=secret), prometheus=prom)
