"""The secrets that open an encrypted store: a passphrase, a raw key, or your own (a KMS).

A store's data is encrypted under a random master key (castate.repository.crypto); each
secret opens one *key slot* that holds the master key wrapped by a key the secret derives:
scrypt stretches a passphrase, HKDF-SHA256 a raw key. ``Secret`` is the hook for a key
management service: ``wrap`` and ``unwrap`` are all a slot asks of it.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from castate.errors import CorruptFileError, UsageError, WrongKeyError

MASTER_SIZE = 32

# scrypt: 2**17 x 128 x 8 bytes = 128 MiB of memory and about 0.4 s per unlock.
SCRYPT_N = 1 << 17
SCRYPT_R = 8
SCRYPT_P = 1
MIN_SCRYPT_N = 1 << 10  # what a caller may ask for (tests); a passphrase cheaper than this is too cheap to guess
MAX_SCRYPT_N = 1 << 19  # the most a caller may ask for: 512 MiB with r = 8
# What a slot may ask of a reader, so a hostile slot cannot make an open take much more memory
# or time than a real one: 4x the default's memory, and 4x its work (n x r x p).
MAX_SCRYPT_MEM = 512 << 20
MAX_SCRYPT_WORK = 4 * SCRYPT_N * SCRYPT_R * SCRYPT_P
# What one open (of a store or a bundle) spends on key derivation over every slot it tries:
# 16 default-cost passphrase slots, so 64 hostile slots at the cap cannot cost minutes.
MAX_OPEN_WORK = 16 * SCRYPT_N * SCRYPT_R * SCRYPT_P

# Environment variables a store's key comes from when no key is given in code.
ENV_PASSWORD = "CASTATE_PASSWORD"
ENV_KEY = "CASTATE_KEY"
ENV_KEY_FILE = "CASTATE_KEY_FILE"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, where: str) -> bytes:
    if not isinstance(text, str):
        raise CorruptFileError(where, f"{what} is not a string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CorruptFileError(where, f"{what} is not base64") from None


def _is_text(data: bytes) -> bool:
    try:
        return data.decode("utf-8").strip().isprintable()
    except UnicodeDecodeError:
        return False


class Secret(abc.ABC):
    """Something that opens a key slot. Subclass it for a key management service: ``wrap``
    encrypts the master key and returns what the slot keeps; ``unwrap`` gives it back, or
    raises ``WrongKeyError`` when this secret does not open the slot."""

    #: What ``castate key list`` shows for slots this secret makes.
    kind: str = "secret"

    @abc.abstractmethod
    def wrap(self, master: bytes, aad: bytes) -> dict[str, Any]:
        """The JSON-able fields that let ``unwrap`` recover ``master`` (bound to ``aad``)."""

    @abc.abstractmethod
    def unwrap(self, fields: Mapping[str, Any], aad: bytes, where: str) -> bytes:
        """The master key from a slot's fields; WrongKeyError if this secret is not its own."""

    def work(self, fields: Mapping[str, Any]) -> int:
        """The key derivation work ``unwrap`` would do on these fields (scrypt's n x r x p; 0 for
        a cheap one), so an open can bound what hostile slots make it spend."""
        return 0


class WorkBudget:
    """What one open may still spend on key derivation (``MAX_OPEN_WORK``)."""

    def __init__(self, total: int = MAX_OPEN_WORK) -> None:
        self.left = total

    def take(self, secret: Secret, fields: Mapping[str, Any]) -> bool:
        """Whether ``secret`` may try the slot with these fields (and if so, its work is spent)."""
        work = secret.work(fields)
        if work > MAX_SCRYPT_WORK:
            return True  # more than one slot may ask: unwrap refuses it before any work
        if work > self.left:
            return False
        self.left -= work
        return True


def _seal_master(kek: bytes, master: bytes, aad: bytes) -> dict[str, Any]:
    nonce = os.urandom(12)
    return {"nonce": _b64(nonce), "wrapped": _b64(AESGCM(kek).encrypt(nonce, master, aad))}


def _open_master(kek: bytes, fields: Mapping[str, Any], aad: bytes, where: str) -> bytes:
    nonce = _unb64(fields.get("nonce"), "nonce", where)
    wrapped = _unb64(fields.get("wrapped"), "wrapped key", where)
    if len(nonce) != 12 or len(wrapped) != MASTER_SIZE + 16:
        raise CorruptFileError(where, "key slot has a wrapped key of the wrong size")
    try:
        return AESGCM(kek).decrypt(nonce, wrapped, aad)
    except InvalidTag:
        raise WrongKeyError("wrong key") from None


