"""The body Argo posts when a canary aborts, as rendered by deploy/argo-notifications.yaml; incident ids.

Read in argoproj/argo-rollouts and argoproj/notifications-engine (why the body looks as it does):
- utils/record/record.go: a trigger runs inline on each Kubernetes Event the controller emits on the
  Rollout, named `on-` + kebab-case(reason): RolloutAborted -> on-rollout-aborted, AnalysisRunFailed ->
  on-analysis-run-failed, AnalysisRunError -> on-analysis-run-error (rollout/analysis.go emits
  "AnalysisRun" + phase). The template's variables are `.rollout` (the Rollout as JSON), `.analysisRuns`
  (runs with the Rollout's current pod hash and revision, newest first) and `.time` (`Parse`, `Now`).
- pkg/triggers/service.go: the shipped triggers have no `oncePer`, so every Event sends again: the same
  abort arrives two or three times (once per trigger, once per controller replica); dedupe is ours.
- pkg/services/webhook.go: go-retryablehttp, RetryMax 3 by default: connection errors, 429 (honouring
  Retry-After) and 5xx except 501 are retried; any other answer is final and the notification is gone.
- pkg/templates/service.go: Sprig's functions (`toJson`) over Go text/template.
The body only names the incident (`.rollout.status` can predate the abort): the run re-reads everything.

Argo Events (argoproj/argo-events): a webhook EventSource wraps the request as event data
`{"header": {...}, "body": <the JSON>}` (pkg/eventsources/sources/webhook/start.go, with the
Authorization header masked); a Sensor's HTTP trigger forwards whatever its `payload` parameters build
(pkg/sensors/triggers/params.go): `dataKey: body` with an empty `dest` sends our body as is, no `dataKey`
sends the whole event `{"context": {...}, "data": <base64 of the event data>}`. All three are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollbook.errors import UsageError
from rollbook.record import check_incident

TRIGGERS = ("on-rollout-aborted", "on-analysis-run-failed", "on-analysis-run-error")
DEFAULT_PATTERN = "ARGO-{namespace}-{rollout}-r{revision}"
MAX_MESSAGE = 4096  # Argo's status message is a sentence; more than this is not one
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label: namespaces
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # object names
_REVISION_RE = re.compile(r"^[1-9][0-9]{0,9}$")
_MAX_ID = 100  # record.check_incident's bound (one folder name)


class BadNotification(ValueError):
    """A body the service refuses (400): the message names the field and what it must be."""


@dataclass(frozen=True)
class Notification:
    """One accepted notification: which rollout, which canary revision, what fired."""

    namespace: str
    rollout: str
    revision: int
    trigger: str
    analysis_run: str | None = None
    message: str | None = None
    time: str | None = None
    envelope: str = "argo-notifications"  # or argo-events-body / argo-events-event

    def to_json(self) -> dict[str, Any]:
        """The notification as recorded (serve.json, the queue)."""
        return {"namespace": self.namespace, "rollout": self.rollout, "revision": self.revision,
                "trigger": self.trigger, "analysisRun": self.analysis_run, "message": self.message,
                "time": self.time, "envelope": self.envelope}


def parse(raw: bytes) -> Notification:
    """Validate a request body; BadNotification says which field is wrong."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadNotification(f"the body is not JSON ({type(e).__name__}: {str(e)[:80]})") from None
    body, envelope = unwrap(doc)
    return _validate(body, envelope)


def unwrap(doc: Any) -> tuple[dict[str, Any], str]:
    """The notification object inside an Argo Events envelope, if any, and which envelope it was."""
    envelope = "argo-notifications"
    if isinstance(doc, dict) and "context" in doc and "data" in doc and "namespace" not in doc:
        doc, envelope = _event_data(doc["data"]), "argo-events-event"
    if isinstance(doc, dict) and isinstance(doc.get("body"), dict) and "namespace" not in doc:
        # the webhook EventSource's event data; its `header` is dropped unread (it held the caller's token)
        doc, envelope = doc["body"], "argo-events-body" if envelope == "argo-notifications" else envelope
    if not isinstance(doc, dict):
        raise BadNotification(f"the body must be a JSON object, got {type(doc).__name__}")
    return doc, envelope


