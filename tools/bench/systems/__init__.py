"""The systems the benchmark can run, by name.

Each entry names a ``System`` subclass as ``module:Class`` and is imported only when it
runs, so a peer whose package is not installed does not break the others. The peers
(``marsys``, ``langgraph-sqlite``) live only in the benchmark's own environment
(``tools/bench/setup-env.sh``), never in castate's dependencies.
"""

from __future__ import annotations

import importlib

from tools.bench.systems.base import System

REGISTRY: dict[str, str] = {
    "castate": "tools.bench.systems.castate_sys:Castate",
    "castate-relaxed": "tools.bench.systems.castate_sys:CastateRelaxed",
    "castate-tracked": "tools.bench.systems.castate_sys:CastateTracked",
    "castate-sqlite": "tools.bench.systems.castate_backends:CastateSQLite",
    "castate-postgres": "tools.bench.systems.castate_backends:CastatePostgres",
    "castate-redis": "tools.bench.systems.castate_backends:CastateRedis",
    "castate-s3": "tools.bench.systems.castate_backends:CastateS3",
    "castate-enc": "tools.bench.systems.castate_enc:CastateEnc",
    "castate-relaxed-enc": "tools.bench.systems.castate_enc:CastateRelaxedEnc",
    "castate-tracked-enc": "tools.bench.systems.castate_enc:CastateTrackedEnc",
    "castate-sqlite-enc": "tools.bench.systems.castate_enc:CastateSQLiteEnc",
    "castate-postgres-enc": "tools.bench.systems.castate_enc:CastatePostgresEnc",
    "castate-redis-enc": "tools.bench.systems.castate_enc:CastateRedisEnc",
    "naive": "tools.bench.systems.naive:Naive",
    "naive-nofsync": "tools.bench.systems.naive:NaiveNoFsync",
    "marsys": "tools.bench.systems.marsys_peer:Marsys",
    "langgraph-sqlite": "tools.bench.systems.langgraph_sqlite:LangGraphSqlite",
}


def make(name: str) -> System:
    """A fresh instance of the system called ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(REGISTRY)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["REGISTRY", "System", "make"]