class Passphrase(Secret):
    """A passphrase, stretched by scrypt (``n``: its cost; the default takes 128 MiB and about
    0.4 s, which is what makes guessing a weak passphrase slow)."""

    kind = "passphrase"

    def __init__(self, text: str, *, n: int = SCRYPT_N) -> None:
        if not isinstance(text, str) or not text:
            raise UsageError("a passphrase is a non-empty str")
        if n < MIN_SCRYPT_N or n > MAX_SCRYPT_N or n & (n - 1):
            raise UsageError(f"scrypt's n is a power of two from {MIN_SCRYPT_N} to {MAX_SCRYPT_N}")
        # One passphrase, however it was typed: a decomposed "é" (e + U+0301) is the composed one.
        self._text = unicodedata.normalize("NFC", text).encode("utf-8")
        self._n = n

    def __repr__(self) -> str:
        return "Passphrase(***)"

    def __reduce__(self) -> Any:
        raise TypeError("a Passphrase is not pickled: it would write the passphrase out")

    def _kek(self, salt: bytes, n: int, r: int, p: int) -> bytes:
        # scrypt needs 128 * n * r bytes and a little more; the cap is checked before (unwrap).
        return hashlib.scrypt(self._text, salt=salt, n=n, r=r, p=p, maxmem=MAX_SCRYPT_MEM + (64 << 20), dklen=32)

    def wrap(self, master: bytes, aad: bytes) -> dict[str, Any]:
        salt = os.urandom(16)
        kdf = {"name": "scrypt", "n": self._n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)}
        return {"kdf": kdf, **_seal_master(self._kek(salt, self._n, SCRYPT_R, SCRYPT_P), master, aad)}

    def work(self, fields: Mapping[str, Any]) -> int:
        kdf = fields.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
            return 0
        n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
        return n * r * p if isinstance(n, int) and isinstance(r, int) and isinstance(p, int) else 0

    def unwrap(self, fields: Mapping[str, Any], aad: bytes, where: str) -> bytes:
        kdf = fields.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
            raise WrongKeyError("not a passphrase slot")
        n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
        if not (isinstance(n, int) and isinstance(r, int) and isinstance(p, int)):
            raise CorruptFileError(where, "scrypt parameters are not integers")
        sane = n >= 2 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
        if not sane or 128 * n * r > MAX_SCRYPT_MEM or n * r * p > MAX_SCRYPT_WORK:
            raise CorruptFileError(
                where,
                f"scrypt parameters n={n} r={r} p={p} are outside what castate reads (at most "
                f"{MAX_SCRYPT_MEM >> 20} MiB and {MAX_SCRYPT_WORK // (SCRYPT_N * SCRYPT_R)}x the default work)",
            )
        salt = _unb64(kdf.get("salt"), "salt", where)
        try:
            kek = self._kek(salt, n, r, p)
        except ValueError as exc:  # parameters OpenSSL's scrypt refuses (n >= 2**(16 r), ...)
            raise CorruptFileError(
                where, f"scrypt parameters n={n} r={r} p={p} are outside what castate reads: {exc}"
            ) from None
        return _open_master(kek, fields, aad, where)


class RawKey(Secret):
    """A random key of at least 16 bytes (from a file, an environment variable or a secret
    manager), turned into a slot key by HKDF-SHA256: no stretching, so it must be random."""

    kind = "key"

    def __init__(self, material: bytes | str) -> None:
        # A key given as text (an environment variable, a text file) loses the whitespace around
        # it, a trailing newline above all; binary bytes are the key as they are.
        data = material.encode("utf-8") if isinstance(material, str) else bytes(material)
        if _is_text(data):
            data = data.strip()
        if len(data) < 16:
            raise UsageError("a raw key is at least 16 bytes (32 random bytes, or 64 hex digits, is right)")
        self._material = data

    def __repr__(self) -> str:
        return "RawKey(***)"

    def __reduce__(self) -> Any:
        raise TypeError("a RawKey is not pickled: it would write the key out")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RawKey:
        """The key in a file (its bytes, surrounding whitespace stripped)."""
        data = Path(path).read_bytes()
        if len(data) > 4096:
            raise UsageError(f"key file {path} is {len(data)} bytes; a key file holds one key")
        return cls(data)

    def _kek(self, salt: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"castate key slot").derive(self._material)

    def wrap(self, master: bytes, aad: bytes) -> dict[str, Any]:
        salt = os.urandom(16)
        return {"kdf": {"name": "hkdf-sha256", "salt": _b64(salt)}, **_seal_master(self._kek(salt), master, aad)}

    def unwrap(self, fields: Mapping[str, Any], aad: bytes, where: str) -> bytes:
        kdf = fields.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "hkdf-sha256":
            raise WrongKeyError("not a raw-key slot")
        return _open_master(self._kek(_unb64(kdf.get("salt"), "salt", where)), fields, aad, where)


def secret_from_env(environ: Mapping[str, str] | None = None) -> Secret | None:
    """The secret the environment gives: ``CASTATE_PASSWORD``, ``CASTATE_KEY`` or the file
    ``CASTATE_KEY_FILE`` names (the first one set), or None."""
    env = os.environ if environ is None else environ
    if env.get(ENV_PASSWORD):
        return Passphrase(env[ENV_PASSWORD])
    if env.get(ENV_KEY):
        return RawKey(env[ENV_KEY])
    if env.get(ENV_KEY_FILE):
        return RawKey.from_file(env[ENV_KEY_FILE])
    return None


__all__ = ["ENV_KEY", "ENV_KEY_FILE", "ENV_PASSWORD", "Passphrase", "RawKey", "Secret", "WorkBudget", "secret_from_env"]
