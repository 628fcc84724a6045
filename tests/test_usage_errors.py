"""UsageError: arguments that are not keys (command-line options, addresses to serve on,
request parameters) are refused as bad usage, apart from InvalidKeyError's unstorable keys."""

from __future__ import annotations

from pathlib import Path

import pytest

import castate
from castate.cli import main
from castate.ui.address import check_address


def test_usage_error_is_a_value_error_and_no_key_error() -> None:
    assert issubclass(castate.UsageError, castate.CastateError)
    assert issubclass(castate.UsageError, ValueError)
    assert not issubclass(castate.UsageError, castate.InvalidKeyError)


def test_serving_a_remote_address_without_allowing_it_is_a_usage_error() -> None:
    with pytest.raises(castate.UsageError, match="loopback addresses only"):
        check_address("192.0.2.1", allow_remote=False)
    assert check_address("localhost", allow_remote=False) == "127.0.0.1"
    assert check_address("192.0.2.1", allow_remote=True) == "192.0.2.1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint", "s", "cp", "--meta", "no-equals-sign"], "--meta takes KEY=VALUE"),
        (["forget", "--keep-last", "1"], "name the sessions whose checkpoints to forget"),
        (["forget", "s", "--all", "--keep-last", "1"], "pass either session ids or --all"),
    ],
)
def test_bad_options_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    store = tmp_path / "state"
    assert main(["--store", str(store), "init"]) == 0
    capsys.readouterr()
    assert main(["--store", str(store), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "see `castate COMMAND --help`" in err
