"""The object-store side of the S3 backend: the URL, the obstore clients, and error translation.

``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1`` names a store: the
bucket, a key prefix inside it (may be empty), and for S3-compatible servers other than AWS
the endpoint. Credentials never come from the URL: obstore reads the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
web identity, ECS and instance metadata); ``AWS_PROFILE`` is read through boto3 when it is
installed. No message castate writes carries a key or a signed URL.

Two clients over one bucket: ``reads`` retries (obstore's backoff) and serves every call that
is safe to send twice (GET, HEAD, LIST, DELETE, and create-only blob PUTs, whose names are
their content's hash); ``writes`` never retries and serves the conditional ref writes, whose
outcome after a lost reply must be read back, not guessed by resending.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import obstore.exceptions as oe
from obstore.store import S3Store

from castate.errors import BackendUnavailableError, StoreError

# URL parameters castate reads; any other is refused, so a typo is not silently ignored.
URL_OPTIONS = ("endpoint", "region", "save_window", "gc_lease")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b" (no slashes at either end)
    endpoint: str | None
    region: str | None
    options: dict[str, float]

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint}" if self.endpoint else where


def parse_url(url: str) -> S3Location:
    """The parts of an ``s3://`` URL; ValueError for a malformed one."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ValueError(f"not an s3:// URL: {url[:80]!r}")
    if "#" in url:  # urlsplit would take the rest as a fragment: s3://b/run#1 and #2 would be one store
        raise ValueError("bad S3 URL: '#' is not allowed in an s3:// URL (choose a prefix without it)")
    if "@" in parts.netloc:
        raise ValueError(
            "s3:// URLs carry no credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"bad S3 URL {url[:80]!r}: use s3://bucket/prefix")
    prefix = parts.path.strip("/")
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise ValueError(f"bad S3 URL {url[:80]!r}: the prefix has an empty, '.' or '..' part")
    endpoint = region = None
    options: dict[str, float] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "endpoint":
            if "@" in urlsplit(value).netloc:  # never echoed: location is in every message
                raise ValueError(
                    "the S3 endpoint carries no credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    "or AWS_PROFILE"
                )
            endpoint = value
        elif key == "region":
            region = value
        elif key in URL_OPTIONS:
            try:
                options[key] = float(value)
            except ValueError:
                raise ValueError(f"bad S3 URL parameter {key}={value[:20]!r}: a number of seconds") from None
        else:
            raise ValueError(f"unknown S3 URL parameter {key!r} (known: {', '.join(URL_OPTIONS)})")
    return S3Location(bucket, prefix, endpoint, region, options)


def make_store(loc: S3Location, *, timeout: float, retries: int) -> S3Store:
    """An obstore client for ``loc``: credentials from the environment (and AWS_PROFILE via boto3)."""
    config: dict[str, Any] = {}
    if loc.endpoint:
        config["endpoint"] = loc.endpoint
    if loc.region:
        config["region"] = loc.region
    client: dict[str, Any] = {
        "timeout": timedelta(seconds=timeout),
        "connect_timeout": timedelta(seconds=min(timeout, 10.0)),
        "allow_http": bool(loc.endpoint and loc.endpoint.startswith("http://")),
    }
    retry: dict[str, Any] = {
        "max_retries": retries,
        "retry_timeout": timedelta(seconds=max(timeout, 1.0) * (retries + 1)),
        "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=2), "base": 2},
    }
    provider = None
    if os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
        try:
            import boto3  # type: ignore[import-untyped]
            from obstore.auth.boto3 import Boto3CredentialProvider
        except ImportError:  # pragma: no cover - boto3 is optional
            raise StoreError("AWS_PROFILE is set: reading a profile needs boto3 (pip install boto3)") from None
        provider = Boto3CredentialProvider(boto3.Session())
    return S3Store(
        loc.bucket,
        prefix=loc.prefix or None,
        config=config,  # type: ignore[arg-type]
        client_options=client,  # type: ignore[arg-type]
        retry_config=retry,  # type: ignore[arg-type]
        credential_provider=provider,
    )


def first_line(exc: BaseException) -> str:
    """obstore's messages carry a debug dump after the first line (never credentials); keep the line."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def is_missing_bucket(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) and "NoSuchBucket" in str(exc)


class RefusedError(StoreError):
    """A request the server answered with a 4xx that castate has no meaning for (``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def http_status(exc: BaseException) -> int | None:
    """The HTTP status obstore reports in an error's message, if any."""
    found = re.search(r"status code: (\d{3})", str(exc))
    return int(found.group(1)) if found else None


def translate(exc: BaseException, what: str, where: str, *, write: bool = False) -> StoreError:
    """castate's error for a failed object-store call. ``write``: a conditional ref write whose
    reply was lost, which may or may not have been applied."""
    if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError):
        return StoreError(f"{what} on {where}: access denied ({first_line(exc)}); check the AWS credentials")
    if is_missing_bucket(exc):
        return StoreError(f"{what} on {where}: the bucket does not exist")
    landed = " The write may have landed: reload the refs to see (a ref moves whole or not at all)." if write else ""
    status = http_status(exc)
    if status is not None and 400 <= status < 500:  # refused, not unavailable: no retry helps
        code = re.search(r"<Code>([^<]{1,80})</Code>", str(exc))
        why = f"{status} {code.group(1)}" if code else str(status)
        return RefusedError(f"{what} on {where}: the server refused the request ({why})", status)
    if isinstance(exc, oe.BaseError | OSError | TimeoutError | ConnectionError):
        return BackendUnavailableError(f"{what}: {where} did not answer or failed: {first_line(exc)}.{landed}")
    return StoreError(f"{what} on {where}: {first_line(exc)}")


__all__ = [
    "RefusedError",
    "S3Location",
    "first_line",
    "http_status",
    "is_missing_bucket",
    "make_store",
    "parse_url",
    "translate",
]
