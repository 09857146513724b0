"""Secure by default, TLS on both planes, and the CLI with tokens and TLS."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import ssl
from pathlib import Path

import grpc
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from chimera.auth.principal import Scope
from chimera.auth.tokens import TokenVerifier
from chimera.client import JobsClient
from chimera.errors import ConfigError
from tests.conftest import StartServer, grpcurl, read_until_closed, ws_connect
from tests.security import SECRET, self_signed, token
from tests.test_cli import CHIMERA, run


async def test_no_auth_refuses_a_non_loopback_address(start_server: StartServer) -> None:
    with pytest.raises(ConfigError, match="without authentication"):
        await start_server(host="0.0.0.0")
    secured = await start_server(host="0.0.0.0", jwt_secret=SECRET)
    assert secured.server.grpc_port > 0
    trusted = await start_server(host="0.0.0.0", insecure=True)
    assert trusted.server.ws_port > 0


async def test_serve_refuses_to_start_exposed_without_auth() -> None:
    code, _, err = await run("serve", "--host", "0.0.0.0", "--db", ":memory:")
    assert code == 2
    assert "without authentication" in err and "--insecure" in err


async def test_bad_auth_and_tls_settings_are_refused(start_server: StartServer) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        await start_server(jwt_secret="short")
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        await start_server(tls_cert="cert.pem")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        await start_server(jwt_public_key="not a key")
    with pytest.raises(ConfigError, match="not both"):
        await start_server(jwt_secret=SECRET, jwt_public_key="not a key")
    with pytest.raises(ConfigError, match="cannot read the TLS"):
        await start_server(tls_cert="/nonexistent/cert.pem", tls_key="/nonexistent/key.pem")


async def test_tls_on_both_planes(start_server: StartServer, tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    server = await start_server(tls_cert=str(cert.cert), tls_key=str(cert.key))
    ca = cert.cert.read_bytes()
    async with JobsClient(server.grpc_target, tls_ca=ca) as client:
        job = await client.create("a counter", job_id="tls-job")
        async for _ in client.events(job.job_id):
            pass
    code, out, err = await grpcurl(
        server.grpc_target, "chimera.v1.JobService/GetJob", data={"job_id": "tls-job"},
        cacert=str(cert.cert),
    )
    assert code == 0 and json.loads(out)["job"]["state"] == "JOB_STATE_SUCCEEDED", err
    # Plaintext clients get nowhere.
    code, _, err = await grpcurl(server.grpc_target, "list")
    assert code != 0
    context = ssl.create_default_context(cafile=str(cert.cert))
    ws = await ws_connect(
        f"wss://127.0.0.1:{server.server.ws_port}/ws/orchestrate/tls-job", ssl=context
    )
    messages = await read_until_closed(ws)
    assert messages[-1]["data"] == {"status": "succeeded"}
    async with JobsClient(server.grpc_target) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await plaintext.get("tls-job")
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_cli_with_token_and_tls(start_server: StartServer, tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    server = await start_server(
        jwt_secret=SECRET, tls_cert=str(cert.cert), tls_key=str(cert.key)
    )
    target, ca = server.grpc_target, str(cert.cert)
    code, minted, err = await run(
        "token", "--sub", "alice", "--scope", "submit,read", "--jwt-secret", SECRET
    )
    assert code == 0, err
    alice = minted.strip()
    code, out, err = await run(
        "submit", "a todo list", "--server", target, "--job-id", "cli-tls",
        "--token", alice, "--tls-ca", ca,
    )
    assert code == 0, err
    assert "export function TodoList" in out
    code, out, err = await run("jobs", "--server", target, "--token", alice, "--tls-ca", ca)
    assert code == 0 and "cli-tls" in out, err
    code, out, err = await run(
        "watch", "cli-tls", "--ws", f"wss://127.0.0.1:{server.server.ws_port}",
        "--token", alice, "--tls-ca", ca,
    )
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["data"] == {"status": "succeeded"}
    # No cancel scope in this token; no token at all.
    code, _, err = await run("cancel", "cli-tls", "--server", target, "--token", alice,
                             "--tls-ca", ca)
    assert code == 2 and "PERMISSION_DENIED" in err
    code, _, err = await run("status", "cli-tls", "--server", target, "--tls-ca", ca)
    assert code == 2 and "UNAUTHENTICATED" in err
    code, _, err = await run(
        "watch", "cli-tls", "--ws", f"wss://127.0.0.1:{server.server.ws_port}", "--tls-ca", ca
    )
    assert code == 2 and "401" in err
    # wss:// to a self-signed server without --tls-ca: say what is missing.
    code, _, err = await run(
        "watch", "cli-tls", "--ws", f"wss://127.0.0.1:{server.server.ws_port}", "--token", alice
    )
    assert code == 2 and "--tls-ca" in err and "Traceback" not in err, err


async def test_token_command_reads_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHIMERA_JWT_SECRET", raising=False)
    code, out, err = await run("token", "--sub", "ci", "--scope", "read", "--job", "one")
    assert code == 2 and "CHIMERA_JWT_SECRET" in err
    monkeypatch.setenv("CHIMERA_JWT_SECRET", SECRET)
    code, out, err = await run("token", "--sub", "ci", "--scope", "read", "--job", "one")
    assert code == 0, err
    principal = TokenVerifier.from_secret(SECRET).verify(out.strip())
    assert principal.sub == "ci" and principal.job == "one"
    assert principal.scopes == {Scope.READ}


async def test_serve_flags_reach_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """`chimera serve` as a user starts it: auth from the environment, origins, limits."""
    monkeypatch.setenv("CHIMERA_JWT_SECRET", SECRET)
    proc = await asyncio.create_subprocess_exec(
        *CHIMERA, "serve", "--grpc-port", "0", "--ws-port", "0", "--db", ":memory:",
        "--sim-delay", "0", "--allowed-origin", "https://app.example.com",
        "--max-frame-bytes", "2048",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        line = ""
        while "serving gRPC" not in line:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "the server exited before serving"
        found = re.search(r"serving gRPC on [\d.]+:(\d+) and WebSocket on [\d.]+:(\d+)", line)
        assert found, line
        grpc_port, ws_port = found.groups()
        target = f"127.0.0.1:{grpc_port}"
        code, _, err = await run("jobs", "--server", target)
        assert code == 2 and "UNAUTHENTICATED" in err
        monkeypatch.setenv("CHIMERA_TOKEN", token("alice"))
        code, _, err = await run("submit", "a counter", "--server", target, "--job-id", "s1")
        assert code == 0, err
        url = f"ws://127.0.0.1:{ws_port}/ws/orchestrate/s1?token={token('alice')}"
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(url, origin=Origin("https://evil.example.com"))
        assert info.value.response.status_code == 403
        # A job not created yet (a token for exactly that job may wait for it),
        # so the connection stays open until the frame limit closes it.
        later = token("alice", job="later")
        waiting = f"ws://127.0.0.1:{ws_port}/ws/orchestrate/later?token={later}"
        ws = await ws_connect(waiting, origin=Origin("https://app.example.com"), max_size=None)
        await ws.send("x" * 4096)
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code == 1009
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
