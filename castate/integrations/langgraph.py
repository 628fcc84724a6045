"""A LangGraph checkpointer that keeps checkpoints in a castate store.

``CastateSaver`` is a ``BaseCheckpointSaver``. Values go through LangGraph's own
serializer (``serde.dumps_typed``); the resulting bytes are castate values, so equal
content is stored once. A list channel (a message history) is serialized element by
element into a list of byte strings: castate cuts it into content-defined runs, so a
checkpoint that appends one message writes the tail run and a few index nodes, and every
unchanged message is shared with the checkpoints (and threads) before it.

Refs (user strings percent-encoded; ``~`` marks a part that may be empty)::

    langgraph/<thread>/~<ns>/<checkpoint id>            -> commit of one checkpoint
    langgraph/<thread>/~<ns>/<checkpoint id>/~<task id> -> commit of that task's pending writes
    langgraph/<thread>/~<ns>/@tip                       -> the namespace's last put (working ref)

A thread's refs share one prefix, so listing a thread is one ref listing and deleting,
pruning or copying it is one atomic ref update. A put saves through the namespace's
``@tip`` and points the checkpoint's ref at the same commit in the same update: castate
then encodes each checkpoint against the one before (an appended message costs a few
small nodes, not a walk of the whole history), and the objects that encoding reuses stay
referenced by the tip until the new commit references them. Trees (docs/format.md §2.3 has the details)::

    checkpoint: {"checkpoint": {"t", "b"}, "values": {channel: value}}
                commit meta {"parent": id | None, "run_id": str | None, "metadata": [type, base64]}
    writes:     {"task_path": str, "writes": {"<idx>": {"channel": str, "value": value}}}
    value:      {"t": type, "b": bytes}  or, for a list,  {"t": type | [types], "items": [bytes, ...]}

castate's core is async and loop-bound; the saver runs it on a private event loop in a
background thread. Sync and async methods both hand their work to that loop, so the
saver is safe to call from LangGraph's worker threads and from any event loop.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Coroutine, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        PendingWrite,
        get_checkpoint_id,
        get_checkpoint_metadata,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("castate.integrations.langgraph needs LangGraph: pip install 'castate[langgraph]'") from exc

if TYPE_CHECKING:  # a TypedDict of langgraph-checkpoint 4.3's DeltaChannel (beta) surface
    from langgraph.checkpoint.base import DeltaChannelHistory

from castate.backends.base import ANY, Backend, RefUpdate
from castate.backends.blob import BlobBackend
from castate.backends.urls import open_backend
from castate.errors import ConflictError, InvalidKeyError, StoreError
from castate.keys import Secret
from castate.repository import Commit, Repository
from castate.repository.refs import check_name, encode_part

ROOT = "langgraph/"
TIP = "@tip"
READ_BATCH = 16  # checkpoints one page of a listing reads at once
CACHE_ENTRIES = 1024  # serialized channel values remembered per saver (by channel version)
MERGE_ATTEMPTS = 8
KNOWN_WRITES = 4096
STRATEGIES = ("keep_latest", "delete")

T = TypeVar("T")
Key = tuple[str, str, str]  # (thread id, namespace, checkpoint id)


# -- ref names --------------------------------------------------------------------------------


def thread_prefix(thread_id: str) -> str:
    return ROOT + encode_part(check_name(thread_id, "thread id")) + "/"


def ns_prefix(thread_id: str, ns: str) -> str:
    return thread_prefix(thread_id) + "~" + encode_part(ns) + "/"


def checkpoint_ref(thread_id: str, ns: str, checkpoint_id: str) -> str:
    return ns_prefix(thread_id, ns) + encode_part(check_name(checkpoint_id, "checkpoint id"))


def tip_ref(thread_id: str, ns: str) -> str:
    return ns_prefix(thread_id, ns) + TIP  # "@" is always percent-encoded in a checkpoint id


def writes_ref(thread_id: str, ns: str, checkpoint_id: str, task_id: str) -> str:
    return checkpoint_ref(thread_id, ns, checkpoint_id) + "/~" + encode_part(task_id)


def parse_ref(name: str) -> tuple[Key, str | None] | None:
    """(thread, ns, checkpoint id) and the task id (None for a checkpoint ref); None if not ours."""
    if not name.startswith(ROOT):
        return None
    parts = name[len(ROOT) :].split("/")
    if len(parts) not in (3, 4) or not parts[1].startswith("~") or (len(parts) == 4 and not parts[3].startswith("~")):
        return None
    raw = [parts[0], parts[1][1:], parts[2], *(p[1:] for p in parts[3:])]
    try:
        decoded = [unquote(p, errors="strict") for p in raw]
    except UnicodeDecodeError:
        return None
    if any(encode_part(d) != p for d, p in zip(decoded, raw, strict=True)) or not decoded[0] or not decoded[2]:
        return None  # not a name this module makes (the tip, or a foreign ref)
    return (decoded[0], decoded[1], decoded[2]), (decoded[3] if len(decoded) == 4 else None)


class _Listing:
    """The checkpoints, pending-write refs and tips found under one prefix."""

    def __init__(self, refs: dict[str, bytes]) -> None:
        self.checkpoints: dict[Key, bytes] = {}
        self.writes: dict[Key, dict[str, bytes]] = {}
        self.names: dict[Key, list[str]] = {}  # every ref of a checkpoint (its own and its writes)
        self.tips: dict[str, bytes] = {}  # tip ref name -> commit
        for name, target in refs.items():
            if name.startswith(ROOT) and name.endswith("/" + TIP):
                self.tips[name] = target
                continue
            parsed = parse_ref(name)
            if parsed is None:
                continue
            key, task = parsed
            if task is None:
                self.checkpoints[key] = target
            else:
                self.writes.setdefault(key, {})[task] = target
            self.names.setdefault(key, []).append(name)

    def newest_first(self) -> list[Key]:
        return sorted(self.checkpoints, key=lambda k: k[2], reverse=True)


# -- the private event loop -------------------------------------------------------------------


class _LoopThread:
    """An asyncio loop in a daemon thread; coroutines from any thread run there, one loop for all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="castate-langgraph", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("CastateSaver's sync methods cannot be called from its own event loop")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


