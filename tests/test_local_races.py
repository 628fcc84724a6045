"""The local store under a second process: deletes and clean-ups racing reads, repairs after
deletes, crashes while a volume is created, hostile volume files, an interrupted upgrade.

Found by a review of the store as it landed; each test failed before its fix. The repair
test runs on an encrypted store too (tests/encrypted_support.py); the others race below the
encryption, in the local blob layer itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import castate
from castate.backends.local import LocalBackend
from castate.backends.local.volumes import HEADER
from tests.encrypted_support import ENCRYPTION, env_key, is_encrypted, use_encryption

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "v1"


# -- punch read
NAME = "packs/" + "ab" * 32


async def _setup(tmp_path: Path):
    path = tmp_path / "store"
    a, b = LocalBackend(path), LocalBackend(path)
    await a.open()
    await b.open()
    data = os.urandom(64 << 10)
    await a.put_blobs([("packs/first", b"x" * 100), (NAME, data)])  # NAME's record not block aligned
    return a, b, data


async def test_get_blobs_racing_a_delete_in_another_process(tmp_path: Path) -> None:
    a, b, data = await _setup(tmp_path)
    real = a._volumes.read
    fired = []

    def read(name, place, **kw):
        if not fired:  # a has its places; the other process deletes now
            fired.append(1)
            b._delete_blobs([NAME])
        return real(name, place, **kw)

    a._volumes.read = read
    got = await a.get_blobs([NAME])
    assert got in ({}, {NAME: data}), f"wrong bytes: {got[NAME][:16]!r}... zeros={got[NAME].count(0)}"


async def test_get_ranges_racing_a_delete_in_another_process(tmp_path: Path) -> None:
    a, b, data = await _setup(tmp_path)
    real = a._volumes.read_range
    fired = []

    def read_range(name, place, offset, length):
        if not fired:
            fired.append(1)
            b._delete_blobs([NAME])
        return real(name, place, offset, length)

    a._volumes.read_range = read_range
    [got] = await a.get_ranges([(NAME, 8192, 4096)])
    assert got in (None, data[8192:12288]), f"wrong bytes: {got[:16]!r}"


async def test_get_blobs_racing_delete_and_re_put_of_same_name(tmp_path: Path) -> None:
    a, b, data = await _setup(tmp_path)
    real = a._volumes.read
    fired = []

    def read(name, place, **kw):
        if not fired:
            fired.append(1)
            b._delete_blobs([NAME])
            b._write([(NAME, data)], [], "", {})  # written again, same bytes, new place
        return real(name, place, **kw)

    a._volumes.read = read
    got = await a.get_blobs([NAME])
    assert got == {NAME: data}, f"wrong bytes: zeros={got[NAME].count(0)}"


# -- repair resurrects
def damage_last_record_crc(journal: Path) -> None:
    b = bytearray(journal.read_bytes())
    b[-1] ^= 0xFF  # whole last record, bad CRC: damage, repair runs
    journal.write_bytes(bytes(b))


@ENCRYPTION
async def test_save_after_repair_resurrecting_old_segment(
    tmp_path: Path, encrypted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_encryption(monkeypatch, encrypted)  # CASTATE_KEY: later opens read it
    path = tmp_path / "store"
    big = os.urandom(150_000).hex()
    keep_big = os.urandom(400_000)
    first = castate.LocalBackend(path)
    first.secret = env_key()  # the store is made encrypted
    async with castate.StateManager(first) as sm:
        await sm.save_session("keep", {"blob": keep_big.hex()})
        await sm.save_session("doomed", {"big": big})
        for i in range(6):
            await sm.save_session("keep", {"blob": keep_big.hex(), "i": i})
        await sm.delete_session("doomed")
        rep = await sm.gc(grace=0, reflog_expire=0)
        print(rep)
    b = LocalBackend(path)
    await b.open()
    await b.expire_reflog(await b.now_ns())  # reflog expiry: the deletes' records go
    await b.close()
    async with castate.StateManager(castate.LocalBackend(path)) as sm:
        await sm.save_session("keep", {"blob": keep_big.hex(), "i": 99})  # the record that gets damaged
    before = {i.name for i in await _list(path)}
    b = LocalBackend(path)
    damage_last_record_crc(path / "refs.journal")
    report = await b.repair_refs()
    print("repair", report)
    await b.open()
    after = {i.name for i in await b.list_blobs()}
    await b.close()
    print("resurrected", sorted(after - before))
    async with castate.StateManager(castate.LocalBackend(path)) as sm:
        await sm.save_session("again", {"big": big})
    async with castate.StateManager(castate.LocalBackend(path)) as sm:
        assert await sm.load_session("again") == {"big": big}
        assert await sm.load_session("keep") == {"blob": keep_big.hex(), "i": 5}  # the lost save's record went
        rep = await sm.fsck(full=True)
        assert rep.ok, rep
    assert await is_encrypted(path) == encrypted


async def _list(path: Path):
    b = LocalBackend(path)
    await b.open()
    try:
        return await b.list_blobs()
    finally:
        await b.close()


# -- stale fds
def deleted_volumes_held() -> list[tuple[str, int]]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".vol (deleted)"):
            out.append((target, os.fstat(int(fd)).st_blocks * 512))
    return out


async def test_reader_releases_volumes_that_a_clean_up_unlinked(tmp_path: Path) -> None:
    path = tmp_path / "store"
    reader, writer = LocalBackend(path), LocalBackend(path)
    await reader.open()
    await writer.open()
    junk = [(f"packs/junk{i:05d}", os.urandom(1000)) for i in range(3000)]  # 3 MB, records too small to punch
    await writer.put_blobs([("packs/keep", b"k" * 100), *junk])
    assert (await reader.get_blobs(["packs/keep"]))["packs/keep"] == b"k" * 100  # caches volume 1
    await writer.delete_blobs([n for n, _ in junk])  # clean-up: keep moves, volume 1 is unlinked
    assert not (path / "volumes" / "00000001.vol").exists()
    # The reader goes on reading and writing (from the new volume)...
    for i in range(20):
        assert (await reader.get_blobs(["packs/keep"]))["packs/keep"] == b"k" * 100
        await reader.put_blobs([(f"packs/more{i}", b"m")])
    held = [(name, size) for name, size in deleted_volumes_held() if name.startswith(str(path))]  # this store's only
    await reader.close()
    await writer.close()
    assert held == [], f"unlinked volumes still held open (bytes on disk): {held}"


# -- check storage stale
async def test_check_storage_after_another_process_cleaned_up(tmp_path: Path) -> None:
    path = tmp_path / "store"
    fsck, other = LocalBackend(path), LocalBackend(path)
    await other.open()
    junk = [
        (f"packs/junk{i:05d}", os.urandom(1000)) for i in range(1500)
    ]  # journal stays under JOURNAL_MIN: no drop_history
    await other.put_blobs([("packs/keep", b"k" * 100), *junk])
    await fsck.open()
    # (fsck has not read volume 1 yet)
    await other.delete_blobs([n for n, _ in junk])  # moves packs/keep, unlinks volume 1
    problems = await fsck.check_storage()
    await fsck.close()
    await other.close()
    assert problems == [], problems


# -- clean bound
VOL = 64 << 10


async def test_reclaim_copy_is_bounded_by_the_volume_size(tmp_path: Path) -> None:
    path = tmp_path / "store"
    b = LocalBackend(path, volume_size=VOL, durability="relaxed")
    await b.open()
    keep, drop = [], []
    for v in range(60):  # 60 volumes, each 40% live after the delete
        items = [(f"packs/v{v:03d}k{i}", os.urandom(3000)) for i in range(8)] + [
            (f"packs/v{v:03d}d{i}", os.urandom(3000)) for i in range(14)
        ]
        await b.put_blobs(items)
        keep += [n for n, _ in items if "k" in n.split("/")[1]]
        drop += [n for n, _ in items if "d" in n.split("/")[1]]
    await b.delete_blobs(drop)
    tracemalloc.start()
    await b.reclaim()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    sizes = {v.name: v.stat().st_size for v in (path / "volumes").iterdir()}
    assert len(await b.get_blobs(keep)) == len(keep)
    await b.close()
    assert max(sizes.values()) <= 2 * VOL, (
        f"one clean-up wrote a {max(sizes.values())}-byte volume (max {VOL}); peak {peak}"
    )
    assert peak <= 8 * VOL, f"peak memory {peak} bytes for volumes of {VOL}"


# -- crash volume created


async def test_headerless_volume_is_removed_by_gc(tmp_path: Path) -> None:
    path = tmp_path / "store"
    b = LocalBackend(path, volume_size=4096)
    await b.open()
    await b.put_blobs([("packs/a", b"a" * 5000)])
    await b.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CASTATE_CRASH_POINT": "volume-created"}
    p = subprocess.run([sys.executable, "-m", "tests.blob_writer", str(path), "1", "4096"], env=env, cwd=ROOT)
    assert p.returncode == -9
    empty = [v for v in sorted((path / "volumes").iterdir()) if v.stat().st_size == 0]
    assert empty, "crash point did not leave an empty volume"
    b = LocalBackend(path, volume_size=4096)
    await b.open()
    for i in range(3):
        await b.put_blobs([(f"packs/n{i}", b"n" * 5000)])
    await b.delete_blobs(["packs/a", "packs/n0"])
    await b.reclaim()
    await b.close()
    async with castate.StateManager(castate.LocalBackend(path)) as sm:
        await sm.gc(grace=0, reflog_expire=0)
    left = [v.name for v in empty if v.exists()]
    assert left == [], f"empty volumes left behind: {left} among {sorted(v.name for v in (path / 'volumes').iterdir())}"


# -- hostile newest volume
async def test_saves_go_on_past_a_symlinked_newest_volume(tmp_path: Path) -> None:
    path = tmp_path / "store"
    b = LocalBackend(path)
    await b.open()
    await b.put_blobs([("packs/a", b"a" * 100)])
    target = tmp_path / "elsewhere"
    target.write_bytes(b"x" * 1000)
    os.symlink(target, path / "volumes" / "00000002.vol")
    await b.put_blobs([("packs/b", b"b" * 100)])  # raises StoreIOError ELOOP
    assert (await b.get_blobs(["packs/b"]))["packs/b"] == b"b" * 100
    assert target.read_bytes() == b"x" * 1000
    await b.close()


# -- salvage memory
async def test_repair_memory_is_bounded_with_a_large_sparse_volume(tmp_path: Path) -> None:
    path = tmp_path / "store"
    b = LocalBackend(path)
    await b.open()
    await b.put_blobs([("packs/a", b"a" * 100)])
    await b.commit([], [], message="")
    from castate.backends.base import RefUpdate

    await b.commit([("packs/b", b"b" * 100)], [RefUpdate("sessions/x", b"\1" * 32, None)])
    await b.close()
    vol = path / "volumes" / "00000009.vol"
    with open(vol, "wb") as f:
        f.write(HEADER)
        f.truncate(256 << 20)  # sparse: takes no disk
    j = bytearray((path / "refs.journal").read_bytes())
    j[-1] ^= 0xFF
    (path / "refs.journal").write_bytes(bytes(j))
    tracemalloc.start()
    report = await LocalBackend(path).repair_refs()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.damaged
    assert peak < 64 << 20, f"repair peaked at {peak >> 20} MiB for a 256 MiB sparse volume"


# -- upgrade interrupted
def cli(store: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "castate.cli", "--store", str(store), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


async def test_upgrade_killed_before_the_config_write_then_run_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(FIX / "local-store", store)
    expected = json.loads((FIX / "store-local-expected.json").read_text())
    # The last whole-file write of the upgrade is castate.json's (after the rmtree of packs/ and objects/).
    p = cli(store, "upgrade", CASTATE_CRASH_POINT="file-before-rename")
    assert p.returncode == -9, (p.returncode, p.stdout, p.stderr)
    print(sorted(os.listdir(store)), json.loads((store / "castate.json").read_text()))
    p = cli(store, "upgrade")
    print(p.stdout, p.stderr)
    assert p.returncode == 0, p.stderr
    assert json.loads((store / "castate.json").read_text())["version"] == 2
    async with castate.StateManager(str(store)) as sm:
        for session in expected["sessions"]:
            await sm.load_session(session)
