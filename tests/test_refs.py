"""Ref names from user strings, and checkpoint ids: what castate/repository/refs.py promises."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from castate.errors import InvalidKeyError
from castate.repository import refs


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_checkpoint_time_reads_back_the_stamp_of_an_id(moment: datetime) -> None:
    stamp = moment.strftime("%Y%m%dT%H%M%S.%fZ") + "-a1b2c3"
    assert refs.checkpoint_time(stamp) == moment.timestamp()


def test_a_new_checkpoint_id_parses_and_carries_its_time() -> None:
    before = datetime.now(UTC).timestamp()
    cpid = refs.new_checkpoint_id("session/one", "before deploy")
    session, name, stamp = refs.parse_checkpoint_id(cpid)
    assert (session, name) == ("session/one", "before deploy")
    assert before - 1 <= refs.checkpoint_time(stamp) <= datetime.now(UTC).timestamp() + 1
    assert refs.checkpoint_ref(cpid) == refs.CHECKPOINTS + cpid


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "x",
        "20261127T110102.12345Z-a1b2c3",  # five digits of microseconds
        "20261127T110102,123456Z-a1b2c3",
        "20261327T110102.123456Z-a1b2c3",  # month 13
        "2026-11-27T11:01:02.123456Z",
        "20261127T110102.123456+-a1b2c3",
    ],
)
def test_a_stamp_castate_did_not_write_has_no_time(stamp: str) -> None:
    assert refs.checkpoint_time(stamp) == 0.0


@pytest.mark.parametrize("bad", ["a/b", "a/b/c/d", "a//c", "a%2/b/c", "s p/b/c", 42, "a/b/c\n"])
def test_what_is_not_a_checkpoint_id_is_refused(bad: object) -> None:
    with pytest.raises(InvalidKeyError):
        refs.parse_checkpoint_id(bad)