# -- the store: castate only, runs on the private loop ----------------------------------------


class _Store:
    """Checkpoint and writes refs over a Repository. Knows castate values, not LangGraph types."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._merge_lock: asyncio.Lock | None = None
        self._known_writes: OrderedDict[str, None] = OrderedDict()  # writes refs this saver saved

    async def listing(self, prefix: str) -> _Listing:
        return _Listing(await self.repo.list_refs(prefix))

    async def put_checkpoint(self, key: Key, tree: dict[str, Any], meta: dict[str, Any]) -> None:
        thread, ns, cid = key
        await self.repo.save(
            tip_ref(thread, ns),
            tree,
            session=thread,
            name=cid,
            meta=meta,
            message="langgraph put",
            overwrite=True,  # another writer's put moved the tip: encode afresh on top of it
            stream=thread_prefix(thread),
            also=[checkpoint_ref(thread, ns, cid)],  # replaces a checkpoint put again, as other savers do
        )

    async def merge_writes(
        self, key: Key, task_id: str, task_path: str, items: list[tuple[int, str, dict[str, Any]]]
    ) -> None:
        """Add a task's writes: a regular write (idx >= 0) already stored is kept, a special one replaced."""
        if self._merge_lock is None:
            self._merge_lock = asyncio.Lock()
        ref = writes_ref(*key, task_id)
        async with self._merge_lock:  # one writer per saver; compare-and-swap covers other processes
            # Most tasks write once: try creating the ref before reading anything.
            old: dict[str, Any] | None = None if ref not in self._known_writes else await self.repo.load(ref)
            for _ in range(MERGE_ATTEMPTS):
                writes = dict(old["writes"]) if old else {}
                for idx, channel, value in items:
                    if idx >= 0 and str(idx) in writes:
                        continue
                    writes[str(idx)] = {"channel": channel, "value": value}
                try:
                    await self.repo.save(
                        ref,
                        {"task_path": task_path, "writes": writes},
                        session=key[0],
                        name=key[2],
                        message="langgraph put_writes",
                        stream=thread_prefix(key[0]),
                        new=old is None,
                    )
                except ConflictError:
                    old = await self.repo.load(ref)
                    continue
                self._known_writes[ref] = None
                while len(self._known_writes) > KNOWN_WRITES:
                    self._known_writes.popitem(last=False)
                return
            raise ConflictError(f"writes of task {task_id!r} kept changing during {MERGE_ATTEMPTS} attempts", ref)

    async def commits(self, ids: Sequence[bytes]) -> dict[bytes, Commit]:
        return await self.repo.read_commits(ids)

    async def read(self, commit: Commit, writes: dict[str, bytes]) -> tuple[Any, list[tuple[str, Any]]]:
        """A checkpoint's tree and its tasks' writes trees."""
        write_commits = await self.repo.read_commits(list(writes.values())) if writes else {}
        roots = [commit.root] + [write_commits[writes[t]].root for t in writes]
        trees = await asyncio.gather(*(self.repo.read_state(r) for r in roots))
        return trees[0], list(zip(writes, trees[1:], strict=True))

    async def delete(self, names: Sequence[str], message: str) -> None:
        if names:
            await self.repo.delete_refs(names, message=message)

    async def copy(self, source: str, target: str) -> None:
        await self.repo.open()
        # Listed and copied under gc's shared lock: a source deleted meanwhile cannot have its
        # tree collected before the copies hold it (a listed ref's tree is complete).
        async with self.repo.backend.gc_shared():
            refs = {n: c for n, c in (await self.repo.list_refs(source)).items() if parse_ref(n) is not None}
            if refs:
                updates = [RefUpdate(target + name[len(source) :], cid, ANY) for name, cid in sorted(refs.items())]
                await self.repo.update_refs(updates, message="langgraph copy_thread")

    async def close(self) -> None:
        await self.repo.close()


