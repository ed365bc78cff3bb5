"""The notification body's validation and incident ids (rollbook.serve.notification), without HTTP."""

from __future__ import annotations

import base64
import json

import pytest

from rollbook.record import check_incident
from rollbook.serve import notification as n

BODY = {"namespace": "prod", "rollout": "api", "revision": "7", "trigger": "on-rollout-aborted",
        "analysisRun": "api-6d4f8b7c9-7-2", "message": "RolloutAborted: ...", "time": "2026-11-30T09:15:07Z"}


def test_flat_body_and_both_argo_events_envelopes_give_the_same_notification() -> None:
    flat = n.parse(json.dumps(BODY).encode())
    data = {"header": {"Authorization": ["*** Masked Auth Secret ***"]}, "body": BODY}
    wrapped = n.parse(json.dumps(data).encode())
    event = {"context": {"datacontenttype": "application/json"},
             "data": base64.b64encode(json.dumps(data).encode()).decode()}
    whole = n.parse(json.dumps(event).encode())
    object_data = n.parse(json.dumps({"context": {}, "data": data}).encode())
    assert (flat.envelope, wrapped.envelope, whole.envelope) == ("argo-notifications", "argo-events-body",
                                                                  "argo-events-event")
    strip = lambda x: {k: v for k, v in x.to_json().items() if k != "envelope"}  # noqa: E731
    assert strip(flat) == strip(wrapped) == strip(whole) == strip(object_data)
    assert flat.revision == 7 and "header" not in json.dumps(wrapped.to_json())  # the caller's header is dropped


@pytest.mark.parametrize(("field", "value"), [
    ("namespace", "a" * 64), ("namespace", "-prod"), ("rollout", "Api"), ("rollout", "a" * 254),
    ("revision", "07"), ("revision", True), ("revision", "1e3"), ("analysisRun", "Bad_Name"),
    ("message", "x" * (n.MAX_MESSAGE + 1)), ("trigger", None),
])
def test_each_field_is_checked(field: str, value: object) -> None:
    with pytest.raises(n.BadNotification, match=field):
        n.parse(json.dumps(BODY | {field: value}).encode())


def test_optional_fields_may_be_absent_or_null() -> None:
    got = n.parse(json.dumps({k: BODY[k] for k in ("namespace", "rollout", "revision", "trigger")}
                             | {"analysisRun": None, "message": ""}).encode())
    assert (got.analysis_run, got.message, got.time) == (None, None, None)
    assert n.parse(json.dumps(BODY | {"revision": 12}).encode()).revision == 12


def test_incident_ids_default_pattern_and_long_names_stay_unique_and_valid() -> None:
    base = n.parse(json.dumps(BODY).encode())
    assert n.incident_id(base) == "ARGO-prod-api-r7"
    assert n.incident_id(base, "INC-{rollout}.{namespace}.{revision}") == "INC-api.prod.7"
    long_a = n.Notification("a" * 63, "svc." + "b" * 200, 103, "on-rollout-aborted")
    long_b = n.Notification("a" * 63, "svc." + "b" * 199 + "c", 103, "on-rollout-aborted")
    ids = {n.incident_id(long_a), n.incident_id(long_b), n.incident_id(long_a)}
    assert len(ids) == 2 and all(check_incident(i) and len(i) <= 100 and i.endswith("-r103") for i in ids)


@pytest.mark.parametrize("pattern", ["ARGO-{namespace}-{rollout}", "INC/{namespace}/{rollout}/{revision}",
                                     "{namespace}-{rollout}-{revision}-{oops}"])
def test_a_pattern_that_cannot_name_one_incident_per_abort_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="incident_pattern"):
        n.check_pattern(pattern)
