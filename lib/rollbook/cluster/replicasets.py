"""A rollout's ReplicaSets: health, stable/canary/revision tags, pods grouped under them, images."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rollbook.cluster.fields import _d, _int, owner_uids, pod_template_hash, revision_of, strategy_of
from rollbook.cluster.models import (
    ImageInfo,
    PodInfo,
    ReplicaSetInfo,
    ReplicaSetStatus,
)
from rollbook.cluster.pods import build_pod


def replicaset_health(rs: Mapping[str, Any]) -> ReplicaSetStatus:
    """Healthy, Progressing, ScaledDown or ReplicaFailure (getReplicaSetHealth)."""
    spec, status = _d(rs, "spec"), _d(rs, "status")
    wanted = spec.get("replicas")
    if _int(_d(rs, "metadata").get("generation")) > _int(status.get("observedGeneration")):
        return "Progressing"
    failure = next((c for c in status.get("conditions") or [] if c.get("type") == "ReplicaFailure"), None)
    if failure is not None and failure.get("status") == "True":
        return "ReplicaFailure"
    if wanted is not None and _int(status.get("availableReplicas")) < _int(wanted):
        return "Progressing"
    if wanted is not None and _int(wanted) == 0:
        return "ScaledDown"
    return "Healthy"


def _tags(rollout: Mapping[str, Any], rs_hash: str | None) -> dict[str, bool]:
    """stable/canary/active/preview/ping/pong flags of one ReplicaSet hash (GetReplicaSetInfo)."""
    status = _d(rollout, "status")
    tags = dict.fromkeys(("stable", "canary", "active", "preview", "ping", "pong"), False)
    canary_spec = _d(rollout, "spec", "strategy", "canary")
    strategy = strategy_of(rollout)
    if strategy == "Canary":
        pingpong = bool(canary_spec.get("pingPong"))
        stable_is_ping = _d(status, "canary").get("stablePingPong") == "ping"
        if status.get("stableRS") == rs_hash:
            tags.update(stable=True, ping=pingpong and stable_is_ping, pong=pingpong and not stable_is_ping)
        elif status.get("currentPodHash") == rs_hash:
            tags.update(canary=True, ping=pingpong and not stable_is_ping, pong=pingpong and stable_is_ping)
    elif strategy == "BlueGreen":
        bg = _d(status, "blueGreen")
        tags["stable"] = status.get("stableRS") == rs_hash
        tags["active"] = bg.get("activeSelector") == rs_hash
        tags["preview"] = not tags["active"] and bg.get("previewSelector") == rs_hash
    return tags


def build_replicaset(rollout: Mapping[str, Any], rs: Mapping[str, Any], pods: Iterable[PodInfo]) -> ReplicaSetInfo:
    """A ReplicaSetInfo with its tags and the given pods (already linked to it)."""
    meta, spec, status = _d(rs, "metadata"), _d(rs, "spec"), _d(rs, "status")
    rs_hash = pod_template_hash(rs)
    template = _d(spec, "template")
    containers = _d(template, "spec").get("containers") or []
    ordered = sorted(pods, key=lambda p: (p.creation_timestamp or "", p.name))
    return ReplicaSetInfo(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        revision=revision_of(rs),
        pod_template_hash=rs_hash,
        status=replicaset_health(rs),
        desired=_int(spec.get("replicas")),
        replicas=_int(status.get("replicas")),
        available=_int(status.get("availableReplicas")),
        images=tuple(str(c.get("image", "")) for c in containers),
        template_labels=dict(_d(template, "metadata").get("labels") or {}),
        template=dict(template),
        creation_timestamp=meta.get("creationTimestamp"),
        pods=tuple(ordered),
        raw=dict(rs),
        **_tags(rollout, rs_hash),
    )


def build_replicasets(
    rollout: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> tuple[ReplicaSetInfo, ...]:
    """The rollout's ReplicaSets (linked by owner UID), highest revision first, with their pods."""
    uid = _d(rollout, "metadata").get("uid")
    owned = [rs for rs in replicasets if uid and uid in owner_uids(rs)]
    rs_uids = {_d(rs, "metadata").get("uid") for rs in owned}
    by_rs: dict[str, list[PodInfo]] = {}
    for pod in pods:
        owner = next((u for u in owner_uids(pod) if u in rs_uids), None)
        if owner is not None:
            by_rs.setdefault(owner, []).append(build_pod(pod))
    infos = [build_replicaset(rollout, rs, by_rs.get(str(_d(rs, "metadata").get("uid")), [])) for rs in owned]
    # upstream sorts by revision (desc) then name; its creation-time branch has no effect
    return tuple(sorted(infos, key=lambda r: (-r.revision, r.name)))


def images_of(replicasets: Iterable[ReplicaSetInfo]) -> tuple[ImageInfo, ...]:
    """Images of ReplicaSets with replicas, tags merged as the plugin does, sorted by image."""
    images: list[ImageInfo] = []
    for rs in replicasets:
        if rs.replicas <= 0:
            continue
        for image in rs.images:
            existing = next((i for i, img in enumerate(images) if img.image == image), None)
            if existing is None:
                images.append(ImageInfo(image, rs.tags))  # a first sighting keeps insertion order
            else:
                merged = tuple(sorted(set(images[existing].tags) | set(rs.tags)))
                images[existing] = ImageInfo(image, merged)
            images.sort(key=lambda i: i.image)
    return tuple(images)
