"""The contract both real providers keep, run against both local fakes.

Each case runs once per wire format, with the real SDK client over HTTP to a
fake that speaks that format; the test id names it (``[anthropic-messages-sse]``,
``[gemini-streamGenerateContent-sse]``) and so does every assertion message.
The per-provider adapters are in ``tests/provider_wires.py``. What only one
provider has (its request shape, Gemini's RetryInfo and safety stops,
Anthropic's ``x-should-retry`` and error-event types) is tested in
``test_provider_anthropic.py`` / ``test_provider_google.py``.

Time-outs: a stalled fake sends nothing more until the client gives up
(``ending="hang"``, ``stall_headers``), so the only clock is the provider's
own time-out; counts of requests are read once the fake has recorded them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from chimera.fakes.anthropic_api import DEFAULT_ANSWER, DEFAULT_CODE
from chimera.providers.base import AnswerStarted, CodeDelta, CodeResult, ProviderEvent, Thought
from chimera.providers.faults import RATE_LIMIT_MESSAGE
from tests.provider_wires import (
    BRIEF,
    CUT_OFF_ANSWER,
    EXPECTED_THOUGHTS,
    KEY,
    WIRES,
    Contract,
    ErrorCase,
    Wire,
    assert_complete,
    collect,
    collect_failure,
    contract_fixture,
    thoughts,
)

# The time-out tests shorten the providers' time-out. Where a retry must then
# succeed, it still leaves a loaded machine ample time to deliver a whole stream;
# where every attempt stalls, nothing has to arrive in time.
RETRIED_TIMEOUT = 0.5
STALLED_TIMEOUT = 0.25


contract = contract_fixture(*WIRES)


def per_wire(cases: Callable[[Wire], Iterable[tuple[str, Any]]]) -> pytest.MarkDecorator:
    """Parametrise ``contract`` and ``case`` with each wire's own cases (named ``id-name``)."""
    return pytest.mark.parametrize(
        ("contract", "case"),
        [
            pytest.param(wire, case, id=f"{wire.id}-{name}")
            for wire in WIRES
            for name, case in cases(wire)
        ],
        indirect=["contract"],
    )




async def test_streams_grouped_thoughts_then_answer_then_code(contract: Contract) -> None:
    events = await collect(contract.provider())

    others = [e for e in events if not isinstance(e, CodeDelta)]
    assert others == [*map(Thought, EXPECTED_THOUGHTS), AnswerStarted(), events[-1]], contract.wire
    assert_complete(contract.wire, events)


async def test_code_deltas_are_the_code_as_it_streams_without_the_prose(
    contract: Contract,
) -> None:
    """The fake streams its answer word by word, prose before and after the block;
    the deltas come between AnswerStarted and the code, in order, each starting
    where the last ended, and join to exactly the code."""
    assert "Here is the component." in DEFAULT_ANSWER and DEFAULT_ANSWER.rstrip().endswith(".")
    events = await collect(contract.provider())

    started = events.index(AnswerStarted())
    deltas = [e for e in events if isinstance(e, CodeDelta)]
    assert len(deltas) > 5, contract.wire  # as the chunks came, not at the end
    assert events[started + 1 : -1] == deltas, contract.wire
    offset = 0
    for delta in deltas:
        assert delta.offset == offset and delta.text, contract.wire
        offset += len(delta.text)
    result = events[-1]
    assert isinstance(result, CodeResult), contract.wire
    assert "".join(d.text for d in deltas) == result.code == DEFAULT_CODE, contract.wire


@pytest.mark.parametrize(
    ("crlf", "split", "split_delay"),
    [(True, None, 0.0), (False, 1, 0.0), (True, 3, 0.0), (True, 61, 0.001), (False, 64, 0.0)],
)
async def test_line_endings_and_odd_byte_splits_change_nothing(
    contract: Contract, crlf: bool, split: int | None, split_delay: float
) -> None:
    wire = contract.wire
    contract.api.script(
        wire.reply(wire.items(), crlf=crlf, split=split, split_delay=split_delay)
    )

    events = await collect(contract.provider())

    assert thoughts(events) == EXPECTED_THOUGHTS, wire
    assert_complete(wire, events)


