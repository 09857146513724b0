"""Logs: ``--log-format json`` from a real ``chimera serve``; tokens and keys redacted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from chimera.observability import logs
from tests.conftest import read_until_closed, ws_connect
from tests.processes import chimera_serve, read_text

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
