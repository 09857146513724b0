"""The JSON endpoints of the WebSocket port, for clients that poll:
``GET /api/jobs/{job_id}[?view=basic|full]`` (the job's snapshot, like GetJob, with
the ``epoch`` its ``last_sequence`` belongs to; the latest 100 thoughts of each team
unless ``view`` says otherwise) and ``GET /api/jobs`` (like ListJobs: ``page_size``,
``page_token``, ``view``; basic by default), and their CORS preflights.

A refusal is ``{"error": …}`` with the error table's HTTP status
(:func:`chimera.http.responses.refusal`), CORS headers included so a page on an
allowed origin can show why.
"""

from __future__ import annotations

import http
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from chimera.actors.jobs import JobManager
from chimera.auth.principal import Principal
from chimera.errors import ChimeraError, InvalidArgument
from chimera.http.cors import Cors
from chimera.http.responses import json_response, refusal
from chimera.http.routes import Target
from chimera.ids import is_ascii_number, is_valid_job_id
from chimera.job import JobView
from chimera.wire import decode_page_token, encode_page_token

# GET /api/jobs/{id}?view=…: the thoughts the snapshot carries (as GetJob's JobView).
SNAPSHOT_VIEWS = {"default": JobView.DEFAULT, "basic": JobView.BASIC, "full": JobView.FULL}


class HttpApi:
    """The routes' handlers. ``principal``: the caller a request's token names
    (:meth:`chimera.gateways.admission.Admission.principal`)."""

    def __init__(
        self,
        jobs: JobManager,
        cors: Cors,
        principal: Callable[[Request, Target], Principal],
    ) -> None:
        self._jobs = jobs
        self._cors = cors
        self._principal = principal

    async def snapshot(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        job_id = target.params["job_id"]
        if not is_valid_job_id(job_id):
            return json_response(
                connection, http.HTTPStatus.BAD_REQUEST, {"error": "malformed job id"}
            )
        views = target.query.get("view", ["default"])
        view = SNAPSHOT_VIEWS.get(views[0]) if len(views) == 1 else None
        if view is None:
            return json_response(
                connection, http.HTTPStatus.BAD_REQUEST,
                {"error": "view must be basic (no thoughts) or full (every thought); "
                          "leave it out for the latest 100 of each team"},
            )
        # Read before the job (see JobManager.epoch): the lifetime its last_sequence is of.
        epoch = self._jobs.epoch
        try:
            job = await self._jobs.get(
                job_id, principal=self._principal(request, target), view=view
            )
        except ChimeraError as exc:
            return self._cors.apply(request, refusal(connection, exc, as_json=True))
        body = {**job.to_dict(), "epoch": epoch}
        return self._cors.apply(request, json_response(connection, http.HTTPStatus.OK, body))

    async def list_jobs(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        """``GET /api/jobs[?page_size=N&page_token=T&view=basic|default|full]``:
        ``{"jobs": [...], "next_page_token": "..."}``, newest first, the jobs the
        caller may read (as ListJobs); thoughts left out unless ``view`` asks."""
        try:
            # Authenticated and authorised before anything else is parsed (as ListJobs).
            principal = self._principal(request, target)
            self._jobs.authorize_list(principal=principal)
            page_size = _one_number(target, "page_size")
            page_tokens = target.query.get("page_token", [""])
            views = target.query.get("view", ["basic"])
            view = SNAPSHOT_VIEWS.get(views[0]) if len(views) == 1 else None
            if len(page_tokens) != 1:
                raise InvalidArgument("give one page_token, not several")
            if view is None:
                raise InvalidArgument("view must be basic, default or full")
            jobs, cursor = await self._jobs.list(
                page_size, decode_page_token(page_tokens[0]), principal=principal, view=view
            )
        except ChimeraError as exc:
            return self._cors.apply(request, refusal(connection, exc, as_json=True))
        body = {
            "jobs": [job.to_dict() for job in jobs], "next_page_token": encode_page_token(cursor)
        }
        return self._cors.apply(request, json_response(connection, http.HTTPStatus.OK, body))

    def preflight(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        return self._cors.preflight(connection, request)


def _one_number(target: Target, name: str) -> int:
    """A query parameter that is one whole number (0 when absent)."""
    values = target.query.get(name, ["0"])
    if len(values) != 1 or not is_ascii_number(values[0]) or len(values[0]) > 9:
        raise InvalidArgument(f"{name} must be one whole number")
    return int(values[0])
