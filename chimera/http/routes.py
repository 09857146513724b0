"""The HTTP routes of a listener (WebSocket port, metrics port): ``(method, pattern) → handler``.

A pattern is a path with ``{name}`` parameters; a parameter takes any text,
slashes included, and its handler validates it (so ``/ws/orchestrate/a/b`` is a
400 "malformed job id", not a 404). The request target is parsed once, into a
:class:`Target` every handler receives. A path no route matches is 404; a path
some route matches with another method is 405 with an ``Allow`` header; a
request that announced a body is 413 (no route takes one; see
:mod:`~chimera.http.edge`). :meth:`Routes.answer` puts the ``Host`` and
``Origin`` checks in front of them.

Adding an endpoint is one line in the gateway's table, e.g.
``Route("GET", "/api/jobs", api.list_jobs)``.
"""

from __future__ import annotations

import http
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from chimera.http.edge import announced_body
from chimera.http.hosts import HostAllowList


@dataclass(frozen=True, slots=True)
class Target:
    """A request target, parsed once: path, query parameters, route parameters."""

    path: str
    query: Mapping[str, list[str]]
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, target: str) -> Target:
        """Not ``urlsplit``: it reads ``//host`` as a network location and raises
        on ``//[`` (an invalid IPv6 literal), which fuzzing found.

        Raises ``ValueError`` for a query whose percent-escapes are not UTF-8
        (``%FF``, ``%ED%A0%80``): ``parse_qs`` would quietly make them U+FFFD.
        The path is not percent-decoded (no route parameter needs it), so its
        escapes stay ASCII text that each handler's validation refuses.
        """
        path, _, query = target.partition("?")
        try:
            params = parse_qs(query.partition("#")[0], keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise ValueError(
                "the query is not valid UTF-8 once percent-decoded: encode its text as UTF-8"
            ) from None
        return cls(path, params)


Reply = Awaitable[Response | None] | Response | None
Handler = Callable[[ServerConnection, Request, Target], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    """``handler`` answers ``method`` on paths matching ``pattern``.

    ``check_origin``: refuse a browser ``Origin`` the server does not allow
    before the handler runs (off for endpoints anyone may poll, like ``/healthz``).
    A handler returning ``None`` accepts a WebSocket upgrade.
    """

    method: str
    pattern: str
    handler: Handler
    check_origin: bool = True


_PARAMETER = re.compile(r"\{(\w+)\}")


def _compile(pattern: str) -> re.Pattern[str]:
    parts = _PARAMETER.split(pattern)
    # split alternates literal text and parameter names.
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.*)" for i, part in enumerate(parts)
    )
    return re.compile(regex)


class Routes:
    """The table; :meth:`match` finds the route for a method and path."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self._routes = [(route, _compile(route.pattern)) for route in routes]

    def answer(
        self,
        connection: ServerConnection,
        request: Request,
        hosts: HostAllowList,
        origin_allowed: Callable[[Request], bool],
    ) -> Reply:
        """Every request of a listener: the ``Host`` check first (DNS rebinding
        guard), then the target (400 if its query is not UTF-8), the route (404,
        405), a body (413), the ``Origin`` check where the route asks for it (403),
        then the route's handler with the parsed target."""
        names = request.headers.get_all("Host")
        if not hosts.allows(names):
            return connection.respond(http.HTTPStatus.MISDIRECTED_REQUEST, hosts.refusal(names))
        try:
            target = Target.parse(request.path)
        except ValueError as exc:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        found = self.match(request.method, target.path)
        if isinstance(found, list):
            if found:
                return method_not_allowed(connection, request.method, found)
            return not_found(connection, target.path)
        route, params = found
        if (body := announced_body(connection)) is not None:
            return connection.respond(
                http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,  # 413; CONTENT_TOO_LARGE from 3.13
                f"{request.method} {target.path} takes no request body; this request "
                f"announced {body}\n",
            )
        if route.check_origin and not origin_allowed(request):
            return connection.respond(
                http.HTTPStatus.FORBIDDEN,
                "this Origin may not connect: the server allows its own host and the "
                "origins given with --allowed-origin\n",
            )
        return route.handler(connection, request, replace(target, params=params))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | list[str]:
        """The route and its parameters, or the methods the path allows
        (empty: no such path)."""
        allowed: list[str] = []
        for route, regex in self._routes:
            found = regex.fullmatch(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            if route.method not in allowed:
                allowed.append(route.method)
        return allowed


def not_found(connection: ServerConnection, path: str) -> Response:
    return connection.respond(http.HTTPStatus.NOT_FOUND, f"no such endpoint {path!r}\n")


def method_not_allowed(
    connection: ServerConnection, method: str, allowed: Sequence[str]
) -> Response:
    methods = ", ".join(allowed)
    response = connection.respond(
        http.HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed here: use {methods}\n"
    )
    response.headers["Allow"] = methods
    return response
