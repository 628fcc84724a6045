"""The dict storage interface (save/load/delete/list_keys/exists) and castate's file backend.

``StorageBackend`` is the interface the state-management API is written against: async
methods that store a dict under a string key. ``FileStorageBackend`` implements it over a
castate repository in a local directory: each key is a ref, each save a commit, and
saving a key again stores only what changed.
"""

from __future__ import annotations

import abc
import os
from typing import Any

from castate.errors import UnsupportedValueError
from castate.keys import Secret
from castate.repository import Default, Durability, Repository
from castate.repository.refs import KV, encode_part, key_of_ref, kv_ref


class StorageBackend(abc.ABC):
    """Async key -> dict storage."""

    @abc.abstractmethod
    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Store ``data`` under ``key``, replacing what was there."""

    @abc.abstractmethod
    async def load(self, key: str) -> dict[str, Any] | None:
        """The dict stored under ``key``, or None when there is none."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is fine."""

    @abc.abstractmethod
    async def list_keys(self, prefix: str = "") -> list[str]:
        """Every stored key that starts with ``prefix``, sorted."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""


class FileStorageBackend(StorageBackend):
    """A castate store behind the dict storage interface: a local directory, or a store URL.

    ``base_path`` is a directory path or any URL ``castate.open`` accepts (``sqlite:///...``,
    ``postgresql://...``, ``redis://...``).

    ``default`` converts values outside castate's value domain (like ``json.dumps``'s
    ``default``); without it such values raise UnsupportedValueError naming their path.

    ``key`` (``castate.Passphrase``, ``castate.RawKey``) opens an encrypted store, or makes a
    new, empty one encrypted; without it an encrypted store takes its key from
    ``CASTATE_PASSWORD``, ``CASTATE_KEY`` or ``CASTATE_KEY_FILE`` (docs/security.md).
    """

    def __init__(
        self,
        base_path: str | os.PathLike[str],
        *,
        durability: Durability = "durable",
        default: Default | None = None,
        key: Secret | None = None,
    ) -> None:
        self.base_path = base_path
        self.default = default
        self.repository = Repository.at(base_path, durability=durability, key=key)

    async def save(self, key: str, data: dict[str, Any]) -> None:
        ref = kv_ref(key)
        if type(data) is not dict:
            raise UnsupportedValueError(f"save() takes a dict, not {type(data).__name__}", "data")
        await self.repository.save(ref, data, default=self.default, overwrite=True, message=f"save {ref}")

    async def load(self, key: str) -> dict[str, Any] | None:
        state = await self.repository.load(kv_ref(key))
        return state if state is None or type(state) is dict else dict(state)

    async def delete(self, key: str) -> None:
        await self.repository.delete_refs([kv_ref(key)], message=f"delete {kv_ref(key)}")

    async def list_keys(self, prefix: str = "") -> list[str]:
        refs = await self.repository.list_refs(KV + encode_part(prefix))
        return sorted(key_of_ref(r) for r in refs)

    async def exists(self, key: str) -> bool:
        return await self.repository.head(kv_ref(key)) is not None

    async def close(self) -> None:
        await self.repository.close()

    async def __aenter__(self) -> FileStorageBackend:
        await self.repository.open(missing_ok=True)  # a URL store not created yet: its first save does
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
