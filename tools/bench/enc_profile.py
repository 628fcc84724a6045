"""Where an encrypted store's extra time and bytes go, against a plain one, in one run.

    python -m tools.bench.enc_profile --steps 1000 --out tools/bench/results/enc-profile-1000.json

Builds the benchmark workload's session twice in this process, on a plain local store and on
one created with a ``castate.RawKey`` (a ``save_session`` + ``create_checkpoint`` per step,
durability ``--durability``, relaxed by default so that fsync noise does not hide CPU time),
then restores the step-``steps // 2`` checkpoint ``--restores`` times cold (a new
StateManager each) and as many warm. While it runs, the encryption layer's methods
(``SealedBlobs.seal_blob``/``open_blob``, the per-blob key ``_aead``, ref-name and reflog
message sealing, and the keyed object ids) are wrapped with time counters, so the report says
how much of each save and restore is spent in them. Beside that it reports:

- cProfile of the last ``--profile-steps`` saves and of the cold restores, encrypted and plain
  (top functions by own time, and the functions whose own time grew most);
- micro timings of each primitive (AESGCM construction, AES-GCM at the run's median pack
  size, AES-SIV of a ref name part, keyed against plain blake3, opening a store with a RawKey
  and with a default-cost Passphrase: scrypt);
- the bytes on disk per file of both stores (volumes, journal, snapshot), and the sealed
  blobs' count times their 32 bytes of overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

import castate
from castate.codec import objects as codec_objects
from castate.repository.crypto import sealed as sealed_mod
from tools.bench.systems.castate_enc import key
from tools.bench.workload import Workload

SESSION = "bench"


class Counters:
    """Seconds and calls spent in wrapped functions, per phase (``save``/``restore``/...)."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.bytes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._depth = 0

    def wrap(self, owner: Any, attr: str, label: str, size_arg: int | None = None) -> Callable[[], None]:
        inner = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[self.phase][label] += time.perf_counter() - t
                self.calls[self.phase][label] += 1
                if size_arg is not None and len(args) > size_arg:
                    self.bytes[self.phase][label] += len(args[size_arg])

        setattr(owner, attr, timed)
        return lambda: setattr(owner, attr, inner)


def instrument(c: Counters) -> list[Callable[[], None]]:
    S = sealed_mod.SealedBlobs
    undo = [
        c.wrap(S, "seal_blob", "seal_blob (AES-GCM encrypt, incl. key)", size_arg=2),
        c.wrap(S, "open_blob", "open_blob (AES-GCM decrypt, incl. key)", size_arg=2),
        c.wrap(S, "_aead", "_aead (blake3 per-name key + AESGCM())"),
        c.wrap(S, "seal_name", "seal_name (AES-SIV, cached)"),
        c.wrap(S, "open_name", "open_name (AES-SIV, cached)"),
        c.wrap(S, "seal_message", "seal_message (AES-SIV)"),
        c.wrap(S, "open_message", "open_message (AES-SIV)"),
        c.wrap(codec_objects.Ids, "object_id", "Ids.object_id (blake3, keyed or plain)"),
        c.wrap(codec_objects.Ids, "decode_frame", "Ids.decode_frame (verify: blake3)"),
    ]
    return undo


def manager(root: Path, encrypted: bool, durability: str) -> castate.StateManager:
    backend = castate.open(str(root), durability=durability, create=True, key=key() if encrypted else None)
    return castate.StateManager(backend)


def walk(root: Path) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            rel = p.relative_to(root)
            group = rel.parts[0] if len(rel.parts) > 1 else rel.name
            out[group] += p.stat().st_size
    return dict(out)


def top(prof: cProfile.Profile, n: int = 15) -> list[dict[str, Any]]:
    st = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {"fn": f"{Path(file).name}:{line}:{fn}", "calls": nc, "tottime_ms": tt * 1e3, "cumtime_ms": ct * 1e3}
        )
    rows.sort(key=lambda r: -r["tottime_ms"])
    return rows[:n] if n else rows


