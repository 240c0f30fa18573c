"""Behaviour of cowboy_ws.router (cowboy_router semantics)."""

from __future__ import annotations

import pytest

from cowboy_ws.router import Match, Route, Router, split_path


class H:
    """A plain HTTP handler (routes hold handlers; the router checks that they are)."""

    @staticmethod
    def init(req, state):
        return ("ok", req, state)


class A(H):
    pass


class B(H):
    pass


def test_literal_match_and_no_match():
    r = Router([("/chat", H, {"s": 1})])
    m = r.match("/chat")
    assert isinstance(m, Match)
    assert (m.handler, m.state, m.bindings, m.path_info, m.opts) == (H, {"s": 1}, {}, None, {})
    assert r.match("/chat/x") is None
    assert r.match("/") is None
    assert r.match("/cha") is None


def test_trailing_slash_like_cowboy():
    r = Router([("/chat", H, None)])
    assert r.match("/chat/") is not None
    r2 = Router([("/chat/", H, None)])
    assert r2.match("/chat") is not None
    root = Router([("/", H, None)])
    assert root.match("/") is not None
    assert root.match("/x") is None


def test_bindings_and_percent_decoding():
    r = Router([("/chat/:room/user/:user", H, None)])
    m = r.match("/chat/my%20room/user/bob")
    assert m.bindings == {"room": "my room", "user": "bob"}
    assert r.match("/chat/a+b/user/x").bindings["room"] == "a+b"  # '+' is not a space in paths
    assert r.match("/chat/x/user") is None
    assert r.match("/chat/%zz/user/x") is None  # Cowboy: 400


def test_repeated_binding_must_be_equal():
    r = Router([("/:x/:x", A, None), ("/:x/:y", B, None)])
    m = r.match("/same/same")
    assert m.handler is A and m.bindings == {"x": "same"}
    m = r.match("/one/two")
    assert m.handler is B and m.bindings == {"x": "one", "y": "two"}


def test_tail_path_info():
    r = Router([("/files/[...]", H, None)])
    assert r.match("/files").path_info == []
    assert r.match("/files/a/b%2Fc").path_info == ["a", "b/c"]
    assert r.match("/other") is None
    with pytest.raises(ValueError):
        Router([("/a/[...]/b", H, None)])


def test_optional_segments():
    r = Router([("/hats/[page/:number]", H, None)])
    assert r.match("/hats").bindings == {}
    assert r.match("/hats/page/3").bindings == {"number": "3"}
    assert r.match("/hats/page") is None
    r = Router([("/chat[/:room[/:page]]", H, None)])
    assert r.match("/chat").bindings == {}
    assert r.match("/chat/a").bindings == {"room": "a"}
    assert r.match("/chat/a/2").bindings == {"room": "a", "page": "2"}


def test_wildcard_segment_and_catch_all():
    r = Router([("/a/:_/c", A, None), ("/x/_/z", B, None), ("_", H, "fallback")])
    assert r.match("/a/anything/c").handler is A
    assert r.match("/a/anything/c").bindings == {}
    assert r.match("/x/y/z").handler is B
    m = r.match("/whatever/path")
    assert (m.handler, m.state, m.path_info) == (H, "fallback", None)
    # Cowboy: a path the regular routes cannot split is a 400, unless "_" comes first.
    assert r.match("no-slash") is None
    assert Router([("_", H, None), ("/a", A, None)]).match("no-slash").handler is H


def test_routes_tried_in_order():
    r = Router([("/a/:x", A, None), ("/a/b", B, None)])
    assert r.match("/a/b").handler is A
    r = Router([("/a/b", B, None), ("/a/:x", A, None)])
    assert r.match("/a/b").handler is B
    assert r.match("/a/c").handler is A


def test_opts_and_route_object():
    r = Router([("/a", A, 1, {"compress": True}), Route("/b", B, 2)])
    assert r.match("/a").opts == {"compress": True}
    assert (r.match("/b").handler, r.match("/b").state) == (B, 2)


def test_constraints():
    r = Router(
        [
            ("/u/:id", A, None, {}, {"id": "int"}),
            ("/u/:name", B, None, None, [("name", ["nonempty", lambda v: ("ok", v.upper())])]),
        ]
    )
    m = r.match("/u/42")
    assert m.handler is A and m.bindings == {"id": 42}
    m = r.match("/u/bob")
    assert m.handler is B and m.bindings == {"name": "BOB"}
    assert r.match("/u//x") is None


def test_dot_segments_and_query_ignored():
    r = Router([("/a/b", H, None)])
    assert r.match("/a/x/../b") is not None
    assert r.match("/a/./b?x=1") is not None
    assert split_path("/a//b/") == ["a", "", "b"]
    with pytest.raises(ValueError):
        split_path("a/b")


