"""A read-only S3 credential (GET and LIST only: an auditor, ``castate sessions``, the read-only
UI) opens a store and reads it; the conditional-write probe waits for the first write."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

import castate
from castate.errors import StoreError
from tools.servers import S3_ACCESS_KEY, S3_SECRET_KEY, SeaweedServer

RO_KEY, RO_SECRET = "castate-ro", "castate-ro-secret"


class ReadOnlyIdentitySeaweed(SeaweedServer):
    """SeaweedFS with a second identity allowed to Read and List only."""

    def __init__(self) -> None:
        super().__init__()
        creds = {
            "identities": [
                {
                    "name": "castate",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": RO_KEY, "secretKey": RO_SECRET}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(creds))


@pytest.fixture(scope="module")
def ro_server() -> Iterator[SeaweedServer]:
    with ReadOnlyIdentitySeaweed() as s, pytest.MonkeyPatch.context() as mp:
        for k, v in s.env().items():
            mp.setenv(k, v)
        s.create_bucket("ro-bucket")
        yield s


async def test_a_read_only_credential_can_read_and_is_refused_at_its_first_write(
    ro_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = ro_server.url("ro-bucket", f"t{uuid.uuid4().hex[:10]}")
    async with castate.StateManager(url) as sm:
        await sm.save_session("s", {"v": 1})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", RO_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", RO_SECRET)
    async with castate.StateManager(castate.open(url, create=False)) as sm:
        assert [s.session_id for s in await sm.list_sessions()] == ["s"]
        assert await sm.load_session("s") == {"v": 1}
        with pytest.raises(StoreError, match="access denied"):
            await sm.save_session("s", {"v": 2})
        assert await sm.load_session("s") == {"v": 1}
