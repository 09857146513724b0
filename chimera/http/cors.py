"""CORS for the HTTP endpoints other sites may read: the snapshot, the job list and the
static files (an ES module imported from another origin is a CORS request).

Only origins named with ``--allowed-origin`` get ``Access-Control-Allow-Origin``,
always their own origin echoed back, never ``*``, and never with
``Access-Control-Allow-Credentials`` (tokens travel in ``Authorization``, not
cookies). Every such response says ``Vary: Origin``, so a cache never hands one
origin's answer to another. A preflight (``OPTIONS``, which an ``Authorization``
header triggers) is answered with the allowed methods and headers, or refused
with 403 and no CORS headers for any other origin.
"""

from __future__ import annotations

import http
from collections.abc import Set

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

ALLOWED_METHODS = "GET, OPTIONS"
ALLOWED_HEADERS = "Authorization"
PREFLIGHT_MAX_AGE = "600"


class Cors:
    def __init__(self, allowed_origins: Set[str]) -> None:
        """``allowed_origins`` as given to ``--allowed-origin`` (``*`` allows any)."""
        self._origins = frozenset(o.rstrip("/") for o in allowed_origins)

    def allowed_origin(self, request: Request) -> str | None:
        """The request's ``Origin`` if it is one of the allowed origins."""
        origins = request.headers.get_all("Origin")
        if len(origins) != 1:
            return None
        origin = origins[0].rstrip("/")
        if origin in self._origins or ("*" in self._origins and origin != "null"):
            return origin
        return None

    def apply(self, request: Request, response: Response) -> Response:
        """Adds the CORS headers ``response`` should carry for ``request``'s origin."""
        response.headers["Vary"] = "Origin"
        origin = self.allowed_origin(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
        return response

    def preflight(self, connection: ServerConnection, request: Request) -> Response:
        origin = self.allowed_origin(request)
        if origin is None:
            response = connection.respond(
                http.HTTPStatus.FORBIDDEN,
                "this Origin may not read this server: name it with --allowed-origin\n",
            )
            response.headers["Vary"] = "Origin"
            return response
        response = connection.respond(http.HTTPStatus.NO_CONTENT, "")
        del response.headers["Content-Type"]
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        response.headers["Vary"] = "Origin"
        return response