# -- the saver --------------------------------------------------------------------------------


class CastateSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpointer on a castate store: a directory path, a store URL or a castate ``Backend``.

    ``CastateSaver("./state")`` keeps checkpoints in a local castate store (created when
    missing); ``CastateSaver("sqlite:///state.db")`` (or ``postgresql://``, ``redis://``)
    opens the store the URL names, as ``castate.open`` does. Use it as a context manager
    (``with`` or ``async with``), or call ``close()``, to release the store.

    ``key`` (``castate.Passphrase``, ``castate.RawKey``) opens an encrypted store, or makes a
    new, empty one encrypted (use it instead of LangGraph's ``EncryptedSerializer``: the
    store encrypts below its deduplication); without it an encrypted store takes its key
    from ``CASTATE_PASSWORD``, ``CASTATE_KEY`` or ``CASTATE_KEY_FILE``.
    """

    def __init__(
        self,
        store: Backend | BlobBackend | str | os.PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
        key: Secret | None = None,
    ) -> None:
        super().__init__(serde=serde)
        backend = store if isinstance(store, Backend | BlobBackend) else open_backend(store, create=True)
        self._store = _Store(Repository(backend, key=key))
        self._loop = _LoopThread()
        self._closed = False
        self._cache: OrderedDict[tuple[str, str, str, str], tuple[Any, dict[str, Any]]] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def from_conn_string(
        cls, conn_string: str, *, serde: SerializerProtocol | None = None, key: Secret | None = None
    ) -> CastateSaver:
        """A saver on the store ``conn_string`` names (a URL or a directory), as the other
        savers' ``from_conn_string``: ``with CastateSaver.from_conn_string(url) as saver:``
        (or ``async with``) closes it at the end."""
        return cls(conn_string, serde=serde, key=key)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._loop.submit(self._store.close()).result()
            finally:
                self._loop.stop()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> CastateSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> CastateSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise StoreError("this CastateSaver is closed")
        return self._loop.submit(coro)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._submit(coro).result()

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self._submit(coro))

    def _iterate(self, pages: AsyncIterator[list[T]]) -> Iterator[T]:
        """Drive an async generator of pages on the private loop, one hop per page."""
        try:
            while True:
                try:
                    page = self._run(_anext(pages))
                except StopAsyncIteration:
                    return
                yield from page
        finally:
            if not self._closed:
                self._run(_aclose(pages))

    async def _aiterate(self, pages: AsyncIterator[list[T]]) -> AsyncIterator[T]:
        try:
            while True:
                try:
                    page = await self._arun(_anext(pages))
                except StopAsyncIteration:
                    return
                for item in page:
                    yield item
        finally:
            if not self._closed:
                await self._arun(_aclose(pages))

    # -- values <-> castate values ----------------------------------------------------------------

    def _dump(self, value: Any) -> dict[str, Any]:
        """LangGraph's serializer, element by element for a list, as castate values."""
        if type(value) is list:
            typed = [self.serde.dumps_typed(x) for x in value]
            types = [str(t) for t, _ in typed]
            kind: str | list[str] = types[0] if types and types.count(types[0]) == len(types) else types
            return {"t": kind, "items": [_bytes(b) for _, b in typed]}
        t, b = self.serde.dumps_typed(value)
        return {"t": str(t), "b": _bytes(b)}

    def _load(self, entry: dict[str, Any]) -> Any:
        if "items" in entry:
            items, kind = entry["items"], entry["t"]
            types = kind if isinstance(kind, list) else [kind] * len(items)
            return [self.serde.loads_typed((t, b)) for t, b in zip(types, items, strict=True)]
        return self.serde.loads_typed((entry["t"], entry["b"]))

    def _cached_dump(self, slot: tuple[str, str, str, str], value: Any, fresh: bool) -> dict[str, Any]:
        """Serialize a channel value, reusing the form of an unchanged channel (same version, same object)."""
        with self._cache_lock:
            hit = None if fresh else self._cache.get(slot)
        entry = hit[1] if hit is not None and hit[0] is value else self._dump(value)
        with self._cache_lock:
            self._cache[slot] = (value, entry)
            self._cache.move_to_end(slot)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return entry

    def _checkpoint_tree(self, key: Key, checkpoint: Checkpoint, new_versions: ChannelVersions) -> dict[str, Any]:
        thread, ns, _ = key
        values = checkpoint["channel_values"]
        stored: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            if channel in values:  # a channel with a version but no value is empty: nothing to store
                slot = (thread, ns, channel, str(version))
                stored[channel] = self._cached_dump(slot, values[channel], channel in new_versions)
        skeleton = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        t, b = self.serde.dumps_typed(skeleton)
        return {"checkpoint": {"t": str(t), "b": _bytes(b)}, "values": stored}

    def _commit_meta(self, config: RunnableConfig, metadata: CheckpointMetadata) -> dict[str, Any]:
        md = get_checkpoint_metadata(config, metadata)
        t, b = self.serde.dumps_typed(md)
        run_id = md.get("run_id")
        return {
            "parent": config["configurable"].get("checkpoint_id"),
            "run_id": None if run_id is None else str(run_id),
            "metadata": [str(t), base64.b64encode(_bytes(b)).decode("ascii")],
        }

    def _metadata(self, commit: Commit) -> CheckpointMetadata:
        t, b64 = commit.meta["metadata"]
        metadata: CheckpointMetadata = self.serde.loads_typed((t, base64.b64decode(b64)))
        return metadata

    def _tuple(
        self,
        key: Key,
        commit: Commit,
        tree: dict[str, Any],
        writes: list[tuple[str, Any]],
        md: CheckpointMetadata,
        stored: Collection[Key],
    ) -> CheckpointTuple:
        """The LangGraph view of a checkpoint; ``stored``: the checkpoints that exist (a parent
        that prune or delete_for_runs removed gives no ``parent_config``, as in PostgresSaver)."""
        thread, ns, cid = key
        checkpoint = self._load(tree["checkpoint"])
        checkpoint["channel_values"] = {c: self._load(v) for c, v in tree["values"].items()}
        pending: list[tuple[tuple[str, str, int], PendingWrite]] = []
        for task_id, wtree in writes:
            for idx, w in wtree["writes"].items():
                pending.append(
                    ((wtree["task_path"], task_id, int(idx)), (task_id, w["channel"], self._load(w["value"])))
                )
        pending.sort(key=lambda p: p[0])
        parent = commit.meta.get("parent")
        return CheckpointTuple(
            config=_config(thread, ns, cid),
            checkpoint=checkpoint,
            metadata=md,
            parent_config=_config(thread, ns, parent) if parent and (thread, ns, parent) in stored else None,
            pending_writes=[p[1] for p in pending],
        )

    # -- reading (coroutines for the private loop) ------------------------------------------------

    async def _get(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread, ns = _thread_ns(config)
        cid = get_checkpoint_id(config) or None
        listing = await self._store.listing(ns_prefix(thread, ns))
        if cid is None:
            if not listing.checkpoints:
                return None
            key = max(listing.checkpoints, key=lambda k: k[2])
        else:
            key = (thread, ns, str(cid))
            if key not in listing.checkpoints:
                return None
        commit = (await self._store.commits([listing.checkpoints[key]]))[listing.checkpoints[key]]
        tree, writes = await self._store.read(commit, listing.writes.get(key, {}))
        return self._tuple(key, commit, tree, writes, self._metadata(commit), listing.checkpoints)

    async def _search(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> AsyncIterator[list[CheckpointTuple]]:
        """Matching checkpoints, newest first, in pages."""
        if config is None:
            listing = await self._store.listing(ROOT)
            keys = listing.newest_first()
        else:
            thread = str(config["configurable"]["thread_id"])
            ns = config["configurable"].get("checkpoint_ns")
            listing = await self._store.listing(thread_prefix(thread) if ns is None else ns_prefix(thread, ns))
            keys = listing.newest_first()
            if (cid := get_checkpoint_id(config)) is not None:
                keys = [k for k in keys if k[2] == cid]
        if before is not None and (before_id := get_checkpoint_id(before)) is not None:
            keys = [k for k in keys if k[2] < before_id]
        # Pages grow from one checkpoint (get_state and limit=1 stay cheap) to READ_BATCH.
        remaining = limit
        start, size = 0, 1
        while start < len(keys) and (remaining is None or remaining > 0):
            batch = keys[start : start + size]
            start, size = start + size, min(size * 4, READ_BATCH)
            commits = await self._store.commits([listing.checkpoints[k] for k in batch])
            chosen: list[tuple[Key, Commit, CheckpointMetadata]] = []
            for key in batch:
                commit = commits[listing.checkpoints[key]]
                md = self._metadata(commit)
                if filter and not all(md.get(k) == v for k, v in filter.items()):
                    continue
                chosen.append((key, commit, md))
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        break
            reads = await asyncio.gather(*(self._store.read(c, listing.writes.get(k, {})) for k, c, _ in chosen))
            if chosen:
                yield [
                    self._tuple(k, c, tree, w, md, listing.checkpoints)
                    for (k, c, md), (tree, w) in zip(chosen, reads, strict=True)
                ]

    async def _delta_history(self, config: RunnableConfig, channels: Sequence[str]) -> dict[str, DeltaChannelHistory]:
        """``get_delta_channel_history`` over one listing of the namespace, as the base class
        walks it (``parent_config`` back from the target), but bounded: each checkpoint is
        visited once, so a parent cycle (a put whose parent is its own descendant) ends the
        walk instead of looping forever."""
        if not channels:
            return {}
        thread, ns = _thread_ns(config)
        listing = await self._store.listing(ns_prefix(thread, ns))
        collected: dict[str, list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, Any] = {}
        remaining = set(channels)
        cid = get_checkpoint_id(config) or None
        target: Key | None = (thread, ns, str(cid)) if cid is not None else max(listing.checkpoints, default=None)
        seen: set[Key] = set()
        cursor: Key | None = None
        if target is not None and target in listing.checkpoints:
            seen.add(target)
            head = (await self._store.commits([listing.checkpoints[target]]))[listing.checkpoints[target]]
            parent = head.meta.get("parent")
            cursor = (thread, ns, parent) if parent else None
        while cursor is not None and remaining and cursor not in seen and cursor in listing.checkpoints:
            seen.add(cursor)
            commit = (await self._store.commits([listing.checkpoints[cursor]]))[listing.checkpoints[cursor]]
            tree, writes = await self._store.read(commit, listing.writes.get(cursor, {}))
            tup = self._tuple(cursor, commit, tree, writes, self._metadata(commit), listing.checkpoints)
            for write in reversed(tup.pending_writes or []):
                if write[1] in remaining:
                    collected[write[1]].append(write)
            for ch in list(remaining):
                if ch in tup.checkpoint["channel_values"]:
                    seeds[ch] = tup.checkpoint["channel_values"][ch]
                    remaining.discard(ch)
            parent = commit.meta.get("parent")
            cursor = (thread, ns, parent) if parent else None
        out: dict[str, DeltaChannelHistory] = {}
        for ch in channels:
            entry: DeltaChannelHistory = {"writes": list(reversed(collected[ch]))}
            if ch in seeds:
                entry["seed"] = seeds[ch]
            out[ch] = entry
        return out

    # -- maintenance (coroutines for the private loop) ----------------------------------------

    async def _delete_threads(self, thread_ids: Sequence[str], message: str) -> None:
        names: list[str] = []
        for thread in thread_ids:
            names.extend((await self._store.repo.list_refs(thread_prefix(str(thread)))).keys())
        await self._store.delete(names, message)

    async def _prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        """``delete``: every ref of the threads. ``keep_latest``: the newest checkpoint of each
        namespace stays with its writes; pending writes of a checkpoint not stored yet (async
        durability, a concurrent run) and newer than that stay too. A thread whose newest
        checkpoint replays DeltaChannel writes from its ancestors is refused, naming it, before
        anything is deleted: keeping only that checkpoint would rebuild those channels empty."""
        if strategy == "delete":
            await self._delete_threads(thread_ids, "langgraph prune")
            return
        doomed: list[str] = []
        for thread in thread_ids:
            listing = await self._store.listing(thread_prefix(str(thread)))
            latest: dict[str, Key] = {}
            for key in listing.checkpoints:
                ns = key[1]
                if ns not in latest or key[2] > latest[ns][2]:
                    latest[ns] = key
            keep = set(latest.values())
            heads = await self._store.commits([listing.checkpoints[k] for k in keep])
            for key in sorted(keep):
                if self._metadata(heads[listing.checkpoints[key]]).get("counters_since_delta_snapshot"):
                    raise ValueError(
                        f"thread {str(thread)!r} uses DeltaChannel: its newest checkpoint (namespace {key[1]!r}) "
                        "rebuilds channels from its ancestors' writes, which keep_latest would delete; "
                        "prune it after a snapshot, or with strategy='delete'"
                    )
            for key, names in listing.names.items():
                if key in keep:
                    continue
                if key not in listing.checkpoints and (key[1] not in latest or key[2] > latest[key[1]][2]):
                    continue  # writes saved before their checkpoint: it is still to come
                doomed.extend(names)
            kept = {listing.checkpoints[k] for k in keep}
            doomed.extend(n for n, target in listing.tips.items() if target not in kept)
        await self._store.delete(doomed, "langgraph prune")

    async def _delete_for_runs(self, run_ids: Sequence[str]) -> None:
        wanted = {str(r) for r in run_ids}
        if not wanted:
            return
        listing = await self._store.listing(ROOT)
        keys = list(listing.checkpoints)
        commits = await self._store.commits([listing.checkpoints[k] for k in keys])
        gone = {listing.checkpoints[k] for k in keys if commits[listing.checkpoints[k]].meta.get("run_id") in wanted}
        doomed = [n for k in keys if listing.checkpoints[k] in gone for n in listing.names[k]]
        doomed.extend(n for n, target in listing.tips.items() if target in gone)
        await self._store.delete(doomed, "langgraph delete_for_runs")

    # -- prepared writes (serialized on the caller's thread) -------------------------------------

    def _prepare_put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[Key, dict[str, Any], dict[str, Any]]:
        thread, ns = _thread_ns(config)
        key = (thread, ns, str(checkpoint["id"]))
        tree = self._checkpoint_tree(key, checkpoint, new_versions)
        return key, tree, self._commit_meta(config, metadata)

    def _prepare_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str
    ) -> tuple[Key, list[tuple[int, str, dict[str, Any]]]]:
        thread, ns = _thread_ns(config)
        cid = get_checkpoint_id(config)
        if cid is None:
            raise InvalidKeyError("put_writes needs config['configurable']['checkpoint_id']")
        items = [(WRITES_IDX_MAP.get(ch, i), ch, self._dump(v)) for i, (ch, v) in enumerate(writes)]
        return (thread, ns, str(cid)), items

    # -- BaseCheckpointSaver: sync ----------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._get(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self._iterate(self._search(config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        key, tree, meta = self._prepare_put(config, checkpoint, metadata, new_versions)
        self._run(self._store.put_checkpoint(key, tree, meta))
        return _config(*key)

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        key, items = self._prepare_writes(config, writes, task_id)
        self._run(self._store.merge_writes(key, task_id, task_path, items))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._delete_threads([thread_id], "langgraph delete_thread"))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self._delete_for_runs(_ids(run_ids, "run_ids")))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._store.copy(thread_prefix(str(source_thread_id)), thread_prefix(str(target_thread_id))))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        _check_strategy(strategy)
        self._run(self._prune(_ids(thread_ids, "thread_ids"), strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._run(self._delta_history(config, channels))

    def get_next_version(self, current: str | int | None, channel: None) -> str:
        """``<32-digit counter>.<random>``: increasing, and distinct across forks of one version."""
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(current.split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # -- BaseCheckpointSaver: async -----------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(self._get(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self._aiterate(self._search(config, filter, before, limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        key, tree, meta = self._prepare_put(config, checkpoint, metadata, new_versions)
        await self._arun(self._store.put_checkpoint(key, tree, meta))
        return _config(*key)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        key, items = self._prepare_writes(config, writes, task_id)
        await self._arun(self._store.merge_writes(key, task_id, task_path, items))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(self._delete_threads([thread_id], "langgraph delete_thread"))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(self._delete_for_runs(_ids(run_ids, "run_ids")))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(self._store.copy(thread_prefix(str(source_thread_id)), thread_prefix(str(target_thread_id))))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        _check_strategy(strategy)
        await self._arun(self._prune(_ids(thread_ids, "thread_ids"), strategy))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self._arun(self._delta_history(config, channels))


# -- helpers ------------------------------------------------------------------------------------


def _thread_ns(config: RunnableConfig) -> tuple[str, str]:
    conf = config["configurable"]
    return str(conf["thread_id"]), str(conf.get("checkpoint_ns") or "")


def _config(thread: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


def _bytes(data: Any) -> bytes:
    return data if type(data) is bytes else bytes(data)


def _ids(ids: Sequence[str] | str, what: str) -> list[str]:
    """Ids given as a sequence; a str is one id (iterating it would name its characters)."""
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, bytes | bytearray) or not isinstance(ids, Collection):
        raise TypeError(f"{what} must be a sequence of ids or one id as a str, not {type(ids).__name__}")
    return [str(i) for i in ids]


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown prune strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


async def _aclose(agen: Any) -> None:
    await agen.aclose()


__all__ = ["CastateSaver"]
