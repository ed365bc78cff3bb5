"""Every preflight rule: id, default severity, the playbook step it protects, and what it checks.

The ids are public (JSON output, README "Preflight"): add rules, never rename one. A rule may report a
case at another severity than its default (e.g. ``tls-insecure`` is an error on the evidence metric and a
warning elsewhere); the README's table says which.
"""

from __future__ import annotations

from rollbook.preflight.model import Rule

EVIDENCE_JSONPATH = Rule("evidence-jsonpath", "error", "2",
                         "the evidence metric's jsonPath keeps less than MC's whole verdict, so the reason is lost")
EVIDENCE_CONDITION = Rule("evidence-condition", "error", "2",
                          "no success/failure condition, or one that reads a field MC does not send")
EVIDENCE_FAILURE_LIMIT = Rule("evidence-failure-limit", "error", "2",
                              "failureLimit at or above the measurements taken: MC's `ok: false` never fails the gate")
NO_EVIDENCE_GATE = Rule("no-evidence-gate", "warn", "2",
                        "the Rollout's analysis has no metric on MC's evidence-status endpoint")
ERROR_LIMIT = Rule("error-limit", "warn", "2",
                   "consecutiveErrorLimit lets a short MC/Prometheus outage abort a good release")
TLS_INSECURE = Rule("tls-insecure", "error", "2", "`insecure: true`: TLS verification off")
SECRET_LITERAL = Rule("secret-literal", "error", "2",
                      "a token or Authorization header written literally instead of from a Secret")
TEMPLATE_MISSING = Rule("template-missing", "error", "2", "a template the Rollout names does not exist")
TEMPLATE_ARG_UNSET = Rule("template-arg-unset", "error", "2",
                          "a template uses `{{args.X}}` that neither it nor the Rollout sets")
RELEASE_ID_SOURCE = Rule("release-id-source", "error", "3",
                         "the release id MC is asked about does not come from the pod template's label")
RELEASE_ID_PATH = Rule("release-id-path", "error", "3",
                       "a fieldRef path Argo cannot resolve (`labels['k']` outside metadata, a key with dots)")
RELEASE_LABEL_MISSING = Rule("release-label-missing", "error", "3",
                             "the pod template lacks the label the release argument reads")
ANALYSISRUN_LABEL = Rule("analysisrun-label", "warn", "2",
                         "the runs get no `rollout=<name>` label (the playbook's selector finds nothing)")
HISTORY_LIMIT = Rule("history-limit", "warn", "2,5",
                     "unsuccessfulRunHistoryLimit garbage-collects the failed run before a human reads it")
ABORT_SCALEDOWN = Rule("abort-scaledown", "warn", "2,3",
                       "the canary pods (their labels, their logs) are removed at once or soon after the abort")
SLO_NOT_CANARY = Rule("slo-not-canary", "warn", "2",
                      "an SLO query not filtered to the canary: the regression is diluted by stable")
DRY_RUN = Rule("dry-run", "warn", "2", "a dry-run metric can never abort the canary")
MEASUREMENT_RETENTION = Rule("measurement-retention", "warn", "2",
                             "more measurements than Argo keeps (10 by default) and no measurementRetention")
NOTIFICATION_SUBSCRIPTION = Rule("notification-subscription", "warn", "start",
                                 "the Rollout is not subscribed to rollbook's on-rollout-aborted notification")
NOTIFICATION_WEBHOOK = Rule("notification-webhook", "warn", "start",
                            "rollbook's webhook service or trigger is missing, or retries give up within seconds")
PERMISSION = Rule("permission", "error", "1,2,3,4,5,6",
                  "an identity lacks a permission a step needs (SelfSubjectAccessReview per permissions.py row)")
NOTHING_TO_CHECK = Rule("nothing-to-check", "info", "-", "no Rollout (or no analysis) in scope")

RULES: dict[str, Rule] = {r.id: r for r in (
    EVIDENCE_JSONPATH, EVIDENCE_CONDITION, EVIDENCE_FAILURE_LIMIT, NO_EVIDENCE_GATE, ERROR_LIMIT, TLS_INSECURE,
    SECRET_LITERAL, TEMPLATE_MISSING, TEMPLATE_ARG_UNSET, RELEASE_ID_SOURCE, RELEASE_ID_PATH, RELEASE_LABEL_MISSING,
    ANALYSISRUN_LABEL, HISTORY_LIMIT, ABORT_SCALEDOWN, SLO_NOT_CANARY, DRY_RUN, MEASUREMENT_RETENTION,
    NOTIFICATION_SUBSCRIPTION, NOTIFICATION_WEBHOOK, PERMISSION, NOTHING_TO_CHECK,
)}
