"""In-memory object store of the sandbox's Kubernetes API: resourceVersions, selectors, patches, watches.

Pod logs: the text served at ``pods/{name}/log`` is whatever :meth:`Store.set_pod_log` set for the pod;
without it, the pod's annotation ``sandbox.rollbook.dev/log`` (handy in plain scenario YAML); else "".
"""

from __future__ import annotations

import copy
import logging
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from rollbook.sandbox import fieldmanager
from rollbook.sandbox.apierrors import (
    StoreError,
    already_exists,
    bad_request,
    conflict,
    expired,
    invalid,
    not_found,
    unsupported_patch,
)
from rollbook.sandbox.history import Event, EventList, Query, decode_continue, encode_continue, parse_rv, translate
from rollbook.sandbox.nodes import SANDBOX_NODE, sandbox_node
from rollbook.sandbox.patching import apply_patch, merge_patch, strategic_merge
from rollbook.sandbox.resources import RESOURCES, Resource, resource
from rollbook.sandbox.selectors import parse_field_selector, parse_label_selector
from rollbook.sandbox.strategy import (
    INITIAL_STATUS,
    NO_GENERATION,
    check_name,
    check_namespace,
    check_preconditions,
    check_type,
    comparable,
    defaulted,
    jsonable,
    merge_update,
    namespace_created_for,
    now_rfc3339,
)

JSON = dict[str, Any]
JSONList = list[JSON]  # aliases: inside Store, ``list`` names the method
Listener = Callable[[str, str, JSON], None]
LOG_ANNOTATION = "sandbox.rollbook.dev/log"  # the scenario format's annotation (loader.py)
DEFAULT_WATCH_SECONDS = 1800.0  # the real server picks 30-60 min; ours is bounded as well
_log = logging.getLogger(__name__)


