"""The Host allow-list (DNS rebinding guard): checked first, on every HTTP and WebSocket request."""

from __future__ import annotations

from tests.conftest import Running, StartServer, read_until_closed, run_job, ws_connect
from tests.security import rebound_handshake_status
from tests.test_fuzz import HANDSHAKE, http_request

REBOUND = "evil.com"


def get(path: str, host: str, *extra: str) -> str:
    headers = "".join(f"{h}\r\n" for h in extra)
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n"


async def test_a_rebound_name_is_refused_on_every_endpoint(server: Running) -> None:
    await run_job(server, "secret")
    port = server.server.ws_port
    rebound = f"{REBOUND}:{port}"
    origin = f"Origin: http://{rebound}"
    for raw in (
        get("/api/jobs/secret", rebound, origin),  # the attack: "same origin" snapshot
        get("/api/jobs/secret", rebound),
        get("/ws/orchestrate/secret", rebound, origin, HANDSHAKE.rstrip("\r\n")),
        get("/healthz", rebound),
        get("/no/such/path", rebound),
        # The browser endpoints: the page, its files, the job list, a CORS preflight.
        get("/", rebound),
        get("/jobs/secret", rebound),
        get("/static/chimera.js", rebound),
        get("/api/jobs", rebound, origin),
        get("/api/jobs", rebound).replace("GET", "OPTIONS", 1),
        get("/api/jobs/secret", f"127.0.0.1:{port}\r\nHost: {rebound}"),  # two Host headers
        "GET /api/jobs/secret HTTP/1.1\r\n\r\n",  # none
    ):
        status, body = await http_request(server, raw)
        assert status == 421, raw
        assert b"--allowed-host" in body and b"succeeded" not in body
    # A real client, connected the way a rebound name connects a browser.
    assert await rebound_handshake_status(port, rebound, "secret") == 421


async def test_the_bound_address_and_the_loopback_names_are_served(server: Running) -> None:
    await run_job(server, "mine")
    port = server.server.ws_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        status, body = await http_request(
            server, get("/api/jobs/mine", host, f"Origin: http://{host}")
        )
        assert status == 200, (host, body)
    ws = await ws_connect(server.ws_url("mine"))  # Host: 127.0.0.1:PORT
    assert (await read_until_closed(ws))[-1]["data"] == {"status": "succeeded"}


async def test_allowed_host_adds_names(start_server: StartServer) -> None:
    server = await start_server(allowed_hosts=("chimera.example.com",))
    await run_job(server, "mine")
    status, _ = await http_request(server, get("/api/jobs/mine", "chimera.example.com:443"))
    assert status == 200
    status, _ = await http_request(server, get("/api/jobs/mine", f"{REBOUND}:443"))
    assert status == 421
    anything = await start_server(allowed_hosts=("*",))
    status, _ = await http_request(anything, get("/healthz", REBOUND))
    assert status == 200
