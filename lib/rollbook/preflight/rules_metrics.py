"""Rules over what the metrics measure and keep: dry runs, measurement history, SLO queries' canary filter."""

from __future__ import annotations

from rollbook.preflight import catalogue as c
from rollbook.preflight.model import Finding, finding
from rollbook.preflight.wiring import (
    DEFAULT_MEASUREMENTS_KEPT,
    Gate,
    Use,
    arg_refs,
    d,
    dry_run_entries,
    effective_count,
    error_limit,
    go_regex_matches,
    is_evidence,
    is_slo,
    provider,
    retention_limit,
)


def dry_run(gate: Gate) -> list[Finding]:
    """A metric matched by a dryRun entry never counts toward the run's phase (analysis.go dryRunSummary)."""
    out = []
    for use in gate.uses:
        entries = dry_run_entries(use)
        for _, m in use.metrics():
            name = str(m.get("name") or "")
            for path, pattern in entries:
                if not go_regex_matches(pattern, name):
                    continue
                evidence = is_evidence(m)
                what = ("MC's verdict can never abort the canary: the evidence gate is off" if evidence
                        else "an SLO regression it measures is promoted")
                owner = (use.namespace, use.object) if path.startswith("spec.dryRun") else (gate.namespace, gate.object)
                out.append(finding(
                    c.DRY_RUN, owner[0], owner[1], path,
                    f'Metric "{name}" runs in dry-run (`metricName: {pattern}`, a Go regular expression matched '
                    f"anywhere in the name): {what}. Step 2 shows its failures but they abort nothing.",
                    f"""
# {owner[1]}: remove the entry once the metric is trusted
{path.rsplit('[', 1)[0]}: []
""", severity="error" if evidence else "warn"))
    return out


def _needed(metric: dict[str, object]) -> int | None:
    """Measurements one streak of errors plus the counted ones leave (None: unbounded, an interval without count)."""
    count, limit = effective_count(metric), error_limit(metric)
    return None if count is None else count + (limit or 0)


def measurement_retention(gate: Gate) -> list[Finding]:
    """Argo keeps the last 10 measurements per metric unless measurementRetention says more (analysis.go)."""
    out = []
    for use in gate.uses:
        for _, m in use.metrics():
            name = str(m.get("name") or "")
            kept = retention_limit(use, name) or DEFAULT_MEASUREMENTS_KEPT
            needed = _needed(m)
            if needed is not None and needed <= kept:
                continue
            why = (f"measures every {m.get('interval')} with no count, for as long as the analysis runs" if needed is None
                   else f"can take {needed} measurements ({effective_count(m)} counted + {error_limit(m)} errors in a row)")
            out.append(finding(
                c.MEASUREMENT_RETENTION, use.namespace, use.object, "spec.measurementRetention",
                f'Metric "{name}" {why}, but Argo keeps only the last {kept}: the first failing measurements '
                "are trimmed before step 2 reads them.",
                f"""
# {use.kind} {use.template_name}
spec:
  measurementRetention:
  - metricName: {name}
    limit: {max(needed or 0, 2 * kept, 20)}
"""))
    return out


def _canary_args(use: Use) -> tuple[set[str], set[str]]:
    """(args that carry the canary's identity, args bound to the stable hash) in the Rollout's block."""
    canary, stable = set(), set()
    for arg in (a for a in use.block.get("args") or [] if isinstance(a, dict)):
        source = d(arg, "valueFrom")
        hash_of = source.get("podTemplateHashValue")
        if hash_of == "Latest" or str(d(source, "fieldRef").get("fieldPath") or "").startswith("spec.template"):
            canary.add(str(arg.get("name")))
        elif hash_of == "Stable":
            stable.add(str(arg.get("name")))
    return canary, stable


def slo_not_canary(gate: Gate) -> list[Finding]:
    """An SLO query must select the canary (its pod-template hash or release label), not the whole service."""
    out = []
    for use in gate.uses:
        canary, stable = _canary_args(use)
        for i, m in use.metrics():
            if not is_slo(m):
                continue
            query = str(provider(m)[1].get("query") or "")
            refs = set(arg_refs(query))
            if refs & canary:
                continue
            how = ("filters on the *stable* pod-template hash" if refs & stable
                   else "has no label matcher on the canary's pod-template hash or release label")
            out.append(finding(
                c.SLO_NOT_CANARY, use.namespace, use.object, f"spec.metrics[{i}].provider.prometheus.query",
                f'The query of metric "{m.get("name")}" {how} ({gate.object} passes '
                f"{', '.join(sorted(refs)) or 'no argument'} to it): at a 20 % canary weight a 5 % canary error rate "
                "reads as 1 %, so a regression passes the gate and step 2's canary-vs-stable comparison has no "
                "canary series.",
                f"""
# {use.kind} {use.template_name}
spec:
  args:
  - name: canary-hash
  metrics:
  - name: {m.get("name")}
    provider:
      prometheus:
        query: ...{{rollouts_pod_template_hash="{{{{args.canary-hash}}}}"}}...
# {gate.object}, {use.block_path}
args:
- name: canary-hash
  valueFrom:
    podTemplateHashValue: Latest
"""))
    return out
