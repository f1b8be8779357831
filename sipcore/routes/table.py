# -*- test-case-name: tests.test_routes_table -*-
"""
The built-in routes: a default upstream, routes per Request-URI domain and
per prefix of the Request-URI's user part, each to one SIP URI or a set of
them (a dispatcher set), and who may use each.  Pure values and parsing,
no I/O.

The routes file has one route per line; C{#} starts a comment::

    # KIND    MATCH         TARGET...                         [OPTION=VALUE...]
    default   -             sip:pbx.example.com;transport=tcp
    domain    partner.net   sip:192.0.2.20:5060
    prefix    +49           sip:trunk1.example sip:trunk2.example  algorithm=priority
    prefix    00            sip:trunk1.example sip:trunk2.example  algorithm=weighted weights=3,1
    prefix    9             sip:gw.example     allow=users,peers

A TARGET is a C{sip:} or C{sips:} URI; a word with C{=} is an option:
C{algorithm} (C{round-robin}, C{weighted} or C{priority}; default
C{priority}), C{weights} (one positive integer per target, for
C{weighted}), C{allow} (C{users}, C{peers} or both, comma-separated;
default C{users}) and C{strip} (digits removed from the front of the user
part before forwarding, for C{prefix} routes; default 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sipcore.message import URI, SIPParseError, parseURI
from sipcore.routes.hook import PEER, USER

__all__ = [
    "ALGORITHMS",
    "DEFAULT",
    "DOMAIN",
    "PREFIX",
    "PRIORITY",
    "ROUND_ROBIN",
    "WEIGHTED",
    "Route",
    "RouteTable",
    "RoutesError",
    "parseRoutes",
    "parseTargets",
]

DEFAULT = "default"
DOMAIN = "domain"
PREFIX = "prefix"
_KINDS = (DEFAULT, DOMAIN, PREFIX)

ROUND_ROBIN = "round-robin"
WEIGHTED = "weighted"
PRIORITY = "priority"
ALGORITHMS = (ROUND_ROBIN, WEIGHTED, PRIORITY)

_ALLOW = {"users": USER, "peers": PEER}


class RoutesError(ValueError):
    """
    A route or the routes file is malformed; the message says where and
    why.
    """


@dataclass(frozen=True)
class Route:
    """
    One route.

    @ivar kind: L{DEFAULT}, L{DOMAIN} or L{PREFIX}.
    @ivar match: the domain (lower case) or the prefix; C{""} for the
        default route.
    @ivar targets: the SIP URIs it goes to, in priority order.
    @ivar algorithm: how a target is chosen from several (L{ALGORITHMS}).
    @ivar weights: one per target (all 1 unless given).
    @ivar allow: the caller kinds that may use it (L{USER}, L{PEER}).
    @ivar strip: characters removed from the front of the user part.
    @ivar name: how logs name it (C{KIND MATCH}).
    """

    kind: str
    match: str
    targets: tuple[URI, ...]
    algorithm: str = PRIORITY
    weights: tuple[int, ...] = ()
    allow: frozenset[str] = frozenset({USER})
    strip: int = 0

    @property
    def name(self) -> str:
        return self.kind if self.kind == DEFAULT else "{} {}".format(self.kind, self.match)


def parseTargets(words: Iterable[str], where: str) -> tuple[URI, ...]:
    """
    Parse SIP URIs (each C{sip:} or C{sips:}, with a host).

    @raise RoutesError: for anything else, naming C{where}.
    """
    targets = []
    for word in words:
        try:
            uri = parseURI(word)
        except SIPParseError as e:
            raise RoutesError("{}: {!r} is not a SIP URI ({})".format(where, word, e)) from None
        if not uri.isSIP or not uri.host:
            raise RoutesError("{}: {!r} is not a sip: or sips: URI with a host".format(
                where, word))
        targets.append(uri)
    if not targets:
        raise RoutesError("{}: no target URI".format(where))
    return tuple(targets)


def parseAllow(text: str, where: str) -> frozenset[str]:
    """
    Parse an C{allow} value: C{users}, C{peers} or both, comma-separated.

    @raise RoutesError: for another word or none.
    """
    kinds = set()
    for word in text.split(","):
        word = word.strip().lower()
        if word not in _ALLOW:
            raise RoutesError("{}: allow must name users and/or peers, not {!r}".format(
                where, word))
        kinds.add(_ALLOW[word])
    return frozenset(kinds)


def makeRoute(kind: str, match: str, targets: tuple[URI, ...], options: dict[str, str],
              where: str) -> Route:
    """
    A checked L{Route}.

    @raise RoutesError: for an unknown option or a bad value.
    """
    algorithm = options.pop("algorithm", PRIORITY).lower()
    if algorithm not in ALGORITHMS:
        raise RoutesError("{}: algorithm must be one of {}, not {!r}".format(
            where, ", ".join(ALGORITHMS), algorithm))
    weights = tuple(1 for _ in targets)
    if "weights" in options:
        try:
            weights = tuple(int(w) for w in options.pop("weights").split(","))
        except ValueError:
            raise RoutesError("{}: weights must be integers".format(where)) from None
        if len(weights) != len(targets) or min(weights) < 1:
            raise RoutesError("{}: weights needs one positive integer per target ({})".format(
                where, len(targets)))
    allow = parseAllow(options.pop("allow", "users"), where)
    try:
        strip = int(options.pop("strip", "0"))
    except ValueError:
        raise RoutesError("{}: strip must be an integer".format(where)) from None
    if strip < 0 or (strip and kind != PREFIX):
        raise RoutesError("{}: strip must be 0 or more, and only on prefix routes".format(
            where))
    if options:
        raise RoutesError("{}: unknown option(s) {}; known: algorithm, weights, allow, "
                          "strip".format(where, ", ".join(sorted(options))))
    return Route(kind, match, targets, algorithm, weights, allow, strip)


def parseRoutes(text: str, source: str = "routes") -> tuple[Route, ...]:
    """
    Parse a routes file (see the module docstring).

    @param source: what messages call the file.
    @raise RoutesError: for the first malformed line, naming it, or for two
        routes with the same kind and match.
    """
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = "{} line {}".format(source, number)
        if len(words) < 3:
            raise RoutesError("{}: expected KIND MATCH TARGET... [OPTION=VALUE...]".format(
                where))
        kind, match = words[0].lower(), words[1]
        if kind not in _KINDS:
            raise RoutesError("{}: the kind must be default, domain or prefix, not {!r}".format(
                where, words[0]))
        if kind == DEFAULT:
            match = ""
        elif kind == DOMAIN:
            match = match.lower()
        options: dict[str, str] = {}
        uris = []
        for word in words[2:]:
            if "=" in word and not word.lower().startswith(("sip:", "sips:")):
                key, _, value = word.partition("=")
                options[key.lower()] = value
            else:
                uris.append(word)
        route = makeRoute(kind, match, parseTargets(uris, where), options, where)
        routeKey = (route.kind, route.match)
        if routeKey in seen:
            raise RoutesError("{}: a second {} route{}".format(
                where, kind, "" if kind == DEFAULT else " for " + match))
        seen.add(routeKey)
        routes.append(route)
    return tuple(routes)


class RouteTable:
    """
    Finds the route of a Request-URI: the longest prefix route matching
    its user part, else the route of its domain, else the default route.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._default: Route | None = None
        self._domains: dict[str, Route] = {}
        self._prefixes: dict[str, Route] = {}
        for route in self.routes:
            if route.kind == DEFAULT:
                self._default = route
            elif route.kind == DOMAIN:
                self._domains[route.match] = route
            else:
                self._prefixes[route.match] = route
        self._lengths = sorted({len(p) for p in self._prefixes}, reverse=True)

    def __len__(self) -> int:
        return len(self.routes)

    def find(self, uri: URI) -> Route | None:
        """
        The route for C{uri}, or C{None}.
        """
        user = uri.user or ""
        for length in self._lengths:
            if length <= len(user):
                route = self._prefixes.get(user[:length])
                if route is not None:
                    return route
        route = self._domains.get((uri.host or "").lower())
        if route is not None:
            return route
        return self._default