def test_invalid_patterns():
    for bad in ("chat", "/a[b]", "/a/]", "/a/[b", "/:"):
        with pytest.raises(ValueError):
            Router([(bad, H, None)])
    with pytest.raises(ValueError):
        Router([("/a", H)])


def test_hosts():
    r = Router.compile(
        [
            (":sub.example.org", [("/p/:sub", A, None)]),
            ("[...].example.com", [("/", B, None)]),
            ("_", [("_", H, None)]),
        ]
    )
    m = r.match("/p/www", host="www.example.org")
    assert m.handler is A and m.bindings == {"sub": "www"}
    assert r.match("/p/other", host="www.example.org") is None  # host matched, path did not
    m = r.match("/", host="a.b.Example.com.")
    assert m.handler is B and m.host_info == ["a", "b"]
    assert r.match("/x", host="elsewhere.net").handler is H


def test_asterisk():
    r = Router([("/", B, None), ("*", A, None)])
    assert r.match("*").handler is A
    assert r.match("/").handler is B
    assert Router([("/", B, None)]).match("*") is None


def test_optional_alternatives_order_like_cowboy():
    # Cowboy tries the form without the optional part first.
    r = Router([("/a[/:b]/[...]", H, None)])
    m = r.match("/a/x/y")
    assert (m.bindings, m.path_info) == ({}, ["x", "y"])


def test_host_optional_and_leading_ellipsis():
    r = Router.compile([("[www.]ninenines.eu", [("/", A, None)]), ("[...]example.org", [("/", B, None)])])
    assert r.match("/", host="ninenines.eu").handler is A
    assert r.match("/", host="www.ninenines.eu").handler is A
    assert r.match("/", host="x.ninenines.eu") is None
    assert r.match("/", host="a.example.org").host_info == ["a"]


_NAMED: dict = {}


def h(name):
    """A handler class named like the atoms of Cowboy's own table."""
    return _NAMED.setdefault(name, type(name, (H,), {}))


def test_cowboy_match_table():
    # Port of cowboy_router's match_test_/match_info_test_/match_same_bindings_test.
    r = Router.compile(
        [
            ("www._.ninenines.eu", [("/users/_/mails", h("any_subdomain_users"), None)]),
            ("ninenines.eu", [("/users/:id/friends", h("extend_users_friends"), None), ("_", h("extend"), None)]),
            (":var.ninenines", [("/threads/:var", h("duplicate_vars"), None)]),
            ("erlang.:ext", [("_", h("erlang_ext"), None)]),
            ("_", [("/users/:id/friends", h("users_friends"), None), ("_", h("any"), None)]),
        ]
    )
    table = [
        ("any", "/", "any", {}),
        ("www.any.ninenines.eu", "/users/42/mails", "any_subdomain_users", {}),
        ("www.ninenines.eu", "/users/42/mails", "any", {}),
        ("ninenines.eu", "/", "extend", {}),
        ("ninenines.eu", "/users/42/friends", "extend_users_friends", {"id": "42"}),
        ("erlang.fr", "/", "erlang_ext", {"ext": "fr"}),
        ("any", "/users/444/friends", "users_friends", {"id": "444"}),
        ("any", "/users//friends", "users_friends", {"id": ""}),
    ]
    for host, path, handler, bindings in table:
        m = r.match(path, host=host)
        assert (m.handler.__name__, m.bindings) == (handler, bindings), (host, path)
    assert r.match("/not_users/42/mails", host="www.any.ninenines.eu") is None
    info = Router.compile(
        [
            ("www.ninenines.eu", [("/pathinfo/is/next/[...]", h("path"), None)]),
            ("[...].ninenines.eu", [("_", h("any"), None)]),
        ]
    )
    assert info.match("/", host="ninenines.eu").host_info == []
    assert info.match("/", host="cowboy.bugs.ninenines.eu").host_info == ["cowboy", "bugs"]
    m = info.match("/pathinfo/is/next/foo/bar", host="www.ninenines.eu")
    assert (m.host_info, m.path_info) == (None, ["foo", "bar"])
    same = Router.compile([("ninenines.eu", [("/path/:user", h("m"), None)]), (":user.ninenines.eu", [("/path/:user", h("m"), None)])])
    assert same.match("/path/essen/", host="essen.ninenines.eu").bindings == {"user": "essen"}
    assert same.match("/path/notessen", host="essen.ninenines.eu") is None
    eu = Router.compile([(":same.:same", [("_", h("m"), None)])])
    assert eu.match("/", host="eu.eu").bindings == {"same": "eu"}
    assert eu.match("/", host="ninenines.eu") is None
