"""Where an encrypted store's extra bytes are: the same 1,000-step session on three kinds of
store, part by part, in one run.

    python -m tools.bench.enc_disk --steps 1000 --samples 3 --out tools/bench/results/enc-disk-1000.json

Kinds, each on a local store and on a SQLite store:

- ``plain``: an unencrypted store;
- ``keyed-ids``: an unencrypted store whose object ids are blake3 keyed with a random key, as
  an encrypted store's are, and nothing else encrypted (a bench-only patch of
  ``PackStore._unlock``; such a store cannot be reopened). An encrypted store's master key,
  and so its id key, is random per store, and ids decide how large lists and dicts are cut
  into nodes, so its bytes vary from store to store; this kind measures that part alone;
- ``encrypted``: a store created with a ``castate.RawKey``.

``--samples`` stores of each kind (plain ones vary little). The bytes are split by part: for
the local store the volume files (blobs), ``refs.journal`` and ``refs.snapshot``; for SQLite
each table and index (``dbstat``), so the share of the ref names and reflog messages (AES-SIV
and base64 in an encrypted store) is visible apart from the blobs (32 bytes of sealing each).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

import castate
from castate.codec.objects import Ids
from castate.repository.packs import store as packstore
from tools.bench.systems.castate_enc import key
from tools.bench.workload import Workload

SESSION = "bench"
KINDS = ("plain", "keyed-ids", "encrypted")
_ORIG_UNLOCK = packstore.PackStore._unlock


async def _keyed_ids_unlock(self: packstore.PackStore) -> None:
    await _ORIG_UNLOCK(self)
    if self.keys is None:
        self.ids = Ids(os.urandom(32))


def local_parts(root: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"apparent": 0, "allocated": 0, "files": 0})
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            rel = p.relative_to(root)
            part = rel.parts[0] if len(rel.parts) > 1 else rel.name
            st = p.stat()
            out[part]["apparent"] += st.st_size
            out[part]["allocated"] += st.st_blocks * 512
            out[part]["files"] += 1
    return dict(out)


def sqlite_parts(db: Path) -> dict[str, dict[str, int]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize), SUM(payload), COUNT(*) FROM dbstat GROUP BY name").fetchall()
        refs = conn.execute("SELECT COUNT(*), SUM(LENGTH(name)) FROM refs").fetchone()
        log = conn.execute("SELECT COUNT(*), SUM(LENGTH(name)), SUM(LENGTH(message)) FROM reflog").fetchone()
        blobs = conn.execute("SELECT COUNT(*), SUM(LENGTH(data)), SUM(LENGTH(name)) FROM blobs").fetchone()
    finally:
        conn.close()
    out = {name: {"pages_bytes": pg, "payload": pay, "pages": n} for name, pg, pay, n in rows}
    out["_counts"] = {
        "refs": refs[0],
        "ref_name_bytes": refs[1] or 0,
        "reflog": log[0],
        "reflog_name_bytes": log[1] or 0,
        "reflog_message_bytes": log[2] or 0,
        "blobs": blobs[0],
        "blob_bytes": blobs[1] or 0,
        "blob_name_bytes": blobs[2] or 0,
    }
    out["_file"] = {"allocated": sum(p.stat().st_blocks * 512 for p in db.parent.iterdir())}
    return out


async def build(target: str, kind: str, steps: int, seed: int) -> dict[str, Any]:
    w = Workload(seed, steps)
    backend = castate.open(target, durability="relaxed", create=True, key=key() if kind == "encrypted" else None)
    sm = castate.StateManager(backend)
    for n in range(1, steps + 1):
        w.step()
        await sm.save_session(SESSION, w.state)
        await sm.create_checkpoint(SESSION, f"step-{n:06d}")
    stats = dict(await sm.repository.backend.stats())
    await sm.close()
    return stats


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="castate-encdisk-", dir=args.dir))
    out: dict[str, Any] = {"local": defaultdict(list), "sqlite": defaultdict(list)}
    try:
        for sample in range(args.samples):
            for kind in KINDS:
                if kind == "plain" and sample >= 2:
                    continue  # plain stores differ little: two samples
                packstore.PackStore._unlock = _keyed_ids_unlock if kind == "keyed-ids" else _ORIG_UNLOCK  # type: ignore[method-assign]
                try:
                    root = base / f"local-{kind}-{sample}"
                    stats = await build(str(root), kind, args.steps, args.seed)
                    parts = local_parts(root)
                    total = {k: sum(p[k] for p in parts.values()) for k in ("apparent", "allocated")}
                    out["local"][kind].append({"total": total, "parts": parts, "objects": stats.get("objects")})
                    print(
                        f"local  {kind:10s} {sample}: {total['allocated'] / 1e6:.3f} MB alloc, "
                        f"{stats.get('objects')} objects, "
                        + ", ".join(f"{k} {v['allocated'] / 1e3:.0f} KB" for k, v in sorted(parts.items())),
                        flush=True,
                    )
                    shutil.rmtree(root, ignore_errors=True)

                    sdir = base / f"sqlite-{kind}-{sample}"
                    sdir.mkdir()
                    db = sdir / "state.db"
                    stats = await build(f"sqlite:///{db}", kind, args.steps, args.seed)
                    parts = sqlite_parts(db)
                    out["sqlite"][kind].append(
                        {"total": parts["_file"], "parts": parts, "objects": stats.get("objects")}
                    )
                    print(
                        f"sqlite {kind:10s} {sample}: {parts['_file']['allocated'] / 1e6:.3f} MB alloc, "
                        f"{stats.get('objects')} objects, "
                        + ", ".join(
                            f"{k} {v['pages_bytes'] / 1e3:.0f} KB"
                            for k, v in sorted(parts.items())
                            if not k.startswith("_")
                        ),
                        flush=True,
                    )
                    shutil.rmtree(sdir, ignore_errors=True)
                finally:
                    packstore.PackStore._unlock = _ORIG_UNLOCK  # type: ignore[method-assign]
    finally:
        shutil.rmtree(base, ignore_errors=True)

    summary: dict[str, Any] = {}
    for backend, kinds in out.items():
        plain = statistics.median(r["total"]["allocated"] for r in kinds["plain"])
        summary[backend] = {
            kind: {
                "allocated_median": statistics.median(v := [r["total"]["allocated"] for r in runs]),
                "allocated_range": [min(v), max(v)],
                "over_plain_median": statistics.median(x / plain for x in v),
                "over_plain_range": [min(v) / plain, max(v) / plain],
                "objects": [r["objects"] for r in runs],
            }
            for kind, runs in kinds.items()
        }
    return {"params": vars(args), "summary": summary, "samples": {k: dict(v) for k, v in out.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    report = asyncio.run(run(args))
    print()
    for backend, kinds in report["summary"].items():
        for kind, s in kinds.items():
            lo, hi = s["over_plain_range"]
            print(
                f"{backend:7s} {kind:10s} {s['allocated_median'] / 1e6:.3f} MB  x{s['over_plain_median']:.3f} "
                f"({lo:.3f}-{hi:.3f})  objects {s['objects']}"
            )
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
