"""Patch semantics: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge for built-in kinds."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from rollbook.sandbox.apierrors import StoreError, bad_request, invalid, unsupported_patch
from rollbook.sandbox.resources import Resource

JSON = dict[str, Any]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes).

    Hand-written: it is ten lines, and the PyPI packages for it are unmaintained.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Merge keys of the built-in list fields that strategic merge patches by key (from the Go struct tags).
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "ports": "containerPort",
    "imagePullSecrets": "name", "conditions": "type", "ownerReferences": "uid", "hostAliases": "ip",
    "containerStatuses": "name", "initContainerStatuses": "name", "topologySpreadConstraints": "topologyKey",
}
_DELETE = object()


def strategic_merge(target: Any, patch: Any) -> Any:
    """A strategic merge patch good enough for built-in kinds: keyed lists, ``$patch`` directives.

    Hand-written: no maintained Python implementation exists; it covers what kubectl sends
    (keyed lists such as containers, ``$patch: replace|delete``, ``$setElementOrder``,
    ``$deleteFromPrimitiveList``); other lists are replaced, as for atomic lists.
    """
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return _strip_directives(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    result = copy.deepcopy(target)
    for key, value in patch.items():
        _smp_key(result, key, value)
    return result


def _smp_key(result: JSON, key: str, value: Any) -> None:
    """Apply one key of a strategic merge patch to ``result`` in place."""
    if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
        return
    if key.startswith("$deleteFromPrimitiveList/"):
        name = key.split("/", 1)[1]
        result[name] = [v for v in result.get(name) or [] if v not in (value or [])]
        return
    if value is None:
        result.pop(key, None)
    elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(result.get(key), list):
        result[key] = _merge_keyed_list(result[key], value, _MERGE_KEYS[key])
    else:
        merged = strategic_merge(result.get(key), value)
        if merged is _DELETE:
            result.pop(key, None)
        else:
            result[key] = merged


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    """Merge a list of objects by their merge key, honouring ``$patch`` on items and on the list."""
    if any(isinstance(i, dict) and i.get("$patch") == "replace" and len(i) == 1 for i in patch):
        return [_strip_directives(i) for i in patch if not (isinstance(i, dict) and i.get("$patch"))]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_strip_directives(item))
            continue
        idx = next((i for i, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item[key]), None)
        merged = strategic_merge(result[idx] if idx is not None else {}, item)
        if idx is None and merged is not _DELETE:
            result.append(merged)
        elif idx is not None and merged is _DELETE:
            del result[idx]
        elif idx is not None:
            result[idx] = merged
    return result


def _strip_directives(value: Any) -> Any:
    """A copy of a patch value without ``$``-directives, for values that replace outright."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def apply_patch(res: Resource, name: str, current: JSON, body: Any, patch_type: str) -> JSON:
    """Apply a merge, json or strategic patch to a copy of ``current``."""
    if patch_type == "strategic" and not res.builtin:
        raise unsupported_patch()
    if patch_type == "json":
        result = _json_patch(res, name, current, body)
    elif patch_type in ("merge", "strategic"):
        if not isinstance(body, dict):
            raise bad_request(f"the patch body for {res.qualified} \"{name}\" must be a JSON object")
        fn = merge_patch if patch_type == "merge" else strategic_merge
        result = fn(current, body)
    else:
        raise unsupported_patch()
    if not isinstance(result, dict):
        raise invalid(res, name, "", "the patched object is not a JSON object")
    return result


def _json_patch(res: Resource, name: str, current: JSON, body: Any) -> Any:
    """RFC 6902 through the ``jsonpatch`` library; a failing operation is a 422 as upstream."""
    if not isinstance(body, list):
        raise bad_request(f'the JSON patch for {res.qualified} "{name}" must be a list of operations')
    try:
        return jsonpatch.apply_patch(current, body)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as e:
        raise StoreError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}") from e

