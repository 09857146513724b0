"""The Redis fault suite's harness: subscribers that record everything, and one check.

A :class:`Checker` runs subscribers (WebSocket and gRPC ``StreamJobEvents``) of jobs
on real nodes and keeps each one's whole history: every seq and message received,
the final event, and how each connection ended. A subscriber resumes as the browser
page (``chimera.js``) does: a WebSocket closed 1012/1013 (or dropped) reconnects with
``?since=<last seq>`` (and ``&epoch=`` when ``connected`` carried one), a gRPC stream
ended ``UNAVAILABLE`` is opened again with ``after_sequence``; at most
:data:`ATTEMPTS` times in a row without progress. The history is the concatenation.

:meth:`Checker.verify` then compares every subscriber with ``GetJob`` on every node
and with the job's Redis stream, against what the test expects of each job
(:func:`succeeded`, :func:`failed`, :func:`gone`), and fails with every problem
found and a one-line summary of each subscriber.

Use::

    async with Checker(redis, nodes) as checker:
        checker.subscribe("a-1")                  # WS + gRPC on every node
        await checker.reached(2)                  # every subscriber saw seq 2
        checker.mark_fault()                      # deadlines are measured from here
        await checker.wait_done(30)
        await checker.verify({"a-1": succeeded()})
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import grpc
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chimera.v1 import jobs_pb2 as pb
from chimera.v1.jobs_pb2_grpc import JobServiceStub
from tests.conftest import ws_connect
from tests.processes import Node
from tests.redis_fixture import RedisServer

if TYPE_CHECKING:
    from chimera.v1.jobs_pb2_grpc import JobServiceAsyncStub  # only in the .pyi

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
ATTEMPTS = 10  # resumes in a row that bring nothing new, then the subscriber gives up
WS_RESUMED = frozenset({1012, 1013, 1006})  # 1006: dropped (flagged, but resumed)
WS_CLEAN = frozenset({1000, 1012, 1013})
OWNER_WORD = re.compile(r"\bowner\b", re.IGNORECASE)
NODE_LOST = "node lost"
RAISED = re.compile(r"^[\s|]*[\w.]+(Error|Exception|Group): ")

_REQUEST_FIELDS = pb.StreamJobEventsRequest.DESCRIPTOR.fields_by_name
_RESPONSE_FIELDS = pb.StreamJobEventsResponse.DESCRIPTOR.fields_by_name
#: whether StreamJobEventsRequest has the ``epoch`` field (being added)
GRPC_HAS_EPOCH = "epoch" in _REQUEST_FIELDS


def stream_request(job_id: str, after: int, epoch: object = None) -> pb.StreamJobEventsRequest:
    """``StreamJobEventsRequest``, with ``epoch`` set when given and the field exists."""
    request = pb.StreamJobEventsRequest(job_id=job_id, after_sequence=after)
    if epoch is not None and GRPC_HAS_EPOCH:
        kind = _REQUEST_FIELDS["epoch"]
        value = str(epoch) if kind.type == kind.TYPE_STRING else int(str(epoch))
        setattr(request, "epoch", value)  # noqa: B010 - a field not every pb has yet
    return request


def is_final(event: dict[str, Any]) -> bool:
    """A job-level status_change to succeeded/failed/cancelled."""
    return (event.get("type") == "status_change" and "team" not in event
            and event.get("data", {}).get("status") in FINAL_STATES)


def grpc_event(event: pb.JobEvent) -> dict[str, Any]:
    """A gRPC event in the WebSocket's shape (the fields the checks read)."""
    kind = event.WhichOneof("kind") or ""
    data: dict[str, Any] = {}
    if kind == "status_change":
        data = {"status": event.status_change.status}
    elif kind == "error":
        data = {"error": event.error.error}
    shaped: dict[str, Any] = {"type": kind, "seq": event.sequence, "data": data}
    if event.team:
        shaped["team"] = pb.Team.Name(event.team).removeprefix("TEAM_").lower()
    return shaped


def state_word(job: pb.Job) -> str:
    return pb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()


@dataclass
class Ending:
    """How one connection of a subscriber ended."""

    code: int | str  # WS close code, gRPC status name ("OK": the stream ended), "connect"
    reason: str
    at: float  # loop time

    def __str__(self) -> str:
        return f"{self.code} {self.reason!r}" if self.reason else str(self.code)


