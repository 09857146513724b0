"""The gRPC control plane through the real grpcurl binary (reflection only, no .proto)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.conftest import Running, grpcurl, wait_for_sequence

SERVICE = "chimera.v1.JobService"
BAD_PAGE_TOKEN = (
    "page_token is not one this server issued: pass next_page_token from the "
    "previous ListJobs response unchanged, or leave it empty"
)


def page_token_text(token: str) -> str:
    """What a page token carries: the wire format is unpadded base64url of "v1:N"."""
    assert "=" not in token
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def streamed_events(out: str) -> list[dict[str, Any]]:
    """The ``event`` of each StreamJobEvents response grpcurl printed (JSON objects in a row)."""
    decoder, text, pos, events = json.JSONDecoder(), out.strip(), 0, []
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        events.append(obj["event"])
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return events


async def call(server: Running, method: str, data: Any) -> tuple[int, Any, str]:
    code, out, err = await grpcurl(server.grpc_target, f"{SERVICE}/{method}", data=data)
    body = json.loads(out) if code == 0 and out.strip() and method != "StreamJobEvents" else out
    return code, body, err


async def test_list_shows_service_reflection_and_health(server: Running) -> None:
    code, out, err = await grpcurl(server.grpc_target, "list")
    assert code == 0, err
    services = out.split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    assert "grpc.reflection.v1.ServerReflection" in services


async def test_describe_shows_the_protos_comments(server: Running) -> None:
    code, out, err = await grpcurl(server.grpc_target, "describe", SERVICE)
    assert code == 0, err
    # Comment lines of protos/chimera/v1/jobs.proto, as grpcurl prints them.
    assert "// Creates a job and starts its teams at once." in out
    assert "// Streams the job's events after `after_sequence`, then live ones, and ends" in out
    code, out, err = await grpcurl(server.grpc_target, "describe", "chimera.v1.JobView")
    assert code == 0, err
    assert "//" in out


async def test_reflection_v1_answers(server: Running) -> None:
    """Reflection under its v1 name (what newer clients ask first; grpcurl 1.8.6 asks
    v1alpha): the same messages, so v1alpha's classes speak it on the wire."""
    request = reflection_pb2.ServerReflectionRequest
    response = reflection_pb2.ServerReflectionResponse
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        call = info(iter([
            request(list_services=""),
            request(file_containing_symbol=SERVICE),
            request(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        ]))
        answers = [answer async for answer in call]
    names = {service.name for service in answers[0].list_services_response.service}
    assert {SERVICE, "grpc.reflection.v1.ServerReflection"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in answers[1].file_descriptor_response.file_descriptor_proto]
    jobs = next(file for file in files if file.name == "chimera/v1/jobs.proto")
    comments = [location.leading_comments for location in jobs.source_code_info.location]
    assert " Creates a job and starts its teams at once.\n" in comments
    (v1,) = (descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in answers[2].file_descriptor_response.file_descriptor_proto)
    assert v1.package == "grpc.reflection.v1"
    assert v1.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"


async def test_describe_shows_the_contract(server: Running) -> None:
    code, out, err = await grpcurl(server.grpc_target, "describe", SERVICE)
    assert code == 0, err
    for rpc in ("CreateJob", "GetJob", "ListJobs", "CancelJob", "StreamJobEvents"):
        assert f"rpc {rpc}" in out
    assert "returns ( stream .chimera.v1.StreamJobEventsResponse )" in out
    code, out, err = await grpcurl(server.grpc_target, "describe", "chimera.v1.CreateJobRequest")
    assert code == 0, err
    for field in ("string brief = 1", "repeated .chimera.v1.Team teams = 2",
                  "string job_id = 3", "string request_id = 4"):
        assert field in out


async def test_health_serving(server: Running) -> None:
    code, out, err = await grpcurl(server.grpc_target, "grpc.health.v1.Health/Check", data={})
    assert code == 0, err
    assert json.loads(out)["status"] == "SERVING"


async def test_create_stream_get_list(server: Running) -> None:
    code, created, err = await call(
        server, "CreateJob", {"brief": "Create a login form with email and password"}
    )
    assert code == 0, err
    job = created["job"]
    job_id = job["job_id"]
    assert len(job_id) == 36  # a UUID4
    assert job["state"] == "JOB_STATE_RUNNING"
    assert [t["team"] for t in job["teams"]] == ["TEAM_ANTHROPIC", "TEAM_GOOGLE"]

    code, out, err = await call(server, "StreamJobEvents", {"job_id": job_id})
    assert code == 0, err
    events = streamed_events(out)
    sequences = [int(e["sequence"]) for e in events]
    assert sequences == list(range(1, len(events) + 1))
    assert events[0]["status_change"]["status"] == "running"
    assert events[-1]["status_change"]["status"] == "succeeded"
    assert events[-1]["status_change"]["job_state"] == "JOB_STATE_SUCCEEDED"
    assert "team" not in events[-1]  # job-level events carry no team
    codes = [e for e in events if "code_generated" in e]
    assert {e["team"] for e in codes} == {"TEAM_ANTHROPIC", "TEAM_GOOGLE"}
    assert all("LoginForm" in e["code_generated"]["code"] for e in codes)
    assert all(int(e["code_generated"]["input_tokens"]) > 0 for e in codes)  # as on the WebSocket

    code, got, err = await call(server, "GetJob", {"job_id": job_id})
    assert code == 0, err
    job = got["job"]
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert int(job["last_sequence"]) == len(events)
    assert "end_time" in job
    for run in job["teams"]:
        assert run["status"] == "TEAM_STATUS_COMPLETE"
        assert run["model"] == "simulated"
        assert run["thoughts"] and run["code"] and int(run["token_count"]) > 0

    code, listed, err = await call(server, "ListJobs", {})
    assert code == 0, err
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]


