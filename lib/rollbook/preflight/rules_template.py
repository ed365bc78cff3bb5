"""Rules over the templates a Rollout uses: the evidence metric against MC's contract, errors, TLS, secrets.

Each rule is a pure function ``Gate -> list[Finding]``. MC's verdict fields come from
../shared/docs/evidence-api.md ("Shapes", Verdict); Argo's behaviour from argoproj/argo-rollouts as cited.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from rollbook.preflight import catalogue as c
from rollbook.preflight.model import Finding, finding
from rollbook.preflight.wiring import (
    Gate,
    Use,
    arg_refs,
    as_int,
    d,
    effective_count,
    error_limit,
    is_evidence,
    items,
    provider,
    strings,
)

# evidence-api.md, Verdict: every field MC sends in the 200 the web provider stores
VERDICT_FIELDS = frozenset({"release_id", "service", "environment", "ok", "status", "reason", "missing", "invalid",
                            "policy", "evaluated_at", "details_url"})
WHOLE_BODY = frozenset({"", "{$}", "$", "{$.}"})
# analysis/analysis.go DefaultErrorRetryInterval: an errored measurement is retried every 10 s, whatever
# the metric's interval (the interval applies only after a measurement that did not error)
ERROR_RETRY_SECONDS = 10
# An MC or Prometheus restart, a node drain or a brief network partition takes a minute or two; a gate
# that aborts within that window aborts releases nobody judged bad.
MIN_TOLERATED_OUTAGE_SECONDS = 120
_FIELD_DOT = re.compile(r"\bresult\s*\.\s*([A-Za-z_]\w*)")
_FIELD_INDEX = re.compile(r"\bresult\s*\[\s*[\"']([^\"']+)[\"']\s*\]")
_WHOLE_RESULT = re.compile(r"\bresult\b(?!\s*[.\[])")
_SECRET_HEADER = re.compile(r"authorization|token|api[-_]?key|secret|password|cookie", re.I)
_SECRET_QUERY = re.compile(r"[?&](access_token|token|api_key|apikey|key|password)=(?!\{\{)", re.I)


def _host(settings: dict[str, object]) -> str:
    """scheme://host of a provider's URL: never its path or query (a query may carry a credential)."""
    url = urlsplit(str(settings.get("url") or settings.get("address") or ""))
    return f"{url.scheme}://{url.hostname}" if url.scheme and url.hostname else ""


def _where(use: Use, i: int, rest: str = "") -> str:
    """The path of a template metric's field."""
    return f"spec.metrics[{i}]{'.' + rest if rest else ''}"


def evidence_jsonpath(gate: Gate) -> list[Finding]:
    """The web provider stores only what jsonPath selects (argo-rollouts.md "Where the MC reason lives")."""
    out = []
    for use in gate.uses:
        for i, m in use.metrics():
            jp = str(provider(m)[1].get("jsonPath") or "")
            if is_evidence(m) and jp.replace(" ", "") not in WHOLE_BODY:
                out.append(finding(
                    c.EVIDENCE_JSONPATH, use.namespace, use.object, _where(use, i, "provider.web.jsonPath"),
                    f'Metric "{m.get("name")}" keeps only `{jp}` of MC\'s verdict: the AnalysisRun stores e.g. '
                    "`false`, never MC's `reason`, `missing` or `invalid`. Step 2 cannot say why the gate failed and "
                    "must ask MC live (and MC's answer may have changed by then).",
                    f"""
# {use.kind} {use.template_name}: keep MC's whole verdict, test its ok field
spec:
  metrics:
  - name: {m.get("name")}
    successCondition: result.ok == true
    provider:
      web:
        jsonPath: "{{$}}"
"""))
    return out


def _condition_problem(metric: dict[str, object]) -> str | None:
    """Why an evidence metric's conditions cannot follow MC's verdict, or None when they do."""
    jp = str(provider(metric)[1].get("jsonPath") or "").replace(" ", "")
    conditions = [str(metric.get(k) or "") for k in ("successCondition", "failureCondition")]
    if not any(conditions):
        return ("has neither successCondition nor failureCondition: Argo counts every measurement Successful "
                "(utils/evaluate/evaluate.go), so the gate passes releases MC rejects")
    if jp not in WHOLE_BODY:
        selected = re.fullmatch(r"\{\$\.([A-Za-z_]\w*)\}", jp)
        if selected and selected[1] not in VERDICT_FIELDS:
            return f"selects `{jp}`, a field MC never sends: every measurement sees nothing"
        return None  # evidence-jsonpath reports the lost reason; a scalar result is compared as is
    text = " ".join(conditions)
    fields = set(_FIELD_DOT.findall(text)) | set(_FIELD_INDEX.findall(text))
    unknown = sorted(fields - VERDICT_FIELDS)
    if unknown:
        return (f"reads `result.{unknown[0]}`, which MC never sends (its verdict has "
                f"{', '.join(sorted(VERDICT_FIELDS))}): the expression sees nil, so every release is judged the same")
    if _WHOLE_RESULT.search(text):
        return "compares the whole verdict object (`result`) to a value: it never matches, whatever MC says"
    if not fields & {"ok", "status"}:
        return (f"tests {', '.join(f'`{f}`' for f in sorted(fields))} but neither `ok` nor `status`: the gate does "
                "not follow MC's verdict (invalid or pending evidence can pass)")
    return None


