"""The Command Center's vendored browser libraries (highlight.js, jsdiff): pinned in
``chimera/web/vendor/vendored.json`` (``scripts/vendor_web.py`` refreshes them), each with
its licence, and served by Chimera itself from ``/static/vendor/`` (no CDN)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from chimera.gateways.pages import STATIC, content_security_policy
from tests.conftest import StartServer
from tests.http_raw import http_request

WEB = Path(__file__).resolve().parent.parent / "chimera" / "web"
MANIFEST: dict[str, Any] = json.loads((WEB / "vendor" / "vendored.json").read_text())
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
}


def served() -> list[tuple[str, dict[str, Any]]]:
    """Each vendored file's name under /static/ and its manifest entry."""
    return [
        (f"vendor/{name}/{file['path']}", file)
        for name, entry in MANIFEST.items()
        for file in entry["files"].values()
    ]


def test_each_library_is_pinned_and_ships_its_licence() -> None:
    assert set(MANIFEST) == {"highlight", "diff"}
    for name, entry in MANIFEST.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), name  # exact, no range
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", entry["integrity"]), name
        assert entry["licence"] == "BSD-3-Clause", name
        licence = WEB / "vendor" / name / "LICENSE"
        assert "LICENSE" in entry["files"] and licence.is_file(), name
        assert "BSD 3-Clause License" in licence.read_text(), name
    for static, file in served():
        body = (WEB / static).read_bytes()
        assert hashlib.sha256(body).hexdigest() == file["sha256"], static  # as vendored
        assert static in STATIC, static
    # The builds say which version they are.
    assert b"Highlight.js v11.12.0 " in (WEB / "vendor/highlight/highlight.min.js").read_bytes()
    assert MANIFEST["highlight"]["version"] == "11.12.0"


async def test_the_server_serves_them_with_their_types(start_server: StartServer) -> None:
    server = await start_server()  # the package's own files
    port = server.server.ws_port
    for static, _ in served():
        reply = await http_request(port, "GET", f"/static/{static}")
        assert reply.status == 200, static
        assert reply.body == (WEB / static).read_bytes(), static
        kind = next(t for suffix, t in TYPES.items() if static.endswith(suffix))
        assert reply.header("Content-Type") == kind, static
        assert reply.header("X-Content-Type-Options") == "nosniff", static
    # The pages load them from this server: the policy allows nothing else.
    page = (await http_request(port, "GET", "/jobs/some-job")).body.decode()
    assert 'href="/static/vendor/highlight/github-dark.min.css"' in page
    assert "script-src 'self'" in content_security_policy("127.0.0.1")
    for module, imported in (("code_view.js", "./vendor/highlight/highlight.min.js"),
                             ("compare.js", "./vendor/diff/diff.min.js")):
        source = (await http_request(port, "GET", f"/static/{module}")).body.decode()
        assert f'from "{imported}"' in source or f'import "{imported}"' in source, module