async def build(root: Path, encrypted: bool, args: argparse.Namespace, c: Counters) -> dict[str, Any]:
    w = Workload(args.seed, args.steps)
    sm = manager(root, encrypted, args.durability)
    mid = max(1, args.steps // 2)
    handle = None
    save_times: list[float] = []
    prof = cProfile.Profile()
    profile_from = args.steps - args.profile_steps
    c.phase = "save"
    for n in range(1, args.steps + 1):
        w.step()
        if n > profile_from:
            prof.enable()
        t = time.perf_counter()
        await sm.save_session(SESSION, w.state)
        h = await sm.create_checkpoint(SESSION, f"step-{n:06d}")
        save_times.append(time.perf_counter() - t)
        if n > profile_from:
            prof.disable()
        if n == mid:
            handle = h
    save_profile = top(prof, 0)
    assert handle is not None

    c.phase = "open"
    open_times = []
    cold, warm = [], []
    rprof = cProfile.Profile()
    for _ in range(args.restores):
        await sm.close()
        t = time.perf_counter()
        sm = manager(root, encrypted, args.durability)
        await sm.repository.open()
        open_times.append(time.perf_counter() - t)
        c.phase = "restore cold"
        rprof.enable()
        t = time.perf_counter()
        await sm.restore_checkpoint(handle)
        cold.append(time.perf_counter() - t)
        rprof.disable()
        c.phase = "open"
    c.phase = "restore warm"
    for _ in range(args.restores):
        t = time.perf_counter()
        await sm.restore_checkpoint(handle)
        warm.append(time.perf_counter() - t)
    c.phase = "close"
    await sm.close()
    return {
        "save_times_s": save_times,
        "save_median_ms": statistics.median(save_times) * 1e3,
        "save_last_100_median_ms": statistics.median(save_times[-100:]) * 1e3,
        "open_ms": statistics.median(open_times) * 1e3,
        "restore_cold_ms": statistics.median(cold) * 1e3,
        "restore_warm_ms": statistics.median(warm) * 1e3,
        "save_profile": save_profile,
        "restore_cold_profile": top(rprof, 0),
        "files": walk(root),
    }


def micro(pack_size: int, repeat: int = 2000) -> dict[str, float]:
    """Per-call microseconds of each primitive the encrypted store adds."""

    def us(fn: Callable[[], Any], n: int = repeat) -> float:
        best = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            best.append((time.perf_counter() - t) / n)
        return statistics.median(best) * 1e6

    k = os.urandom(32)
    name = "packs/" + "ab" * 32
    data = os.urandom(pack_size)
    nonce = os.urandom(12)
    aead = AESGCM(k)
    sealed = aead.encrypt(nonce, data, name.encode())
    siv = AESSIV(os.urandom(64))
    small = os.urandom(200)
    return {
        "pack_size_bytes": pack_size,
        "AESGCM(key) construction": us(lambda: AESGCM(k)),
        "blake3(name, key=...) per-name key": us(lambda: blake3.blake3(name.encode("ascii"), key=k).digest()),
        "AES-GCM encrypt of a median pack (key reused)": us(lambda: aead.encrypt(nonce, data, name.encode())),
        "AES-GCM decrypt of a median pack (key reused)": us(lambda: aead.decrypt(nonce, sealed, name.encode())),
        "os.urandom(12)": us(lambda: os.urandom(12)),
        "AES-SIV of a 20-char ref name part": us(lambda: siv.encrypt(b"step-000500-abcdefgh", [b"ad"])),
        "blake3 plain, 200 B object": us(lambda: blake3.blake3(small).digest()),
        "blake3 keyed, 200 B object": us(lambda: blake3.blake3(small, key=k).digest()),
        "zstd-free baseline: bytes(data) copy of a median pack": us(lambda: bytes(memoryview(data))),
    }


async def unlock_costs(base: Path) -> dict[str, float]:
    """Open (and unlock) a small encrypted store: RawKey (HKDF) and a default-cost Passphrase (scrypt)."""
    out: dict[str, float] = {}
    for label, secret in (("RawKey", key()), ("Passphrase (default scrypt n=2**17)", castate.Passphrase("bench"))):
        root = base / f"unlock-{label.split()[0]}"
        sm = castate.StateManager(castate.open(str(root), create=True, key=secret))
        await sm.save_session("s", {"a": 1})
        await sm.close()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            sm = castate.StateManager(castate.open(str(root), key=secret))
            await sm.repository.open()
            times.append(time.perf_counter() - t)
            await sm.close()
        out[label] = statistics.median(times) * 1e3
    return out


def diff_profiles(plain: list[dict[str, Any]], enc: list[dict[str, Any]], n: int = 15) -> list[dict[str, Any]]:
    p = {r["fn"]: r for r in plain}
    rows = []
    for r in enc:
        before = p.get(r["fn"], {"tottime_ms": 0.0, "calls": 0})
        rows.append(
            {
                "fn": r["fn"],
                "enc_ms": r["tottime_ms"],
                "plain_ms": before["tottime_ms"],
                "extra_ms": r["tottime_ms"] - before["tottime_ms"],
                "enc_calls": r["calls"],
                "plain_calls": before["calls"],
            }
        )
    rows.sort(key=lambda r: -r["extra_ms"])
    return rows[:n]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="castate-encprof-", dir=args.dir))
    try:
        counters = Counters()
        undo = instrument(counters)
        results: dict[str, Any] = {}
        phases: dict[str, Any] = {}
        for label, encrypted in (("plain", False), ("encrypted", True)):
            counters.seconds.clear()
            counters.calls.clear()
            counters.bytes.clear()
            results[label] = await build(base / label, encrypted, args, counters)
            phases[label] = {
                ph: {
                    k: {
                        "ms": v * 1e3,
                        "calls": counters.calls[ph][k],
                        **({"bytes": counters.bytes[ph][k]} if counters.bytes[ph][k] else {}),
                    }
                    for k, v in sorted(counters.seconds[ph].items(), key=lambda kv: -kv[1])
                }
                for ph in list(counters.seconds)
            }
        for u in undo:
            u()
        enc_calls = phases["encrypted"].get("save", {}).get("seal_blob (AES-GCM encrypt, incl. key)", {})
        sealed_n = enc_calls.get("calls", 0)
        sealed_bytes = enc_calls.get("bytes", 0)
        pack_size = max(64, sealed_bytes // sealed_n) if sealed_n else 4096
        micro_us = micro(pack_size)
        unlock = await unlock_costs(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    p, e = results["plain"], results["encrypted"]
    return {
        "params": vars(args),
        "summary": {
            k: {"plain": p[k], "encrypted": e[k], "ratio": e[k] / p[k] if p[k] else None}
            for k in ("save_median_ms", "save_last_100_median_ms", "open_ms", "restore_cold_ms", "restore_warm_ms")
        },
        "disk_bytes": {"plain": p["files"], "encrypted": e["files"]},
        "sealed_blobs": {"count_at_save": sealed_n, "plaintext_bytes": sealed_bytes, "overhead_bytes": 32 * sealed_n},
        "counters": phases,
        "profiles": {
            "save_top_encrypted": e["save_profile"][:20],
            "save_top_plain": p["save_profile"][:20],
            "save_extra": diff_profiles(p["save_profile"], e["save_profile"]),
            "restore_cold_top_encrypted": e["restore_cold_profile"][:20],
            "restore_cold_extra": diff_profiles(p["restore_cold_profile"], e["restore_cold_profile"]),
        },
        "micro_us": micro_us,
        "unlock_ms": unlock,
        "save_times_s": {"plain": p["save_times_s"], "encrypted": e["save_times_s"]},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--durability", default="relaxed", choices=("durable", "relaxed"))
    ap.add_argument("--profile-steps", type=int, default=100, help="cProfile the last N saves")
    ap.add_argument("--restores", type=int, default=5)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    report = asyncio.run(main_async(args))
    s = report["summary"]
    for k, v in s.items():
        print(f"{k:28s} plain {v['plain']:8.2f}  encrypted {v['encrypted']:8.2f}  ratio {v['ratio']:.3f}")
    for label, phases in report["counters"].items():
        print(f"\n{label}:")
        for ph, rows in phases.items():
            for k, v in rows.items():
                print(f"  {ph:13s} {k:48s} {v['ms']:9.2f} ms  {v['calls']:7d} calls")
    print("\ndisk:", report["disk_bytes"])
    print("sealed:", report["sealed_blobs"])
    print("\nsave, extra own time (encrypted - plain), last", args.profile_steps, "saves:")
    for r in report["profiles"]["save_extra"][:10]:
        print(f"  {r['extra_ms']:8.2f} ms  {r['fn']}  ({r['plain_calls']} -> {r['enc_calls']} calls)")
    print("\nrestore cold, extra own time:")
    for r in report["profiles"]["restore_cold_extra"][:10]:
        print(f"  {r['extra_ms']:8.2f} ms  {r['fn']}  ({r['plain_calls']} -> {r['enc_calls']} calls)")
    print("\nmicro (us per call):")
    for k, v in report["micro_us"].items():
        print(f"  {k:52s} {v:10.2f}")
    print("\nopen + unlock (ms):", report["unlock_ms"])
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