def evidence_condition(gate: Gate) -> list[Finding]:
    """The evidence metric's conditions must read MC's verdict fields (evidence-api.md)."""
    out = []
    for use in gate.uses:
        for i, m in use.metrics():
            problem = _condition_problem(m) if is_evidence(m) else None
            if problem:
                key = "successCondition" if m.get("successCondition") or not m.get("failureCondition") else "failureCondition"
                out.append(finding(c.EVIDENCE_CONDITION, use.namespace, use.object, _where(use, i, key),
                                   f'Metric "{m.get("name")}" {problem}. Step 2\'s MC reason and the gate disagree.',
                                   f"""
# {use.kind} {use.template_name}
spec:
  metrics:
  - name: {m.get("name")}
    successCondition: result.ok == true
    provider:
      web:
        jsonPath: "{{$}}"
"""))
    return out


def evidence_failure_limit(gate: Gate) -> list[Finding]:
    """failured (n) > failureLimit: a limit >= the count means MC's `ok: false` can never fail the metric."""
    out = []
    for use in gate.uses:
        for i, m in use.metrics():
            count, limit = effective_count(m), as_int(m.get("failureLimit"))
            if is_evidence(m) and count is not None and limit is not None and limit >= count:
                out.append(finding(
                    c.EVIDENCE_FAILURE_LIMIT, use.namespace, use.object, _where(use, i, "failureLimit"),
                    f'Metric "{m.get("name")}" takes {count} measurement(s) and fails only after more than '
                    f"{limit} failures: MC's `ok: false` never fails the gate, the release is promoted.",
                    f"""
# {use.kind} {use.template_name}
spec:
  metrics:
  - name: {m.get("name")}
    failureLimit: 0
"""))
    return out


def error_budget(gate: Gate) -> list[Finding]:
    """(limit + 1) errors, 10 s apart: the outage of MC or Prometheus that aborts a good release."""
    out = []
    for use in gate.uses:
        for i, m in use.metrics():
            limit = error_limit(m)
            if limit is None or (limit + 1) * ERROR_RETRY_SECONDS >= MIN_TOLERATED_OUTAGE_SECONDS:
                continue
            seconds = (limit + 1) * ERROR_RETRY_SECONDS
            kind = provider(m)[0] or "its provider"
            set_to = MIN_TOLERATED_OUTAGE_SECONDS // ERROR_RETRY_SECONDS
            default = " (Argo's default)" if m.get("consecutiveErrorLimit") is None else ""
            out.append(finding(
                c.ERROR_LIMIT, use.namespace, use.object, _where(use, i, "consecutiveErrorLimit"),
                f'Metric "{m.get("name")}" ({kind}) aborts after {limit + 1} consecutive errors{default}; Argo '
                f"retries an errored measurement every {ERROR_RETRY_SECONDS} s whatever the interval "
                f"({m.get('interval') or 'none'}), so an outage of about {seconds} s aborts a release nobody judged "
                "bad. Step 2 then finds trigger `error` and no verdict to act on.",
                f"""
# {use.kind} {use.template_name}: {set_to + 1} errors x {ERROR_RETRY_SECONDS} s = {(set_to + 1) * ERROR_RETRY_SECONDS} s of outage before the gate aborts
spec:
  metrics:
  - name: {m.get("name")}
    consecutiveErrorLimit: {set_to}
  measurementRetention:          # keep the errors and the verdict (Argo keeps 10 measurements)
  - metricName: {m.get("name")}
    limit: {set_to + 1 + (effective_count(m) or 1)}
"""))
    return out


def tls_insecure(gate: Gate) -> list[Finding]:
    """`insecure: true` skips TLS verification (analysis_types.go WebMetric/PrometheusMetric.Insecure)."""
    out = []
    for use in gate.uses:
        for i, m in use.metrics():
            kind, settings = provider(m)
            if settings.get("insecure") is not True:
                continue
            evidence = is_evidence(m)
            what = ("the bearer token goes to whoever answers, and a forged `ok: true` passes the gate" if evidence
                    else "whoever answers decides the SLO verdict")
            out.append(finding(
                c.TLS_INSECURE, use.namespace, use.object, _where(use, i, f"provider.{kind}.insecure"),
                f'Metric "{m.get("name")}" calls {_host(settings) or kind} without '
                f"verifying its certificate: {what}. Step 2 cannot trust the stored verdict.",
                f"""
# {use.kind} {use.template_name}: verify TLS (mount the CA into the controller if MC uses a private one)
spec:
  metrics:
  - name: {m.get("name")}
    provider:
      {kind}:
        insecure: false
""", severity="error" if evidence else "warn"))
    return out