async def test_list_jobs_newest_first_and_paginated(server: Running) -> None:
    ids = []
    for i in range(5):
        code, created, err = await call(
            server, "CreateJob", {"brief": f"counter number {i}", "job_id": f"job-{i}"}
        )
        assert code == 0, err
        ids.append(created["job"]["job_id"])
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        code, page, err = await call(server, "ListJobs", {"page_size": 2, "page_token": token})
        assert code == 0, err
        pages += 1
        seen += [j["job_id"] for j in page["jobs"]]
        token = page.get("next_page_token", "")
        if not token:
            break
        assert re.fullmatch(r"v1:\d+", page_token_text(token)), token
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_list_jobs_rejects_bad_page_size_and_token(server: Running) -> None:
    for data in ({"page_size": -1}, {"page_size": 101}):
        code, _, err = await call(server, "ListJobs", data)
        assert code != 0
        assert "InvalidArgument" in err and "page_size" in err
    # Not base64; "v1:abc"; "v2:5" (another version); "v1:" and 19 digits; "v1:-5".
    for token in ("garbage!", "djE6YWJj", "djI6NQ", "djE6MTExMTExMTExMTExMTExMTExMQ",
                  "djE6LTU", "x" * 500):
        code, _, err = await call(server, "ListJobs", {"page_token": token})
        assert code != 0
        assert "InvalidArgument" in err and BAD_PAGE_TOKEN in err


async def test_create_job_errors(server: Running) -> None:
    cases = [
        ({"brief": ""}, "InvalidArgument", "brief is empty"),
        ({"brief": "   \n "}, "InvalidArgument", "brief is empty"),
        ({"brief": "x" * 10_001}, "InvalidArgument", "limit is 10000"),
        ({"brief": "ok", "job_id": "bad id!"}, "InvalidArgument", "job_id"),
        ({"brief": "ok", "job_id": "x" * 65}, "InvalidArgument", "job_id"),
        ({"brief": "ok", "teams": ["TEAM_UNSPECIFIED"]}, "InvalidArgument", "unknown team"),
        ({"brief": "ok", "teams": [7]}, "InvalidArgument", "unknown team"),
        ({"brief": "ok", "teams": ["TEAM_GOOGLE", "TEAM_GOOGLE"]}, "InvalidArgument", "once"),
    ]
    for data, status, text in cases:
        code, _, err = await call(server, "CreateJob", data)
        assert code != 0, data
        assert status in err and text in err, (data, err)
    code, listed, _ = await call(server, "ListJobs", {})
    assert code == 0
    assert listed.get("jobs", []) == []  # nothing was created by the bad requests


