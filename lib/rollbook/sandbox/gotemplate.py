"""A renderer for the Go text/template subset rollbook's notification templates use.

The sandbox's simulated notification controller (sandbox/notifications.py) renders Argo's templates with it,
and the tests render the shipped template with it (tests/go_template.py re-exports it).

Written by hand because no maintained Python package executes Go templates; it follows Go's rules for
what the shipped template touches (text/template exec.go, funcs.go) and refuses everything else loudly,
so the template cannot quietly use a feature this renderer would get wrong:
- actions `{{ pipeline }}` with `{{-` / `-}}` trimming, `{{ if }}…{{ else }}…{{ end }}`;
- pipelines `a | f`, parenthesised pipelines, field chains on maps (`.rollout.metadata.name`) and on
  values with methods (`(call .time.Now).UTC.Format "…"`);
- a missing map key is "no value" (printed `<no value>`, `toJson` gives `null`); a field of a JSON
  null is an error ("nil pointer evaluating interface {}.x"), as in Go;
- functions `index`, `call` (Go builtins) and Sprig's `toJson` (encoding/json: sorted keys, no spaces,
  `<`, `>`, `&` escaped).
The variables are those argo-rollouts' notification settings give a template (utils/record/record.go,
NewAPIFactorySettings): `rollout`, `analysisRuns`, `time` (`Parse`, `Now`), `secrets`, plus the engine's
`serviceType` and `recipient` (notifications-engine pkg/api/api.go).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class GoTemplateError(Exception):
    """What Go's template package would reject (at parse or at execution)."""


class _Missing:
    """Go's invalid reflect.Value: what a missing map key evaluates to."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()
RFC3339 = "2006-01-02T15:04:05Z07:00"


@dataclass(frozen=True)
class GoTime:
    """A time.Time: the methods the template calls (UTC, Format with the RFC 3339 layout only)."""

    when: datetime

    def UTC(self) -> GoTime:  # noqa: N802 - Go's method name
        return GoTime(self.when.astimezone(UTC))

    def Format(self, layout: str) -> str:  # noqa: N802 - Go's method name
        if layout != RFC3339:
            raise GoTemplateError(f"Format layout {layout!r} is not supported by this renderer")
        text = self.when.isoformat(timespec="seconds")
        return text.replace("+00:00", "Z") if self.when.utcoffset() == UTC.utcoffset(None) else text


def time_vars(now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, Any]:
    """`.time` as argo-rollouts provides it: {"Parse": RFC 3339 -> time, "Now": () -> time}."""
    return {"Parse": lambda s: GoTime(datetime.fromisoformat(str(s).replace("Z", "+00:00"))),
            "Now": lambda: GoTime(now())}


# --------------------------------------------------------------------------- lexing and parsing

_ACTION_RE = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN_RE = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<lp>\()|(?P<rp>\))|(?P<pipe>\|)
                          |(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
                          |(?P<bad>\S))""", re.X)


@dataclass
class _Operand:
    kind: str  # field | ident | str | num | group
    value: Any
    chain: tuple[str, ...] = ()  # fields applied after a group: (x).a.b


@dataclass
class _Node:
    kind: str  # text | action | if
    text: str = ""
    pipe: list[list[_Operand]] = field(default_factory=list)
    then: list[_Node] = field(default_factory=list)
    other: list[_Node] = field(default_factory=list)


def _tokens(src: str) -> list[tuple[str, str, bool]]:
    """(kind, text, glued to the previous token) for one action's body."""
    out, pos = [], 0
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if not m or m.end() == pos:
            break
        kind = m.lastgroup or ""
        if kind == "bad":
            raise GoTemplateError(f"unexpected {m.group(kind)!r} in action {src!r}")
        glued = m.start(kind) == pos and pos > 0
        out.append((kind, m.group(kind), glued))
        pos = m.end()
    if src[pos:].strip():
        raise GoTemplateError(f"cannot parse {src[pos:]!r}")
    return out


def _parse_pipeline(toks: list[tuple[str, str, bool]], i: int = 0, close: bool = False) -> tuple[list[list[_Operand]], int]:
    """Commands separated by `|` up to the end (or the closing parenthesis)."""
    commands: list[list[_Operand]] = [[]]
    while i < len(toks):
        kind, text, glued = toks[i]
        if kind == "rp":
            if not close:
                raise GoTemplateError("unexpected )")
            return commands, i + 1
        if kind == "pipe":
            commands.append([])
        elif kind == "lp":
            inner, i = _parse_pipeline(toks, i + 1, close=True)
            operand = _Operand("group", inner)
            if i < len(toks) and toks[i][0] == "field" and toks[i][2]:
                operand.chain = tuple(toks[i][1].split(".")[1:])
                i += 1
            commands[-1].append(operand)
            continue
        elif kind == "str":
            commands[-1].append(_Operand("str", json.loads(text)))
        elif kind == "num":
            commands[-1].append(_Operand("num", int(text)))
        elif kind == "field":
            commands[-1].append(_Operand("field", tuple(p for p in text.split(".")[1:] if p)))
        else:
            commands[-1].append(_Operand("ident", text))
        i += 1
    if close:
        raise GoTemplateError("unclosed (")
    if any(not c for c in commands):
        raise GoTemplateError("missing command in pipeline")
    return commands, i


