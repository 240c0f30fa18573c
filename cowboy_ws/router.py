"""Cowboy's router (``cowboy_router``): a path (and optionally host) to a handler.

Routes are tried in order; the first that matches wins::

    router = Router([
        ("/chat/:room", ChatHandler, {"greeting": "hi"}),
        ("/files/[...]", FilesHandler, None),
        ("/users/:id", UserHandler, None, {}, {"id": "int"}),
        ("_", FallbackHandler, None),            # catch-all
    ])
    m = router.match("/chat/lobby")  # Match(handler=ChatHandler, bindings={"room": "lobby"}, ...)

Pattern syntax (the ``cowboy_router`` manual and the "Routing" guide):

- ``/chat``: literal segments; ``/chat/`` is the same pattern (empty segments
  are dropped), and a request for ``/chat/`` matches ``/chat`` (Cowboy strips
  the trailing slash when splitting the path);
- ``:name``: binds the segment to ``name``; the same name used twice (also
  across host and path) must match the same value; ``:_`` and a bare ``_``
  segment match any one segment without binding it;
- ``[...]``: the rest of the path, any number of segments (zero included), given
  as ``path_info`` (``host_info`` for a leading ``[...]`` in a host pattern);
- ``[/optional/:segments]``: an optional part; the route matches with or
  without it (the form without it is tried first, as in Cowboy); brackets nest;
- ``"_"`` as the whole pattern: matches any path (``path_info`` ``None``);
  ``"*"``: matches the asterisk-form target ``*`` only.

Request paths are split on ``/``, each segment percent-decoded (``cow_uri:urldecode``:
``%XX`` only, ``+`` stays a plus sign, RFC 3986 §2.1), and ``.`` / ``..``
segments removed (RFC 3986 §5.2.4), as ``cowboy_router:split_path`` does.
Decoded bytes are read as UTF-8 with ``surrogateescape`` so that nothing is lost.

Constraints (``cowboy_constraints``) are optional: a dict ``{name: c}`` or a
list of ``(name, c)``, where ``c`` is ``"int"`` (converts the value), ``"nonempty"``,
a callable, or a list of those applied in turn. A callable gets the value and
returns ``("ok", new_value)``, ``("error", reason)``, ``True`` or ``False``;
raising ``ValueError``/``TypeError`` is a failure. A route whose constraints
fail does not match, and the next route is tried. Constraints on a binding
that did not take part (an optional segment left out) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from .handler import HandlerError, check_handler

__all__ = ["Match", "Route", "Router", "split_host", "split_path"]

Constraint = str | Callable[[Any], Any] | Sequence[str | Callable[[Any], Any]]
Constraints = Mapping[str, Constraint] | Sequence[tuple[str, Constraint]] | None


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Matches any one segment without binding it (``:_`` or ``_``).
WILDCARD = _Sentinel("'_'")
#: ``[...]``: the rest of the segments.
ELLIPSIS = _Sentinel("'...'")


@dataclass(frozen=True, slots=True)
class _Bind:
    name: str


_Segment = str | _Bind | _Sentinel
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class Match:
    """The result of :meth:`Router.match` (``{ok, Handler, Opts, Bindings, HostInfo, PathInfo}``).

    ``state`` is the handler's initial state (Cowboy's ``Opts`` of the route),
    ``opts`` the route's optional fourth element.
    """

    handler: Any
    state: Any
    bindings: dict[str, Any]
    path_info: list[str] | None
    opts: dict[str, Any]
    host_info: list[str] | None = None


@dataclass(slots=True)
class Route:
    """One path route: ``(pattern, handler, state[, opts[, constraints]])``."""

    pattern: str
    handler: Any
    state: Any = None
    opts: dict[str, Any] = field(default_factory=dict)
    constraints: Constraints = None


@dataclass(frozen=True, slots=True)
class _Rule:
    segments: tuple[_Segment, ...] | None  # None for the "_" / "*" specials
    special: str | None
    constraints: tuple[tuple[str, tuple[Any, ...]], ...]
    handler: Any = None
    state: Any = None
    opts: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _HostRule:
    segments: tuple[_Segment, ...] | None  # None for "_"
    constraints: tuple[tuple[str, tuple[Any, ...]], ...]
    paths: tuple[_Rule, ...]


# -- compiling patterns (cowboy_router:compile_rules) ------------------------


def _compile_binding(s: str, sep: str) -> tuple[str, str]:
    i = 0
    while i < len(s) and s[i] not in (sep, "[", "]"):
        i += 1
    if i == 0:
        raise ValueError("empty binding name")
    return s[:i], s[i:]


def _split_brackets(s: str) -> tuple[str, str]:
    depth = 0
    for i, c in enumerate(s):
        if c == "[":
            depth += 1
        elif c == "]":
            if depth == 0:
                return s[:i], s[i + 1 :]
            depth -= 1
    raise ValueError("missing closing bracket")


def _compile_rules(s: str, sep: str, segments: list[_Segment], acc: Any) -> list[list[_Segment]]:
    """Port of ``cowboy_router:compile_rules/5``: one pattern -> its alternatives."""
    segments = list(segments)
    while True:
        if not s:
            return [segments + ([acc] if acc != "" else [])]
        c = s[0]
        if c == sep:
            if acc != "":
                segments.append(acc)
                acc = ""
            s = s[1:]
        elif c == ":" and acc == "":
            name, s = _compile_binding(s[1:], sep)
            acc = WILDCARD if name == "_" else _Bind(name)
        elif s.startswith("[...]"):
            if acc != "":
                segments.append(acc)
                acc = ""
            segments.append(ELLIPSIS)
            s = s[5:]
        elif c == "[":
            if s[1:2] == sep:
                if acc != "":
                    segments.append(acc)
                key = s[2:]
            elif acc == "":
                key = s[1:]
            else:
                raise ValueError("open bracket in the middle of a segment")
            bracket, rest = _split_brackets(key)
            # Cowboy ends up trying the form without the optional part first.
            without = _compile_rules(rest, sep, segments, "")
            with_part = _compile_rules(bracket + rest, sep, segments, "")
            return without + with_part
        elif c == "]":
            raise ValueError("closing bracket without an opening one")
        elif isinstance(acc, str):
            acc += c
            s = s[1:]
        else:
            raise ValueError("unexpected character after a binding")  # pragma: no cover


def _finish(rule: list[_Segment], pattern: str) -> tuple[_Segment, ...]:
    out = tuple(WILDCARD if seg == "_" else seg for seg in rule)
    if ELLIPSIS in out[:-1]:
        raise ValueError(f"'[...]' must end the pattern: {pattern!r}")
    return out


def _compile_path(pattern: str) -> list[tuple[_Segment, ...] | str]:
    if pattern in ("_", "*"):
        return [pattern]
    if not pattern.startswith("/"):
        raise ValueError(f"a path pattern must begin with a slash: {pattern!r}")
    try:
        rules = _compile_rules(pattern[1:], "/", [], "")
    except ValueError as e:
        raise ValueError(f"invalid path pattern {pattern!r}: {e}") from None
    return [_finish(r, pattern) for r in rules]


def _compile_host(pattern: str) -> list[tuple[_Segment, ...] | None]:
    if pattern == "_":
        return [None]
    try:
        rules = _compile_rules(pattern.lower(), ".", [], "")
    except ValueError as e:
        raise ValueError(f"invalid host pattern {pattern!r}: {e}") from None
    # Hosts are matched right to left (the TLD first), like split_host/1.
    return [_finish(r[::-1], pattern) for r in rules]


def _compile_constraints(constraints: Constraints) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not constraints:
        return ()
    items = constraints.items() if isinstance(constraints, Mapping) else constraints
    out = []
    for name, c in items:
        cs = tuple(c) if isinstance(c, (list, tuple)) else (c,)
        for one in cs:
            if not (one in ("int", "nonempty") or callable(one)):
                raise ValueError(f"unknown constraint {one!r} for {name!r}: use 'int', 'nonempty' or a callable")
        out.append((name, cs))
    return tuple(out)


def _apply_constraint(c: Any, value: Any) -> tuple[bool, Any]:
    """``cowboy_constraints:validate/2`` for one constraint (forward direction)."""
    if c == "int":
        if isinstance(value, int):
            return True, value
        if isinstance(value, str) and _INT.fullmatch(value):
            return True, int(value)
        return False, value
    if c == "nonempty":
        return (len(value) > 0 if hasattr(value, "__len__") else True), value
    try:
        r = c(value)
    except (ValueError, TypeError):
        return False, value
    if r is True or r is False:
        return r, value
    if isinstance(r, tuple) and len(r) == 2 and r[0] in ("ok", "error"):
        return (r[0] == "ok"), (r[1] if r[0] == "ok" else value)
    raise TypeError(f"constraint {c!r} returned {r!r}; expected ('ok', value), ('error', reason) or a bool")


def _check_constraints(
    constraints: tuple[tuple[str, tuple[Any, ...]], ...], bindings: dict[str, Any]
) -> dict[str, Any] | None:
    if not constraints:
        return bindings
    out = dict(bindings)
    for name, cs in constraints:
        if name not in out:
            continue
        value = out[name]
        for c in cs:
            ok, value = _apply_constraint(c, value)
            if not ok:
                return None
        out[name] = value
    return out


# -- splitting requests ------------------------------------------------------


def _urldecode(segment: str) -> str:
    """``cow_uri:urldecode/1``: ``%XX`` only (``+`` is kept), RFC 3986 §2.1."""
    if "%" not in segment:
        return segment
    if _BAD_PCT.search(segment):
        raise ValueError(f"malformed percent-encoding in {segment!r}")
    return unquote_to_bytes(segment).decode("utf-8", "surrogateescape")


def split_path(path: str) -> list[str]:
    """``cowboy_router:split_path/1``: ``"/a/b%20c/"`` -> ``["a", "b c"]``.

    A trailing slash adds no segment; other empty segments are kept
    (``"/a//b"`` -> ``["a", "", "b"]``); ``.`` and ``..`` are removed
    (RFC 3986 §5.2.4). Raises :class:`ValueError` for a path that does not
    begin with ``/`` or holds a malformed ``%`` escape (Cowboy: 400).
    """
    if not path.startswith("/"):
        raise ValueError(f"a path must begin with a slash: {path!r}")
    parts = path[1:].split("/")
    if parts[-1] == "":
        parts.pop()
    out: list[str] = []
    for seg in (_urldecode(p) for p in parts):
        if seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return out


def split_host(host: str) -> list[str]:
    """``cowboy_router:split_host/1``: ``"www.example.org"`` -> ``["org", "example", "www"]``.

    Lower-cased, a trailing dot ignored; an empty label raises :class:`ValueError`.
    """
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        return []
    labels = host.split(".")
    if "" in labels:
        raise ValueError(f"empty label in host {host!r}")
    return labels[::-1]


def _list_match(
    tokens: Sequence[str], pattern: tuple[_Segment, ...], binds: dict[str, Any]
) -> tuple[dict[str, Any], list[str] | None] | None:
    """``cowboy_router:list_match/3``: ``(bindings, rest-or-None)`` or ``None``."""
    out = binds
    copied = False
    n = len(tokens)
    for i, p in enumerate(pattern):
        if p is ELLIPSIS:
            return out, list(tokens[i:])
        if i >= n:
            return None
        t = tokens[i]
        if p is WILDCARD:
            continue
        if isinstance(p, _Bind):
            if p.name in out:
                if out[p.name] != t:
                    return None
            else:
                if not copied:
                    out = dict(out)
                    copied = True
                out[p.name] = t
        elif p != t:
            return None
    if n != len(pattern):
        return None
    return out, None


# -- the router ----------------------------------------------------------------


def _path_rule(entry: Any) -> list[_Rule]:
    if isinstance(entry, Route):
        route = entry
    else:
        if not isinstance(entry, (tuple, list)) or not 3 <= len(entry) <= 5:
            raise ValueError(
                f"a route is (pattern, handler, state[, opts[, constraints]]), got {entry!r}"
            )
        route = Route(*entry)
        if route.opts is None:
            route.opts = {}
    if not isinstance(route.pattern, str):
        raise TypeError(f"a path pattern must be a str, not {type(route.pattern).__name__}")
    if not isinstance(route.opts, Mapping):
        raise TypeError(f"route opts must be a dict, not {type(route.opts).__name__}")
    try:
        check_handler(route.handler)
    except HandlerError as exc:
        raise HandlerError(f"route {route.pattern!r}: {exc}") from None
    cons = _compile_constraints(route.constraints)
    rules = []
    for segs in _compile_path(route.pattern):
        if isinstance(segs, str):
            rules.append(_Rule(None, segs, cons, route.handler, route.state, route.opts))
        else:
            rules.append(_Rule(segs, None, cons, route.handler, route.state, route.opts))
    return rules


class Router:
    """``cowboy_router``: an ordered list of routes, compiled once.

    ``Router(routes)`` takes path routes (``cowboy_router:compile([{'_', Routes}])``):
    each ``(pattern, handler, initial_state)``, optionally with an ``opts`` dict
    and constraints, or a :class:`Route`. :meth:`compile` takes Cowboy's full
    form with host patterns. Invalid patterns raise :class:`ValueError` here.
    """

    __slots__ = ("_hosts",)

    def __init__(self, routes: Iterable[Any]) -> None:
        paths: list[_Rule] = []
        for entry in routes:
            paths.extend(_path_rule(entry))
        self._hosts: tuple[_HostRule, ...] = (_HostRule(None, (), tuple(paths)),)

    @classmethod
    def compile(cls, dispatch: Iterable[Sequence[Any]]) -> Router:
        """``cowboy_router:compile/1``: ``[(host_pattern[, constraints], [path routes]), ...]``.

        Host patterns use the path syntax with ``.`` as separator
        (``":sub.example.org"``, ``"[...].example.org"``, ``"_"``).
        """
        self = cls.__new__(cls)
        hosts: list[_HostRule] = []
        for entry in dispatch:
            if len(entry) == 2:
                host, routes = entry
                cons: Constraints = None
            elif len(entry) == 3:
                host, cons, routes = entry
            else:
                raise ValueError(f"a host rule is (host, [routes]) or (host, constraints, [routes]), got {entry!r}")
            paths: list[_Rule] = []
            for r in routes:
                paths.extend(_path_rule(r))
            hcons = _compile_constraints(cons)
            for segs in _compile_host(host):
                hosts.append(_HostRule(segs, hcons, tuple(paths)))
        self._hosts = tuple(hosts)
        return self

    def match(self, path: str, host: str | None = None) -> Match | None:
        """``cowboy_router:match/3``: the first route matching ``path`` (and ``host``).

        ``path`` is the raw request path (``req.path``); a query or fragment
        is ignored. ``None`` when nothing matches, and also for a path Cowboy
        would reject with 400 (no leading slash, bad ``%`` escape) once a
        route other than ``"_"``/``"*"`` has to split it. As in Cowboy, once a
        host rule matches only its paths are tried.
        """
        path = path.partition("?")[0].partition("#")[0]
        host_tokens: list[str] | None = None
        for hrule in self._hosts:
            if hrule.segments is None:
                binds: dict[str, Any] = {}
                host_info: list[str] | None = None
            else:
                if host_tokens is None:
                    try:
                        host_tokens = split_host(host or "")
                    except ValueError:
                        return None
                m = _list_match(host_tokens, hrule.segments, {})
                if m is None:
                    continue
                binds, rest = m
                host_info = None if rest is None else rest[::-1]
                checked = _check_constraints(hrule.constraints, binds)
                if checked is None:
                    continue
                binds = checked
            return self._match_path(hrule.paths, path, binds, host_info)
        return None

    @staticmethod
    def _match_path(
        rules: tuple[_Rule, ...], path: str, binds: dict[str, Any], host_info: list[str] | None
    ) -> Match | None:
        tokens: list[str] | None = None
        for rule in rules:
            if rule.special == "_":
                return Match(rule.handler, rule.state, dict(binds), None, dict(rule.opts or {}), host_info)
            if rule.special == "*":
                if path == "*":
                    return Match(rule.handler, rule.state, dict(binds), None, dict(rule.opts or {}), host_info)
                continue
            if path == "*":
                continue  # only "*" and "_" routes take the asterisk-form target
            if tokens is None:
                try:
                    tokens = split_path(path)
                except ValueError:
                    return None
            assert rule.segments is not None
            m = _list_match(tokens, rule.segments, binds)
            if m is None:
                continue
            bindings, path_info = m
            checked = _check_constraints(rule.constraints, bindings)
            if checked is None:
                continue
            return Match(rule.handler, rule.state, dict(checked), path_info, dict(rule.opts or {}), host_info)
        return None

    def __repr__(self) -> str:
        n = sum(len(h.paths) for h in self._hosts)
        return f"<Router {len(self._hosts)} host rule(s), {n} path rule(s)>"
