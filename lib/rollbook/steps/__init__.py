"""What the step notebooks call: one module per playbook step, plus the shared core.

Notebooks hold narrative, parameters and calls; every decision is made here, where it is tested.
"""

from rollbook import diagnosis as dx
from rollbook.steps import closeout, confirm, escalate, identity, inspect, remediate, slo_view, snapshot
from rollbook.steps.core import Incident, Outcome, open_incident, table

__all__ = ["Incident", "Outcome", "closeout", "confirm", "dx", "escalate", "identity", "inspect", "open_incident",
           "remediate", "slo_view", "snapshot", "table"]
