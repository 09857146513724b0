"""Logs: ``--log-format json`` from a real ``chimera serve``; tokens and keys redacted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from chimera.observability import logs
from tests.conftest import Running, read_until_closed, until, ws_connect
from tests.http_raw import http_request
from tests.processes import SERVING, chimera_serve, free_port, read_text, spawn, wait_for_lines
from tests.redis_fixture import needs_redis, redis_server

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
SECRETS = ("sk-ant-api03-abcdefghijkl", "AIzaSyA0123456789abcdefghijklmnopq", JWT)


async def test_json_logs_parse_and_job_lines_carry_the_job_id(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    async with chimera_serve(
        tmp_path / "chimera.db", log, "--log-format", "json", "--metrics-port", "0",
        "--sim-delay", "0.01",
    ) as serve:
        ws = await ws_connect(serve.ws_url("logged"))
        async with serve.client() as client:
            await client.create("a counter", job_id="logged")
            await asyncio.wait_for(read_until_closed(ws), 30)
        serve.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.process.wait(), 30) == 0
    lines = [json.loads(line) for line in read_text(log).splitlines()]  # every line parses
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    job_lines = [line for line in lines if "logged" in line["msg"]]
    assert {line["msg"] for line in job_lines} >= {
        "job logged started: teams anthropic, google", "job logged finished: succeeded"
    }
    assert all(line["job_id"] == "logged" for line in job_lines)
    assert any(line["msg"].startswith("serving metrics on http://127.0.0.1:") for line in lines)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restores the root logger's handlers and level after the test reconfigures them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tokens_and_keys_are_redacted(log_format: str, root_logging: None) -> None:
    out = io.StringIO()
    logs.configure(log_format, verbose=False, stream=out)
    log = logging.getLogger("chimera.test")
    log.warning("GET /ws/orchestrate/x?token=%s Authorization: Bearer %s", JWT, "opaque-token")
    log.warning("anthropic key %s, gemini https://g/v1?key=%s", SECRETS[0], SECRETS[1])
    try:
        raise ValueError(f"x-api-key: {SECRETS[0]}")
    except ValueError:
        log.exception("failed", extra={"job_id": "j1", "team": "anthropic"})
    text = out.getvalue()
    for secret in (*SECRETS, "opaque-token"):
        assert secret not in text
    assert text.count("[redacted]") >= 5
    if log_format == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == 3
        assert lines[2]["job_id"] == "j1" and lines[2]["team"] == "anthropic"
        assert "ValueError" in lines[2]["exc"]


def test_the_default_is_text_on_a_terminal_and_json_otherwise() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.default_format(Terminal()) == "text"
    assert logs.default_format(io.StringIO()) == "json"


ACCESS = "chimera.gateways.ws_gateway.connections"
PEER = r"from 127\.0\.0\.1:\d+"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == ACCESS]


async def test_access_lines_carry_request_status_and_peer_and_probes_log_at_debug(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    port = server.server.ws_port
    # At INFO (the default): a probe logs nothing, a plain answer one line.
    caplog.set_level(logging.INFO, logger=ACCESS)
    for path in ("/healthz", "/readyz", f"/api/jobs/nope?token={JWT}"):
        await http_request(port, "GET", path)
    ws = await ws_connect(server.ws_url("waited-for"))
    await ws.close()
    await until(lambda: any("connection closed: GET /ws/orchestrate/waited-for" in m
                            for _, m in access_lines(caplog)))
    lines = access_lines(caplog)
    assert not any("/healthz" in m or "/readyz" in m for _, m in lines), lines
    (answer,) = [(lvl, m) for lvl, m in lines if m.startswith("HTTP response sent")]
    assert answer[0] == logging.INFO
    (record,) = [r for r in caplog.records if r.getMessage() == answer[1]]
    assert getattr(record, "peer", None) == "127.0.0.1"  # the JSON lines' `peer`
    assert re.fullmatch(
        rf"HTTP response sent \(404 Not Found\): GET /api/jobs/nope\?token=\[redacted\] {PEER}",
        answer[1],
    ), answer
    # The closed line of a plain HTTP answer says nothing more: not at INFO.
    closed = [m for lvl, m in lines if m.startswith("connection closed")]
    assert len(closed) == 1 and "/ws/orchestrate/waited-for" in closed[0]
    (opened,) = [r for r in caplog.records if r.getMessage().startswith("connection open")]
    assert opened.levelno == logging.INFO
    assert re.fullmatch(rf"connection open: GET /ws/orchestrate/waited-for {PEER}",
                        opened.getMessage())
    assert getattr(opened, "job_id", None) == "waited-for"  # a line about the job

    # At DEBUG the probes are there, with their path, status and peer.
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger=ACCESS)
    await http_request(port, "GET", "/healthz")
    await until(lambda: any(m.startswith("connection closed: GET /healthz")
                            for _, m in access_lines(caplog)))
    probe = [(lvl, m) for lvl, m in access_lines(caplog) if "/healthz" in m]
    assert {lvl for lvl, _ in probe} == {logging.DEBUG}
    assert any(re.fullmatch(rf"HTTP response sent \(200 OK\): GET /healthz {PEER}", m)
               for _, m in probe), probe


TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (?:worker=(?P<worker>\d+) )?"
    r"(?P<logger>[\w.]+): (?P<msg>.*)"
)
PARENT = "chimera.cluster.workers"  # the parent's own lines: it serves nothing


def worker_lines(text: str, log_format: str) -> list[tuple[int | None, str, str]]:
    """(worker or None, logger, message) of every line; each line must parse."""
    lines = []
    for line in text.splitlines():
        if log_format == "json":
            record = json.loads(line)
            lines.append((record.get("worker"), record["logger"], record["msg"]))
        else:
            found = TEXT_LINE.fullmatch(line)
            assert found, line
            worker = found["worker"]
            lines.append((None if worker is None else int(worker), found["logger"], found["msg"]))
    return lines


@needs_redis
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_every_line_of_a_worker_names_it(tmp_path: Path, log_format: str) -> None:
    log = tmp_path / "workers.log"
    async with redis_server(tmp_path / "redis") as redis:
        parent, _, _ = await spawn("workers", log, [
            "serve", "--redis", redis.url, "--workers", "2", "--grpc-port", str(free_port()),
            "--ws-port", str(free_port()), "--no-metrics", "--log-format", log_format,
        ])
        try:
            await wait_for_lines(log, SERVING, parent, 2)  # both workers listen
        finally:
            parent.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(parent.wait(), 30) == 0
    lines = worker_lines(read_text(log), log_format)
    serving = [worker for worker, _, msg in lines if SERVING.match(msg)]
    assert len(serving) == 2 and set(serving) == {0, 1}, lines  # as the parent numbers them
    started = {msg for _, logger, msg in lines if logger == PARENT}
    assert {m.partition(" (")[0] for m in started if "started" in m} == {
        "worker 0 started", "worker 1 started"}
    # Each child's every line names it; the parent's name none.
    assert [(w, lg, m) for w, lg, m in lines if (w is None) != (lg == PARENT)] == []
    assert {w for w, _, _ in lines if w is not None} == {0, 1}
