"""castate.keys: the secrets that open an encrypted store's key slots."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import castate
from castate.errors import CorruptFileError, UsageError, WrongKeyError
from castate.keys import ENV_KEY, ENV_KEY_FILE, ENV_PASSWORD, MAX_SCRYPT_N, Passphrase, RawKey, Secret, secret_from_env

MASTER = bytes(range(32))
AAD = b"castate key slot 1 store slot"


def test_a_passphrase_wraps_and_unwraps() -> None:
    p = Passphrase("correct horse", n=1024)
    fields = p.wrap(MASTER, AAD)
    assert fields["kdf"]["name"] == "scrypt"
    assert fields["kdf"]["n"] == 1024
    assert p.unwrap(fields, AAD, "keys/x") == MASTER
    # the same passphrase made anew (another process) opens it too
    assert Passphrase("correct horse", n=1024).unwrap(fields, AAD, "keys/x") == MASTER
    # its cost is the slot's, not the reader's: a reader asking another n still opens it
    assert Passphrase("correct horse", n=2048).unwrap(fields, AAD, "keys/x") == MASTER
    # salted: two wraps of one master differ
    assert p.wrap(MASTER, AAD)["wrapped"] != fields["wrapped"]
    assert "correct horse" not in repr(p)
    assert "correct horse" not in str(fields)


def test_a_wrong_passphrase_or_other_slot_is_wrong_key() -> None:
    fields = Passphrase("one", n=1024).wrap(MASTER, AAD)
    with pytest.raises(WrongKeyError):
        Passphrase("two", n=1024).unwrap(fields, AAD, "keys/x")
    with pytest.raises(WrongKeyError):  # the slot is bound to its store and id
        Passphrase("one", n=1024).unwrap(fields, AAD + b"!", "keys/x")
    with pytest.raises(WrongKeyError):  # a raw-key slot is not a passphrase's
        Passphrase("one", n=1024).unwrap(RawKey(b"k" * 32).wrap(MASTER, AAD), AAD, "keys/x")


@pytest.mark.parametrize("n", [0, 512, 1000, 3 << 10, MAX_SCRYPT_N * 2])
def test_passphrase_costs_outside_the_range_are_refused(n: int) -> None:
    with pytest.raises(UsageError, match="power of two"):
        Passphrase("p", n=n)


@pytest.mark.parametrize("text", ["", b"bytes", None])
def test_a_passphrase_is_non_empty_text(text: Any) -> None:
    with pytest.raises(UsageError):
        Passphrase(text, n=1024)


@pytest.mark.parametrize(
    ("kdf", "match"),
    [
        ({"name": "scrypt", "n": 1 << 30, "r": 8, "p": 1, "salt": "AAAA"}, "outside"),  # a memory bomb
        ({"name": "scrypt", "n": 1 << 20, "r": 32, "p": 1, "salt": "AAAA"}, "outside"),  # 4 GiB
        ({"name": "scrypt", "n": 1000, "r": 8, "p": 1, "salt": "AAAA"}, "outside"),
        ({"name": "scrypt", "n": 1024, "r": 8, "p": 1000, "salt": "AAAA"}, "outside"),
        ({"name": "scrypt", "n": "1024", "r": 8, "p": 1, "salt": "AAAA"}, "not integers"),
        ({"name": "scrypt", "n": 1024, "r": 8, "p": 1, "salt": "not base64!"}, "not base64"),
        ({"name": "scrypt", "n": 1024, "r": 8, "p": 1, "salt": 7}, "not a string"),
    ],
)
def test_hostile_scrypt_parameters_are_corrupt_not_obeyed(kdf: dict[str, Any], match: str) -> None:
    fields = {**Passphrase("p", n=1024).wrap(MASTER, AAD), "kdf": kdf}
    with pytest.raises(CorruptFileError, match=match) as caught:
        Passphrase("p", n=1024).unwrap(fields, AAD, "keys/0123456789abcdef")
    assert caught.value.path == "keys/0123456789abcdef"


def test_a_wrapped_key_of_the_wrong_size_is_corrupt() -> None:
    fields = Passphrase("p", n=1024).wrap(MASTER, AAD)
    short = {**fields, "wrapped": base64.b64encode(b"x" * 20).decode()}
    with pytest.raises(CorruptFileError, match="wrong size"):
        Passphrase("p", n=1024).unwrap(short, AAD, "keys/x")
    with pytest.raises(CorruptFileError, match="nonce"):
        Passphrase("p", n=1024).unwrap({**fields, "nonce": None}, AAD, "keys/x")


def test_a_raw_key_wraps_and_unwraps() -> None:
    key = RawKey(os.urandom(32))
    fields = key.wrap(MASTER, AAD)
    assert fields["kdf"]["name"] == "hkdf-sha256"
    assert key.unwrap(fields, AAD, "keys/x") == MASTER
    with pytest.raises(WrongKeyError):
        RawKey(os.urandom(32)).unwrap(fields, AAD, "keys/x")
    with pytest.raises(WrongKeyError):
        key.unwrap(Passphrase("p", n=1024).wrap(MASTER, AAD), AAD, "keys/x")
    assert repr(key) == "RawKey(***)"


def test_raw_key_text_and_bytes_and_whitespace() -> None:
    hexkey = os.urandom(32).hex()
    fields = RawKey(hexkey).wrap(MASTER, AAD)
    assert RawKey(hexkey.encode()).unwrap(fields, AAD, "k") == MASTER
    assert RawKey(f"  {hexkey}\n").unwrap(fields, AAD, "k") == MASTER  # as a file or a shell gives it
    with pytest.raises(UsageError, match="at least 16 bytes"):
        RawKey("short")
    with pytest.raises(UsageError, match="at least 16 bytes"):
        RawKey(b"  " + b"x" * 15 + b"\n")


def test_raw_key_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(os.urandom(32).hex().encode() + b"\n")
    fields = RawKey.from_file(path).wrap(MASTER, AAD)
    assert RawKey(path.read_bytes()).unwrap(fields, AAD, "k") == MASTER
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(UsageError, match="one key"):
        RawKey.from_file(big)
    with pytest.raises(FileNotFoundError):
        RawKey.from_file(tmp_path / "missing")


def test_secret_from_env(tmp_path: Path) -> None:
    assert secret_from_env({}) is None
    assert secret_from_env({ENV_PASSWORD: ""}) is None  # set but empty: not a passphrase
    assert isinstance(secret_from_env({ENV_PASSWORD: "pw"}), Passphrase)
    key = os.urandom(32).hex()
    assert isinstance(secret_from_env({ENV_KEY: key}), RawKey)
    path = tmp_path / "key"
    path.write_text(key)
    from_file = secret_from_env({ENV_KEY_FILE: str(path)})
    assert isinstance(from_file, RawKey)
    fields = RawKey(key).wrap(MASTER, AAD)
    assert from_file.unwrap(fields, AAD, "k") == MASTER
    # the first one set wins: a password over a key over a key file
    both = secret_from_env({ENV_PASSWORD: "pw", ENV_KEY: key, ENV_KEY_FILE: str(path)})
    assert isinstance(both, Passphrase)
    assert isinstance(secret_from_env({ENV_KEY: key, ENV_KEY_FILE: "/missing"}), RawKey)
    with pytest.raises(UsageError):
        secret_from_env({ENV_KEY: "too short"})


def test_secret_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_PASSWORD, ENV_KEY, ENV_KEY_FILE):
        monkeypatch.delenv(name, raising=False)
    assert secret_from_env() is None
    monkeypatch.setenv(ENV_KEY, "k" * 32)
    assert isinstance(secret_from_env(), RawKey)


class FakeKMS(Secret):
    """A key management service as a Secret subclass: its key never leaves it; slots hold what
    it returns (here: the key's name and AES-GCM under a key the service keeps)."""

    kind = "kms"

    def __init__(self, name: str, service: dict[str, bytes]) -> None:
        self.name = name
        self.service = service  # the KMS's own keys, by name
        self.calls: list[str] = []

    def wrap(self, master: bytes, aad: bytes) -> dict[str, Any]:
        self.calls.append("wrap")
        nonce = os.urandom(12)
        sealed = AESGCM(self.service[self.name]).encrypt(nonce, master, aad)
        return {"kms_key": self.name, "blob": base64.b64encode(nonce + sealed).decode()}

    def unwrap(self, fields: Mapping[str, Any], aad: bytes, where: str) -> bytes:
        self.calls.append("unwrap")
        if fields.get("kms_key") != self.name:
            raise WrongKeyError("another KMS key")
        data = base64.b64decode(fields["blob"])
        return AESGCM(self.service[self.name]).decrypt(data[:12], data[12:], aad)


def test_a_secret_subclass_is_a_kms_hook() -> None:
    service = {"alias/castate": AESGCM.generate_key(256), "alias/other": AESGCM.generate_key(256)}
    kms = FakeKMS("alias/castate", service)
    fields = kms.wrap(MASTER, AAD)
    assert kms.unwrap(fields, AAD, "keys/x") == MASTER
    with pytest.raises(WrongKeyError):
        FakeKMS("alias/other", service).unwrap(fields, AAD, "keys/x")
    with pytest.raises(TypeError):
        Secret()  # type: ignore[abstract]


async def test_a_kms_secret_opens_a_store(tmp_path: Path) -> None:
    service = {"alias/castate": AESGCM.generate_key(256)}
    kms = FakeKMS("alias/castate", service)
    async with castate.StateManager(castate.open(tmp_path / "s", key=kms)) as sm:
        await sm.save_session("s", {"v": 1})
    assert kms.calls == ["wrap"]
    other = FakeKMS("alias/castate", service)
    async with castate.StateManager(castate.open(tmp_path / "s", key=other)) as sm:
        assert await sm.load_session("s") == {"v": 1}
    assert other.calls == ["unwrap"]
    with pytest.raises(WrongKeyError):
        async with castate.StateManager(castate.open(tmp_path / "s", key=Passphrase("p", n=1024))) as sm:
            await sm.load_session("s")
