"""Where a castate restore's time goes, against the C-level work it cannot avoid, in one run.

A restore of the step-``steps // 2`` checkpoint of the benchmark workload is timed whole
(cold: a new StateManager each time; warm: the same one again), then taken apart: opening
the store, reading and verifying the tree's objects, and building the state. Beside it, the
least work that each part needs, each done by one C call per object (or per record) with no
castate code around it:

- decompress: zstd over the packs the restore decompressed (the chains holding the
  checkpoint's objects, each up to the last pack needed), as one fresh stream per chain;
- verify: blake3 over each object's kind byte and content, as castate checks every read;
- decode: ``ormsgpack.unpackb`` of each dict and list node's body, and UTF-8 decoding of
  each string object;

and what the peers do for the same state: one ``ormsgpack.unpackb`` of it (LangGraph's
serializer) and one ``orjson.loads`` (the naive copy), neither verifying nor decompressing.

    python -m tools.bench.restore_floor --steps 1000

Each figure is the median of ``--repeat`` timings in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import orjson
import ormsgpack

import castate
from castate.codec import Decoder
from castate.codec.nodes import NO_SPECIALS, parse_specials
from castate.codec.objects import KIND_DICT, KIND_LIST, KIND_STR
from castate.codec.zstdlimits import decompressor
from castate.repository.packs import PackStore
from castate.repository.snapshot import fetch_tree
from tools.bench.workload import Workload

SESSION = "bench"


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


async def amedian_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


async def build_store(root: Path, steps: int, msg_scale: float) -> tuple[str, bytes]:
    """The workload saved and checkpointed every step; the mid checkpoint's id and the state
    it holds, as orjson bytes."""
    w = Workload(0, steps, msg_scale)
    mid = max(1, steps // 2)
    handle, expected = "", b""
    async with castate.StateManager(castate.FileStorageBackend(root)) as sm:
        for n in range(1, steps + 1):
            w.step()
            await sm.save_session(SESSION, w.state)
            cp = await sm.create_checkpoint(SESSION, f"step-{n:06d}")
            if n == mid:
                handle, expected = cp, orjson.dumps(w.state)
    return handle, expected


async def measure(root: Path, handle: str, expected: bytes, repeat: int) -> dict[str, Any]:
    async def cold() -> Any:
        async with castate.StateManager(castate.FileStorageBackend(root)) as sm:
            return await sm.restore_checkpoint(handle)

    assert await cold() == orjson.loads(expected)  # (dicts come back with sorted keys)

    warm_sm = castate.StateManager(castate.FileStorageBackend(root))
    await warm_sm.restore_checkpoint(handle)
    warm = await amedian_ms(lambda: warm_sm.restore_checkpoint(handle), repeat)
    await warm_sm.close()

    async def opened() -> None:
        repo = castate.Repository(castate.LocalBackend(root))
        await repo.open()
        await repo.close()

    repo = castate.Repository(castate.LocalBackend(root))
    cid = await repo.head(f"checkpoints/{handle}")
    assert cid is not None
    tree_root = (await repo.read_commit(cid)).root
    store = repo.backend
    assert isinstance(store, PackStore)
    contents = await fetch_tree(store, tree_root)
    fetch_warm = await amedian_ms(lambda: fetch_tree(store, tree_root), repeat)
    build = median_ms(lambda: Decoder(contents).build(tree_root), repeat)

    # The packs a cold restore decompresses: each chain from its start to the last pack needed.
    cat = store._cat
    needed: dict[bytes, int] = {}
    for oid in [*contents, cid]:
        place = cat.place(oid)
        assert place is not None
        pack = place[0]
        needed[pack.chain] = max(needed.get(pack.chain, 0), pack.seq)
    chains = {chain: [p for p in cat.chain(chain) if p.seq <= top] for chain, top in needed.items()}
    blobs = await store.blobs.get_blobs([p.blob for packs in chains.values() for p in packs])
    comp = {
        chain: [blobs[p.blob][p.body_off : p.body_off + p.body_len] for p in packs] for chain, packs in chains.items()
    }

    def decompress() -> int:
        out = 0
        for bodies in comp.values():
            d = decompressor().decompressobj()
            out += sum(len(d.decompress(body)) for body in bodies)
        return out

    raw_bytes = decompress()
    objects = [(bytes((kind,)), bytes(content), kind) for kind, content in contents.values()]
    verify = median_ms(lambda: [blake3.blake3(k + c).digest() for k, c, _ in objects], repeat)
    bodies = []
    strings = []
    for _, content, kind in objects:
        if kind in (KIND_DICT, KIND_LIST):
            off = 4 if content[:4] == NO_SPECIALS else parse_specials(b"", content)[1]
            bodies.append(content[off:])
        elif kind == KIND_STR:
            strings.append(content)
    decode = median_ms(lambda: ([ormsgpack.unpackb(b) for b in bodies], [s.decode() for s in strings]), repeat)
    state = orjson.loads(expected)
    packed = ormsgpack.packb(state)
    await repo.close()
    return {
        "objects": len(contents),
        "object_bytes": sum(len(c) for _, c, _ in objects),
        "records_decompressed_bytes": raw_bytes,
        "state_json_bytes": len(expected),
        "castate_ms": {
            "restore_cold": await amedian_ms(cold, repeat),
            "restore_warm": warm,
            "open": await amedian_ms(opened, repeat),
            "fetch_and_verify_warm": fetch_warm,
            "build": build,
        },
        "floor_ms": {
            "decompress": median_ms(decompress, repeat),
            "verify": verify,
            "decode": decode,
        },
        "peer_ms": {
            "ormsgpack_unpackb_whole_state": median_ms(lambda: ormsgpack.unpackb(packed), repeat),
            "orjson_loads_whole_state": median_ms(lambda: orjson.loads(expected), repeat),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--msg-scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--dir", help="parent directory for the store (default: the system temp dir)")
    ap.add_argument("--out", help="write the figures here as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "store"
        handle, expected = asyncio.run(build_store(root, args.steps, args.msg_scale))
        result = asyncio.run(measure(root, handle, expected, args.repeat))
    result["params"] = {"steps": args.steps, "msg_scale": args.msg_scale, "repeat": args.repeat}
    c, f, p = result["castate_ms"], result["floor_ms"], result["peer_ms"]
    floor = f["decompress"] + f["verify"] + f["decode"]
    print(
        f"{result['objects']} objects, {result['object_bytes'] / 1e6:.2f} MB of them, "
        f"{result['records_decompressed_bytes'] / 1e6:.2f} MB decompressed; "
        f"state {result['state_json_bytes'] / 1e6:.2f} MB"
    )
    print(f"castate restore: cold {c['restore_cold']:.1f} ms, warm {c['restore_warm']:.1f} ms")
    print(f"  open {c['open']:.1f}, fetch+verify (warm) {c['fetch_and_verify_warm']:.1f}, build {c['build']:.1f}")
    print(
        f"C-level floor: decompress {f['decompress']:.1f} + verify {f['verify']:.1f} + decode {f['decode']:.1f}"
        f" = {floor:.1f} ms (warm: {f['verify'] + f['decode']:.1f})"
    )
    print(
        f"peers' one call: ormsgpack.unpackb {p['ormsgpack_unpackb_whole_state']:.1f} ms, "
        f"orjson.loads {p['orjson_loads_whole_state']:.1f} ms"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