async def test_model_property_and_key_kept_out_of_repr(contract: Contract) -> None:
    provider = contract.provider(model="model-x")
    assert provider.model == "model-x", contract.wire
    assert KEY not in repr(contract.wire.config_type(api_key=KEY)), contract.wire


# -- HTTP error answers ----------------------------------------------------------


async def test_rate_limit_is_retried_after_retry_after(contract: Contract) -> None:
    contract.api.script(contract.wire.rate_limited(retry_after="0.2"))

    assert_complete(contract.wire, await collect(contract.provider()))

    first_try, second_try = contract.api.requests
    assert second_try.received_at - first_try.received_at >= 0.2, contract.wire


async def test_rate_limit_that_persists_fails_with_the_guide_message(contract: Contract) -> None:
    contract.api.default = contract.wire.rate_limited(retry_after="0")

    events, error = await collect_failure(contract.provider(max_retries=2))

    assert str(error) == RATE_LIMIT_MESSAGE == "API rate limit exceeded", contract.wire
    assert error.status == 429, contract.wire
    assert events == [], contract.wire
    assert len(contract.api.requests) == 3, contract.wire


async def test_retry_after_longer_than_the_limit_is_not_waited_for(contract: Contract) -> None:
    contract.api.script(contract.wire.rate_limited(retry_after="3600"))

    started = time.monotonic()
    _, error = await collect_failure(contract.provider())

    assert str(error) == RATE_LIMIT_MESSAGE, contract.wire
    assert len(contract.api.requests) == 1, contract.wire
    assert time.monotonic() - started < 5, contract.wire


@per_wire(lambda wire: ((str(case[0]), case) for case in wire.server_errors))
async def test_server_errors_are_retried_then_reported(contract: Contract, case: ErrorCase) -> None:
    wire, api = contract.wire, contract.api
    status, reason, message = case
    api.script(wire.error(status, reason))
    assert_complete(wire, await collect(contract.provider()))
    assert len(api.requests) == 2, wire

    api.default = wire.error(status, reason)
    _, error = await collect_failure(contract.provider(max_retries=1))
    assert str(error) == message, wire
    assert error.status == status, wire
    assert len(api.requests) == 2 + 2, wire


async def test_bad_request_is_not_retried_and_says_why(contract: Contract) -> None:
    wire = contract.wire
    reason, explanation = wire.bad_request
    contract.api.script(wire.error(400, reason, explanation))

    _, error = await collect_failure(contract.provider())

    expected = f"{wire.source} API rejected the request (400 {reason}): {explanation}"
    assert str(error) == expected, wire
    assert error.status == 400, wire
    assert len(contract.api.requests) == 1, wire


async def test_wrong_key_is_refused_and_not_retried(contract: Contract) -> None:
    _, error = await collect_failure(contract.provider(api_key="wrong-key"))

    assert str(error) == contract.wire.wrong_key_message, contract.wire
    assert len(contract.api.requests) == 1, contract.wire


async def test_api_key_never_appears_in_errors_or_logs(
    contract: Contract, caplog: pytest.LogCaptureFixture
) -> None:
    wire = contract.wire
    caplog.set_level(logging.DEBUG)
    status, reason, _ = wire.overload
    refused, refusal = wire.refusal
    contract.api.script(
        wire.error(status, reason, f"overloaded for key {KEY}"),
        wire.error(refused, refusal, f"key {KEY} may not use this model"),
    )

    _, error = await collect_failure(contract.provider())

    assert str(error) == (
        f"{wire.source} API refused the credentials ({refused} {refusal}): "
        "key [redacted] may not use this model"
    ), wire
    assert KEY not in repr(error), wire
    assert caplog.records, f"{wire}: expected the retry to be logged"
    assert KEY not in caplog.text, wire


# -- faults inside the stream ------------------------------------------------------


