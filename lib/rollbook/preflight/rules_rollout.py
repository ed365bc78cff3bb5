"""Rules over the Rollout's side of the gate: templates it names, the release id it passes, run labels,
history limits and what happens to the canary pods after an abort."""

from __future__ import annotations

import re

from rollbook.preflight import catalogue as c
from rollbook.preflight.model import Finding, Severity, finding
from rollbook.preflight.wiring import Gate, Use, analysis_blocks, as_int, d, is_evidence, release_arg

# utils/defaults/defaults.go: DefaultAnalysisRunUnsuccessfulHistoryLimit = 5, DefaultAbortScaleDownDelaySeconds = 30
DEFAULT_UNSUCCESSFUL_RUNS = 5
DEFAULT_ABORT_DELAY_SECONDS = 30
# Step 5 tells a rollback loop from a first failure by the failed runs of one revision (the run, its `.1`
# and `.2` retries): fewer kept runs than that and the loop is invisible.
MIN_UNSUCCESSFUL_RUNS = 3
# A page is acknowledged and the runbook opened within about ten minutes; canary pods should outlive that.
MIN_ABORT_DELAY_SECONDS = 600
_POD_LABELS = "spec.template.metadata.labels"


def template_missing(gate: Gate) -> list[Finding]:
    """A template the Rollout names must exist: Argo cannot create the run without it."""
    out = []
    for use in gate.uses:
        path = f"{use.block_path}.templates[{use.ref_index}].templateName"
        scope = "cluster-wide" if use.cluster_scope else f'in namespace "{gate.namespace}"'
        if use.fetched.absent:
            other = "AnalysisTemplate in the namespace" if use.cluster_scope else "ClusterAnalysisTemplate"
            out.append(finding(
                c.TEMPLATE_MISSING, gate.namespace, gate.object, path,
                f"{use.kind} {use.template_name!r} does not exist {scope}: the analysis step cannot create its "
                "AnalysisRun, so the release is never judged and step 2 finds no run. (`kubectl argo rollouts lint` "
                f"does not check templates.) If it is a{'n' if use.cluster_scope else ''} {other}, fix clusterScope.",
                f"""
# kubectl apply -n {gate.namespace} -f {use.template_name}.yaml     (e.g. examples/ in the rollbook repo)
# or point the reference at the template that exists:
{path.rsplit('.', 1)[0]}:
  templateName: {use.template_name}
  clusterScope: {str(not use.cluster_scope).lower()}
"""))
        elif use.fetched.problem:
            out.append(finding(
                c.TEMPLATE_MISSING, gate.namespace, gate.object, path,
                f"{use.kind} {use.template_name!r} {scope} could not be read ({use.fetched.problem}); its rules were "
                "not checked.", "# grant get on analysistemplates / clusteranalysistemplates (see permissions.py)",
                severity="info"))
    return out


def no_evidence_gate(gate: Gate) -> list[Finding]:
    """The playbook is about MC's gate: a Rollout without it (or without analysis) is said so."""
    if not analysis_blocks(gate.rollout):
        return [finding(c.NOTHING_TO_CHECK, gate.namespace, gate.object, "spec.strategy",
                        "This Rollout runs no analysis: no gate can abort it, so the playbook does not apply.",
                        "# nothing to fix unless this Rollout should be gated (see examples/rollout.yaml)")]
    readable = [u for u in gate.uses if u.template is not None]
    if len(readable) < len(gate.uses) or any(is_evidence(m) for u in readable for _, m in u.metrics()):
        return []
    return [finding(c.NO_EVIDENCE_GATE, gate.namespace, gate.object, analysis_blocks(gate.rollout)[0][0],
                    "None of the templates this Rollout uses calls MC's /evidence-status endpoint: releases are "
                    "promoted without MC's evidence verdict, and step 2 has no evidence metric to read.",
                    f"""
# add the evidence template to the analysis step (examples/analysistemplate-mc-evidence-ok.yaml)
templates:
- templateName: mc-evidence-ok
args:
- name: release-id
  valueFrom:
    fieldRef:
      fieldPath: {_POD_LABELS}.release-id
""")]


def _label_from_path(path: str) -> tuple[str | None, str | None]:
    """(label key, why Argo cannot resolve the path) for a fieldRef under spec.template's labels.

    utils/analysis/factory.go: a path starting with ``metadata`` is the Kubernetes field path of the
    Rollout object itself; any other path (``extractValueFromRollout``) is split at ``.``, ``[`` and ``]``
    and walked through the Rollout's JSON, with quotes kept: ``labels['release-id']`` looks up the key
    ``'release-id'`` and fails, and a key with dots can never be reached. Only ``...labels.<key>`` works
    (docs/features/analysis.md uses ``spec.template.metadata.labels.version``).
    """
    rest = path[len(_POD_LABELS):]
    bracket = re.fullmatch(r"\[\s*['\"]([^'\"]+)['\"]\s*\]", rest)
    if bracket:
        return bracket[1], (f"Argo splits `{path}` at `.`, `[` and `]` and keeps the quotes, so it looks up the "
                            f"label `'{bracket[1]}'` (quotes included) and fails: the AnalysisRun is never created")
    if rest.startswith(".") and rest[1:] and not re.search(r"[.\[\]]", rest[1:]):
        return rest[1:], None
    key = rest.lstrip(".")
    return key or None, f"Argo cannot resolve `{path}` (a label key with `.`, `[` or `]` cannot be named in it)"


