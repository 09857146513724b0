"""The one error table (``chimera.errors``): every Chimera error says how each plane
reports it, and the gateways answer with what it says."""

from __future__ import annotations

import http

import grpc
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.server import ServerProtocol

from chimera import errors
from chimera.errors import (
    ERROR_CLASSES,
    AlreadyExists,
    ChimeraError,
    EventsRejected,
    FailedPrecondition,
    HistoryGone,
    ProviderError,
    ResourceExhausted,
    ShuttingDown,
    SinceTooLarge,
    StorageFull,
    StorageUnavailable,
    SubscriberTooSlow,
    TokenExpired,
    close_for,
    code_name,
)
from chimera.http.responses import refusal as _refusal

# The errors whose meaning is the server's own failure: 500 is their answer, not a default.
SERVER_FAULTS = {ChimeraError, errors.ConfigError, errors.SubscriptionError}


@pytest.mark.parametrize("kind", ERROR_CLASSES, ids=lambda k: k.__name__)
def test_every_error_has_a_real_code_on_every_plane(kind: type[ChimeraError]) -> None:
    assert grpc.StatusCode[kind.grpc_code].name == kind.grpc_code
    status = http.HTTPStatus(kind.http_status)
    assert 400 <= status < 600
    assert (status == 500) == (kind in SERVER_FAULTS), "500 only for the server's own faults"
    assert kind.ws_close in errors.CLOSE_LABELS, "every close has its metric label"
    assert kind in errors.TABLE, "every class has its row"


def test_the_special_cases() -> None:
    assert close_for(ShuttingDown("stopping")) == (1001, "server shutting down")
    assert close_for(StorageUnavailable("disk I/O error")) == (1013, "disk I/O error")
    assert close_for(StorageFull("disk full")) == (1013, "disk full")
    assert close_for(ResourceExhausted("too many subscribers")) == (1013, "too many subscribers")
    assert close_for(HistoryGone("j", 3)) == (4410, "history gone")
    slow = SubscriberTooSlow(7)
    assert close_for(slow) == (4008, str(slow))
    too_large = SinceTooLarge("j", 9, 2)
    assert close_for(too_large) == (4416, str(too_large)[:123])
    assert close_for(TokenExpired()) == (4401, "token expired")
    assert close_for(FailedPrecondition("no")) == (1011, "no")
    assert close_for(ChimeraError("é" * 100)) == (1011, "é" * 61)  # 123 bytes, whole characters
    assert code_name(SinceTooLarge("j", 9, 2)) == "INVALID_ARGUMENT"
    assert code_name(SubscriberTooSlow(1)) == "RESOURCE_EXHAUSTED"
    assert code_name(HistoryGone("j", 1)) == "OUT_OF_RANGE"
    assert code_name(ProviderError("x")) == "INTERNAL"


# The HTTP statuses that used to fall through to 500 (or, for a full disk, said 429).
CHANGED = [
    (FailedPrecondition("job 'j' is still stopping: try again"), 409),
    (AlreadyExists("job id 'j' is taken"), 409),
    (HistoryGone("j", 3), 410),
    (SubscriberTooSlow(3), 429),
    (ProviderError("quota"), 502),
    (EventsRejected({"j": "lost"}), 503),
    (StorageFull("disk full"), 507),
]


@pytest.mark.parametrize(("error", "status"), CHANGED, ids=lambda v: type(v).__name__)
async def test_the_http_answer_is_the_tables(error: ChimeraError, status: int) -> None:
    """The WebSocket port's refusals (handshake, snapshot, list) read the table: no
    error falls through to 500. A real connection's Sans-I/O protocol makes the answer."""
    connection = ServerConnection(ServerProtocol(), server=None)  # type: ignore[arg-type]
    for as_json in (False, True):
        response = _refusal(connection, error, as_json=as_json)
        assert response.status_code == status
        assert str(error) in response.body.decode()
