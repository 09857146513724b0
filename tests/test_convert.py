"""chimera.gateways.convert.timestamp makes the Timestamp Timestamp.FromDatetime makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from chimera.events import utc_now
from chimera.gateways.convert import timestamp


@pytest.mark.parametrize("moment", [
    utc_now(),
    datetime(2026, 12, 8, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),  # before the epoch: nanos stay >= 0
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(2030, 1, 1, 12, 0, 0, 5),  # naive: read as UTC
    datetime(2026, 6, 1, 8, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
])
def test_a_timestamp_is_the_one_from_datetime_makes(moment: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(moment)
    made = timestamp(moment)
    assert made == expected, (made, expected)
    assert made is not None and made.ToDatetime(tzinfo=UTC) == expected.ToDatetime(tzinfo=UTC)


def test_no_moment_is_no_timestamp() -> None:
    assert timestamp(None) is None
