"""Whether an abort's rollback is complete, still under way, or stuck — and a canary kept on purpose.

Argo scales the aborted canary down at once (basic canary) or after `abortScaleDownDelaySeconds` (traffic
routing, default 30 s); an explicit 0 means it is never scaled down (rollout/replicaset.go
`shouldDelayScaleDownOnAbort`: the user "wishes to leave canary/preview up indefinitely"). Traffic is
still all on stable, so a live canary at weight 0 with that setting is a finished rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollbook.cluster.models import PodInfo, RolloutView

KEEP_SETTING = "spec.strategy.canary.abortScaleDownDelaySeconds: 0"


@dataclass(frozen=True)
class KeptCanary:
    """The aborted canary ReplicaSet Argo leaves up by configuration (traffic weight 0)."""

    replicaset: str
    revision: int | None
    available: int
    desired: int
    setting: str

    def sentence(self) -> str:
        """What it is, why it is there, and what removes it."""
        return (f"The canary ReplicaSet {self.replicaset} (revision {self.revision}) keeps {self.available} "
                f"Ready pod(s) at traffic weight 0 on purpose: `{self.setting}` with traffic routing tells Argo "
                "never to scale the canary down after an abort. It serves no traffic; an `undo` (or reverting "
                "the spec) removes it.")

    def to_json(self) -> dict[str, Any]:
        return {"replicaset": self.replicaset, "revision": self.revision, "available": self.available,
                "desired": self.desired, "setting": self.setting}


def kept_canary(view: RolloutView) -> KeptCanary | None:
    """The canary Argo keeps after the abort by configuration, when that is what is live; else None."""
    canary, stable = view.canary_rs, view.stable_rs
    if not view.aborted or canary is None or stable is None or canary.uid == stable.uid:
        return None
    if canary.available <= 0 and canary.desired <= 0:
        return None
    spec = ((view.raw.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    delay = spec.get("abortScaleDownDelaySeconds")
    if not spec.get("trafficRouting") or delay is None or str(delay) != "0":
        return None
    if view.actual_weight:  # traffic still reaches the canary: not a finished rollback
        return None
    return KeptCanary(canary.name, canary.revision, canary.available, canary.desired, KEEP_SETTING)


def rollback_complete(view: RolloutView) -> tuple[bool, list[str]]:
    """Traffic back on stable: weight 0 and the canary scaled down (or kept on purpose), stable fully available."""
    problems = []
    canary, stable = view.canary_rs, view.stable_rs
    if view.set_weight not in (None, 0) and view.aborted:
        problems.append(f"canary weight is still {view.set_weight}")
    if canary is not None and stable is not None and canary.uid != stable.uid and canary.available > 0 \
            and kept_canary(view) is None:
        problems.append(f"canary ReplicaSet {canary.name} still has {canary.available} available pod(s)")
    if stable is None:
        problems.append("no stable ReplicaSet found")
    elif stable.available < stable.desired or stable.desired == 0:
        problems.append(f"stable ReplicaSet {stable.name} has {stable.available}/{stable.desired} available")
    return not problems, problems


STARTING_REASONS = ("ContainerCreating", "PodInitializing")


def pod_starting(pod: PodInfo) -> bool:
    """Not Ready only because it is still starting: no restarts, waiting only to be created (or Pending)."""
    if pod.is_ready or pod.restarts:
        return False
    waiting = [c.reason for c in pod.containers if c.state == "waiting"]
    if waiting:
        return all(r in STARTING_REASONS for r in waiting)
    return pod.phase == "Pending" and not any(c.state == "terminated" for c in pod.containers)


def rollback_progressing(view: RolloutView) -> bool:
    """Whether waiting can help: the canary still has pods to scale down, or stable pods are still starting.

    Stable pods that fail (restarts, CrashLoopBackOff, ImagePullBackOff) will not fix themselves: no wait;
    a canary kept by `abortScaleDownDelaySeconds: 0` is never scaled down: no wait for it either."""
    canary, stable = view.canary_rs, view.stable_rs
    if canary is not None and stable is not None and canary.uid != stable.uid and canary.available > 0 \
            and kept_canary(view) is None:
        return True
    if stable is None:
        return False
    pods = stable.pods
    failing = [p for p in pods if not p.is_ready and not pod_starting(p)]
    if failing:
        return False
    return any(pod_starting(p) for p in pods) or stable.available < stable.desired
