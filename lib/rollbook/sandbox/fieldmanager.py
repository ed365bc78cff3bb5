"""Field ownership (``metadata.managedFields``) and server-side apply, as the real API server keeps them.

Every write through the API names a field manager (``fieldManager``, else the client's User-Agent).
Updates take ownership of the fields they change; an apply owns exactly the fields its configuration
sets: applying again without a field removes it (unless another manager owns it too), and applying a
value over a field another manager owns is a 409 conflict unless ``force=true``.

Hand-written because no Python package implements Kubernetes' structured-merge-diff. Simplified where
the sandbox can afford it: lists are atomic (the real server merges some by key, e.g. containers by
name), and ownership is tracked on leaves.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from rollbook.sandbox.apierrors import StoreError

JSON = dict[str, Any]
Path = tuple[str, ...]

# Fields nobody owns: identity and what the server itself maintains.
_UNOWNED: frozenset[Path] = frozenset({
    ("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"), ("metadata", "uid"),
    ("metadata", "resourceVersion"), ("metadata", "generation"), ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"), ("metadata", "deletionTimestamp"), ("metadata", "deletionGracePeriodSeconds"),
    ("metadata", "selfLink"),
})


def manager_of(field_manager: str, user_agent: str) -> str:
    """The manager a write is recorded under: ``fieldManager``, else the User-Agent up to its first '/'."""
    return field_manager or (user_agent.split("/", 1)[0] if user_agent else "unknown")


def leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every owned leaf of an object: maps are walked, anything else (lists included) is a leaf."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            path = (*prefix, str(key))
            if path in _UNOWNED or path == ("status",):
                continue
            out.update(leaves(value, path))
    elif prefix:
        out[prefix] = obj
    return out


def encode(paths: set[Path]) -> JSON:
    """Paths as ``fieldsV1`` (``{"f:spec": {"f:replicas": {}}}``)."""
    root: JSON = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root


def decode(fields: Any, prefix: Path = ()) -> set[Path]:
    """The leaf paths of a ``fieldsV1`` tree."""
    if not isinstance(fields, dict) or not fields:
        return {prefix} if prefix else set()
    out: set[Path] = set()
    for key, sub in fields.items():
        if str(key).startswith("f:"):
            out |= decode(sub, (*prefix, str(key)[2:]))
    return out or ({prefix} if prefix else set())


def _entries(obj: JSON | None) -> list[JSON]:
    """The object's managedFields (a copy)."""
    return copy.deepcopy(((obj or {}).get("metadata") or {}).get("managedFields") or [])


def _entry(manager: str, operation: str, api_version: str, paths: set[Path]) -> JSON:
    """One managedFields entry."""
    return {"manager": manager, "operation": operation, "apiVersion": api_version,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "fieldsType": "FieldsV1",
            "fieldsV1": encode(paths)}


def _overlaps(a: Path, b: Path) -> bool:
    """One path is the other or lies under it."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _rebuild(entries: list[JSON], owner: tuple[str, str], paths: set[Path], api_version: str) -> list[JSON]:
    """The entries with ``owner`` (manager, operation) owning ``paths`` and nobody left owning nothing."""
    out = []
    replaced = False
    for e in entries:
        if (e.get("manager"), e.get("operation")) == owner:
            if decode(e.get("fieldsV1")) == paths:
                out.append(e)  # unchanged: keep its time, so a no-op write stays a no-op
            elif paths:
                out.append(_entry(owner[0], owner[1], api_version, paths))
            replaced = True
        elif decode(e.get("fieldsV1")):
            out.append(e)
    if not replaced and paths:
        out.append(_entry(owner[0], owner[1], api_version, paths))
    return out


def record_update(old: JSON | None, new: JSON, manager: str, api_version: str) -> list[JSON]:
    """managedFields after a create/update/patch by ``manager``: it takes the fields it changed."""
    before, after = leaves(old or {}), leaves(new)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    gone = set(before) - set(after)
    entries = _entries(old)
    if not changed and not gone:
        return entries
    kept = []
    for e in entries:
        owned = decode(e.get("fieldsV1")) - gone
        if (e.get("manager"), e.get("operation")) != (manager, "Update"):
            owned = {p for p in owned if not any(_overlaps(p, c) for c in changed)}
        if owned != decode(e.get("fieldsV1")):
            e = {**e, "fieldsV1": encode(owned)} if owned else {}
        if e:
            kept.append(e)
    mine = next((decode(e.get("fieldsV1")) for e in kept if (e.get("manager"), e.get("operation")) ==
                 (manager, "Update")), set())
    return _rebuild(kept, (manager, "Update"), (mine | changed) & set(after), api_version)


def apply(current: JSON | None, applied: JSON, manager: str, *, force: bool, api_version: str) -> JSON:
    """The object after ``manager`` applies ``applied`` (its managedFields included); 409 on conflicts."""
    mine = leaves(applied)
    entries = _entries(current)
    live = leaves(current or {})
    conflicts: dict[str, list[Path]] = {}
    for e in entries:
        if e.get("manager") == manager:
            continue
        for owned in decode(e.get("fieldsV1")):
            for path, value in mine.items():
                if _overlaps(owned, path) and live.get(owned, live.get(path)) != value:
                    conflicts.setdefault(str(e.get("manager")), []).append(owned)
    if conflicts and not force:
        raise _conflict(conflicts, api_version)
    result: JSON = copy.deepcopy(current) if current else {}
    before = next((decode(e.get("fieldsV1")) for e in entries if (e.get("manager"), e.get("operation")) ==
                   (manager, "Apply")), set())
    others = {p for e in entries if e.get("manager") != manager for p in decode(e.get("fieldsV1"))}
    for path in sorted(before - set(mine) - others, key=len, reverse=True):
        _remove(result, path)
    result = dict(_merge(result, applied))
    if force:  # the forced fields change hands
        entries = [{**e, "fieldsV1": encode({p for p in decode(e.get("fieldsV1"))
                                              if not any(_overlaps(p, m) for m in mine)})}
                   if e.get("manager") != manager else e for e in entries]
    result.setdefault("metadata", {})["managedFields"] = _rebuild(
        [e for e in entries if decode(e.get("fieldsV1"))], (manager, "Apply"), set(mine), api_version)
    return result


def _merge(target: Any, patch: Any) -> Any:
    """The applied configuration over the live object: maps merged, everything else replaced."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = dict(target)
    for key, value in patch.items():
        out[key] = _merge(out.get(key), value)
    return out


def _remove(obj: JSON, path: Path) -> None:
    """Delete a leaf, then any map it leaves empty."""
    parents: list[tuple[JSON, str]] = []
    node: Any = obj
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        parents.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, key in reversed(parents):
        if parent[key] == {}:
            del parent[key]


def _conflict(conflicts: dict[str, list[Path]], api_version: str) -> Exception:
    """The real server's 409 for an apply that would take fields other managers own."""
    count = sum(len(p) for p in conflicts.values())
    parts, causes = [], []
    for manager, paths in conflicts.items():
        fields = sorted({"." + ".".join(p) for p in paths})
        head = f'conflict{"s" if len(fields) > 1 else ""} with "{manager}" using {api_version}'
        parts.append(f"{head}: {fields[0]}" if len(fields) == 1 else head + ":\n" + "\n".join(f"- {f}" for f in fields))
        causes += [{"reason": "FieldManagerConflict", "message": f'conflict with "{manager}" using {api_version}',
                    "field": f} for f in fields]
    message = f"Apply failed with {count} conflict{'s' if count > 1 else ''}: " + "\n".join(parts)
    return StoreError(409, "Conflict", message, {"causes": causes})
