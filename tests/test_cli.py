"""The chimera command, run as a user runs it (a real process)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import re
import signal
import sys
from pathlib import Path

from rich.console import Console

import chimera
from chimera.auth.tokens import TokenVerifier
from chimera.cli import ExitCode, build_parser
from chimera.client import JobsClient
from chimera.console import LiveView
from chimera.events import TeamName
from chimera.settings import SERVE_GROUPS, given, resolve, server_config, table
from chimera.v1 import jobs_pb2 as pb
from tests.conftest import (
    Running,
    StartServer,
    http_answer,
    read_until_closed,
    wait_for_sequence,
    ws_connect,
)
from tests.processes import free_port

CHIMERA = [sys.executable, "-m", "chimera"]
SECRET = "cli-test-secret-0123456789-0123456789-abcdef"


async def run(*args: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CHIMERA, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_version_prints_the_package_version() -> None:
    code, out, err = await run("--version")
    assert code == 0, err
    assert out == f"chimera {importlib.metadata.version('chimera')}\n"
    assert importlib.metadata.version("chimera") == chimera.__version__


async def test_demo_runs_the_main_job_end_to_end() -> None:
    code, out, err = await run("demo", "--sim-delay", "0", "Create a login form with email")
    assert code == 0, err
    assert "[anthropic] thinking (model: simulated)" in out
    assert "[google] thinks:" in out
    assert "export function LoginForm" in out
    assert "succeeded" in out


async def test_submit_status_jobs_watch_cancel(server: Running) -> None:
    target = server.grpc_target
    code, out, err = await run("submit", "a todo list", "--server", target, "--job-id", "cli-1")
    assert code == 0, err
    assert "job cli-1 submitted" in out and "export function TodoList" in out
    code, out, err = await run("status", "cli-1", "--server", target, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "succeeded"
    code, out, err = await run("jobs", "--server", target)
    assert code == 0 and "cli-1" in out and "succeeded" in out
    ws = f"ws://127.0.0.1:{server.server.ws_port}"
    code, out, err = await run("watch", "cli-1", "--ws", ws)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["type"] == "connected"
    assert [m["seq"] for m in lines[1:]] == list(range(1, len(lines)))
    assert lines[-1]["data"] == {"status": "succeeded"}  # (not just "connected")
    code, out, err = await run("cancel", "cli-1", "--server", target)
    assert code == 2 and "FAILED_PRECONDITION" in err
    code, out, err = await run("status", "nope", "--server", target)
    assert code == 2 and "NOT_FOUND" in err
    code, out, err = await run("watch", "bad id", "--ws", ws)
    assert code == 2 and "malformed job id" in err
    code, out, err = await run("watch", "x" * 65, "--ws", ws)
    assert code == 2 and "malformed" in err


async def test_watch_resumes_with_since_and_the_epoch_of_its_connected_line(
    server: Running,
) -> None:
    ws = f"ws://127.0.0.1:{server.server.ws_port}"
    code, out, err = await run("submit", "a counter", "--server", server.grpc_target,
                               "--job-id", "cli-epoch")
    assert code == 0, err
    code, out, err = await run("watch", "cli-epoch", "--ws", ws)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    epoch, last = lines[0]["data"]["epoch"], lines[-1]["seq"]
    code, out, err = await run("watch", "cli-epoch", "--ws", ws, "--since", "5", "--epoch", epoch)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [m["seq"] for m in lines[1:]] == list(range(6, last + 1))
    # A position from another lifetime of the server's store: history gone, exit 5
    # (the stream ended before the job's end was seen).
    code, out, err = await run("watch", "cli-epoch", "--ws", ws, "--since", "5",
                               "--epoch", "0123456789abcdef")
    assert code == 5
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["connected", "error"]
    assert "history gone" in out and "another lifetime of the store" in out
    assert "the stream closed (4410 history gone) before job cli-epoch ended" in err
    code, out, err = await run("watch", "cli-epoch", "--ws", ws, "--since", "5",
                               "--epoch", "not an epoch")
    assert code == 2 and "HTTP 400" in err and "epoch must be one value" in err


async def test_submit_and_watch_exit_1_when_the_job_fails(start_server: StartServer) -> None:
    failing = await start_server(sim_fail=frozenset(TeamName))
    code, out, _ = await run("submit", "a counter", "--server", failing.grpc_target,
                             "--job-id", "fails")
    assert code == 1
    assert "simulated failure of the anthropic team" in out
    ws = f"ws://127.0.0.1:{failing.server.ws_port}"
    code, out, _ = await run("watch", "fails", "--ws", ws)
    assert code == 1
    assert json.loads(out.splitlines()[-1])["data"] == {"status": "failed"}


async def test_submit_and_watch_exit_3_when_the_job_is_cancelled(
    start_server: StartServer,
) -> None:
    slow = await start_server(sim_delay=2.0)  # about 20 s: cancelled well before its end
    submit = await asyncio.create_subprocess_exec(
        *CHIMERA, "submit", "a counter", "--server", slow.grpc_target, "--job-id", "cancelled",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    async with slow.client() as client:
        await wait_for_sequence(client, "cancelled", 3)
    code, out, err = await run("cancel", "cancelled", "--server", slow.grpc_target, "--json")
    assert code == 0, err
    assert json.loads(out)["job_id"] == "cancelled"
    assert await asyncio.wait_for(submit.wait(), 30) == 3
    ws = f"ws://127.0.0.1:{slow.server.ws_port}"
    code, out, _ = await run("watch", "cancelled", "--ws", ws)
    assert code == 3
    assert json.loads(out.splitlines()[-1])["data"] == {"status": "cancelled"}


async def test_exit_codes_for_usage_and_an_unreachable_server() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    for args, expected in (
        (["submit"], 2),  # no brief
        (["jobs", "--limit", "0"], 2),
        (["watch", "bad id"], 2),
        (["status", "x", "--server", nobody], 4),
        (["submit", "a counter", "--server", nobody], 4),
        (["watch", "x", "--ws", f"ws://{nobody}"], 4),
    ):
        code, out, err = await run(*args)
        assert (code, out) == (expected, ""), (args, err)
        assert "Traceback" not in err
    code, out, _ = await run("--help")
    assert "exit codes" in out and "130  interrupted (Ctrl-C)" in out


def test_the_readme_lists_every_exit_code() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for exit_code in ExitCode:
        assert f"\n| {exit_code.value} | " in readme, exit_code


async def test_ctrl_c_on_submit_says_how_to_follow_the_job_which_goes_on(
    start_server: StartServer,
) -> None:
    slow = await start_server(sim_delay=0.2)
    submit = await asyncio.create_subprocess_exec(
        *CHIMERA, "submit", "a counter", "--server", slow.grpc_target, "--job-id", "goes-on",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert submit.stdout is not None
    async with asyncio.timeout(30):  # until it prints the job's first team event: watching
        while b"[anthropic]" not in await submit.stdout.readline():
            pass
    submit.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(submit.communicate(), 30)
    assert submit.returncode == 130
    assert err.decode().splitlines() == [
        "interrupted: job goes-on goes on without you.",
        "  follow it: chimera watch goes-on --ws ws://127.0.0.1:8888   "
        "(the server's WebSocket address)",
        f"  its state: chimera status goes-on --server {slow.grpc_target}",
        f"  cancel it: chimera cancel goes-on --server {slow.grpc_target}",
    ]
    async with slow.client() as client:  # the job went on to its end
        assert (await client.get("goes-on")).state == pb.JOB_STATE_RUNNING
        async for _ in client.events("goes-on"):
            pass
        assert (await client.get("goes-on")).state == pb.JOB_STATE_SUCCEEDED


async def test_json_output_of_every_command_parses_as_the_http_api_answers(
    server: Running,
) -> None:
    target, port = server.grpc_target, server.server.ws_port
    code, out, err = await run("submit", "a counter", "--server", target, "--json",
                               "--job-id", "as-json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    code, out, err = await run("watch", "as-json", "--json", "--ws", f"ws://127.0.0.1:{port}")
    assert code == 0, err
    # gRPC's events, printed as the WebSocket sends them: the same messages.
    assert events == [json.loads(line) for line in out.splitlines()][1:]
    assert events[-1]["data"] == {"status": "succeeded"}
    code, out, err = await run("status", "as-json", "--server", target, "--json")
    assert code == 0, err
    url = f"http://127.0.0.1:{port}/api/jobs"
    status, body = await asyncio.to_thread(http_answer, f"{url}/as-json")
    assert status == 200 and json.loads(out) == json.loads(body)
    snapshot = json.loads(out)
    assert snapshot["job_id"] == "as-json" and snapshot["state"] == "succeeded"
    assert all(isinstance(run["token_count"], int) for run in snapshot["teams"])
    assert snapshot["teams"][0]["token_count"] > 0
    code, out, err = await run("jobs", "--server", target, "--json", "--limit", "5")
    assert code == 0, err
    status, body = await asyncio.to_thread(http_answer, f"{url}?page_size=5")
    assert status == 200 and json.loads(out) == json.loads(body)
    code, out, err = await run("token", "--sub", "ci", "--scope", "read", "--json",
                               "--jwt-secret", SECRET)
    assert code == 0, err
    assert TokenVerifier.from_secret(SECRET).verify(json.loads(out)["token"]).sub == "ci"


async def test_demo_json_prints_the_events_as_json_lines() -> None:
    code, out, err = await run("demo", "--sim-delay", "0", "--json", "a counter")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"] == {"status": "succeeded"}


async def test_jobs_through_a_pipe_prints_whole_ids(server: Running) -> None:
    async with server.client() as client:
        job = await client.create("a brief long enough to be cut in a table of eighty columns")
    code, out, err = await run("jobs", "--server", server.grpc_target, COLUMNS="80")
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0] == ["job_id", "state", "created", "brief"]
    assert rows[1][0] == job.job_id and len(job.job_id) == 36
    assert rows[1][3] == job.brief


async def test_help_is_plain_text_and_every_flag_says_what_it_does() -> None:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in [("chimera", parser), *commands.choices.items()]:
        for action in command._actions:
            if action.dest in ("help", "reuse_port", "worker_id"):  # argparse's; hidden ones
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    for command in ("", "serve", "config", "submit", "watch", "jobs", "token", "demo"):
        code, out, err = await run(*command.split(), "--help")
        assert code == 0, err
        assert "``" not in out and ":class:" not in out, out


async def test_serve_shuts_down_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CHIMERA, "serve", "--grpc-port", "0", "--ws-port", "0",
        "--db", str(tmp_path / "serve.db"), "--sim-delay", "5", "--drain-timeout", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    ports: dict[str, int] = {}
    while len(ports) < 2:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, "serve exited before listening"
        match = re.search(r"serving gRPC on [\d.]+:(\d+) and WebSocket on [\d.]+:(\d+)", line)
        if match:
            ports = {"grpc": int(match[1]), "ws": int(match[2])}
    async with JobsClient(f"127.0.0.1:{ports['grpc']}") as client:
        await client.create("a counter", job_id="slow")
        ws = await ws_connect(f"ws://127.0.0.1:{ports['ws']}/ws/orchestrate/slow")
        await wait_for_sequence(client, "slow", 3)
        proc.send_signal(signal.SIGTERM)
        messages = await read_until_closed(ws)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
    assert messages[-1]["data"] == {"status": "failed"}
    assert ws.close_code == 1000
    _, err = await proc.communicate()
    assert "Traceback" not in err.decode()


def test_team_settings_and_their_environment_reach_the_providers() -> None:
    """Every provider setting, from the provider table, lands in that team's options;
    the API keys (the providers' own variable names) apart, out of repr."""
    serve = table(SERVE_GROUPS)
    args = build_parser().parse_args(
        ["serve", "--anthropic-thinking-budget", "1500", "--anthropic-max-tokens", "5000",
         "--anthropic-base-url", "http://a", "--google-model", "gemini-x",
         "--google-base-url", "http://g", "--google-thinking-budget", "0"]
    )
    environ = {"CHIMERA_ANTHROPIC_MODEL": "claude-from-env",
               "CHIMERA_GOOGLE_MAX_OUTPUT_TOKENS": "4096", "GEMINI_API_KEY": "gemini-key-x"}
    config = server_config(resolve(given(args, serve), environ, settings=serve))
    options = config.providers.options
    assert options[TeamName.ANTHROPIC] == {
        "model": "claude-from-env", "base_url": "http://a",
        "thinking_budget": 1500, "max_tokens": 5000,
    }
    assert options[TeamName.GOOGLE] == {
        "model": "gemini-x", "base_url": "http://g",
        "thinking_budget": 0, "max_output_tokens": 4096,
    }
    assert config.providers.api_keys == {TeamName.ANTHROPIC: "", TeamName.GOOGLE: "gemini-key-x"}
    assert "gemini-key-x" not in repr(config)


async def test_submit_types_each_teams_code_as_it_is_written(server: Running) -> None:
    code, out, err = await run("submit", "a counter", "--server", server.grpc_target,
                               "--job-id", "cli-typed")
    assert code == 0, err
    lines = out.splitlines()
    async with server.client() as client:
        job = await client.get("cli-typed")
    for run_ in job.teams:
        who = "anthropic" if run_.team == pb.TEAM_ANTHROPIC else "google"
        typed = [line.split(f"[{who}] │ ", 1)[1] for line in lines if f"[{who}] │ " in line]
        assert typed == run_.code.splitlines(), who  # every line, once, in order
        generated = next(i for i, line in enumerate(lines)
                         if f"[{who}] generated" in line)
        first_typed = next(i for i, line in enumerate(lines) if f"[{who}] │ " in line)
        assert first_typed < generated  # typed while it came, before it was done


async def test_watch_no_deltas_leaves_them_out_with_their_seqs(server: Running) -> None:
    ws = f"ws://127.0.0.1:{server.server.ws_port}"
    code, out, err = await run("submit", "a counter", "--server", server.grpc_target,
                               "--job-id", "cli-lean")
    assert code == 0, err
    code, out, err = await run("watch", "cli-lean", "--ws", ws)
    every = [json.loads(line) for line in out.splitlines()][1:]
    code, out, err = await run("watch", "cli-lean", "--ws", ws, "--no-deltas")
    assert code == 0, err
    lean = [json.loads(line) for line in out.splitlines()][1:]
    assert any(m["type"] == "code_delta" for m in every)
    assert lean == [m for m in every if m["type"] != "code_delta"]


def test_the_live_view_prints_each_line_of_code_once_it_is_complete() -> None:
    """Fed events one by one: a line is printed as soon as its newline came (not at
    the end), a restart says so, the last partial line comes with the code."""
    console = Console(record=True, width=200, color_system=None)
    view = LiveView(console)

    def delta(seq: int, offset: int, text: str) -> pb.JobEvent:
        return pb.JobEvent(sequence=seq, team=pb.TEAM_GOOGLE,
                           code_delta=pb.CodeDelta(offset=offset, text=text))

    view.show(delta(1, 0, "const a"))
    assert console.export_text(clear=False) == ""  # half a line: nothing yet
    view.show(delta(2, 7, " = 1;\nconst b"))
    assert console.export_text(clear=False).splitlines() == ["     [google] │ const a = 1;"]
    view.show(delta(3, 0, "let a = 1;\nlet b = 2;\nlet c"))  # started again
    view.show(pb.JobEvent(sequence=4, team=pb.TEAM_GOOGLE, code_generated=pb.CodeGenerated(
        code="let a = 1;\nlet b = 2;\nlet c = 3;", language="ts", token_count=9)))
    assert console.export_text(clear=False).splitlines()[1:] == [
        "     [google] writes its code again:",
        "     [google] │ let a = 1;",
        "     [google] │ let b = 2;",
        "     [google] │ let c = 3;",
        "   4 [google] generated 3 lines of ts (9 tokens)",
    ]
