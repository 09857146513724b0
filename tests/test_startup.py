"""`chimera serve` refusing to start, with one clear line: database in use, damaged or
unreachable, port in use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import sys
from pathlib import Path

from chimera.events import TeamName
from tests.conftest import StartServer, wait_for_sequence
from tests.doubles import ScriptedProvider, factory
from tests.filesystems import tmpfs
from tests.test_cli import CHIMERA


async def serve_refused(*args: str) -> str:
    """Runs `chimera serve ARGS`, which must exit non-zero before serving; its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *CHIMERA, "serve", "--grpc-port", "0", "--ws-port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines = []
    try:
        while line := (await asyncio.wait_for(proc.stderr.readline(), 30)).decode():
            assert "serving gRPC" not in line, f"started: {args}"
            lines.append(line)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(lines)
    assert code != 0, text
    assert "Traceback" not in text, text
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


async def test_a_second_server_on_the_same_database_refuses(
    start_server: StartServer, tmp_path: Path
) -> None:
    hold = asyncio.Event()
    providers = factory({team: lambda: ScriptedProvider(["t"], hold=hold) for team in TeamName})
    db = str(tmp_path / "shared.db")
    first = await start_server(providers, db=db)
    async with first.client() as client:
        await client.create("a counter", job_id="running")
        await wait_for_sequence(client, "running", 3)
        line = await serve_refused("--db", db)
        assert "in use by another Chimera server" in line
        # The first server is undisturbed: its job runs on and finishes.
        hold.set()
        await wait_for_sequence(client, "running", 1)
        async for _ in client.events("running"):
            pass
        job = await client.get("running")
        assert job.state == 2  # SUCCEEDED
        await client.create("another", job_id="after")


async def test_port_in_use_missing_directory_damaged_file(tmp_path: Path) -> None:
    busy = socket.create_server(("127.0.0.1", 0))
    port = str(busy.getsockname()[1])
    damaged = tmp_path / "damaged.db"
    # Damage that still opens and reads (so it would be served silently): a table's
    # pages lose their schema entry, as after a torn write of page 1.
    with contextlib.closing(sqlite3.connect(damaged)) as conn:
        conn.execute("CREATE TABLE lost (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO lost (body) VALUES (?)", [("x" * 500,)] * 100)
        conn.commit()
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("DELETE FROM sqlite_master WHERE name = 'lost'")
        conn.commit()
    db = ["--db", str(tmp_path / "ok.db")]
    with busy:
        lines = await asyncio.gather(
            serve_refused("--grpc-port", port, *db),
            serve_refused("--ws-port", port, "--db", str(tmp_path / "ok2.db")),
            serve_refused("--db", str(tmp_path / "no" / "such" / "dir" / "x.db")),
            serve_refused("--db", str(damaged)),
        )
    assert f"cannot listen for gRPC on 127.0.0.1:{port}: Address already in use" in lines[0]
    assert f"cannot listen for WebSocket on 127.0.0.1:{port}" in lines[1]
    assert "cannot open the database" in lines[2] and "No such file or directory" in lines[2]
    assert "is damaged (quick_check" in lines[3]


async def test_read_only_file_system(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as read_only:
        line = await serve_refused("--db", str(read_only / "chimera.db"))
    assert "cannot open the database" in line and "Read-only file system" in line


# Heavy modules plain `chimera serve` (SQLite, no auth, no API keys) must start without:
# the provider SDKs load when a team runs for real, Redis's client with --redis, PyJWT
# and cryptography with auth, rich and the client with the client commands, gRPC
# reflection (and protobuf's descriptor_pb2) with the first reflection call, tomllib
# with --config, difflib with a misspelt setting.
NOT_AT_START = ("anthropic", "google.genai", "redis", "jwt", "cryptography", "rich",
                "chimera.client", "chimera.console", "chimera.fakes", "chimera.cluster",
                "chimera.gateways.reflection_servicer", "grpc_reflection.v1alpha",
                "google.protobuf.descriptor_pb2", "tomllib", "difflib")


async def test_plain_serve_starts_without_the_heavy_modules(tmp_path: Path) -> None:
    """A real `chimera serve` under ``-X importtime`` (every import, on stderr), read
    until its serving line: cold start stays lazy (scripts/bench_coldstart.py)."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith("CHIMERA_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", *CHIMERA[1:], "serve", "--grpc-port", "0",
        "--ws-port", "0", "--metrics-port", "0", "--db", str(tmp_path / "c.db"),
        "--log-format", "text", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    imported: set[str] = set()
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, f"exited before serving: {sorted(imported)[-20:]}"
            if line.startswith("import time:"):
                imported.add(line.rsplit("|", 1)[1].strip())
            elif "serving gRPC" in line:
                break
    finally:
        proc.terminate()
        await proc.communicate()
    assert "chimera.server" in imported and "grpc" in imported  # the log is read right
    loaded = sorted(m for m in imported
                    if any(m == h or m.startswith(h + ".") for h in NOT_AT_START))
    assert loaded == [], loaded