def _fix_release(gate: Gate, use: Use, index: int | None, arg: str, key: str) -> str:
    """The analysis argument (and, when missing, the pod-template label) that make step 3 work."""
    plain = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else "release-id"
    note = "" if plain == key else f"   # same value as {key}; a key with dots cannot be read by Argo"
    where = f"{use.block_path}.args[{index}]" if index is not None else f"{use.block_path}.args"
    label = "" if gate.pod_labels and plain in gate.pod_labels else f"""
  template:            # {gate.pod_labels_object or gate.object}
    metadata:
      labels:
        {plain}: <release id>{note}"""
    return f"""
# {gate.object}: the release id MC is asked about is the pod template's label ({where})
spec:{label}
  strategy:            # in {use.block_path}
    ...
        args:
        - name: {arg}
          valueFrom:
            fieldRef:
              fieldPath: {_POD_LABELS}.{plain}
"""


def release_id(gate: Gate) -> list[Finding]:
    """The evidence metric's release must be the pod template's label, passed by a path Argo resolves."""
    out: list[Finding] = []
    for use in gate.uses:
        for i, m in use.metrics():
            if not is_evidence(m):
                continue
            arg = release_arg(m)
            if arg is None:
                out.append(finding(
                    c.RELEASE_ID_SOURCE, use.namespace, use.object, f"spec.metrics[{i}].provider.web.url",
                    f'Metric "{m.get("name")}" asks MC about a release written into its URL: every canary is judged '
                    "as that release, and step 3 cannot match it to the canary's pods.",
                    _fix_release(gate, use, None, "release-id", "release-id")))
                continue
            out += _release_arg_findings(gate, use, arg)
    return out


def _release_arg_findings(gate: Gate, use: Use, arg: str) -> list[Finding]:
    """What is wrong with how the Rollout passes one release argument."""
    passed = use.block_arg(arg)
    base = f"The evidence metric's release argument `{arg}` ({use.object})"
    if passed is None:
        declared = use.template_arg(arg)
        if declared and "value" in declared[1]:
            return [finding(c.RELEASE_ID_SOURCE, use.namespace, use.object, f"spec.args[{declared[0]}].value",
                            f"{base} falls back to the template's literal {declared[1]['value']!r}: every canary "
                            "is judged as that release.", _fix_release(gate, use, None, arg, "release-id"))]
        return []  # unset: template-arg-unset reports it
    index, spec = passed
    path = f"{use.block_path}.args[{index}]"
    field_path = str(d(spec, "valueFrom", "fieldRef").get("fieldPath") or "")
    if "value" in spec or not d(spec, "valueFrom"):
        why = f"is the literal {spec.get('value')!r}"
    elif d(spec, "valueFrom").get("podTemplateHashValue"):
        why = "is a pod-template hash, not a release id"
    elif field_path.startswith("metadata"):
        why = (f"reads `{field_path}` of the Rollout object itself, which CI does not change with the pod "
               "template: MC judges a stale release id")
    elif not field_path.startswith(_POD_LABELS):
        why = f"reads `{field_path}`, which is not a pod-template label"
    else:
        return _pod_label_findings(gate, use, arg, index, field_path)
    key = re.search(r"labels(?:\[['\"]([^'\"]+)|\.(\S+))", field_path)
    return [finding(c.RELEASE_ID_SOURCE, gate.namespace, gate.object, f"{path}.{'valueFrom' if d(spec, 'valueFrom') else 'value'}",
                    f"{base} {why}. Step 3 cannot confirm that the release MC judged is the canary's.",
                    _fix_release(gate, use, index, arg, (key[1] or key[2]) if key else "release-id"))]


def _pod_label_findings(gate: Gate, use: Use, arg: str, index: int, field_path: str) -> list[Finding]:
    """A spec.template label path: resolvable by Argo, and the label present in the pod template."""
    key, unresolvable = _label_from_path(field_path)
    path = f"{use.block_path}.args[{index}].valueFrom.fieldRef.fieldPath"
    if unresolvable:
        return [finding(c.RELEASE_ID_PATH, gate.namespace, gate.object, path,
                        f"{unresolvable} (utils/analysis/factory.go extractValueFromRollout). The release is never judged: "
                        "step 2 finds no run of it, step 3 no release id MC was asked about.", _fix_release(gate, use, index, arg, key or "release-id"))]
    if key is None or gate.pod_labels is None or key in gate.pod_labels:
        return []
    return [finding(c.RELEASE_LABEL_MISSING, gate.namespace, gate.pod_labels_object or gate.object, _POD_LABELS,
                    f"The pod template has no label `{key}`, which the release argument `{arg}` reads: Argo cannot "
                    "resolve it, and step 3 has no release id on the canary's pods to validate.",
                    _fix_release(gate, use, index, arg, key))]