async def test_client_job_id_request_id_and_conflicts(server: Running) -> None:
    code, created, err = await call(
        server, "CreateJob", {"brief": "a counter", "job_id": "my-job_1", "request_id": "r1"}
    )
    assert code == 0, err
    assert created["job"]["job_id"] == "my-job_1"
    code, again, err = await call(
        server, "CreateJob", {"brief": "a counter", "job_id": "my-job_1", "request_id": "r1"}
    )
    assert code == 0, err
    assert again["job"]["job_id"] == "my-job_1"
    code, _, err = await call(server, "CreateJob", {"brief": "a counter", "job_id": "my-job_1"})
    assert code != 0 and "AlreadyExists" in err and "my-job_1" in err
    code, _, err = await call(server, "CreateJob", {"brief": "other brief", "request_id": "r1"})
    assert code != 0 and "FailedPrecondition" in err and "request_id" in err
    # Same request_id, no job id: still the same job.
    code, again, err = await call(server, "CreateJob", {"brief": "a counter", "request_id": "r1"})
    assert code == 0 and again["job"]["job_id"] == "my-job_1"
    code, listed, _ = await call(server, "ListJobs", {})
    assert [j["job_id"] for j in listed["jobs"]] == ["my-job_1"]


async def test_get_and_cancel_errors(server: Running) -> None:
    code, _, err = await call(server, "GetJob", {"job_id": "no-such-job"})
    assert code != 0 and "NotFound" in err and "no-such-job" in err
    code, _, err = await call(server, "GetJob", {"job_id": "../etc"})
    assert code != 0 and "InvalidArgument" in err
    code, _, err = await call(server, "CancelJob", {"job_id": "no-such-job"})
    assert code != 0 and "NotFound" in err
    # StreamJobEvents waits for an unknown job: test_resume covers that rule.
    code, _, err = await call(server, "StreamJobEvents", {"job_id": "x", "after_sequence": -1})
    assert code != 0 and "InvalidArgument" in err


async def test_cancel_finished_job_is_failed_precondition(server: Running) -> None:
    code, _, _ = await call(server, "CreateJob", {"brief": "a counter", "job_id": "done"})
    assert code == 0
    code, _, err = await call(server, "StreamJobEvents", {"job_id": "done"})  # waits for the end
    assert code == 0, err
    code, _, err = await call(server, "CancelJob", {"job_id": "done"})
    assert code != 0 and "FailedPrecondition" in err and "succeeded" in err


async def test_stream_after_sequence(server: Running) -> None:
    code, _, _ = await call(server, "CreateJob", {"brief": "a todo list", "job_id": "resume"})
    assert code == 0
    async with server.client() as client:
        # Event 5 exists (resuming after a seq the job has not reached is refused).
        await wait_for_sequence(client, "resume", 5)
        code, out, _ = await call(
            server, "StreamJobEvents", {"job_id": "resume", "after_sequence": 5}
        )
        job = await client.get("resume")
    assert code == 0
    sequences = [int(s) for s in _field_values(out, '"sequence": "')]
    assert sequences == list(range(6, job.last_sequence + 1))  # to the final event
    code, _, err = await call(
        server, "StreamJobEvents", {"job_id": "resume", "after_sequence": 10_000}
    )
    assert code != 0 and "InvalidArgument" in err and "past the last seq" in err


async def test_a_replayed_event_is_the_live_one_field_for_field(server: Running) -> None:
    # Times included: the stored frame (milliseconds) is the record, so a live event
    # must not carry more precision than its replay.
    async with server.client() as client:
        created = await client.create("a counter", job_id="same")
        live = [event async for event in client.events("same")]
        replayed = [event async for event in client.events("same")]
        got = await client.get("same")
    assert len(live) > 5 and live == replayed
    assert got.create_time == created.create_time
    assert all(e.time.nanos % 1_000_000 == 0 for e in live)


def _field_values(text: str, marker: str) -> list[str]:
    values = []
    for part in text.split(marker)[1:]:
        values.append(part.split('"', 1)[0])
    return values
