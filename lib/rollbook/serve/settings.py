"""`rollbook serve`'s settings: the command line over rollbook.yaml's `serve` section.

    serve:
      token_file: /var/run/secrets/rollbook/token   # or token_env: NAME; else $ROLLBOOK_SERVE_TOKEN
      incident_pattern: "ARGO-{namespace}-{rollout}-r{revision}"
      notify: false          # true: the first look is posted (and step 5 pages); default: dry run, recorded
      first_look: [slack, webhook]   # which of escalation.slack / escalation.webhook get the first look
      max_attempts: 3        # attempts cut short (SIGTERM past the grace period, a crash) are re-run up to this
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rollbook.config import Config, load
from rollbook.errors import ConfigError, UsageError
from rollbook.serve.notification import DEFAULT_PATTERN, check_pattern

TOKEN_ENV = "ROLLBOOK_SERVE_TOKEN"
MIN_TOKEN_LENGTH = 16
READ_ONLY_STEPS = frozenset({1, 2, 3, 5, 6})  # step 4 mutates (retry/undo): a human decision, never the service's
DEFAULT_STEPS = (1, 2, 3, 5)
FIRST_LOOK_TARGETS = ("slack", "webhook")
_LISTEN_RE = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[^:]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the service needs; the token is kept out of repr."""

    token: str
    host: str = "127.0.0.1"
    port: int = 8686
    out: Path = Path("outputs")
    config_path: str | None = None
    config: Config = field(default_factory=Config)
    workers: int = 2
    pool: int = 3  # warm kernels kept ready (0: a cold child process per attempt)
    queue_bound: int = 100
    steps: tuple[int, ...] = DEFAULT_STEPS
    context: str | None = None
    runbooks: Path | None = None
    step_timeout: float = 600.0
    grace: float = 20.0  # seconds a running incident may finish after SIGTERM before it is interrupted
    incident_pattern: str = DEFAULT_PATTERN
    notify: bool = False
    first_look: tuple[str, ...] = FIRST_LOOK_TARGETS
    max_attempts: int = 3
    executor: str = "local"  # or "kubernetes": one Job per incident (rollbook.jobrun)
    preflight: bool = True  # check the gate at start and on GET /v1/preflight (rollbook serve --no-preflight)
    retry_after: int = 2  # seconds in a 429's Retry-After: go-retryablehttp waits exactly that, uncapped

    def __repr__(self) -> str:
        return f"Settings(listen={self.host}:{self.port}, out={self.out}, workers={self.workers}, token=***)"

    @property
    def state_dir(self) -> Path:
        """`<out>/.serve/`: the queue, each attempt's job and result, the children's logs."""
        return self.out / ".serve"


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets)."""
    m = _LISTEN_RE.match(text or "")
    if not m or not 0 <= int(m["port"]) <= 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT.", hint="e.g. --listen 0.0.0.0:8686 or 127.0.0.1:0.")
    return m["host"].strip("[]"), int(m["port"])


def _token(cfg: Config) -> str:
    """The bearer token: serve.token_env / serve.token_file, else $ROLLBOOK_SERVE_TOKEN; refuse to start without."""
    ref = cfg.serve.secret
    token = ref.value() if (ref.env or ref.file) else os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        where = ref.describe() if (ref.env or ref.file) else f"${TOKEN_ENV}"
        raise UsageError(f"rollbook serve needs a bearer token and found none in {where}.",
                         hint="Set serve.token_file or serve.token_env in rollbook.yaml (or ROLLBOOK_SERVE_TOKEN); "
                              "Argo sends it from argo-rollouts-notification-secret (README, 'Start it from Argo').")
    if len(token) < MIN_TOKEN_LENGTH:
        raise UsageError(f"The serve token in {ref.describe() if (ref.env or ref.file) else '$' + TOKEN_ENV} is "
                         f"{len(token)} characters; at least {MIN_TOKEN_LENGTH} are required.",
                         hint="Generate one with: openssl rand -hex 32")
    return token


def _options(cfg: Config) -> dict[str, Any]:
    """The serve section's non-secret options, checked."""
    opts = dict(cfg.serve.options)
    unknown = sorted(set(opts) - {"incident_pattern", "notify", "first_look", "max_attempts"})
    if unknown:
        raise UsageError(f"Unknown serve option(s) {unknown} in {cfg.path or 'rollbook.yaml'}.",
                         hint="Known: token_env, token_file, incident_pattern, notify, first_look, max_attempts.")
    try:
        opts["incident_pattern"] = check_pattern(str(opts.get("incident_pattern") or DEFAULT_PATTERN))
    except ValueError as e:
        raise UsageError(str(e), hint="Use {namespace}, {rollout} and {revision}, e.g. ARGO-{namespace}-{rollout}-r{revision}.") from e
    if not isinstance(opts.get("notify", False), bool):
        raise UsageError("serve.notify must be true or false.")
    targets = tuple(opts.get("first_look", FIRST_LOOK_TARGETS) or ())
    if set(targets) - set(FIRST_LOOK_TARGETS):
        raise UsageError(f"serve.first_look {list(targets)} names an unknown target.",
                         hint=f"Choose from {list(FIRST_LOOK_TARGETS)} (escalation.slack, escalation.webhook).")
    opts["first_look"] = targets
    attempts = opts.get("max_attempts", 3)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 10:
        raise UsageError("serve.max_attempts must be an integer from 1 to 10.")
    return opts


