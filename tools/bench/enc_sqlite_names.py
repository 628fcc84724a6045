"""What a names table would save in a SQLite store's refs and reflog, plain and encrypted.

    python -m tools.bench.enc_sqlite_names --steps 1000 --out tools/bench/results/enc-sqlite-names-1000.json

An encrypted store's ref names are 2 to 2.5 times as long (every part after the first is
AES-SIV'd and base64'd), and the SQLite backend keeps each name in ``refs``, in every
``reflog`` row and in the ``reflog_by_name`` index. This builds the 1,000-step session on a
plain and an encrypted SQLite store (``relaxed``), then copies their refs and reflog into a
layout where each name is stored once (``names``: id, name) and ``refs`` and ``reflog`` refer
to it by id, and reports the pages (``dbstat``) of both layouts. A bench-side estimate for the
backend's owner: castate's own schema is not changed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson

import castate
from tools.bench.systems.castate_enc import key
from tools.bench.workload import Workload

NOW = ("refs", "reflog", "reflog_by_name")
ALT = ("names", "sqlite_autoindex_names_1", "refs2", "reflog2", "reflog2_by_name")
ALT_SCHEMA = """
CREATE TABLE names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO names(name) SELECT name FROM refs UNION SELECT name FROM reflog;
CREATE TABLE refs2(name_id INTEGER PRIMARY KEY, target BLOB NOT NULL);
INSERT INTO refs2 SELECT n.id, r.target FROM refs r JOIN names n ON n.name = r.name;
CREATE TABLE reflog2(seq INTEGER PRIMARY KEY, name_id INTEGER NOT NULL, old BLOB, new BLOB,
                     time_ns INTEGER NOT NULL, message TEXT NOT NULL);
INSERT INTO reflog2 SELECT seq, n.id, old, new, time_ns, message FROM reflog JOIN names n ON n.name = reflog.name;
CREATE INDEX reflog2_by_name ON reflog2(name_id, seq);
"""


async def build(db: Path, encrypted: bool, steps: int, seed: int) -> None:
    w = Workload(seed, steps)
    url = f"sqlite:///{db}"
    sm = castate.StateManager(castate.open(url, durability="relaxed", create=True, key=key() if encrypted else None))
    for n in range(1, steps + 1):
        w.step()
        await sm.save_session("bench", w.state)
        await sm.create_checkpoint("bench", f"step-{n:06d}")
    await sm.close()


def pages(conn: sqlite3.Connection) -> dict[str, int]:
    return {n: p for n, p in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="castate-encnames-"))
    report: dict[str, Any] = {"params": vars(args)}
    try:
        for label, encrypted in (("plain", False), ("encrypted", True)):
            db = base / f"{label}.db"
            asyncio.run(build(db, encrypted, args.steps, args.seed))
            conn = sqlite3.connect(db)
            try:
                before = pages(conn)
                conn.executescript(ALT_SCHEMA)
                conn.commit()
                after = pages(conn)
            finally:
                conn.close()
            total = sum(v for k, v in before.items())
            now = {k: before[k] for k in NOW}
            alt = {k: after[k] for k in ALT}
            report[label] = {
                "store_pages_bytes": total,
                "refs_and_reflog_now": now,
                "refs_and_reflog_with_names_table": alt,
                "saved_bytes": sum(now.values()) - sum(alt.values()),
            }
            print(
                f"{label}: store {total / 1e3:.0f} KB; refs + reflog now {sum(now.values()) / 1e3:.0f} KB, "
                f"with a names table {sum(alt.values()) / 1e3:.0f} KB"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    p, e = report["plain"], report["encrypted"]
    now_ratio = e["store_pages_bytes"] / p["store_pages_bytes"]
    alt_ratio = (e["store_pages_bytes"] - e["saved_bytes"]) / (p["store_pages_bytes"] - p["saved_bytes"])
    report["encrypted_over_plain"] = {"now": now_ratio, "with_names_table": alt_ratio}
    print(f"encrypted / plain: now {now_ratio:.3f}, with a names table in both {alt_ratio:.3f}")
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
