"""The answers every HTTP endpoint of the WebSocket port shares: JSON bodies, refusals
(the HTTP status from the error table, :func:`chimera.errors.http_status`) and
``X-Content-Type-Options: nosniff`` on every answer."""

from __future__ import annotations

import http
import json
from collections.abc import Awaitable

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from chimera.errors import ChimeraError, http_status


def json_response(connection: ServerConnection, status: http.HTTPStatus, body: object) -> Response:
    response = connection.respond(status, json.dumps(body, ensure_ascii=False) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    return response


def refusal(
    connection: ServerConnection, error: ChimeraError, *, as_json: bool = False
) -> Response:
    """The HTTP answer to a request refused with ``error``: its status in the error
    table, the reason in the body (``{"error": …}`` if ``as_json``)."""
    status = http.HTTPStatus(http_status(error))
    if as_json:
        response = json_response(connection, status, {"error": str(error)})
    else:
        response = connection.respond(status, f"{error}\n")
    if status == http.HTTPStatus.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def nosniff(response: Response) -> Response:
    """Every answer's type is the one it says (no MIME sniffing a JSON error into a script)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def nosniff_later(reply: Awaitable[Response | None]) -> Response | None:
    response = await reply
    return nosniff(response) if response is not None else None
