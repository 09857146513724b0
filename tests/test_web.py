"""The Command Center's HTTP side on a real server, read with a raw HTTP client: the fixed
set of files, security headers, ``GET /api/jobs``, and CORS for ``--allowed-origin``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chimera.client import JobsClient
from tests.conftest import Running, StartServer, run_job
from tests.http_raw import HttpReply, http_request
from tests.security import SECRET, token
from tests.test_grpc_api import BAD_PAGE_TOKEN, page_token_text

OTHER = "http://localhost:3030"
FILES = {
    "page.html": b"<!doctype html><title>$title</title>\n$main\n<div id=job-view></div>\n",
    "command-center.html": b"<form>the brief</form>\n",
    "chimera.js": b"export const chimera = 1;",
    "app.js": b"import './chimera.js';",
    "app.css": b"body { color: black }",
}
# The pages made of them: the shell with each page's title and, for the index, its part.
PAGES = {
    "index.html": "<!doctype html><title>Chimera · Command Center</title>\n\n"
    "<form>the brief</form>\n\n<div id=job-view></div>\n".encode(),
    "job.html": "<!doctype html><title>Chimera · Job</title>\n\n<div id=job-view></div>\n".encode(),
}


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    root.mkdir()
    for name, body in FILES.items():
        (root / name).write_bytes(body)
    # Files that must never be served: beside the set, and next to the directory.
    (root / "secret.txt").write_text("in the web directory")
    (tmp_path / "secret.txt").write_text("outside the web directory")
    return root


async def get(server: Running, path: str, **headers: str) -> HttpReply:
    return once_each(await http_request(server.server.ws_port, "GET", path, headers))


def once_each(reply: HttpReply) -> HttpReply:
    """No header twice: browsers refuse a response with two Content-Length headers
    (ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH), and two CORS headers."""
    twice = {name: values for name, values in reply.headers.items() if len(values) > 1}
    assert not twice, twice
    return reply


async def test_pages_and_static_files_are_a_fixed_set(
    start_server: StartServer, web_root: Path
) -> None:
    server = await start_server(web_root=str(web_root))
    port = server.server.ws_port
    for path, name, kind in [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/jobs/3f2a-job_1", "job.html", "text/html; charset=utf-8"),
        ("/static/chimera.js", "chimera.js", "text/javascript; charset=utf-8"),
        ("/static/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/static/app.css", "app.css", "text/css; charset=utf-8"),
    ]:
        reply = await get(server, path)
        assert reply.status == 200, path
        assert reply.body == {**FILES, **PAGES}[name], path
        assert reply.header("Content-Type") == kind
        assert reply.header("X-Content-Type-Options") == "nosniff"
    for page in ("/", "/jobs/some-job"):
        reply = await get(server, page)
        csp = reply.header("Content-Security-Policy") or ""
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'"  # no inline script, no eval
        assert directives["default-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["connect-src"] == f"'self' ws://127.0.0.1:{port} wss://127.0.0.1:{port}"
        assert "unsafe" not in csp
        assert reply.header("Referrer-Policy") == "no-referrer"
    # Nothing outside the set, whatever the path says.
    for path in (
        "/static/secret.txt", "/static/../secret.txt", "/static/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt", "/static//etc/passwd", "/static/chimera.js/",
        "/static/", "/static/index.html", "/static/page.html", "/static/command-center.html",
        "/secret.txt", "/index.html", "/page.html", "/jobs/a/b",
        "/jobs/..%2f..%2fsecret.txt", "/web/secret.txt",
    ):
        reply = await get(server, path)
        assert reply.status == 404, path
        assert b"in the web directory" not in reply.body and b"outside" not in reply.body
        assert reply.header("X-Content-Type-Options") == "nosniff", path
    # Every answer of the port says nosniff: refusals too.
    assert (await http_request(port, "POST", "/")).header("X-Content-Type-Options") == "nosniff"
    refused = await get(server, "/", Host="evil.example")
    assert refused.status == 421 and refused.header("X-Content-Type-Options") == "nosniff"


async def test_missing_files_are_a_clear_404(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(web_root=str(tmp_path / "nowhere"))
    for path in ("/", "/jobs/x", "/static/chimera.js"):
        reply = await get(server, path)
        assert reply.status == 404 and b"not installed" in reply.body, path


async def test_api_jobs_lists_newest_first_paged_and_auth_aware(
    start_server: StartServer,
) -> None:
    server = await start_server()
    for n in range(3):
        await run_job(server, f"job-{n}")
    first = await get(server, "/api/jobs?page_size=2")
    assert first.status == 200 and first.header("Content-Type") == (
        "application/json; charset=utf-8"
    )
    page = first.json()
    assert [j["job_id"] for j in page["jobs"]] == ["job-2", "job-1"]
    assert all(j["state"] == "succeeded" and j["brief"] == "a counter" for j in page["jobs"])
    # Basic by default: the list carries no thoughts, only how many.
    assert all(not r["thoughts"] and r["thought_count"] > 0
               for j in page["jobs"] for r in j["teams"])
    assert re.fullmatch(r"v1:\d+", page_token_text(page["next_page_token"]))  # as ListJobs
    second = (await get(server, f"/api/jobs?page_size=2&page_token={page['next_page_token']}"))
    assert [j["job_id"] for j in second.json()["jobs"]] == ["job-0"]
    assert second.json()["next_page_token"] == ""
    full = (await get(server, "/api/jobs?view=full")).json()
    assert all(r["thoughts"] and r["thoughts"][0]["id"] for j in full["jobs"] for r in j["teams"])
    for bad in ("page_size=101", "page_size=x", "page_size=-1", "page_token=nope",
                "view=everything", "page_size=1&page_size=2"):
        reply = await get(server, f"/api/jobs?{bad}")
        assert reply.status == 400, bad
        assert reply.json()["error"], bad
    assert (await get(server, "/api/jobs?page_token=nope")).json()["error"] == BAD_PAGE_TOKEN

    secured = await start_server(jwt_secret=SECRET)
    for sub, job_id in (("alice", "a-1"), ("bob", "b-1")):
        async with JobsClient(secured.grpc_target, token=token(sub)) as client:
            await client.create("a counter", job_id=job_id)
    anonymous = await get(secured, "/api/jobs")
    assert anonymous.status == 401 and anonymous.header("WWW-Authenticate") == "Bearer"
    assert "token" in anonymous.json()["error"]
    alice = await get(secured, "/api/jobs", Authorization=f"Bearer {token('alice')}")
    assert [j["job_id"] for j in alice.json()["jobs"]] == ["a-1"]
    admin = await get(secured, "/api/jobs",
                      Authorization=f"Bearer {token('admin', 'read', all_jobs=True)}")
    assert [j["job_id"] for j in admin.json()["jobs"]] == ["b-1", "a-1"]
    no_read = await get(secured, "/api/jobs", Authorization=f"Bearer {token('alice', 'submit')}")
    assert no_read.status == 403
    # Authorised before the query is parsed: bad parameters tell it nothing more.
    for bad in ("page_token=nope", "page_size=x", "view=odd"):
        refused = await get(secured, f"/api/jobs?{bad}",
                            Authorization=f"Bearer {token('alice', 'submit')}")
        assert refused.status == 403, bad
    assert (await get(secured, "/api/jobs?page_token=nope")).status == 401


async def test_cors_for_allowed_origins_only(start_server: StartServer, web_root: Path) -> None:
    server = await start_server(allowed_origins=(OTHER,), web_root=str(web_root))
    await run_job(server, "shared")
    for path in ("/api/jobs/shared", "/api/jobs", "/static/chimera.js"):
        reply = await get(server, path, Origin=OTHER)
        assert reply.status == 200, path
        assert reply.header("Access-Control-Allow-Origin") == OTHER, path
        assert reply.header("Vary") == "Origin", path
        assert "access-control-allow-credentials" not in reply.headers, path
        # Another origin: the API refuses it outright; a static file comes without
        # CORS headers, so the browser keeps it from the page.
        foreign = await get(server, path, Origin="http://evil.example")
        assert "access-control-allow-origin" not in foreign.headers, path
        assert foreign.status == (200 if path.startswith("/static/") else 403), path
        # Same origin, or no browser at all: no CORS headers needed.
        assert "access-control-allow-origin" not in (await get(server, path)).headers
    # Errors are readable by the allowed page too (to show why).
    missing = await get(server, "/api/jobs/nope", Origin=OTHER)
    assert missing.status == 404 and missing.header("Access-Control-Allow-Origin") == OTHER

    # Preflight, as an Authorization header makes the browser send.
    for path in ("/api/jobs/shared", "/api/jobs"):
        reply = once_each(await http_request(server.server.ws_port, "OPTIONS", path, {
            "Origin": OTHER, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }))
        assert reply.status == 204, path
        assert reply.header("Access-Control-Allow-Origin") == OTHER
        assert reply.header("Access-Control-Allow-Methods") == "GET, OPTIONS"
        assert reply.header("Access-Control-Allow-Headers") == "Authorization"
        assert reply.header("Vary") == "Origin"
        foreign = await http_request(server.server.ws_port, "OPTIONS", path, {
            "Origin": "http://evil.example", "Access-Control-Request-Method": "GET",
        })
        assert foreign.status == 403
        assert not any(h.startswith("access-control-") for h in foreign.headers)

    # "*" lets any origin read, each told its own origin, never "*".
    anyone = await start_server(allowed_origins=("*",), web_root=str(web_root))
    await run_job(anyone, "open")
    reply = await get(anyone, "/api/jobs/open", Origin="http://somewhere.example")
    assert reply.header("Access-Control-Allow-Origin") == "http://somewhere.example"
