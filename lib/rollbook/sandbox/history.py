"""The watch history's entries and queries, how a filtered watch sees an event, and list continue tokens."""

from __future__ import annotations

import base64
import binascii
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from rollbook.sandbox.apierrors import bad_request
from rollbook.sandbox.resources import Resource
from rollbook.sandbox.selectors import FieldRequirement, Requirement, labels_match

JSON = dict[str, Any]


@dataclass
class Event:
    """One entry of the bounded watch history."""

    rv: int
    type: str
    plural: str
    obj: JSON
    old: JSON | None


EventList = list[Event]


@dataclass
class Query:
    """A parsed list/watch filter."""

    res: Resource
    namespace: str | None
    labels: list[Requirement] = field(default_factory=list)
    fields: list[FieldRequirement] = field(default_factory=list)

    def matches(self, plural: str, obj: JSON) -> bool:
        """Whether an object of ``plural`` passes namespace, label and field filters."""
        if plural != self.res.plural:
            return False
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and all(f.matches(obj) for f in self.fields)

def translate(query: Query, event: Event) -> tuple[str, JSON] | None:
    """What a filtered watch sees: objects entering or leaving the selection become ADDED/DELETED."""
    now = event.type != "DELETED" and query.matches(event.plural, event.obj)
    before = event.old is not None and query.matches(event.plural, event.old)
    if event.type == "DELETED":
        return ("DELETED", copy.deepcopy(event.obj)) if before else None
    if now:
        return ("MODIFIED" if before and event.type == "MODIFIED" else "ADDED"), copy.deepcopy(event.obj)
    if not before or event.old is None:
        return None
    # Leaving the selection: the watch cache sends the object as it was (it matched then), at the event's version.
    gone = copy.deepcopy(event.old)
    gone["metadata"]["resourceVersion"] = event.obj["metadata"]["resourceVersion"]
    return "DELETED", gone


def parse_rv(text: str) -> int:
    """A resourceVersion parameter as an integer ("" and "0" mean "any": 0)."""
    try:
        return int(text or 0)
    except ValueError:
        raise bad_request(f'invalid resource version "{text}"') from None


def encode_continue(start: str, rv: int) -> str:
    """An opaque continue token in the shape the real server uses."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, int]:
    """Read a continue token back; anything else is a 400 as on the real server."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return str(data["start"]), int(data["rv"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request(f"continue key is not valid: {token!r}") from None
