from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from arun.services import convert


@pytest.mark.parametrize(
    "dt",
    [
        datetime(2026, 11, 28, 11, 39, 32, 123456, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the epoch: nanos stay >= 0
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 3, 29, 2, 30, 0, 7),  # naive: local time, as before
    ],
)
def test_timestamp_matches_protobuf(dt: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(dt.astimezone(UTC))
    got = convert.timestamp(dt)
    assert got == expected
    assert got is not None and convert.from_timestamp(got) == dt.astimezone(UTC)


def test_timestamp_none() -> None:
    assert convert.timestamp(None) is None