def parse(src: str) -> list[_Node]:
    """The template as nodes (text, action, if/else/end)."""
    root: list[_Node] = []
    stack: list[tuple[_Node, list[_Node]]] = []
    current = root
    pos = 0
    pending_trim = False
    for m in _ACTION_RE.finditer(src):
        text = src[pos:m.start()]
        if pending_trim:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if text:
            current.append(_Node("text", text=text))
        pending_trim, pos = bool(m.group(3)), m.end()
        body = m.group(2).strip()
        word = body.split(None, 1)[0] if body else ""
        if word == "if":
            node = _Node("if", pipe=_parse_pipeline(_tokens(body[2:]))[0])
            current.append(node)
            stack.append((node, current))
            current = node.then
        elif word == "else" and body == "else":
            if not stack:
                raise GoTemplateError("{{else}} outside {{if}}")
            current = stack[-1][0].other
        elif word == "end" and body == "end":
            if not stack:
                raise GoTemplateError("unexpected {{end}}")
            current = stack.pop()[1]
        elif word in ("range", "with", "define", "template", "block") or body.startswith(("$", "/*")):
            raise GoTemplateError(f"{{{{{word}}}}} is not supported by this renderer")
        else:
            current.append(_Node("action", pipe=_parse_pipeline(_tokens(body))[0]))
    tail = src[pos:]
    if pending_trim:
        tail = tail.lstrip()
    if tail:
        current.append(_Node("text", text=tail))
    if stack:
        raise GoTemplateError("unexpected EOF: {{if}} without {{end}}")
    return root


# --------------------------------------------------------------------------- execution


def to_json(value: Any) -> str:
    """Sprig's toJson: encoding/json.Marshal (sorted keys, compact, HTML characters escaped)."""
    text = json.dumps(None if value is MISSING else value, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=True, default=_not_json)
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _not_json(value: Any) -> Any:
    raise GoTemplateError(f"toJson of {type(value).__name__} is not supported by this renderer")


def _index(item: Any, *keys: Any) -> Any:
    """Go's index builtin over maps (a missing key gives the zero value, nil) and slices."""
    for key in keys:
        if item is MISSING or item is None:
            raise GoTemplateError("error calling index: index of untyped nil")
        if isinstance(item, Mapping):
            item = item.get(key)
        elif isinstance(item, list):
            if not isinstance(key, int) or not 0 <= key < len(item):
                raise GoTemplateError(f"error calling index: index out of range: {key}")
            item = item[key]
        else:
            raise GoTemplateError(f"can't index item of type {type(item).__name__}")
    return item


def _call(fn: Any, *args: Any) -> Any:
    if not callable(fn):
        raise GoTemplateError(f"error calling call: non-function of type {type(fn).__name__}")
    return fn(*args)


FUNCS: dict[str, Callable[..., Any]] = {"index": _index, "call": _call, "toJson": to_json}


class _Exec:
    def __init__(self, data: Mapping[str, Any], funcs: Mapping[str, Callable[..., Any]]) -> None:
        self.data, self.funcs = data, funcs

    def fields(self, value: Any, chain: tuple[str, ...], args: list[Any]) -> Any:
        """A field chain: map keys (missing -> no value), methods called (with args when last)."""
        for n, name in enumerate(chain):
            last = n == len(chain) - 1
            if value is MISSING:
                return MISSING
            if value is None:
                raise GoTemplateError(f"nil pointer evaluating interface {{}}.{name}")
            if isinstance(value, Mapping):
                value = value.get(name, MISSING)
                if last and args:
                    raise GoTemplateError(f"{name} is not a method but has arguments")
                continue
            method = getattr(value, name, None) if name[:1].isupper() else None
            if not callable(method):
                raise GoTemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
            value = method(*args) if last else method()
        if args and not chain:
            raise GoTemplateError("can't give argument to non-function")
        return value

    def operand(self, op: _Operand, args: list[Any]) -> Any:
        if op.kind == "field":
            return self.fields(self.data, op.value, args)
        if op.kind == "group":
            return self.fields(self.pipeline(op.value), op.chain, args)
        if args:
            raise GoTemplateError(f"can't give argument to non-function {op.value!r}")
        return op.value

    def command(self, cmd: list[_Operand], piped: Any, has_pipe: bool) -> Any:
        head, rest = cmd[0], cmd[1:]
        if head.kind == "ident":
            if head.value in ("true", "false", "nil"):
                return {"true": True, "false": False, "nil": None}[head.value]
            fn = self.funcs.get(head.value)
            if fn is None:
                raise GoTemplateError(f'function "{head.value}" not defined')
            args = [self.operand(a, []) for a in rest] + ([piped] if has_pipe else [])
            return fn(*args)
        args = [self.operand(a, []) for a in rest] + ([piped] if has_pipe else [])
        return self.operand(head, args)

    def pipeline(self, commands: list[list[_Operand]]) -> Any:
        value: Any = None
        for n, cmd in enumerate(commands):
            value = self.command(cmd, value, n > 0)
        return value

    def run(self, nodes: list[_Node], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "if":
                self.run(node.then if _truth(self.pipeline(node.pipe)) else node.other, out)
            else:
                out.append(_print(self.pipeline(node.pipe)))


def _truth(value: Any) -> bool:
    """Go's template truth: false, 0, nil, empty strings/slices/maps and no value are false."""
    if value is MISSING or value is None:
        return False
    return bool(value)


def _print(value: Any) -> str:
    """fmt.Print of a value: strings and scalars only (printing maps is never what a body wants)."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise GoTemplateError(f"printing a {type(value).__name__} is not supported by this renderer")


def render(src: str, data: Mapping[str, Any], funcs: Mapping[str, Callable[..., Any]] | None = None) -> str:
    """Execute a template over `data` the way text/template does (for the subset above)."""
    out: list[str] = []
    _Exec(data, {**FUNCS, **(funcs or {})}).run(parse(src), out)
    return "".join(out)
