"""The Command Center's pages and files, served by the WebSocket gateway: a fixed set,
nothing else.

The pages (``GET /`` → ``index.html``, ``GET /jobs/{job_id}`` → ``job.html``) and the
static files under ``/static/`` are looked up by name in :data:`PAGES` and
:data:`STATIC`, never by a path from the URL, so no request reaches any other file.
Both pages are one shell, ``page.html`` (head, top bar, sign-in, the job view), with
their title and, for the index, the Command Center's form and job list
(``command-center.html``) put in with :class:`string.Template` (``$title``,
``$main``). The files ship in the package (``chimera/web/``, setuptools
package-data) and are read once, on first use.

Pages carry a Content-Security-Policy that allows scripts and styles from this
server only (no inline script), WebSocket connections to this host, and no
framing; every response of the gateway carries ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import dataclasses
import http
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from chimera.http.cors import Cors
from chimera.http.routes import Target, not_found
from chimera.ids import is_valid_job_id

INDEX = "index.html"
JOB_PAGE = "job.html"
SHELL = "page.html"  # what both pages are made of


@dataclass(frozen=True, slots=True)
class Page:
    """A page: the shell with this title and, in its ``<main>``, this part (a file)."""

    title: str
    part: str | None = None


PAGES: dict[str, Page] = {
    INDEX: Page("Chimera · Command Center", "command-center.html"),
    JOB_PAGE: Page("Chimera · Job"),  # the job view only: app.js fills it in
}
# The files the pages are made of.
PAGE_FILES: tuple[str, ...] = (SHELL, *(page.part for page in PAGES.values() if page.part))
# The files served under /static/, with their content types.
STATIC: dict[str, str] = {
    "chimera.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
PAGE_TYPE = "text/html; charset=utf-8"
# A Host that passed the allow-list, checked again before it goes into a header.
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,300}")


def content_security_policy(host: str) -> str:
    """The pages' policy; ``host`` (the request's ``Host``) is where their WebSocket goes."""
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"font-src 'self'; connect-src 'self'{sockets}; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


class WebFiles:
    """The fixed set of files, read from ``root`` (default: the package's ``web/``), and
    the pages made of them."""

    def __init__(self, root: str | Path | Traversable | None = None) -> None:
        if root is None or root == "":
            root = resources.files("chimera") / "web"
        self._root: Path | Traversable = Path(root) if isinstance(root, str) else root
        self._cache: dict[str, bytes | None] = {}
        self._pages: dict[str, bytes] = {}

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or ``None`` if ``name`` is not one of the set or is not
        installed. ``name`` is only ever compared, never joined into a path unchecked."""
        if name not in STATIC and name not in PAGE_FILES:
            return None
        if name not in self._cache:
            try:
                self._cache[name] = (self._root / name).read_bytes()
            except OSError:
                self._cache[name] = None
        return self._cache[name]

    def page(self, name: str) -> bytes | None:
        """The page ``name`` of :data:`PAGES` (the shell with its title and part), or
        ``None`` if a file it is made of is not installed."""
        if name not in self._pages:
            page = PAGES[name]
            shell = self.read(SHELL)
            part = b"" if page.part is None else self.read(page.part)
            if shell is None or part is None:
                return None
            # The part stands between the sign-in and the job view, a blank line either side.
            main = "\n" + part.decode() if part else ""
            text = Template(shell.decode()).substitute(title=page.title, main=main)
            self._pages[name] = text.encode()
        return self._pages[name]


class Pages:
    """The routes' handlers: ``GET /``, ``GET /jobs/{job_id}``, ``GET /static/{name}``."""

    def __init__(self, files: WebFiles, cors: Cors) -> None:
        self._files = files
        self._cors = cors

    def index(self, connection: ServerConnection, request: Request, target: Target) -> Response:
        return self._page(connection, request, INDEX)

    def job_page(
        self, connection: ServerConnection, request: Request, target: Target
    ) -> Response:
        if not is_valid_job_id(target.params["job_id"]):
            return not_found(connection, target.path)
        return self._page(connection, request, JOB_PAGE)

    def static(self, connection: ServerConnection, request: Request, target: Target) -> Response:
        name = target.params["name"]
        content_type = STATIC.get(name)
        if content_type is None:
            return not_found(connection, target.path)
        body = self._files.read(name)
        return self._cors.apply(request, self._file(connection, name, body, content_type))

    def _page(self, connection: ServerConnection, request: Request, name: str) -> Response:
        response = self._file(connection, name, self._files.page(name), PAGE_TYPE)
        response.headers["Content-Security-Policy"] = content_security_policy(
            request.headers.get("Host", "")
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def _file(
        self, connection: ServerConnection, name: str, body: bytes | None, content_type: str
    ) -> Response:
        """A 200 with ``body``, the file (or page) ``name``; a 404 if it is not installed."""
        if body is None:
            return connection.respond(
                http.HTTPStatus.NOT_FOUND,
                f"{name} is not installed: the Command Center's files are missing from "
                "this installation (chimera/web)\n",
            )
        response = dataclasses.replace(connection.respond(http.HTTPStatus.OK, ""), body=body)
        # Headers is a multi-dict: setting adds a second Content-Length (browsers refuse
        # the response: ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH).
        del response.headers["Content-Length"]
        response.headers["Content-Length"] = str(len(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = content_type
        # Revalidate each time: a new version of Chimera brings new files.
        response.headers["Cache-Control"] = "no-cache"
        return response
