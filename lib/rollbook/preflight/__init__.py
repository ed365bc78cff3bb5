"""Preflight: find what will break the playbook before the incident, not during it.

``run_preflight(...) -> Report`` reads the Rollouts in scope, their AnalysisTemplates and
ClusterAnalysisTemplates, Argo's notification ConfigMap and the identities' permissions, and applies every
rule in :mod:`rollbook.preflight.catalogue`. `rollbook preflight`, `runbooks/00-preflight.ipynb` and
`rollbook serve` call it; the rules are pure functions over raw objects (`rules_*` modules).
"""

from rollbook.preflight.catalogue import RULES
from rollbook.preflight.model import Finding, Report, Rule, Severity
from rollbook.preflight.render import markdown, show, table, text, to_json
from rollbook.preflight.run import DEFAULT_CONTROLLER_NAMESPACE, GATE_RULES, build_gates, run_preflight

__all__ = [
    "DEFAULT_CONTROLLER_NAMESPACE", "GATE_RULES", "RULES", "Finding", "Report", "Rule", "Severity", "build_gates",
    "markdown", "run_preflight", "show", "table", "text", "to_json",
]