async def test_a_stream_without_its_final_event_is_retried_then_reported(
    contract: Contract,
) -> None:
    wire, api = contract.wire, contract.api
    api.script(wire.reply(wire.cut(wire.items())))
    assert_complete(wire, await collect(contract.provider()))
    assert len(api.requests) == 2, wire

    api.default = wire.reply(wire.cut(wire.items()))
    events, error = await collect_failure(contract.provider(max_retries=1))
    assert str(error) == wire.cut_message, wire
    assert not any(isinstance(event, CodeResult) for event in events), wire


async def test_a_malformed_frame_is_retried_then_reported(contract: Contract) -> None:
    wire, api = contract.wire, contract.api
    items = wire.items()
    api.script(wire.reply([*items[:3], wire.malformed(), *items[3:]]))
    assert_complete(wire, await collect(contract.provider()))
    assert len(api.requests) == 2, wire

    api.default = wire.reply([*items[:3], wire.malformed()])
    _, error = await collect_failure(contract.provider(max_retries=1))
    assert str(error) == wire.malformed_message, wire


async def test_connection_dropped_mid_stream_is_retried_keeping_earlier_thoughts(
    contract: Contract,
) -> None:
    wire = contract.wire
    items = wire.items()
    contract.api.script(wire.reply(items[: wire.thoughts_out(items)], ending="drop"))

    events = await collect(contract.provider())

    # The first attempt's thoughts stay; the second attempt thinks again.
    assert thoughts(events) == EXPECTED_THOUGHTS + EXPECTED_THOUGHTS, wire
    assert_complete(wire, events)
    assert len(contract.api.requests) == 2, wire


async def test_drop_during_the_answer_gives_one_answer_started(contract: Contract) -> None:
    wire = contract.wire
    items = wire.items()
    contract.api.script(wire.reply(items[: wire.answer_start(items) + 2], ending="drop", split=5))

    events = await collect(contract.provider())

    assert_complete(wire, events)
    assert len(contract.api.requests) == 2, wire


async def test_dropped_connection_that_persists_is_reported(contract: Contract) -> None:
    wire = contract.wire
    contract.api.default = wire.reply(wire.items()[:3], ending="drop")

    _, error = await collect_failure(contract.provider(max_retries=1))

    assert str(error) == f"Lost the connection to the {wire.source} API", wire
    assert error.status is None, wire
    assert len(contract.api.requests) == 2, wire


async def test_error_event_mid_stream_is_retried_then_reported(contract: Contract) -> None:
    wire, api = contract.wire, contract.api
    items = wire.items()
    api.script(wire.reply([*items[:3], wire.error_event()]))
    assert_complete(wire, await collect(contract.provider()))
    assert len(api.requests) == 2, wire

    api.default = wire.reply([*items[:3], wire.error_event()])
    _, error = await collect_failure(contract.provider(max_retries=1))
    status, _, message = wire.overload
    assert str(error) == message, wire
    assert error.status == status, wire


async def test_rate_limit_inside_the_stream_gives_the_guide_message(contract: Contract) -> None:
    contract.api.default = contract.wire.reply([contract.wire.rate_limit_event()])

    _, error = await collect_failure(contract.provider(max_retries=0))

    assert str(error) == RATE_LIMIT_MESSAGE, contract.wire
    assert error.status == 429, contract.wire


async def test_slow_response_times_out_and_is_retried(contract: Contract) -> None:
    wire = contract.wire
    contract.api.script(wire.reply(stall_headers=True))  # until the client gives up

    events = await collect(contract.provider(timeout=RETRIED_TIMEOUT))

    assert_complete(wire, events)
    held, retried = contract.api.requests
    assert held.connection != retried.connection, wire
    await contract.api.wait_closed(held)  # the client gave up on it


async def test_stall_mid_stream_times_out_then_is_reported(contract: Contract) -> None:
    wire = contract.wire
    contract.api.default = wire.reply(wire.items()[:5], ending="hang")  # until the client gives up

    _, error = await collect_failure(contract.provider(timeout=STALLED_TIMEOUT, max_retries=1))

    assert str(error) == f"{wire.source} API did not answer in time", wire
    # The second request may be read by the fake after the client already gave up on it.
    await contract.api.wait_for_requests(2)
    assert len(contract.api.requests) == 2, wire


