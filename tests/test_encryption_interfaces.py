"""Every interface that builds its own store from a path or URL opens an encrypted one
(``key=``, or the key from the environment), and what it stores does not show the state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointMetadata
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

import castate
from castate.compat.marsys import MarsysBytesBackend, MarsysStorageBackend
from castate.errors import KeyRequiredError, WrongKeyError
from castate.integrations.langgraph import CastateSaver
from castate.keys import Passphrase, RawKey

MARKER = "plaintext-marker-7c1e5d"
KEY = Passphrase("correct horse battery staple", n=1024)


def stored_bytes(root: Path) -> bytes:
    """Every byte of every file under a local store's directory."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def encrypted_and_hidden(root: Path) -> bool:
    """The store has key slots, and its files hold the marker nowhere (nor its UTF-16 or hex)."""
    data = stored_bytes(root)
    hidden = all(m not in data for m in (MARKER.encode(), MARKER.encode("utf-16-le"), MARKER.encode().hex().encode()))
    return hidden and any((root / "volumes").iterdir()) and b"castate_key_slot" in data


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CASTATE_PASSWORD", "CASTATE_KEY", "CASTATE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


def state() -> dict[str, object]:
    return {"user": MARKER, "messages": [{"role": "user", "content": f"{MARKER} {i}"} for i in range(20)]}


async def test_the_marker_is_visible_in_a_plain_store(tmp_path: Path) -> None:
    """The control for the tests below: unencrypted, the same save shows the marker."""
    async with castate.FileStorageBackend(tmp_path / "plain") as fs:
        await fs.save(MARKER, state())
    assert MARKER.encode() in stored_bytes(tmp_path / "plain")


async def test_file_storage_backend_key(tmp_path: Path) -> None:
    root = tmp_path / "store"
    async with castate.FileStorageBackend(root, key=KEY) as fs:
        await fs.save(MARKER, state())
    assert encrypted_and_hidden(root)
    async with castate.FileStorageBackend(root, key=KEY) as fs:
        assert await fs.load(MARKER) == state()
        assert await fs.list_keys() == [MARKER]
    async with castate.StateManager(castate.FileStorageBackend(root, key=KEY)) as sm:
        await sm.save_session("s", {"n": 1})
    with pytest.raises(WrongKeyError):
        async with castate.FileStorageBackend(root, key=Passphrase("wrong", n=1024)) as fs:
            pass
    with pytest.raises(KeyRequiredError):
        async with castate.FileStorageBackend(root) as fs:
            pass


async def test_file_storage_backend_takes_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(32).hex()
    root = tmp_path / "store"
    async with castate.FileStorageBackend(root, key=RawKey(key)) as fs:
        await fs.save("k", state())
    monkeypatch.setenv("CASTATE_KEY", key)
    async with castate.FileStorageBackend(root) as fs:  # no key=: CASTATE_KEY opens it
        assert await fs.load("k") == state()
    assert encrypted_and_hidden(root)


def test_castate_saver_key(tmp_path: Path) -> None:
    root = tmp_path / "store"
    config: RunnableConfig = {"configurable": {"thread_id": MARKER, "checkpoint_ns": ""}}
    checkpoint = generate_checkpoint(channel_values={"messages": [MARKER] * 5}, channel_versions={"messages": 1})
    metadata: CheckpointMetadata = {"source": "loop", "step": 1, "parents": {}}
    with CastateSaver(root, key=KEY) as saver:
        saver.put(config, checkpoint, metadata, {"messages": 1})
    assert encrypted_and_hidden(root)
    with CastateSaver.from_conn_string(str(root), key=KEY) as saver:
        got = saver.get_tuple(config)
        assert got is not None
        assert got.checkpoint["channel_values"] == {"messages": [MARKER] * 5}
    with CastateSaver(root) as saver, pytest.raises(KeyRequiredError):
        saver.get_tuple(config)


async def test_marsys_storage_backend_key(tmp_path: Path) -> None:
    root = tmp_path / "store"
    async with MarsysStorageBackend(root, key=KEY) as fs:
        await fs.save(f"sessions/{MARKER}", state())
    assert encrypted_and_hidden(root)
    async with MarsysStorageBackend(root, key=KEY) as fs:
        assert await fs.load(f"sessions/{MARKER}") == state()


async def test_marsys_bytes_backend_key(tmp_path: Path) -> None:
    root = tmp_path / "store"
    payload = (f'{{"note": "{MARKER}", "n": [1, 2, 3]}}').encode()
    async with MarsysBytesBackend(root, key=KEY) as store:
        await store.write(f"{MARKER}/snapshot.json", payload)
    assert encrypted_and_hidden(root)
    async with MarsysBytesBackend(root, key=KEY) as store:
        assert await store.read(f"{MARKER}/snapshot.json") == payload


def test_state_managers_take_a_key_with_a_path(tmp_path: Path) -> None:
    key = castate.RawKey(b"k" * 32)
    with castate.SyncStateManager(str(tmp_path / "s"), key=key) as sm:
        sm.save_session("confidential-run", {"secret": "plaintext-marker"})
    data = b"".join(p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert b"plaintext-marker" not in data
    assert b"confidential-run" not in data
    with pytest.raises(castate.KeyRequiredError), castate.SyncStateManager(str(tmp_path / "s")) as sm:
        sm.load_session("confidential-run")
    with castate.SyncStateManager(str(tmp_path / "s"), key=key) as sm:
        assert sm.load_session("confidential-run") == {"secret": "plaintext-marker"}
    with pytest.raises(TypeError, match="key= goes with a path"):
        castate.StateManager(castate.MemoryBackend(), key=key)
