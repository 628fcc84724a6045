"""Encrypted against plain castate, paired step by step in one process: the time ratios of
issue 21 on a machine whose load moves from second to second.

    python -m tools.bench.enc_paired --steps 1000 --backends local,sqlite \\
        --out tools/bench/results/enc-paired-1000.json

``tools.bench.enc`` runs each system in its own process, minutes apart, so a busy spell of a
shared machine lands on one of the two. Here one workload drives both stores of a backend, a
plain one and one created with a ``castate.RawKey``: every step saves the same state to both
(``save_session`` + ``create_checkpoint``, durable), in an order that alternates from step to
step, and each save's ratio is taken against its partner of the same step. Then the step
``steps // 2`` checkpoint is restored ``--restores`` times from each, alternating, cold (a new
StateManager, so opening and unlocking the store is included) and warm. Wall and process CPU
times are both kept; the report gives the median of the per-pair ratios with their
interquartile range, and each side's medians, and (local and SQLite) the bytes of both stores.

An encrypted store's object ids are keyed with a key derived from its random master key, and
ids decide how large lists and dicts are cut into nodes: its objects differ from a plain
store's, by a few percent either way from store to store, and so do its save time and bytes.
``--same-ids`` (a bench-only patch of ``PackStore._unlock``) keys the ids of both stores with
one fixed key, so the two hold the same objects and the ratios are the sealing alone.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

import castate
from castate.codec.objects import Ids
from castate.repository.packs import store as packstore
from tools.bench.systems.base import walk_disk
from tools.bench.systems.castate_enc import key
from tools.bench.workload import Workload

SESSION = "bench"
SAME_ID_KEY = bytes(range(32))  # --same-ids: both stores' object ids keyed with this
_ORIG_UNLOCK = packstore.PackStore._unlock


async def _same_ids_unlock(self: packstore.PackStore) -> None:
    await _ORIG_UNLOCK(self)
    self.ids = Ids(SAME_ID_KEY)


def _target(backend: str, root: Path) -> tuple[str, Callable[[], None]]:
    """A store URL for ``backend`` under ``root`` and how to stop its server."""
    if backend == "local":
        return str(root), lambda: None
    if backend == "sqlite":
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / 'state.db'}", lambda: None
    from tools.servers import PostgresServer, RedisServer

    server: Any = PostgresServer(durable=True) if backend == "postgres" else RedisServer(persistence="aof-always")
    server.start()
    return server.url, server.cleanup


class Side:
    def __init__(self, url: str, encrypted: bool) -> None:
        self.url = url
        self.encrypted = encrypted
        self.sm = self._manager()

    def _manager(self) -> castate.StateManager:
        return castate.StateManager(castate.open(self.url, create=True, key=key() if self.encrypted else None))

    async def reopen(self) -> None:
        await self.sm.close()
        self.sm = self._manager()


async def _timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    c = time.process_time()
    t = time.perf_counter()
    out = await fn()
    return time.perf_counter() - t, time.process_time() - c, out


def _quartiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "n": len(values)}


async def run_backend(backend: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    plain_url, stop_plain = _target(backend, base / f"{backend}-plain")
    enc_url, stop_enc = _target(backend, base / f"{backend}-enc")
    sides = {"plain": Side(plain_url, False), "encrypted": Side(enc_url, True)}
    try:
        w = Workload(args.seed, args.steps)
        mid = max(1, args.steps // 2)
        save: dict[str, dict[str, list[float]]] = {s: {"wall": [], "cpu": []} for s in sides}
        handles: dict[str, str] = {}
        for n in range(1, args.steps + 1):
            w.step()
            order = ("plain", "encrypted") if n % 2 else ("encrypted", "plain")
            for s in order:
                sm = sides[s].sm

                async def one(sm: castate.StateManager = sm, n: int = n) -> str:
                    await sm.save_session(SESSION, w.state)
                    return await sm.create_checkpoint(SESSION, f"step-{n:06d}")

                wall, cpu, h = await _timed(one)
                save[s]["wall"].append(wall)
                save[s]["cpu"].append(cpu)
                if n == mid:
                    handles[s] = h
        expected = None
        restore: dict[str, dict[str, dict[str, list[float]]]] = {
            kind: {s: {"wall": [], "cpu": []} for s in sides} for kind in ("cold", "warm")
        }
        for kind in ("cold", "warm"):
            for i in range(args.restores):
                order = ("plain", "encrypted") if i % 2 else ("encrypted", "plain")
                for s in order:
                    side = sides[s]
                    if kind == "cold":
                        await side.reopen()
                    wall, cpu, state = await _timed(lambda side=side, s=s: side.sm.restore_checkpoint(handles[s]))
                    restore[kind][s]["wall"].append(wall)
                    restore[kind][s]["cpu"].append(cpu)
                    if expected is None:
                        expected = orjson.dumps(state)
                    elif orjson.dumps(state) != expected:
                        raise AssertionError(f"{backend} {s}: restored state differs")
                    del state
    finally:
        for side in sides.values():
            await side.sm.close()
        stop_plain()
        stop_enc()
    disk: dict[str, Any] = {}
    if backend in ("local", "sqlite"):
        disk = {
            "plain": walk_disk(base / f"{backend}-plain"),
            "encrypted": walk_disk(base / f"{backend}-enc"),
        }
        disk["ratio_allocated"] = disk["encrypted"]["bytes_allocated"] / disk["plain"]["bytes_allocated"]

    def ratios(a: list[float], b: list[float]) -> list[float]:
        return [e / p for p, e in zip(a, b, strict=True) if p > 0]

    out: dict[str, Any] = {}
    for clock in ("wall", "cpu"):
        for label, p, e in (
            ("save (all steps)", save["plain"][clock], save["encrypted"][clock]),
            ("save (last 100)", save["plain"][clock][-100:], save["encrypted"][clock][-100:]),
            ("restore cold", restore["cold"]["plain"][clock], restore["cold"]["encrypted"][clock]),
            ("restore warm", restore["warm"]["plain"][clock], restore["warm"]["encrypted"][clock]),
        ):
            out[f"{label} {clock}"] = {
                "plain_ms": statistics.median(p) * 1e3,
                "encrypted_ms": statistics.median(e) * 1e3,
                "ratio_of_medians": statistics.median(e) / statistics.median(p),
                "paired_ratio": _quartiles(ratios(p, e)),
            }
    return {"metrics": out, "disk": disk, "save": save, "restore": restore}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--restores", type=int, default=15)
    ap.add_argument("--backends", default="local,sqlite")
    ap.add_argument("--same-ids", action="store_true", help="key both stores' object ids with one fixed key")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="castate-encpaired-", dir=args.dir))
    report: dict[str, Any] = {"params": vars(args), "key": "castate.RawKey", "backends": {}}
    lines = [
        "| backend | metric | plain ms | encrypted ms | paired ratio median (IQR) |",
        "|---|---|---|---|---|",
    ]
    if args.same_ids:
        packstore.PackStore._unlock = _same_ids_unlock  # type: ignore[method-assign]
    try:
        for backend in args.backends.split(","):
            first = len(lines)
            r = asyncio.run(run_backend(backend, args, base))
            report["backends"][backend] = r
            if r["disk"]:
                d = r["disk"]
                lines.append(
                    f"| {backend} | disk MB (alloc) | {d['plain']['bytes_allocated'] / 1e6:.3f} "
                    f"| {d['encrypted']['bytes_allocated'] / 1e6:.3f} | {d['ratio_allocated']:.3f} |"
                )
            for name, m in r["metrics"].items():
                q = m["paired_ratio"]
                lines.append(
                    f"| {backend} | {name} | {m['plain_ms']:.2f} | {m['encrypted_ms']:.2f} "
                    f"| {q['median']:.3f} ({q['q1']:.3f}-{q['q3']:.3f}) |"
                )
            print("\n".join(lines[first:]), flush=True)
    finally:
        packstore.PackStore._unlock = _ORIG_UNLOCK  # type: ignore[method-assign]
        shutil.rmtree(base, ignore_errors=True)
    report["table"] = "\n".join(lines)
    print()
    print(report["table"])
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