def analysisrun_label(gate: Gate) -> list[Finding]:
    """Runs carry `rollout=<name>` only from the analysis block's analysisRunMetadata or the selector."""
    out = []
    selector = {str(k): str(v) for k, v in d(gate.rollout, "spec", "selector", "matchLabels").items()}
    misplaced = bool(d(gate.rollout, "spec", "strategy", "canary", "analysisRunMetadata"))
    for path, block in analysis_blocks(gate.rollout):
        labels = selector | {str(k): str(v) for k, v in d(block, "analysisRunMetadata", "labels").items()}
        if labels.get("rollout") == gate.name or not block.get("templates"):
            continue
        note = (" `spec.strategy.canary.analysisRunMetadata` is not a field of the canary strategy (Argo reads it "
                "per analysis block, types.go RolloutAnalysis), so it is dropped." if misplaced else "")
        out.append(finding(
            c.ANALYSISRUN_LABEL, gate.namespace, gate.object, f"{path}.analysisRunMetadata.labels.rollout",
            f"The runs of {path} get no `rollout={gate.name}` label: the playbook's "
            f"`kubectl get analysisrun -n {gate.namespace} -l rollout={gate.name}` lists nothing (or another "
            f"Rollout's runs).{note} rollbook finds runs by owner and pod hash; a human following the playbook does not.",
            f"""
# {gate.object}
{path}:
  analysisRunMetadata:
    labels:
      rollout: {gate.name}
"""))
    return out


def history_limit(gate: Gate) -> list[Finding]:
    """spec.analysis.unsuccessfulRunHistoryLimit (default 5): 0 deletes the failed run at once."""
    if not analysis_blocks(gate.rollout):
        return []
    raw = d(gate.rollout, "spec", "analysis").get("unsuccessfulRunHistoryLimit")
    limit = DEFAULT_UNSUCCESSFUL_RUNS if raw is None else as_int(raw)
    if limit is None or limit >= MIN_UNSUCCESSFUL_RUNS:
        return []
    sev: Severity
    if limit <= 0:
        sev, step, what = "error", "2", ("the failed AnalysisRun is garbage-collected right after the abort: step 2 "
                                         "has no run, no measurements and no MC reason to read")
    else:
        sev, step, what = "warn", "2,5", (f"only {limit} failed run(s) are kept per Rollout: after a retry the first "
                                          "failure is gone, and step 5 cannot see a rollback loop")
    return [finding(c.HISTORY_LIMIT, gate.namespace, gate.object, "spec.analysis.unsuccessfulRunHistoryLimit",
                    f"unsuccessfulRunHistoryLimit is {limit}: {what}.", f"""
# {gate.object}
spec:
  analysis:
    unsuccessfulRunHistoryLimit: {DEFAULT_UNSUCCESSFUL_RUNS}
    successfulRunHistoryLimit: {DEFAULT_UNSUCCESSFUL_RUNS}
""", severity=sev, step=step)]


def abort_scaledown(gate: Gate) -> list[Finding]:
    """After an abort Argo removes the canary pods: at once (basic canary) or after the delay (default 30 s)."""
    strategy = d(gate.rollout, "spec", "strategy")
    name = "blueGreen" if strategy.get("blueGreen") else "canary"
    settings = d(strategy, name)
    if not settings or not analysis_blocks(gate.rollout):
        return []
    path = f"spec.strategy.{name}.abortScaleDownDelaySeconds"
    if name == "canary" and not settings.get("trafficRouting"):
        # defaults.go GetAbortScaleDownDelaySecondsOrDefault: the delay applies only with traffic routing
        return [finding(c.ABORT_SCALEDOWN, gate.namespace, gate.object, "spec.strategy.canary.trafficRouting",
                        "A basic canary (no trafficRouting) is scaled down the moment it aborts "
                        "(abortScaleDownDelaySeconds does not apply): step 3 reads the release id from the canary "
                        "ReplicaSet's template instead of live pods, and the canary pods' logs are gone for step 2.",
                        "# keep canary logs in your log store; with trafficRouting, abortScaleDownDelaySeconds "
                        "keeps the pods", severity="info")]
    raw = settings.get("abortScaleDownDelaySeconds")
    delay = DEFAULT_ABORT_DELAY_SECONDS if raw is None else as_int(raw)
    if delay is None or delay == 0 or delay >= MIN_ABORT_DELAY_SECONDS:
        return []  # 0 means never scaled down (types.go): the pods stay for the human
    default = " (Argo's default)" if raw is None else ""
    return [finding(c.ABORT_SCALEDOWN, gate.namespace, gate.object, path,
                    f"The canary pods are scaled down {delay} s after an abort{default}, before a paged human opens "
                    "the runbook: step 3 loses the live pods' release label (it falls back to the ReplicaSet "
                    "template) and step 2 their logs.",
                    f"""
# {gate.object}: keep the aborted canary's pods for the on-call (traffic is already back on stable)
spec:
  strategy:
    {name}:
      abortScaleDownDelaySeconds: {MIN_ABORT_DELAY_SECONDS}
""")]