class Store:
    """Thread-safe in-memory objects with one global resourceVersion and a bounded watch history."""

    def __init__(self, *, history: int = 1000) -> None:
        self._lock = threading.Condition(threading.RLock())
        self._objects: dict[tuple[str, str, str], JSON] = {}
        self._logs: dict[tuple[str, str], str] = {}
        self._rv = 1
        self._history: deque[Event] = deque(maxlen=history)
        self._compacted = 1  # events at or below this resourceVersion are gone from the history
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------------ reads

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion."""
        with self._lock:
            return str(self._rv)

    def get(self, plural: str, namespace: str | None, name: str) -> JSON:
        """One object, or a 404 StoreError."""
        res = resource(plural)
        with self._lock:
            return copy.deepcopy(self._require(res, namespace, name))

    def list(
        self, plural: str, namespace: str | None = None, *, label_selector: str = "",
        field_selector: str = "", limit: int = 0, continue_token: str = "",
    ) -> tuple[list[JSON], str, str]:
        """Matching objects sorted by namespace/name, the list resourceVersion and a continue token."""
        query = self._query(plural, namespace, label_selector, field_selector)
        start, list_rv = decode_continue(continue_token) if continue_token else ("", 0)
        with self._lock:
            objects = self._objects_at(list_rv) if list_rv else self._objects
            keys = sorted(k for k, o in objects.items() if k > (plural, "", "") and query.matches(k[0], o))
            keys = [k for k in keys if f"{k[1]}/{k[2]}" > start] if start else keys
            page = keys[:limit] if limit > 0 else keys
            items = [copy.deepcopy(objects[k]) for k in page]
            rv = list_rv or self._rv
        more = limit > 0 and len(keys) > limit
        token = encode_continue(f"{page[-1][1]}/{page[-1][2]}", rv) if more else ""
        return items, str(rv), token

    def _objects_at(self, rv: int) -> dict[tuple[str, str, str], JSON]:
        """The objects as they were at ``rv`` (lock held): later pages of a list are a consistent snapshot.

        Rebuilt by undoing the history after ``rv``; older than the history is the real server's 410.
        """
        if rv >= self._rv:
            return self._objects
        if rv < self._compacted:
            raise expired("The provided continue parameter is too old to display a consistent list result. You "
                          "can start a new list without the continue parameter.")
        state = dict(self._objects)
        for event in reversed([e for e in self._history if e.rv > rv]):
            key = self._key(RESOURCES[event.plural], event.obj)
            if event.type == "ADDED" or event.old is None:
                state.pop(key, None)
            else:
                state[key] = event.old
        return state

    def remaining(self, plural: str, namespace: str | None, label_selector: str, field_selector: str,
                  continue_token: str) -> int:
        """How many matching objects come after a continue token (``remainingItemCount``)."""
        items, _, _ = self.list(plural, namespace, label_selector=label_selector,
                                field_selector=field_selector, continue_token=continue_token)
        return len(items)

    def pod_log(self, namespace: str, name: str) -> str:
        """The log text of a pod (404 if the pod does not exist)."""
        pod = self.get("pods", namespace, name)
        with self._lock:
            text = self._logs.get((namespace, name))
        if text is None:
            text = ((pod.get("metadata") or {}).get("annotations") or {}).get(LOG_ANNOTATION, "")
        return str(text)

    # ------------------------------------------------------------------ writes

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """Set the text served at ``pods/{name}/log`` (the pod may be created before or after)."""
        with self._lock:
            self._logs[(namespace, name)] = text

    def create(
        self, plural: str, namespace: str | None, obj: JSON, *, dry_run: bool = False, system: bool = False,
        implicit_namespace: bool = True, manager: str | None = None, managed_fields: JSONList | None = None,
    ) -> JSON:
        """Create an object; ``system=True`` (loader only) keeps the given uid, timestamp, generation, status.

        A missing namespace is created on the fly for in-process callers (scenario loading, tests); the API
        server passes ``implicit_namespace=False`` and gets the real server's 404 instead.
        """
        res = resource(plural)
        new = self._prepare_create(res, namespace, jsonable(obj), system)
        if managed_fields is not None:
            new["metadata"]["managedFields"] = managed_fields
        elif manager:
            new["metadata"]["managedFields"] = fieldmanager.record_update(None, new, manager, res.api_version)
        name, ns = new["metadata"]["name"], new["metadata"].get("namespace")
        events: list[Event] = []
        with self._lock:
            if (plural, ns or "", name) in self._objects:
                raise already_exists(res, name)
            if ns and ("namespaces", "", ns) not in self._objects and not implicit_namespace:
                raise not_found(RESOURCES["namespaces"], ns)
            if dry_run:
                return copy.deepcopy(new)
            if ns and ("namespaces", "", ns) not in self._objects:
                events.append(self._store("namespaces", namespace_created_for(ns), None, "ADDED"))
            events.append(self._store(plural, new, None, "ADDED"))
        self._notify(events)
        return copy.deepcopy(events[-1].obj)

    def replace(
        self, plural: str, namespace: str | None, name: str, obj: JSON, *,
        subresource: str | None = None, dry_run: bool = False, manager: str | None = None,
    ) -> JSON:
        """PUT: a stale ``metadata.resourceVersion`` is a 409; status rules as the real server."""
        res = resource(plural)
        body = jsonable(obj)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, "", name):
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        rv = str(meta.get("resourceVersion") or "")
        if not rv and not res.builtin:
            raise invalid(res, name, "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")
        return self._update(res, namespace, name, lambda _old: body, subresource, dry_run, rv, manager=manager)

    def patch(
        self, plural: str, namespace: str | None, name: str, body: Any, patch_type: str, *,
        subresource: str | None = None, dry_run: bool = False, manager: str | None = None,
    ) -> JSON:
        """PATCH with ``merge`` | ``json`` | ``strategic`` (415 for strategic on custom resources)."""
        res = resource(plural)
        if patch_type == "strategic" and not res.builtin:
            raise unsupported_patch()
        return self._update(
            res, namespace, name, lambda old: apply_patch(res, name, old, jsonable(body), patch_type),
            subresource, dry_run, None, manager=manager,
        )

    def apply(
        self, plural: str, namespace: str | None, name: str, body: JSON, *, manager: str, force: bool = False,
        dry_run: bool = False,
    ) -> tuple[JSON, bool]:
        """Server-side apply by ``manager``: (the object, whether it was created). Conflicts are a 409."""
        res = resource(plural)
        applied = jsonable(body)
        with self._lock:
            exists = self._key_of(res, namespace, name) in self._objects
        if not exists:
            merged = fieldmanager.apply(None, applied, manager, force=force, api_version=res.api_version)
            fields = merged["metadata"].pop("managedFields", [])
            return self.create(plural, namespace, merged, dry_run=dry_run, implicit_namespace=False,
                               managed_fields=fields), True
        outcome: dict[str, JSON] = {}

        def make(current: JSON) -> JSON:
            outcome["applied"] = fieldmanager.apply(current, applied, manager, force=force,
                                                    api_version=res.api_version)
            return outcome["applied"]

        obj = self._update(res, namespace, name, make, None, dry_run, None,
                           fields=lambda _old, _new: outcome["applied"]["metadata"]["managedFields"])
        return obj, False

    def _key_of(self, res: Resource, namespace: str | None, name: str) -> tuple[str, str, str]:
        """The store key of a name."""
        return (res.plural, (namespace or "") if res.namespaced else "", name)

    def set_status(self, plural: str, namespace: str | None, name: str, status: JSON) -> JSON:
        """Replace an object's status (for the loader and the controller), unconditionally."""
        res = resource(plural)
        return self._update(res, namespace, name, lambda old: {**old, "status": jsonable(status)},
                            "status", False, None)

    def delete(
        self, plural: str, namespace: str | None, name: str, *, dry_run: bool = False,
        preconditions: JSON | None = None, propagation: str = "Background",
    ) -> JSON:
        """Delete an object and return it; namespaces take their objects, owners their dependents.

        An object with ``metadata.finalizers`` is only marked (``deletionTimestamp``) and goes when an update
        removes the last finalizer. ``Orphan`` keeps the dependents and strips the owner from them.
        """
        res = resource(plural)
        events: list[Event] = []
        with self._lock:
            current = self._require(res, namespace, name)
            check_preconditions(res, name, current, preconditions or {})
            if dry_run:
                return copy.deepcopy(current)
            if current["metadata"].get("finalizers"):
                if current["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(current)
                marked = copy.deepcopy(current)
                marked["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
                main = self._store(plural, marked, current, "MODIFIED")
                events.append(main)
            else:
                if plural == "namespaces":
                    for key in [k for k in self._objects if k[1] == name]:
                        events.append(self._remove(key))
                main = self._remove(self._key(res, current))
                events.append(main)
                if propagation == "Orphan":
                    events.extend(self._orphan(current))
                else:
                    events.extend(self._collect_garbage(current))
        self._notify(events)
        return copy.deepcopy(main.obj)

    def _key(self, res: Resource, obj: JSON) -> tuple[str, str, str]:
        """The store key of an object."""
        return self._key_of(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _orphan(self, owner: JSON) -> EventList:
        """Remove a deleted owner from its dependents' ownerReferences, as the garbage collector does (lock held)."""
        uid, events = owner["metadata"].get("uid"), []
        for key, obj in list(self._objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if uid and any(r.get("uid") == uid for r in refs):
                freed = copy.deepcopy(obj)
                kept = [r for r in refs if r.get("uid") != uid]
                if kept:
                    freed["metadata"]["ownerReferences"] = kept
                else:
                    freed["metadata"].pop("ownerReferences", None)
                events.append(self._store(key[0], freed, obj, "MODIFIED"))
        return events

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(event_type, plural, obj)`` after every real write, outside the store lock."""
        with self._lock:
            self._listeners.append(fn)

    # ------------------------------------------------------------------ watch

    def watch(
        self, plural: str, namespace: str | None = None, *, resource_version: str = "",
        label_selector: str = "", field_selector: str = "", timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[tuple[str, JSON]]:
        """Events after ``resource_version`` (or ADDED for all current objects first, when it is ""/"0").

        Selectors and a too-old version are checked now (StoreError 410), before iteration starts.
        """
        query = self._query(plural, namespace, label_selector, field_selector)
        start = parse_rv(resource_version)
        with self._lock:
            if start and start < self._compacted:
                raise expired(f"too old resource version: {start} ({self._compacted})")
            initial = [] if start else [copy.deepcopy(o) for k, o in sorted(self._objects.items())
                                        if query.matches(k[0], o)]
            cursor = start or self._rv
        deadline = time.monotonic() + (DEFAULT_WATCH_SECONDS if timeout is None else timeout)
        return self._watch_events(query, initial, cursor, deadline, stop or threading.Event())

    def _watch_events(
        self, query: Query, initial: JSONList, cursor: int, deadline: float, stop: threading.Event,
    ) -> Iterator[tuple[str, JSON]]:
        """The watch generator: initial objects, then history after ``cursor`` until the deadline."""
        for obj in initial:
            yield "ADDED", obj
        while not stop.is_set():
            with self._lock:
                if cursor < self._compacted:  # the consumer fell behind the bounded history
                    yield "ERROR", expired(f"too old resource version: {cursor} ({self._compacted})").to_status()
                    return
                pending = [e for e in self._history if e.rv > cursor]
                if not pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._lock.wait(min(remaining, 0.25))
                    continue
            for event in pending:
                cursor = event.rv
                translated = translate(query, event)
                if translated:
                    yield translated

    # ------------------------------------------------------------------ internals

    def _query(self, plural: str, namespace: str | None, labels: str, fields: str) -> Query:
        """Parse the filters of a list or watch (400 on a bad selector)."""
        res = resource(plural)
        return Query(res, namespace if res.namespaced else None,
                      parse_label_selector(labels), parse_field_selector(fields, res))

    def _require(self, res: Resource, namespace: str | None, name: str) -> JSON:
        """The stored object (not a copy), or a 404."""
        obj = self._objects.get((res.plural, namespace or "" if res.namespaced else "", name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def _prepare_create(self, res: Resource, namespace: str | None, obj: JSON, system: bool) -> JSON:
        """Validate and default a new object: name, namespace, uid, timestamp, generation, status."""
        if not isinstance(obj, dict):
            raise bad_request(f"the body of a {res.kind} must be a JSON object")
        check_type(res, obj)
        meta = dict(obj.get("metadata") or {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        check_name(res, meta.get("name") or "")
        ns = check_namespace(res, namespace, meta.get("namespace"))
        meta.update({"namespace": ns} if ns else {})
        if meta.pop("resourceVersion", None) and not system:
            raise bad_request("resourceVersion should not be set on objects to be created")
        if res.plural == "pods" and not system and not (obj.get("spec") or {}).get("containers"):
            raise invalid(res, meta["name"], "spec.containers", "Required value", "FieldValueRequired")
        if not system or not meta.get("uid"):
            meta["uid"] = str(uuid.uuid4())
        if not system or not meta.get("creationTimestamp"):
            meta["creationTimestamp"] = now_rfc3339()
        if res.plural not in NO_GENERATION and not (system and meta.get("generation")):
            meta["generation"] = 1
        new = defaulted(res, {"apiVersion": res.api_version, "kind": res.kind, **obj, "metadata": meta})
        if res.has_status and not (system and "status" in obj):
            new.pop("status", None)
            if res.plural in INITIAL_STATUS:
                new["status"] = copy.deepcopy(INITIAL_STATUS[res.plural])
        return new

    def _update(
        self, res: Resource, namespace: str | None, name: str, make: Callable[[JSON], JSON],
        subresource: str | None, dry_run: bool, expect_rv: str | None, *, manager: str | None = None,
        fields: Callable[[JSON, JSON], JSONList] | None = None,
    ) -> JSON:
        """Read-modify-write under the lock; no resourceVersion bump when nothing changed.

        ``manager`` records the write in managedFields (API writes); ``fields`` sets them outright (apply).
        """
        with self._lock:
            old = self._require(res, namespace, name)
            candidate = make(copy.deepcopy(old))
            want_rv = expect_rv or str((candidate.get("metadata") or {}).get("resourceVersion") or "")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            new = merge_update(res, old, candidate, subresource)
            if fields is not None:
                new["metadata"]["managedFields"] = fields(old, new)
            elif manager and not subresource:
                new["metadata"]["managedFields"] = fieldmanager.record_update(old, new, manager, res.api_version)
            if not new["metadata"].get("managedFields"):
                new["metadata"].pop("managedFields", None)
            if comparable(new) == comparable(old) or dry_run:
                return copy.deepcopy(new)
            event = self._store(res.plural, new, old, "MODIFIED")
            events = [event]
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                # the last finalizer is gone: the deletion that was waiting for it completes now
                events.append(self._remove(self._key(res, new)))
                events.extend(self._collect_garbage(new))
        self._notify(events)
        return copy.deepcopy(event.obj)

    def _store(self, plural: str, obj: JSON, old: JSON | None, kind: str) -> Event:
        """Bump the global resourceVersion, store the object and append to the history (lock held)."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        self._objects[(plural, meta.get("namespace") or "", meta["name"])] = obj
        return self._record(Event(self._rv, kind, plural, copy.deepcopy(obj), old))

    def _remove(self, key: tuple[str, str, str]) -> Event:
        """Remove an object; the DELETED event carries a fresh resourceVersion (lock held)."""
        obj = self._objects.pop(key)
        self._rv += 1
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = str(self._rv)
        if key[0] == "pods":
            self._logs.pop((key[1], key[2]), None)
        return self._record(Event(self._rv, "DELETED", key[0], final, obj))

    def _collect_garbage(self, owner: JSON) -> EventList:
        """The garbage collector, done at once: delete dependents none of whose owners exist (lock held).

        Owners are matched by uid, as upstream; a uid still carried by another object (the upstream
        fixtures share one) keeps its dependents. Bounded: every round removes an object.
        """
        events: EventList = []
        pending = [owner]
        while pending:
            gone = pending.pop()["metadata"]
            if not gone.get("uid") or self._uid_alive(gone["uid"]):
                continue
            for key, obj in list(self._objects.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if (key in self._objects and key[1] == (gone.get("namespace") or key[1])
                        and any(r.get("uid") == gone["uid"] for r in refs)
                        and not any(self._uid_alive(str(r.get("uid"))) for r in refs)):
                    events.append(self._remove(key))
                    pending.append(obj)
        return events

    def _uid_alive(self, uid: str) -> bool:
        """Whether any stored object has this uid (lock held)."""
        return any(o["metadata"].get("uid") == uid for o in self._objects.values())

    def _record(self, event: Event) -> Event:
        """Append to the bounded history, remembering what fell off, and wake watchers (lock held)."""
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(event)
        self._lock.notify_all()
        return event

    def _notify(self, events: EventList) -> None:
        """Tell listeners about real writes, outside the lock; a failing listener must not fail the write."""
        with self._lock:
            listeners = list(self._listeners)
        for event in events:
            for fn in listeners:
                try:
                    fn(event.type, event.plural, copy.deepcopy(event.obj))
                except Exception:  # noqa: BLE001 - the write already happened; log loudly instead of failing the caller
                    _log.exception("store listener %r failed on %s %s", fn, event.type, event.plural)



__all__ = [  # the names other modules import from here (the parts live in the modules imported above)
    "LOG_ANNOTATION", "RESOURCES", "SANDBOX_NODE", "Resource", "Store", "StoreError", "already_exists", "apply_patch",
    "bad_request", "conflict", "expired", "invalid", "merge_patch", "not_found", "now_rfc3339", "resource",
    "sandbox_node", "strategic_merge", "unsupported_patch",
]