async def test_unreachable_api_is_reported_as_connection_loss(contract: Contract) -> None:
    wire = contract.wire
    async with wire.fake() as gone:
        url = gone.url
    _, error = await collect_failure(contract.provider(base_url=url, max_retries=1))

    assert str(error) == f"Lost the connection to the {wire.source} API", wire


# -- answers without code ------------------------------------------------------------


async def test_answer_without_code_block_is_an_error_not_retried(contract: Contract) -> None:
    wire = contract.wire
    contract.api.script(wire.reply(wire.items(answer="I would rather not write code today.")))

    events, error = await collect_failure(contract.provider())

    assert str(error) == f"{wire.source} answer contained no fenced code block", wire
    assert AnswerStarted() in events, wire
    assert len(contract.api.requests) == 1, wire


async def test_answer_cut_off_at_max_tokens_says_so(contract: Contract) -> None:
    wire = contract.wire
    contract.api.script(wire.reply(wire.items(answer=CUT_OFF_ANSWER, max_tokens=True)))

    _, error = await collect_failure(contract.provider())

    assert "cut off at the token limit" in str(error), wire
    assert len(contract.api.requests) == 1, wire


# -- cancellation ------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_connection_at_once(contract: Contract) -> None:
    wire, api = contract.wire, contract.api
    items = wire.items()
    api.script(wire.reply(items[: wire.answer_start(items)], ending="hang"))
    provider = contract.provider()
    seen: list[ProviderEvent] = []
    got_thought = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(BRIEF):
            seen.append(event)
            got_thought.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_thought.wait(), 30)  # an event: a generous bound costs nothing
    [request] = api.requests
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    closed_at = await api.wait_closed(request, within=2.0)
    assert closed_at - cancelled_at < 0.5, wire
    assert seen and all(isinstance(event, Thought) for event in seen), wire
    assert len(api.requests) == 1, f"{wire}: no retry after a cancellation"


async def test_closing_the_stream_early_closes_the_connection(contract: Contract) -> None:
    wire, api = contract.wire, contract.api
    items = wire.items()
    api.script(wire.reply(items[: wire.answer_start(items)], ending="hang"))
    stream = contract.provider().stream(BRIEF)

    event = await anext(stream)
    assert isinstance(event, Thought), wire
    closing_at = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]

    closed_at = await api.wait_closed(api.requests[0], within=2.0)
    assert closed_at - closing_at < 0.5, wire


# -- configuration ---------------------------------------------------------------------


async def test_base_url_comes_from_the_environment_when_not_given(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire, spec = contract.wire, contract.wire.spec
    monkeypatch.setenv(spec.base_url_env, contract.api.url)
    config = contract.wire.config_type.from_env(
        {spec.key_envs[-1]: KEY}, base_url=None, backoff_base=0.001
    )
    assert config is not None and config.base_url is None, wire

    assert_complete(wire, await collect(contract.adopt(config)))
    assert wire.sent_key(contract.api.requests[0]) == KEY, wire


async def test_explicit_base_url_wins_over_the_environment(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(contract.wire.spec.base_url_env, "http://127.0.0.1:9")
    assert_complete(contract.wire, await collect(contract.provider(base_url=contract.api.url)))


async def test_from_env_needs_a_key_and_ignores_unset_settings(contract: Contract) -> None:
    wire, config_type = contract.wire, contract.wire.config_type
    for key_env in wire.spec.key_envs:
        assert config_type.from_env({}) is None, wire
        assert config_type.from_env({key_env: "  "}) is None, wire
        config = config_type.from_env({key_env: KEY}, model="model-x", base_url=None, timeout=None)
        assert config == config_type(api_key=KEY, model="model-x"), wire  # type: ignore[call-arg]
        assert config.retry_policy.max_attempts == config.max_retries + 1, wire


EVERY_PROVIDER_REFUSES: tuple[dict[str, Any], ...] = ({"api_key": ""}, {"timeout": 0})


@per_wire(
    lambda wire: (
        (",".join(settings), settings) for settings in (*EVERY_PROVIDER_REFUSES, *wire.bad_settings)
    )
)
async def test_bad_settings_are_refused(contract: Contract, case: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        contract.wire.config_type(**{"api_key": KEY, **case})
