"""The settings table (chimera/settings.py): flags, environment, the --config file and
the README's table come from it; real ``chimera serve`` and ``chimera config`` processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from chimera.client import JobsClient
from chimera.errors import ConfigError
from chimera.settings import resolve, server_config
from chimera.v1 import jobs_pb2 as pb
from tests.http_raw import http_request
from tests.processes import free_port, read_text, spawn, wait_for_lines
from tests.redis_fixture import RedisServer, needs_redis, redis_server

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-jwt-0123456789-0123456789-abcdef"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
# Should a refusal fail to refuse, the server it starts takes no port a person uses.
QUIET = ("--db", ":memory:", "--grpc-port", "0", "--ws-port", "0", "--no-metrics")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting of Chimera's (a developer's
    own would change what the tests see), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}
    for key in ("ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "ANTHROPIC_BASE_URL",
                "GOOGLE_GEMINI_BASE_URL"):
        env.pop(key, None)
    return {**env, "NO_COLOR": "1", **extra}


async def chimera(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chimera", *args, env=env if env is not None else clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def config_json(*args: str, env: dict[str, str]) -> dict[str, Any]:
    code, out, err = await chimera("config", "--json", *args, env=env)
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


async def test_a_server_takes_settings_from_its_file_environment_and_flags(
    tmp_path: Path,
) -> None:
    """One real server: a key only the file sets applies; the environment beats the
    file; a flag beats the environment."""
    config = tmp_path / "chimera.toml"
    config.write_text(
        "# Chimera's settings\n"
        'allowed_host = ["chimera.example"]  # only here: applies\n'
        "max_brief_chars = 10                # CHIMERA_MAX_BRIEF_CHARS beats it\n"
        'sim_fail = ["anthropic"]            # --sim-fail beats it (and the variable)\n'
    )
    env = clean_env(CHIMERA_MAX_BRIEF_CHARS="20", CHIMERA_SIM_FAIL="anthropic")
    argv = ["serve", "--config", str(config), "--grpc-port", "0", "--ws-port", "0",
            "--db", str(tmp_path / "c.db"), "--no-metrics", "--sim-delay", "0",
            "--sim-fail", "google"]
    process, grpc_port, ws_port = await spawn("serve", tmp_path / "serve.log", argv, env)
    try:
        # The file's allowed_host: that Host is answered (another gets 421).
        assert (await http_request(ws_port, "GET", "/healthz",
                                   {"Host": "chimera.example"})).status == 200
        assert (await http_request(ws_port, "GET", "/healthz",
                                   {"Host": "other.example"})).status == 421
        async with JobsClient(f"127.0.0.1:{grpc_port}") as client:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.create("twenty-five characters!!!")
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "20" in str(refused.value.details())  # the environment's limit
            job = await client.create("fifteen chars..")  # over the file's 10: accepted
            async for _ in client.events(job.job_id):
                pass
            job = await client.get(job.job_id)
        statuses = {run.team: run.status for run in job.teams}
        # --sim-fail google replaced the variable's and the file's anthropic.
        assert statuses == {pb.TEAM_GOOGLE: pb.TEAM_STATUS_ERROR,
                            pb.TEAM_ANTHROPIC: pb.TEAM_STATUS_COMPLETE}
    finally:
        process.kill()
        await process.wait()


async def test_precedence_is_flag_then_environment_then_file_then_default(
    tmp_path: Path,
) -> None:
    config = tmp_path / "chimera.toml"
    config.write_text("job_deadline = 300\nretention = 3600\nsim_delay = 0.25\n")
    env = clean_env(CHIMERA_JOB_DEADLINE="200", CHIMERA_RETENTION="7200",
                    # A name read before the table, still working.
                    CHIMERA_REDIS_URL="redis://127.0.0.1:6399/0",
                    CHIMERA_CONFIG=str(config))
    report = await config_json("--job-deadline", "100", env=env)
    assert report["job_deadline"] == {"value": 100, "source": "flag", "from": "--job-deadline"}
    assert report["retention"] == {"value": 7200, "source": "env", "from": "CHIMERA_RETENTION"}
    assert report["sim_delay"] == {"value": 0.25, "source": "file", "from": str(config)}
    assert report["drain_timeout"] == {"value": 120, "source": "default", "from": ""}
    assert report["redis"] == {"value": "redis://127.0.0.1:6399/0", "source": "env",
                               "from": "CHIMERA_REDIS_URL"}
    # --config beats $CHIMERA_CONFIG (it names the file).
    other = tmp_path / "other.toml"
    other.write_text("sim_delay = 0.5\n")
    report = await config_json("--config", str(other), env=env)
    assert report["sim_delay"] == {"value": 0.5, "source": "file", "from": str(other)}


async def test_config_masks_secrets_and_names_where_each_came_from(tmp_path: Path) -> None:
    config = tmp_path / "chimera.toml"
    config.write_text('redis = "redis://chimera:hunter2-pw@127.0.0.1:6399/0"\n'
                      'google_api_key = "AIza-google-secret"\n')
    env = clean_env(CHIMERA_JWT_SECRET=SECRET, ANTHROPIC_API_KEY="sk-ant-secret-key",
                    CHIMERA_CONFIG=str(config))
    code, text, err = await chimera("config", env=env)
    assert code == 0, err
    report = await config_json(env=env)
    for shown in (text, json.dumps(report)):
        for secret in (SECRET, "sk-ant-secret-key", "AIza-google-secret", "hunter2-pw"):
            assert secret not in shown
    assert report["jwt_secret"] == {"value": "***", "source": "env", "from": "CHIMERA_JWT_SECRET"}
    assert report["anthropic_api_key"] == {"value": "***", "source": "env",
                                           "from": "ANTHROPIC_API_KEY"}
    assert report["google_api_key"] == {"value": "***", "source": "file", "from": str(config)}
    assert report["redis"]["value"] == "redis://chimera:***@127.0.0.1:6399/0"
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines()}
    assert lines["jwt_secret"] == ["***", "env", "CHIMERA_JWT_SECRET"]
    assert lines["google_api_key"] == ["***", "file", str(config)]
    assert lines["host"] == ["127.0.0.1", "default"]
    code, _, err = await chimera("config", "--host", "0.0.0.0", env=clean_env())
    assert code == 2 and "without authentication" in err  # what serve would refuse


@pytest.mark.parametrize(
    ("file", "env", "message"),
    [
        ("job_dedline = 300\n", {}, "unknown setting 'job_dedline' (did you mean job_deadline?)"),
        ("[server]\nhost = '0.0.0.0'\n", {}, "unknown setting 'server'"),
        ("", {"CHIMERA_JOB_DEDLINE": "300"},
         "unknown environment variable CHIMERA_JOB_DEDLINE: no setting has that name "
         "(did you mean CHIMERA_JOB_DEADLINE?)"),
    ],
    ids=["file-key", "file-table", "environment"],
)
async def test_an_unknown_setting_is_refused_by_name(
    tmp_path: Path, file: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "chimera.toml"
    config.write_text(file)
    code, out, err = await chimera("serve", "--config", str(config), *QUIET, env=clean_env(**env))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


async def test_variables_without_the_chimera_prefix_are_not_judged() -> None:
    env = clean_env(CHIMERAX="1", MY_CHIMERA_JOB="2", CHIMERA_TOKEN="a-client-token")
    code, _, err = await chimera("config", env=env)
    assert code == 0, err


@pytest.mark.parametrize(
    ("file", "env", "flags", "message"),
    [
        ('job_deadline = "ten"\n', {}, [],
         "job_deadline: must be a number of seconds, 0 or more, not 'ten' (a string)"),
        ("insecure = 1\n", {}, [], "insecure: must be true or false, not 1 (an integer)"),
        ('sim_fail = "google"\n', {}, [], "sim_fail: must be an array"),
        ('sim_fail = ["google", "openai"]\n', {}, [], "sim_fail: invalid value 'openai'"),
        ("max_brief_chars = 0\n", {}, [], "max_brief_chars: must be at least 1, not 0"),
        ("", {"CHIMERA_MAX_BRIEF_CHARS": "lots"}, [],
         "CHIMERA_MAX_BRIEF_CHARS: invalid value 'lots': must be a whole number"),
        ("", {"CHIMERA_INSECURE": "maybe"}, [], "CHIMERA_INSECURE: invalid value 'maybe'"),
        ("", {"CHIMERA_TEAMS": "google=maybe"}, [], "CHIMERA_TEAMS: unknown mode 'maybe'"),
        ("", {}, ["--max-frame-bytes", "0"], "--max-frame-bytes: must be at least 1, not 0"),
        ("", {}, ["--grpc-port", "70000"], "--grpc-port: must be a port number"),
        ("job_deadline = \n", {}, [], "is not valid TOML: Invalid value (at line 1"),
    ],
    ids=["string-for-seconds", "integer-for-switch", "string-for-array", "unknown-team",
         "zero-limit", "env-word-for-number", "env-switch", "env-team-mode", "flag-zero-limit",
         "flag-port", "bad-toml"],
)
async def test_a_value_of_the_wrong_type_is_refused_by_name(
    tmp_path: Path, file: str, env: dict[str, str], flags: list[str], message: str
) -> None:
    config = tmp_path / "chimera.toml"
    config.write_text(file)
    code, out, err = await chimera("serve", "--config", str(config), *QUIET, *flags,
                                   env=clean_env(**env))
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err, err
    if not flags:  # argparse adds its usage line before its own message
        assert err.count("\n") == 1, err


async def test_a_missing_config_file_is_refused() -> None:
    code, _, err = await chimera("serve", "--config", "/nonexistent/chimera.toml", *QUIET)
    assert code == 2
    assert err == "error: cannot read --config /nonexistent/chimera.toml: " \
        "No such file or directory\n"


def test_zero_is_no_limit_for_the_job_deadline_and_retention() -> None:
    """0 lifts a limit (documented in --help); the default is a limit."""
    lifted = server_config(resolve({"job_deadline": 0.0, "retention": 0.0}, {}))
    assert (lifted.job_deadline, lifted.retention) == (None, None)
    default = server_config(resolve({}, {}))
    assert (default.job_deadline, default.retention) == (600.0, None)
    set_ = server_config(resolve({}, {"CHIMERA_JOB_DEADLINE": "5", "CHIMERA_RETENTION": "60"}))
    assert (set_.job_deadline, set_.retention) == (5.0, 60.0)
    with pytest.raises(ConfigError, match="CHIMERA_JOB_DEADLINE: must be 0 or more, not -1"):
        resolve({}, {"CHIMERA_JOB_DEADLINE": "-1"})


async def test_help_says_what_zero_means_for_each_limit() -> None:
    code, out, _ = await chimera("serve", "--help", env=clean_env(COLUMNS="200"))
    assert code == 0
    help_of = {m[1]: m[2] for m in re.finditer(r"^\s+(--[a-z-]+)(?: \S+)?\s+(.*)$", out, re.M)}
    assert "0 = no limit" in help_of["--job-deadline"]
    assert "0 = no limit: keep everything" in help_of["--retention"]
    assert "0 = no wait: stop at once" in help_of["--drain-timeout"]
    assert "at least 1" in help_of["--max-brief-chars"]


async def test_the_readme_settings_table_is_the_settings_table() -> None:
    """scripts/gen_settings_table writes the README's table; this fails when they differ."""
    code, out, err = await chimera("config", "--markdown")
    assert code == 0, err
    readme = (ROOT / "README.md").read_text()
    block = readme.split(BEGIN + "\n", 1)[1].split(END, 1)[0]
    assert block == out, "run scripts/gen_settings_table and commit README.md"
    for name in ("CHIMERA_JOB_DEADLINE", "ANTHROPIC_API_KEY", "`job_deadline`",
                 "`--job-deadline SECONDS`", "0 = no limit"):
        assert name in block


