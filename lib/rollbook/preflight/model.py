"""Findings, the catalogue of rules, and the report `rollbook preflight` returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warn", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warn", "info")


@dataclass(frozen=True)
class Rule:
    """One check: its stable id, default severity, the playbook step(s) it protects and a title."""

    id: str
    severity: Severity
    step: str
    title: str


@dataclass(frozen=True)
class Finding:
    """One problem on one object's field: what breaks in which step, and the YAML that fixes it.

    ``step`` names the playbook step(s) that break ("2", "1,2,3,5,6") or ``start`` (the automatic start
    of an incident by Argo's notification, before step 1).
    """

    id: str
    severity: Severity
    namespace: str
    object: str  # Kind/name, e.g. AnalysisTemplate/mc-evidence-ok; Context/<name> for an identity
    field: str  # path inside the object, e.g. spec.metrics[0].provider.web.jsonPath
    step: str
    message: str
    fix: str  # a YAML snippet to apply (or the command to run)

    def to_dict(self) -> dict[str, str]:
        """The finding as the JSON output carries it (every documented field, always present)."""
        return asdict(self)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Two rules reaching one template through two Rollouts report it once."""
        return (self.id, self.namespace, self.object, self.field)


def finding(rule: Rule, namespace: str, obj: str, path: str, message: str, fix: str,
            *, severity: Severity | None = None, step: str | None = None) -> Finding:
    """A finding of ``rule`` (its severity and step unless the case says otherwise)."""
    return Finding(rule.id, severity or rule.severity, namespace, obj, path, step or rule.step, message,
                   fix.strip("\n") + "\n")


@dataclass(frozen=True)
class Report:
    """What preflight found, and what it looked at; ``exit_code`` 1 when any finding is an error."""

    findings: tuple[Finding, ...]
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    rollouts: tuple[str, ...] = ()  # namespace/name of every Rollout checked
    identities: dict[str, str] = field(default_factory=dict)  # context -> viewer|operator

    @property
    def exit_code(self) -> int:
        """0 clean (warnings and info allowed), 1 when any finding is an error."""
        return 1 if any(f.severity == "error" for f in self.findings) else 0

    @property
    def counts(self) -> dict[str, int]:
        """Findings per severity (every severity present, zero included)."""
        seen = Counter(f.severity for f in self.findings)
        return {s: seen.get(s, 0) for s in SEVERITIES}

    def by_id(self, rule_id: str) -> list[Finding]:
        """The findings of one rule."""
        return [f for f in self.findings if f.id == rule_id]

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON (README, "Preflight"): ``findings`` plus what was checked."""
        return {"findings": [f.to_dict() for f in self.findings], "summary": self.counts,
                "checked": {"context": self.context, "namespaces": list(self.namespaces),
                            "rollouts": list(self.rollouts), "identities": dict(self.identities)}}

    def _repr_markdown_(self) -> str:
        return markdown(self)


# The notebook's view of a report lives here, not in render.py, so that Report can show itself without
# importing render (which imports this module).
def headline(report: Report) -> str:
    """One line: the verdict, the counts, what was checked."""
    n = report.counts
    verdict = "the playbook will break" if n["error"] else "clean" if not n["warn"] else "clean, with warnings"
    where = ", ".join(report.namespaces) or "every namespace"
    return (f"rollbook preflight: {verdict} — {n['error']} error(s), {n['warn']} warning(s), {n['info']} info; "
            f"{len(report.rollouts)} Rollout(s) in {where} (context {report.context or '(current)'})")


def _where(f: Finding) -> str:
    return "/".join(p for p in (f.namespace, f.object) if p)


def markdown(report: Report) -> str:
    """The notebook view: the headline, then each finding with its fix as a YAML block."""
    out = [f"**{headline(report)}**", ""]
    for f in report.findings:
        out += [f"- **{f.severity}** `{f.id}` — `{_where(f)}` `{f.field}` (step {f.step}): {f.message}", "",
                "  ```yaml", *[f"  {ln}" for ln in f.fix.rstrip("\n").splitlines()], "  ```", ""]
    return "\n".join(out)