def _secret_fix(use: Use, arg: str) -> str:
    """The Secret-backed argument a header should use."""
    return f"""
# kubectl create secret generic mc-gate-token -n {use.namespace or '<namespace>'} --from-file=token=./mc-token
# {use.kind} {use.template_name}
spec:
  args:
  - name: {arg}
    valueFrom:
      secretKeyRef:
        name: mc-gate-token
        key: token
  metrics:
  - provider:
      web:
        headers:
        - key: Authorization
          value: "Bearer {{{{args.{arg}}}}}"
"""


_WHY = ("is readable by everyone who may read AnalysisTemplates and AnalysisRuns (the viewer role) and is copied "
        "into every AnalysisRun, which step 2 snapshots into the incident record")


def _literal_args(use: Use, refs: list[str]) -> list[tuple[str, str, str]]:
    """(namespace, object, field) of each literal value the referenced args resolve to."""
    found = []
    for name in refs:
        passed = use.block_arg(name)
        if passed and "value" in passed[1]:
            found.append((str(d(use.rollout, "metadata").get("namespace") or ""),
                          f"Rollout/{d(use.rollout, 'metadata').get('name')}",
                          f"{use.block_path}.args[{passed[0]}].value"))
            continue
        declared = use.template_arg(name)
        if not passed and declared and "value" in declared[1] and not d(declared[1], "valueFrom"):
            found.append((use.namespace, use.object, f"spec.args[{declared[0]}].value"))
    return found


def secret_literal(gate: Gate) -> list[Finding]:
    """Tokens only from a Secret: a literal header or an argument that resolves to a literal is an error."""
    out = []
    for use in gate.uses:
        for i, m in use.metrics():
            kind, settings = provider(m)
            if kind != "web":
                continue
            for j, h in enumerate(items(settings, "headers")):
                key, value = str(h.get("key") or ""), str(h.get("value") or "")
                if not (_SECRET_HEADER.search(key) or value.lower().startswith(("bearer ", "basic "))):
                    continue
                refs = arg_refs(value)
                places = _literal_args(use, refs) if refs else [
                    (use.namespace, use.object, _where(use, i, f"provider.web.headers[{j}].value"))]
                for ns, obj, path in places:
                    out.append(finding(
                        c.SECRET_LITERAL, ns, obj, path,
                        f'Header {key} of metric "{m.get("name")}" ({use.object}) is a literal value: the token '
                        f"{_WHY}.", _secret_fix(use, refs[0] if refs else "mc-token")))
            if _SECRET_QUERY.search(str(settings.get("url") or "")):
                out.append(finding(
                    c.SECRET_LITERAL, use.namespace, use.object, _where(use, i, "provider.web.url"),
                    f'The URL of metric "{m.get("name")}" carries a literal credential in its query string: it '
                    f"{_WHY}.", _secret_fix(use, "mc-token")))
    return out


def template_arg_unset(gate: Gate) -> list[Finding]:
    """Every ``{{args.X}}`` needs a value: MergeArgs/ResolveArgs refuse to create the run otherwise."""
    out = []
    for use in gate.uses:
        if use.template is None:
            continue
        declared = {str(a.get("name")): a for a in items(d(use.template, "spec"), "args")}
        used = list(dict.fromkeys(r for _, m in use.metrics() for text in strings(m) for r in arg_refs(text)))
        for name in used:
            arg = declared.get(name)
            has_value = arg is not None and ("value" in arg or bool(d(arg, "valueFrom")))
            if has_value or use.block_arg(name):
                continue
            why = "is not declared in spec.args" if arg is None else "has no value and the Rollout does not pass it"
            out.append(finding(
                c.TEMPLATE_ARG_UNSET, use.namespace, use.object, "spec.args",
                f"`{{{{args.{name}}}}}` {why} ({gate.object}, {use.block_path}): Argo refuses to create the "
                "AnalysisRun (utils/analysis/helpers.go MergeArgs, utils/template/template.go), so the analysis "
                "step never judges the release and step 2 finds no run.",
                f"""
# {gate.object}, {use.block_path}
args:
- name: {name}
  value: <value>          # or valueFrom: {{podTemplateHashValue: Latest}} / fieldRef
"""))
    return out
