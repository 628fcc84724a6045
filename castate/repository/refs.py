"""Names of refs: how user strings (session ids, keys, checkpoint names) become ref names.

User strings are never used raw. Each part is percent-encoded (everything but
``A-Za-z0-9_.-~``), so ``/``, ``..``, NUL and unicode stay inside one part and two
different strings never map to one name. Refs live in the ref journal or a database
table, not in file names, so no string can reach the file system.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from castate.errors import InvalidKeyError

MAX_NAME_BYTES = 1024

SESSIONS = "sessions/"
CHECKPOINTS = "checkpoints/"
KV = "kv/"
META = "meta/"  # castate's own records (the maintenance runs of castate.repository.health)


def check_name(value: object, what: str) -> str:
    """Validate a user string used as a name; returns it unchanged."""
    if not isinstance(value, str):
        raise InvalidKeyError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidKeyError(f"{what} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKeyError(f"{what} {value[:40]!r} is not valid UTF-8 text (lone surrogate)") from None
    if size > MAX_NAME_BYTES:
        raise InvalidKeyError(f"{what} is {size} bytes long; the limit is {MAX_NAME_BYTES} bytes of UTF-8")
    return value


def encode_part(value: str) -> str:
    return quote(value, safe="")


def session_ref(session_id: str) -> str:
    return SESSIONS + encode_part(check_name(session_id, "session id"))


def session_of_ref(ref: str) -> str:
    return unquote(ref[len(SESSIONS) :], errors="strict")


def kv_ref(key: str) -> str:
    return KV + encode_part(check_name(key, "key"))


def key_of_ref(ref: str) -> str:
    return unquote(ref[len(KV) :], errors="strict")


def checkpoint_prefix(session_id: str) -> str:
    return CHECKPOINTS + encode_part(check_name(session_id, "session id")) + "/"


def new_checkpoint_id(session_id: str, name: str) -> str:
    """A fresh checkpoint id ``<session>/<name>/<UTC time>-<random>``, unique even within a microsecond."""
    check_name(session_id, "session id")
    check_name(name, "checkpoint name")
    now = datetime.fromtimestamp(time.time(), UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{encode_part(session_id)}/{encode_part(name)}/{now}-{os.urandom(3).hex()}"


def parse_checkpoint_id(checkpoint_id: object) -> tuple[str, str, str]:
    """(session id, name, stamp) of a checkpoint id; InvalidKeyError when it is not one."""
    if not isinstance(checkpoint_id, str):
        raise InvalidKeyError(f"checkpoint id must be a str, not {type(checkpoint_id).__name__}")
    parts = checkpoint_id.split("/")
    if len(parts) != 3 or not all(parts) or not checkpoint_id.isascii() or not checkpoint_id.isprintable():
        raise InvalidKeyError(f"{checkpoint_id[:80]!r} is not a castate checkpoint id")
    try:
        session, name = unquote(parts[0], errors="strict"), unquote(parts[1], errors="strict")
    except UnicodeDecodeError:
        raise InvalidKeyError(f"{checkpoint_id[:80]!r} is not a castate checkpoint id") from None
    if encode_part(session) != parts[0] or encode_part(name) != parts[1]:
        raise InvalidKeyError(f"{checkpoint_id[:80]!r} is not a castate checkpoint id")
    return session, name, parts[2]


def checkpoint_ref(checkpoint_id: str) -> str:
    parse_checkpoint_id(checkpoint_id)
    return CHECKPOINTS + checkpoint_id


def checkpoint_time(stamp: str) -> float:
    """Creation time (epoch seconds) recorded in a checkpoint id's stamp."""
    text = stamp.split("-")[0]  # YYYYmmddTHHMMSS.ffffffZ, as new_checkpoint_id writes it
    if len(text) != 23 or text[8] != "T" or text[15] != "." or text[22] != "Z" or not text[16:22].isdigit():
        return 0.0
    try:  # fromisoformat (C) rather than strptime (Python): a long session lists thousands
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