def _event_data(data: Any) -> Any:
    """An Argo Events event's `data`: JSON bytes, which encoding/json sends as base64, or already an object."""
    if isinstance(data, dict):
        return data
    if not isinstance(data, str):
        raise BadNotification("the Argo Events event's data is neither an object nor base64 JSON")
    try:
        return json.loads(base64.b64decode(data, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadNotification("the Argo Events event's data is not base64-encoded JSON") from None


def _validate(body: dict[str, Any], envelope: str) -> Notification:
    """Every field checked: names as Kubernetes allows them, revision an integer, trigger one we ship."""
    namespace = _name(body, "namespace", _LABEL_RE, 63, "an RFC 1123 label (lower-case letters, digits, '-')")
    rollout = _name(body, "rollout", _SUBDOMAIN_RE, 253, "a Kubernetes object name (lower-case, digits, '-', '.')")
    revision = _revision(body.get("revision"))
    trigger = body.get("trigger")
    if trigger not in TRIGGERS:
        raise BadNotification(f"field 'trigger' must be one of {', '.join(TRIGGERS)}, got {_show(trigger)}")
    run = body.get("analysisRun")
    if run in (None, ""):
        run = None
    elif not isinstance(run, str) or len(run) > 253 or not _SUBDOMAIN_RE.match(run):
        raise BadNotification(f"field 'analysisRun' must be an AnalysisRun name or null, got {_show(run)}")
    message = body.get("message")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE):
        raise BadNotification(f"field 'message' must be a string of at most {MAX_MESSAGE} characters")
    return Notification(namespace, rollout, revision, str(trigger), run, message or None,
                        _time(body.get("time")), envelope)


def _name(body: dict[str, Any], field: str, pattern: re.Pattern[str], limit: int, what: str) -> str:
    """A required name field."""
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise BadNotification(f"field {field!r} is required ({what}), got {_show(value)}")
    if len(value) > limit or not pattern.match(value):
        raise BadNotification(f"field {field!r} must be {what}, at most {limit} characters, got {_show(value)}")
    return value


def _revision(value: Any) -> int:
    """The rollout.argoproj.io/revision annotation: a positive integer, as a string (Argo) or a number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**10:
        return value
    if isinstance(value, str) and _REVISION_RE.match(value):
        return int(value)
    raise BadNotification("field 'revision' must be the rollout.argoproj.io/revision annotation, a positive "
                          f"integer, got {_show(value)}")


def _time(value: Any) -> str | None:
    """An RFC 3339 time, kept as sent; null when absent."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
        except ValueError:
            pass
    raise BadNotification(f"field 'time' must be an RFC 3339 timestamp, got {_show(value)}")


def _show(value: Any) -> str:
    """A value quoted for an error line (bounded)."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- incident ids


def check_pattern(pattern: str) -> str:
    """A `serve.incident_pattern` that names one incident per (namespace, rollout, revision)."""
    missing = [k for k in ("{namespace}", "{rollout}", "{revision}") if k not in pattern]
    if missing:
        raise ValueError(f"serve.incident_pattern {pattern!r} lacks {', '.join(missing)}: two aborts would share "
                         "one incident id")
    try:
        check_incident(pattern.format(namespace="ns", rollout="ro", revision=1))
    except (KeyError, IndexError, ValueError, UsageError) as e:
        raise ValueError(f"serve.incident_pattern {pattern!r} does not make a valid incident id: {e}") from e
    return pattern


def incident_id(n: Notification, pattern: str = DEFAULT_PATTERN) -> str:
    """`ARGO-<namespace>-<rollout>-r<revision>`; over 100 characters, the rollout part is cut and a hash keeps it unique."""
    made = pattern.format(namespace=n.namespace, rollout=n.rollout, revision=n.revision)
    if len(made) <= _MAX_ID:
        return check_incident(made)
    digest = hashlib.sha256(f"{n.namespace}/{n.rollout}/{n.revision}".encode()).hexdigest()[:10]
    cut = _MAX_ID - len(made) + len(n.rollout) - len(digest) - 1
    short = f"{n.rollout[:max(cut, 1)].rstrip('.-')}-{digest}"
    made = pattern.format(namespace=n.namespace, rollout=short, revision=n.revision)
    if len(made) > _MAX_ID:  # a namespace of 63 characters and a long pattern: hash the pair
        made = pattern.format(namespace=digest, rollout=n.rollout[:20].rstrip(".-"), revision=n.revision)
    return check_incident(made[:_MAX_ID])