@dataclass
class Subscriber:
    job_id: str
    node: Node
    plane: Literal["ws", "grpc"]
    seqs: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # job events, WS-shaped
    messages: list[dict[str, Any]] = field(default_factory=list)  # WS: every message
    endings: list[Ending] = field(default_factory=list)
    epoch: object = None
    final: dict[str, Any] | None = None
    final_at: float | None = None
    task: asyncio.Task[None] | None = None
    cut: bool = False  # still going when the test stopped waiting

    @property
    def name(self) -> str:
        return f"{self.job_id}@{self.node.name}/{self.plane}"

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def summary(self) -> str:
        seqs = self.seqs
        if seqs == list(range(1, len(seqs) + 1)):
            shown = f"1..{len(seqs)}" if seqs else "none"
        else:
            shown = f"NOT 1..n: {seqs}"
        final = self.final["data"]["status"] if self.final else None
        errors = sorted({e["data"].get("error", "") for e in self.events if e["type"] == "error"})
        return (f"{self.name:<16} seqs {shown}; final {final}; errors {errors}; "
                f"endings [{', '.join(map(str, self.endings))}]"
                + ("; CUT (still going)" if self.cut else ""))

    def errors(self, reasons: bool = True) -> list[str]:
        """Error texts this subscriber was shown: job events, control messages, and
        (``reasons``) its close reasons / gRPC status details."""
        texts = [str(m.get("data", {}).get("error", "")) for m in self.messages
                 if m.get("type") == "error" and "seq" not in m]
        texts += [e["data"].get("error", "") for e in self.events if e["type"] == "error"]
        return texts + ([e.reason for e in self.endings] if reasons else [])

    def _received(self, event: dict[str, Any], now: float) -> None:
        self.seqs.append(event["seq"])
        self.events.append(event)
        if is_final(event):
            self.final, self.final_at = event, now


@dataclass(frozen=True)
class Expect:
    """What must hold of one job: its outcome, the error its unfinished teams show
    (for "failed"), and a deadline from :meth:`Checker.mark_fault` (every
    subscriber's final event, or its 4410 / OUT_OF_RANGE for "gone")."""

    outcome: Literal["succeeded", "failed", "cancelled", "gone"]
    error: str | None = None
    within: float | None = None


def succeeded() -> Expect:
    return Expect("succeeded")


def failed(error: str, within: float | None = None) -> Expect:
    return Expect("failed", error, within)


def gone(within: float = 5.0) -> Expect:
    """History gone: every subscriber ends 4410 / OUT_OF_RANGE within ``within`` s
    of the fault, and GetJob answers NOT_FOUND on every node."""
    return Expect("gone", None, within)


def http_status(url: str) -> int:
    """The answer's status; 0 when there is none (refused, reset, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


async def readyz(node: Node) -> int:
    return await asyncio.to_thread(http_status, f"http://127.0.0.1:{node.ws_port}/readyz")


def exited(node: Node) -> list[str]:
    """A problem if ``node`` is no longer running, with its log's last lines."""
    if node.process.returncode is None:
        return []
    lines = node.read_log().splitlines()
    raised = [line.strip(" |") for line in lines if RAISED.search(line)][-3:]
    why = "\n    ".join(raised or lines[-5:])
    return [f"node {node.name} exited with {node.process.returncode}; its log says:\n    {why}"]


