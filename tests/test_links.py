"""Links to the Command Center: ``chimera token --job ID --link`` (a viewer link that works
against a real server with auth on) and the URL ``chimera serve`` prints at start-up."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from chimera.client import JobsClient
from chimera.events import TeamName
from tests.conftest import StartServer, job_events, read_until_closed, ws_connect
from tests.doubles import ScriptedProvider, factory
from tests.http_raw import http_request
from tests.processes import chimera_serve
from tests.security import SECRET, token
from tests.test_cli import run
from tests.test_web import FILES, PAGES


async def test_token_link_opens_the_job_read_only(
    start_server: StartServer, tmp_path: Path
) -> None:
    (tmp_path / "web").mkdir()
    for name, body in FILES.items():
        (tmp_path / "web" / name).write_bytes(body)
    hold = asyncio.Event()  # the job runs until the viewer has tried to cancel it
    server = await start_server(
        factory({team: lambda: ScriptedProvider(["t"], hold=hold) for team in TeamName}),
        jwt_secret=SECRET, web_root=str(tmp_path / "web"),
    )
    port = server.server.ws_port
    async with JobsClient(server.grpc_target, token=token("alice")) as client:
        await client.create("a counter", job_id="shared-job")
    code, out, err = await run(
        "token", "--sub", "viewer", "--scope", "read", "--job", "shared-job", "--link",
        "--url", f"http://127.0.0.1:{port}/", "--jwt-secret", SECRET,
    )
    assert code == 0, err
    found = re.fullmatch(rf"http://127\.0\.0\.1:{port}/jobs/shared-job#token=([\w.-]+)\n", out)
    assert found, out
    viewer = found[1]
    # The page itself needs no token (the fragment never reaches the server) ...
    page = await http_request(port, "GET", "/jobs/shared-job")
    assert page.status == 200 and page.body == PAGES["job.html"]
    # ... the token in the fragment streams the job, as a page offers it,
    protocols = [Subprotocol("chimera.bearer"), Subprotocol(viewer)]
    ws = await ws_connect(server.ws_url("shared-job"), subprotocols=protocols)
    assert json.loads(await ws.recv())["type"] == "connected"
    await ws.send(json.dumps({"type": "cancel_job"}))  # read-only: refused
    while (refusal := json.loads(await ws.recv()))["type"] != "error":
        pass
    assert refusal["data"]["code"] == "PERMISSION_DENIED" and "seq" not in refusal
    hold.set()
    messages = await read_until_closed(ws)
    assert job_events(messages)[-1]["data"] == {"status": "succeeded"}
    # ... and polls its snapshot, but reaches no other job.
    snapshot = await http_request(port, "GET", "/api/jobs/shared-job",
                                  {"Authorization": f"Bearer {viewer}"})
    assert snapshot.status == 200 and snapshot.json()["job_id"] == "shared-job"
    with pytest.raises(InvalidStatus) as info:
        await ws_connect(server.ws_url("other-job"), subprotocols=protocols)
    assert info.value.response.status_code == 403

    # The default address, and a link without a job.
    code, out, _ = await run("token", "--sub", "v", "--scope", "read", "--job", "j1", "--link",
                             "--jwt-secret", SECRET)
    assert code == 0 and out.startswith("http://127.0.0.1:8888/jobs/j1#token=ey")
    code, out, err = await run("token", "--sub", "v", "--scope", "read", "--link",
                               "--jwt-secret", SECRET)
    assert code == 2 and out == "" and "--link needs --job" in err


async def test_serve_prints_the_command_center_url(tmp_path: Path) -> None:
    async with chimera_serve(tmp_path / "c.db", tmp_path / "serve.log") as serve:
        log = serve.read_log()
        found = re.search(r"Command Center: (http://127\.0\.0\.1:(\d+)/)", log)
        assert found, log
        assert int(found[2]) == serve.ws_port
        reply = await http_request(serve.ws_port, "GET", "/")
        # The installed Command Center page, with its policy.
        assert reply.status == 200 and reply.body.lower().startswith(b"<!doctype html")
        assert reply.header("Content-Security-Policy")