def build(*, listen: str, config: str | None, out: Path, workers: int, queue: int, steps: tuple[int, ...] | None,
          executor: str, context: str | None, runbooks: Path | None = None, step_timeout: float = 600.0,
          grace: float = 20.0, preflight: bool = True, pool: int = 3) -> Settings:
    """Settings from the command line and rollbook.yaml; UsageError (exit 2) for anything wrong, before listening."""
    if executor not in ("local", "kubernetes"):
        raise UsageError(f"--executor {executor} is unknown.", hint="Use --executor local or kubernetes.")
    if executor == "kubernetes":  # the submitting identity must be usable before the service listens
        from rollbook.steps.core import _connect

        try:
            _connect(context, None).close()
        except ConfigError as e:
            raise UsageError(f"--executor kubernetes cannot submit Jobs: {e.message}", hint=e.hint) from e
    if workers < 1 or queue < 1:
        raise UsageError("--workers and --queue must be at least 1.", hint="e.g. --workers 2 --queue 100.")
    if not 0 <= pool <= 16:
        raise UsageError(f"--pool {pool} is out of range: 0 (a cold process per incident) to 16 warm kernels.",
                         hint="e.g. --pool 3 (one incident's steps 1-3); each kernel holds ~130 MiB.")
    chosen = tuple(sorted(set(steps or DEFAULT_STEPS)))
    if set(chosen) - READ_ONLY_STEPS:
        raise UsageError(f"--steps {','.join(map(str, chosen))} includes step 4: the service never mutates.",
                         hint="retry/undo stay a human decision: rollbook run --incident ID --steps 4 --approve-retry ...")
    if grace < 0 or step_timeout <= 0:
        raise UsageError("--grace must be >= 0 and --step-timeout > 0 seconds.")
    host, port = parse_listen(listen)
    try:
        cfg = load(config)
    except ConfigError as e:
        raise UsageError(f"rollbook serve cannot start: {e.message}", hint=e.hint) from e
    if cfg.path is not None:  # the kernels run elsewhere: a relative --config would point nowhere for them
        cfg = replace(cfg, path=cfg.path.resolve())
    opts = _options(cfg)
    return Settings(token=_token(cfg), host=host, port=port, out=Path(out).resolve(),
                    config_path=str(cfg.path) if cfg.path else None, config=cfg,
                    workers=workers, pool=pool, queue_bound=queue, steps=chosen, context=context, runbooks=runbooks,
                    step_timeout=step_timeout, grace=grace, preflight=preflight, incident_pattern=opts["incident_pattern"],
                    notify=bool(opts.get("notify", False)), first_look=opts["first_look"],
                    max_attempts=int(opts.get("max_attempts", 3)), executor=executor)
