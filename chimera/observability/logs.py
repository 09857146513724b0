"""Log set-up: ``--log-format text|json``, with the job, team and peer a line is about.

JSON: one object per line, ``{"ts", "level", "logger", "msg"}`` plus
``job_id``, ``team`` and ``peer`` where they apply, ``worker`` in a ``--workers``
child (its index, as the parent's ``worker 1 started`` says; ``worker=1`` after
the level in text), and ``exc`` with a traceback. The first three come from an
``extra={...}`` on the call, or else from the context: :func:`log_context` sets
them for the current task and the tasks it starts (a job's supervisor task is
started in :func:`job_context`, so every line its teams and providers log
carries the job's id). The default format is text on a terminal and JSON
otherwise (a file, a pipe, a log collector).

Tokens and API keys are blanked in both formats: the handler runs
:class:`chimera.auth.redact.RedactTokens` on every record.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO

from chimera.auth.redact import RedactTokens, redact

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s worker={worker} %(name)s: %(message)s"

JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
TEAM: contextvars.ContextVar[str | None] = contextvars.ContextVar("team", default=None)
PEER: contextvars.ContextVar[str | None] = contextvars.ContextVar("peer", default=None)
_FIELDS = (("job_id", JOB_ID), ("team", TEAM), ("peer", PEER))


def log_context(
    *, job_id: str | None = None, team: str | None = None, peer: str | None = None
) -> None:
    """Sets the given fields for log lines of the current task (and tasks it starts)."""
    if job_id is not None:
        JOB_ID.set(job_id)
    if team is not None:
        TEAM.set(team)
    if peer is not None:
        PEER.set(peer)


def job_context(job_id: str) -> contextvars.Context:
    """A context for a job's task: its log lines carry ``job_id`` (and no caller's ``peer``)."""
    context = contextvars.copy_context()
    context.run(log_context, job_id=job_id)
    context.run(PEER.set, None)
    return context


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        """``worker``: the ``--workers`` child this process is, on every line."""
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "ts": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in _FIELDS:
            value = getattr(record, name, None) or var.get()
            if value:
                line[name] = str(value)
        if self._worker is not None:
            line["worker"] = self._worker
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def default_format(stream: IO[str]) -> str:
    return "text" if stream.isatty() else "json"


def configure(
    log_format: str | None, *, verbose: bool, stream: IO[str] | None = None,
    worker: int | None = None,
) -> None:
    """Sends every log line to ``stream`` (stderr) in ``log_format`` (None: the
    default), each naming ``worker`` if this process is a ``--workers`` child."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    chosen = log_format or default_format(stream)
    if chosen == "json":
        handler.setFormatter(JsonFormatter(worker))
    elif worker is None:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(WORKER_TEXT_FORMAT.format(worker=worker)))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # the SDKs log every HTTP request at INFO
        for noisy in ("httpx", "httpx2", "google_genai", "anthropic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