@needs_redis
async def test_workers_from_the_file_do_not_start_workers_of_their_own(tmp_path: Path) -> None:
    """``workers = 2`` in the file: each child gets ``--workers 1``, which beats the
    file it reads too, and serves."""
    async with redis_server(tmp_path / "redis") as redis:
        await _two_workers(tmp_path, redis)


async def _two_workers(tmp_path: Path, redis: RedisServer) -> None:
    config = tmp_path / "chimera.toml"
    config.write_text(f'workers = 2\nredis = "{redis.url}"\nno_metrics = true\n')
    log = tmp_path / "workers.log"
    argv = ["serve", "--config", str(config), "--grpc-port", str(free_port()),
            "--ws-port", str(free_port())]
    # Not spawn(), which waits for a "serving" line: with the bug this test is for,
    # none would come, while each generation of workers started the next.
    with log.open("wb") as out:
        parent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chimera", *argv, stdout=out, stderr=out, env=clean_env()
        )
    try:
        # The parent's "starting", then each child's line: "serving", or (were the
        # file's workers = 2 to win in the children) a "starting" of its own.
        await wait_for_lines(log, re.compile(r"serving gRPC on|starting \d+ workers"), parent, 3)
        assert read_text(log).count("starting 2 workers") == 1
    finally:
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(parent.wait(), 30) == 0