class Checker:
    """Subscribers of jobs on ``nodes``, and the check of what they saw (see the module)."""

    def __init__(self, redis: RedisServer, nodes: Sequence[Node]) -> None:
        self.redis = redis
        self.nodes = list(nodes)
        self.subscribers: list[Subscriber] = []
        self.fault_at: float | None = None
        self._checked: set[str] = set()
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> Checker:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        for channel in self._channels.values():
            await channel.close(None)

    def stub(self, node: Node) -> JobServiceAsyncStub:
        if node.name not in self._channels:
            self._channels[node.name] = grpc.aio.insecure_channel(f"127.0.0.1:{node.grpc_port}")
        return JobServiceStub(self._channels[node.name])

    # Subscribing

    def subscribe(
        self, job_id: str, nodes: Iterable[Node] | None = None,
        planes: Iterable[Literal["ws", "grpc"]] = ("ws", "grpc"),
    ) -> list[Subscriber]:
        """A WebSocket and a gRPC subscriber of ``job_id`` on each node (from seq 1)."""
        made = []
        for node in self.nodes if nodes is None else nodes:
            for plane in planes:
                sub = Subscriber(job_id, node, plane)
                run = self._run_ws if plane == "ws" else self._run_grpc
                sub.task = asyncio.create_task(run(sub), name=sub.name)
                self.subscribers.append(sub)
                made.append(sub)
        return made

    def of(self, job_id: str) -> list[Subscriber]:
        return [s for s in self.subscribers if s.job_id == job_id]

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(0.2 * attempt, 1.0))  # chimera.js waits before it reconnects

    async def _run_ws(self, sub: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        idle = 0
        while True:
            before = len(sub.seqs)
            url = sub.node.ws_url(sub.job_id, sub.last_seq)
            if sub.epoch is not None:
                url += f"&epoch={quote(str(sub.epoch))}"
            try:
                ws = await ws_connect(url, max_queue=None)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                sub.endings.append(Ending("connect", f"{type(exc).__name__}: {exc}", loop.time()))
            else:
                with contextlib.suppress(ConnectionClosed):
                    async for raw in ws:
                        message: dict[str, Any] = json.loads(raw)
                        sub.messages.append(message)
                        if message.get("type") == "connected":
                            epoch = (message.get("data") or {}).get("epoch")
                            if epoch is not None:
                                sub.epoch = epoch
                        if "seq" in message:
                            sub._received(message, loop.time())
                code = ws.close_code if ws.close_code is not None else 1006
                sub.endings.append(Ending(code, ws.close_reason or "", loop.time()))
                if code not in WS_RESUMED:
                    return
            idle = 0 if len(sub.seqs) > before else idle + 1
            if idle >= ATTEMPTS:
                return
            await self._backoff(idle)

    async def _run_grpc(self, sub: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        stub = self.stub(sub.node)
        idle = 0
        while True:
            before = len(sub.seqs)
            call = stub.StreamJobEvents(stream_request(sub.job_id, sub.last_seq, sub.epoch))
            try:
                async for response in call:
                    if "epoch" in _RESPONSE_FIELDS and getattr(response, "epoch", None):
                        sub.epoch = getattr(response, "epoch")  # noqa: B009 - being added
                    sub._received(grpc_event(response.event), loop.time())
            except grpc.aio.AioRpcError as exc:
                sub.endings.append(Ending(exc.code().name, exc.details() or "", loop.time()))
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    return
            else:
                sub.endings.append(Ending("OK", "", loop.time()))
                return
            finally:
                call.cancel()
            idle = 0 if len(sub.seqs) > before else idle + 1
            if idle >= ATTEMPTS:
                return
            await self._backoff(idle)

    # Waiting

    def mark_fault(self) -> None:
        """Deadlines (``Expect.within``) are measured from now."""
        self.fault_at = asyncio.get_running_loop().time()

    def _live(self, skip_nodes: Iterable[str] = ()) -> list[Subscriber]:
        skipped = set(skip_nodes)
        return [s for s in self.subscribers if s.node.name not in skipped]

    async def reached(
        self, seq: int, job_ids: Iterable[str] | None = None, within: float = 15.0
    ) -> None:
        """Returns once every subscriber of ``job_ids`` (all) has seen ``seq`` (or ended)."""
        wanted = None if job_ids is None else set(job_ids)
        subs = [s for s in self.subscribers if wanted is None or s.job_id in wanted]
        await self._until(lambda: all(s.last_seq >= seq or (s.task and s.task.done())
                                      for s in subs), within, f"every subscriber at seq {seq}")

    async def wait_done(self, within: float, skip_nodes: Iterable[str] = ()) -> None:
        """Returns once every subscriber (but those on ``skip_nodes``) has ended for
        good, or after ``within`` s; the ones still going are then cut (cancelled,
        shown "CUT" in the summary), and :meth:`verify` reports them."""
        tasks = [s.task for s in self._live(skip_nodes) if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        for sub in self.subscribers:
            if sub.task is not None and not sub.task.done():
                sub.cut = True
        await self.stop()

    async def _until(self, done: Any, within: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not done():
            if loop.time() > deadline:
                raise AssertionError(f"not reached within {within} s: {what}\n" + self.summary())
            await asyncio.sleep(0.02)  # polled: the subscribers' lists announce nothing

    async def stop(self) -> None:
        """Cancels the subscribers still going."""
        tasks = [s.task for s in self.subscribers if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def summary(self) -> str:
        return "\n".join(s.summary() for s in self.subscribers)

    # Reading what the cluster recorded

    async def get_job(self, node: Node, job_id: str, within: float = 10.0) -> pb.Job | str:
        """GetJob on ``node`` (retried while UNAVAILABLE); the job, or the status name."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                response = await asyncio.wait_for(
                    self.stub(node).GetJob(pb.GetJobRequest(job_id=job_id)), 5)
                job: pb.Job = response.job
                return job
            except grpc.aio.AioRpcError as exc:
                if (exc.code() != grpc.StatusCode.UNAVAILABLE or loop.time() > deadline
                        or node.process.returncode is not None):
                    return exc.code().name
            except TimeoutError:
                if loop.time() > deadline:
                    return "TIMEOUT"
            await asyncio.sleep(0.1)  # polled: the node reconnects to Redis unannounced

    async def stream_frames(self, job_id: str) -> list[dict[str, Any]]:
        """The job's Redis stream (``XRANGE chimera:events:{id}``), decoded."""
        async with self.redis.client() as r:
            rows: list[Any] = await r.xrange(f"chimera:events:{job_id}")  # type: ignore[assignment]
        return [json.loads(f[b"f"]) for _, f in rows]

    # The check

    async def verify(
        self, expect: dict[str, Expect], skip_nodes: Iterable[str] = (),
        ready: bool | None = True, allow_node_lost: bool = False,
    ) -> None:
        """Checks every job in ``expect`` (see the module); subscribers on
        ``skip_nodes`` (killed on purpose) are not checked, nor those nodes' GetJob
        and liveness. ``ready``: /readyz must answer 200 (True) / 503 (False) on the
        live nodes; None skips it. The internal word "owner" must appear in no error
        text (events, GetJob), close reason or status detail."""
        skipped = set(skip_nodes)
        nodes = [n for n in self.nodes if n.name not in skipped]
        problems: list[str] = []
        for node in nodes:
            problems += exited(node)
        nodes = [n for n in nodes if n.process.returncode is None]  # GetJob, /readyz
        self._checked = {n.name for n in self.nodes if n.name not in skipped}
        for job_id, want in expect.items():
            problems += await self._verify_job(job_id, want, nodes)
        for sub in self._live(skipped):
            for text in sub.errors():
                if OWNER_WORD.search(text):
                    problems.append(f"{sub.name}: the internal word 'owner' shown: {text!r}")
                wants = expect.get(sub.job_id)
                lost_ok = allow_node_lost or (
                    wants is not None and NODE_LOST in (wants.error or ""))
                if NODE_LOST in text and not lost_ok:
                    problems.append(f"{sub.name}: {text!r} (no node was lost)")
        if ready is not None:
            for node in nodes:
                if node.process.returncode is None:
                    status = await readyz(node)
                    if status != (200 if ready else 503):
                        problems.append(f"node {node.name}: /readyz {status}")
        problems = list(dict.fromkeys(problems))  # each once, in order
        assert not problems, ("\n".join(problems) + "\n\nsubscribers:\n" + self.summary()
                              + "\n" + await self._jobs_summary(expect, nodes))

    async def _jobs_summary(self, expect: dict[str, Expect], nodes: list[Node]) -> str:
        lines = []
        for job_id in expect:
            frames = await self.stream_frames(job_id)
            finals = [f["data"]["status"] for f in frames if is_final(f)]
            errors = sorted({f["data"].get("error", "") for f in frames if f["type"] == "error"})
            lines.append(f"stream {job_id}: {len(frames)} events, finals {finals}, errors {errors}")
        return "\n".join(lines)

    async def _verify_job(self, job_id: str, want: Expect, nodes: list[Node]) -> list[str]:
        problems: list[str] = []
        jobs = {n.name: await self.get_job(n, job_id) for n in nodes}
        frames = await self.stream_frames(job_id)
        subs = [s for s in self.of(job_id) if s.node.name in self._checked]
        if want.outcome == "gone":
            for name, job in jobs.items():
                if not isinstance(job, str) or job != "NOT_FOUND":
                    shown = job if isinstance(job, str) else f"state {state_word(job)}"
                    problems.append(f"{job_id}: GetJob on {name}: {shown}, not NOT_FOUND")
            if frames:
                problems.append(f"{job_id}: history gone, yet its stream holds {len(frames)} "
                                f"events (seqs {[f['seq'] for f in frames]})")
            for sub in subs:
                problems += self._verify_gone(sub, want)
            return problems

        found = {name: job for name, job in jobs.items() if not isinstance(job, str)}
        for name, job in jobs.items():
            if isinstance(job, str):
                problems.append(f"{job_id}: GetJob on {name}: {job}")
        states = {name: state_word(job) for name, job in found.items()}
        for name, state in states.items():
            if state != want.outcome:
                problems.append(f"{job_id}: GetJob on {name}: {state}, expected {want.outcome}")
        lasts = {job.last_sequence for job in found.values()}
        if len(lasts) > 1:
            problems.append(f"{job_id}: last_sequence differs between nodes: {lasts}")
        last = max(lasts) if lasts else (frames[-1]["seq"] if frames else 0)
        seqs = [f["seq"] for f in frames]
        if seqs != list(range(1, last + 1)):
            problems.append(f"{job_id}: stream seqs {seqs}, expected 1..{last}")
        finals = [f["data"]["status"] for f in frames if is_final(f)]
        if len(finals) != 1:
            problems.append(f"{job_id}: {len(finals)} job-final events in the stream: {finals}")
        elif not is_final(frames[-1]):
            problems.append(f"{job_id}: the final event is not the stream's last")
        errors = [f["data"].get("error", "") for f in frames if f["type"] == "error"]
        errors += [t.error for job in found.values() for t in job.teams
                   if t.status == pb.TEAM_STATUS_ERROR]
        if want.outcome == "failed":
            assert want.error is not None
            if not errors:
                problems.append(f"{job_id}: failed without a team error")
            for text in errors:
                if want.error not in text:
                    problems.append(f"{job_id}: team error {text!r}, expected {want.error!r}")
        elif errors:
            problems.append(f"{job_id}: {want.outcome}, yet team errors {sorted(set(errors))}")
        for name, job in found.items():
            for team in job.teams:
                if team.status == pb.TEAM_STATUS_ERROR and OWNER_WORD.search(team.error):
                    problems.append(f"{job_id}: GetJob on {name}: team error {team.error!r}")
        for sub in subs:
            problems += self._verify_finished(sub, want, last)
        return problems

    def _late(self, sub: Subscriber, at: float | None, within: float | None) -> list[str]:
        if within is None or at is None or self.fault_at is None:
            return []
        if at - self.fault_at > within:
            return [f"{sub.name}: ended {at - self.fault_at:.1f} s after the fault "
                    f"(bound {within} s)"]
        return []

    def _verify_finished(self, sub: Subscriber, want: Expect, last: int) -> list[str]:
        problems = []
        if sub.seqs != list(range(1, last + 1)):
            problems.append(f"{sub.name}: seqs are not 1..{last}: {sub.seqs}")
        if sub.final is None:
            problems.append(f"{sub.name}: no final event")
        elif sub.final["data"]["status"] != want.outcome:
            problems.append(f"{sub.name}: final {sub.final['data']['status']}, "
                            f"expected {want.outcome}")
        else:
            problems += self._late(sub, sub.final_at, want.within)
        clean = (WS_CLEAN if sub.plane == "ws" else {"OK", "UNAVAILABLE"})
        odd = [e for e in sub.endings if e.code not in clean]
        if odd:
            problems.append(f"{sub.name}: unexpected endings {[str(e) for e in odd]}")
        if sub.cut:
            problems.append(f"{sub.name}: still going (no end)")
        elif sub.endings and sub.endings[-1].code not in (1000, "OK"):
            problems.append(f"{sub.name}: last ending {sub.endings[-1]}, not a clean end")
        return problems

    def _verify_gone(self, sub: Subscriber, want: Expect) -> list[str]:
        problems = []
        expected: int | str = 4410 if sub.plane == "ws" else "OUT_OF_RANGE"
        if sub.cut or not sub.endings or sub.endings[-1].code != expected:
            last = "still going (no end)" if sub.cut or not sub.endings else sub.endings[-1]
            problems.append(f"{sub.name}: last ending {last}, expected {expected}")
        else:
            problems += self._late(sub, sub.endings[-1].at, want.within)
        if sub.seqs != list(range(1, len(sub.seqs) + 1)):
            problems.append(f"{sub.name}: seqs before history gone are not 1..k: {sub.seqs}")
        if sub.final is not None:
            problems.append(f"{sub.name}: a final event {sub.final['data']['status']} "
                            f"of a job whose history is gone")
        return problems
