"""Typed values: built-in types castate keeps with their type, and the registry of user types.

A typed value sits in its parent node as a MessagePack *ext* value (a tagged scalar): the
ext type code says what it is and the ext data holds its canonical body (format.md §1.7).
A tuple, set, frozenset or registered user type whose inner value is too big to sit
inline becomes a ``T`` object instead, which points at the object holding that inner value.

Reading is strict: a body that is not the canonical body of its tag is corruption, never a
silent coercion. Reading never imports anything: a user type is found by the name it was
registered under in this process (``castate.register``), not by a module path stored in
the data, so a tampered store cannot make castate construct an arbitrary class.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime as dt
import enum
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ormsgpack

from castate.errors import RegistrationError

# MessagePack ext type codes (format.md §1.7).
EXT_DATETIME = 1
EXT_DATE = 2
EXT_TIME = 3
EXT_TIMEDELTA = 4
EXT_UUID = 5
EXT_DECIMAL = 6
EXT_TUPLE = 7
EXT_SET = 8
EXT_FROZENSET = 9
EXT_USER = 10
EXT_NDARRAY = 11

CONTAINER_CODES = frozenset((EXT_TUPLE, EXT_SET, EXT_FROZENSET, EXT_USER, EXT_NDARRAY))
CODE_NAMES = {
    EXT_DATETIME: "datetime",
    EXT_DATE: "date",
    EXT_TIME: "time",
    EXT_TIMEDELTA: "timedelta",
    EXT_UUID: "UUID",
    EXT_DECIMAL: "Decimal",
    EXT_TUPLE: "tuple",
    EXT_SET: "set",
    EXT_FROZENSET: "frozenset",
    EXT_USER: "registered type",
    EXT_NDARRAY: "ndarray",
}
CONTAINER_TYPES: dict[type, int] = {tuple: EXT_TUPLE, set: EXT_SET, frozenset: EXT_FROZENSET}

# The key a user type read as a plain dict carries (``unregistered_as_dicts``).
TAG_KEY = "__castate_type__"
# A Decimal's text is at most this long (a longer one is refused, like an over-long key).
DECIMAL_MAX = 2048
# The canonical NaN: every NaN is stored as these bytes (float 64, quiet, positive).
CANONICAL_NAN = b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"


class BadBody(Exception):
    """A typed value's body that does not match its tag (the caller names the object)."""


class Unregistered(Exception):
    """A stored user type this process cannot rebuild (the decoder finds its path)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason


# -- time zones -------------------------------------------------------------------------------


def _tz_state(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if type(tz) is ZoneInfo:
        if tz.key is None:
            raise ValueError("a ZoneInfo without a key (made from a file) cannot be stored")
        return tz.key
    if type(tz) is dt.timezone:
        args = tz.__getinitargs__()  # type: ignore[attr-defined]  # (offset,) or (offset, name given)
        off: dt.timedelta = args[0]
        micros = (off.days * 86400 + off.seconds) * 1_000_000 + off.microseconds
        return [micros, *args[1:]]
    raise ValueError(f"tzinfo {type(tz).__name__} (only zoneinfo.ZoneInfo and datetime.timezone are kept)")


def _tz_from_state(state: Any) -> dt.tzinfo | None:
    if state is None:
        return None
    if type(state) is str:
        try:
            return ZoneInfo(state)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise BadBody(f"time zone {state!r} is not known here: {exc}") from None
    if type(state) is list and len(state) in (1, 2) and type(state[0]) is int:
        off = dt.timedelta(microseconds=state[0])
        if len(state) == 1:
            return dt.timezone(off)
        if type(state[1]) is str:
            return dt.timezone(off, state[1])
    raise BadBody(f"bad time zone {state!r}")


# -- built-in scalars -------------------------------------------------------------------------


def _datetime_body(v: dt.datetime) -> bytes:
    tz = _tz_state(v.tzinfo)
    return ormsgpack.packb([v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, tz])


def _date_body(v: dt.date) -> bytes:
    return ormsgpack.packb([v.year, v.month, v.day])


def _time_body(v: dt.time) -> bytes:
    return ormsgpack.packb([v.hour, v.minute, v.second, v.microsecond, v.fold, _tz_state(v.tzinfo)])


def _timedelta_body(v: dt.timedelta) -> bytes:
    return ormsgpack.packb([v.days, v.seconds, v.microseconds])


def _uuid_body(v: uuid.UUID) -> bytes:
    return v.bytes


def _decimal_body(v: Decimal) -> bytes:
    text = str(v)  # exact: sign, digits, exponent, NaN payloads and infinities all round-trip
    if len(text) > DECIMAL_MAX:
        raise ValueError(f"Decimal of {len(text)} characters (at most {DECIMAL_MAX})")
    return text.encode("ascii")


#: type -> (ext code, body of a value of exactly that type). A body function raises
#: ValueError for a value of the type that castate cannot keep exactly.
SCALARS: dict[type, tuple[int, Callable[[Any], bytes]]] = {
    dt.datetime: (EXT_DATETIME, _datetime_body),
    dt.date: (EXT_DATE, _date_body),
    dt.time: (EXT_TIME, _time_body),
    dt.timedelta: (EXT_TIMEDELTA, _timedelta_body),
    uuid.UUID: (EXT_UUID, _uuid_body),
    Decimal: (EXT_DECIMAL, _decimal_body),
}


def scalar_ext(value: Any) -> bytes:
    """The canonical MessagePack (an ext value) of a built-in typed scalar; ValueError if it
    cannot be kept exactly (say a datetime whose tzinfo is neither ZoneInfo nor timezone)."""
    code, body = SCALARS[type(value)]
    return ormsgpack.packb(ormsgpack.Ext(code, body(value)))


def _scalar_from(code: int, data: bytes) -> Any:
    try:
        if code == EXT_DATETIME:
            y, mo, d, h, mi, s, us, fold, tz = _fields(data, 9, ints=8)
            value: Any = dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_from_state(tz), fold=fold)
        elif code == EXT_DATE:
            value = dt.date(*_fields(data, 3, ints=3))
        elif code == EXT_TIME:
            h, mi, s, us, fold, tz = _fields(data, 6, ints=5)
            value = dt.time(h, mi, s, us, tzinfo=_tz_from_state(tz), fold=fold)
        elif code == EXT_TIMEDELTA:
            value = dt.timedelta(*_fields(data, 3, ints=3))
        elif code == EXT_UUID:
            value = uuid.UUID(bytes=bytes(data))
        else:
            value = Decimal(bytes(data).decode("ascii"))
        again = SCALARS[type(value)][1](value)
    except BadBody:
        raise
    except Exception as exc:  # a body that parses to nothing valid: what exactly failed is in the message
        raise BadBody(f"bad {CODE_NAMES[code]} body: {exc}") from None
    if again != data:
        raise BadBody(f"{CODE_NAMES[code]} body is not canonical")
    return value


def _fields(data: bytes, n: int, ints: int) -> list[Any]:
    """The ``n`` fields of a body, the first ``ints`` of them ints (the last may be a time zone)."""
    items = ormsgpack.unpackb(data)
    if type(items) is not list or len(items) != n or any(type(x) is not int for x in items[:ints]):
        raise BadBody("bad fields")
    return items


# -- numpy arrays (only when numpy is installed) --------------------------------------------------

# dtype kinds castate keeps: bool, ints, floats, complex, datetime64/timedelta64, bytes, str.
# Never object ("O") or void/structured ("V") dtypes: their bytes are not their values.
NDARRAY_KINDS = frozenset("biufcmMSU")


def ndarray_type() -> type | None:
    """numpy.ndarray if numpy is imported (a state can hold an array only then), else None."""
    numpy = sys.modules.get("numpy")
    return None if numpy is None else numpy.ndarray


def ndarray_state(arr: Any) -> list[Any]:
    """``[dtype, shape, data]`` of an array: its dtype string (with byte order), its shape,
    and its C-order bytes; ValueError for a dtype castate does not keep."""
    dtype = arr.dtype
    if dtype.kind not in NDARRAY_KINDS or dtype.fields is not None:
        raise ValueError(f"numpy dtype {dtype} (kept: bool, int, uint, float, complex, datetime64, bytes, str)")
    numpy = sys.modules["numpy"]
    return [dtype.str, list(arr.shape), numpy.ascontiguousarray(arr).tobytes()]


def _numpy() -> Any:
    """numpy, castate's own optional dependency (imported by this fixed name, never a stored one)."""
    module = sys.modules.get("numpy")
    if module is not None:
        return module
    try:
        import numpy
    except ImportError:
        raise Unregistered("numpy.ndarray", "needs numpy, which is not installed") from None
    return numpy


def _ndarray_from(state: Any) -> Any:
    numpy = _numpy()
    if (
        type(state) is not list
        or len(state) != 3
        or type(state[0]) is not str
        or type(state[1]) is not list
        or any(type(n) is not int or n < 0 for n in state[1])
        or type(state[2]) is not bytes
    ):
        raise BadBody("bad ndarray body")
    try:
        dtype = numpy.dtype(state[0])
    except (TypeError, ValueError) as exc:
        raise BadBody(f"bad ndarray dtype {state[0]!r}: {exc}") from None
    if dtype.kind not in NDARRAY_KINDS or dtype.fields is not None or dtype.str != state[0]:
        raise BadBody(f"bad ndarray dtype {state[0]!r}")
    count = 1
    for n in state[1]:
        count *= n
    if count * dtype.itemsize != len(state[2]):
        raise BadBody(f"ndarray data of {len(state[2])} bytes for shape {state[1]} of {dtype}")
    return numpy.frombuffer(state[2], dtype=dtype).reshape(state[1]).copy()  # a writable array of its own


# -- the registry --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class UserType:
    """A registered type: its stored name, the class, and how to go to and from its state."""

    name: str
    cls: type
    to_state: Callable[[Any], Any]
    from_state: Callable[[Any], Any]
    kind: str  # "enum", "dataclass", "pydantic" or "custom"

    @property
    def mutable(self) -> bool:
        return self.kind != "enum"


_by_name: dict[str, UserType] = {}
_by_type: dict[type, UserType] = {}
_lock = threading.Lock()

#: Names castate uses (or will) for its own types; user types cannot take them.
RESERVED = frozenset(
    {
        "datetime",
        "date",
        "time",
        "timedelta",
        "uuid",
        "decimal",
        "tuple",
        "set",
        "frozenset",
        "dict",
        "list",
        "str",
        "bytes",
        "int",
        "float",
        "bool",
        "none",
        "ndarray",
    }
)
RESERVED_PREFIXES = ("castate", "numpy.", "builtins.")
NAME_MAX = 256

T = TypeVar("T", bound=type)


def register(
    cls: T,
    *,
    name: str,
    to_state: Callable[[Any], Any] | None = None,
    from_state: Callable[[Any], Any] | None = None,
) -> T:
    """Let castate store instances of ``cls`` under ``name`` and rebuild them on read.

    ``cls`` is an Enum subclass (stored by member value), a dataclass or a pydantic v2
    model (stored as a dict of its fields, so equal instances dedup like dicts), or any
    class with ``to_state``/``from_state`` (``to_state(obj)`` returns a value castate
    stores, ``from_state(value)`` rebuilds the object). Only exact instances of ``cls``
    match, not subclasses. Raises ``RegistrationError`` for a reserved or taken name, or a
    class registered already.
    """
    _check_name(name)
    if not isinstance(cls, type):
        raise RegistrationError(f"register() takes a class, not {type(cls).__name__}")
    if (to_state is None) != (from_state is None):
        raise RegistrationError("pass both to_state and from_state, or neither")
    if to_state is not None and from_state is not None:
        entry = UserType(name, cls, to_state, from_state, "custom")
    elif issubclass(cls, enum.Enum):
        entry = UserType(name, cls, _enum_state, cls, "enum")
    elif _is_pydantic(cls):
        entry = UserType(name, cls, _pydantic_state, cls.model_validate, "pydantic")  # type: ignore[attr-defined]  # a pydantic model, not imported to be typed
    elif dataclasses.is_dataclass(cls):
        entry = UserType(name, cls, _dataclass_state, _dataclass_builder(cls), "dataclass")
    else:
        raise RegistrationError(
            f"{cls.__qualname__} is not an Enum, a dataclass or a pydantic model: pass to_state= and from_state="
        )
    if cls in SCALARS or cls in CONTAINER_TYPES or cls in (dict, list, str, bytes, int, float, bool, type(None)):
        raise RegistrationError(f"{cls.__name__} is built into castate's value domain")
    with _lock:
        if name in _by_name:
            raise RegistrationError(f"the name {name!r} is taken by {_by_name[name].cls.__qualname__}")
        if cls in _by_type:
            raise RegistrationError(f"{cls.__qualname__} is registered already, as {_by_type[cls].name!r}")
        _by_name[name] = entry
        _by_type[cls] = entry
    return cls


def unregister(name: str) -> None:
    """Forget the type registered under ``name`` (for tests and reloads); KeyError if none."""
    with _lock:
        entry = _by_name.pop(name)
        _by_type.pop(entry.cls, None)


def registered(cls: type) -> UserType | None:
    return _by_type.get(cls)


def _check_name(name: Any) -> None:
    if type(name) is not str or not name:
        raise RegistrationError(f"a registered name must be a non-empty str, not {name!r}")
    if len(name) > NAME_MAX:
        raise RegistrationError(f"a registered name has at most {NAME_MAX} characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise RegistrationError(f"name {name!r} is not valid UTF-8") from None
    low = name.lower()
    if low in RESERVED or low.startswith(RESERVED_PREFIXES):
        raise RegistrationError(f"the name {name!r} is reserved by castate")


def _enum_state(member: enum.Enum) -> Any:
    return member.value


def _is_pydantic(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # a pydantic model's module has imported pydantic already
    return pydantic is not None and issubclass(cls, pydantic.BaseModel)


def _pydantic_state(model: Any) -> dict[str, Any]:
    # Iterating a model gives its fields (and extra fields) by name, not converted: nested
    # models stay models, so they are stored as registered types of their own.
    return dict(model)


def _dataclass_state(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _dataclass_builder(cls: type) -> Callable[[Any], Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    init = {f.name for f in dataclasses.fields(cls) if f.init}

    def build(state: Any) -> Any:
        if type(state) is not dict or set(state) != names:
            raise ValueError(f"its fields are {sorted(names)}, the stored state has {sorted(state)}")
        obj = cls(**{k: v for k, v in state.items() if k in init})
        for k in names - init:
            object.__setattr__(obj, k, state[k])  # also for frozen dataclasses
        return obj

    return build


# -- reading ---------------------------------------------------------------------------------------

# How user types read: rebuilt by their registration (STRICT: an unknown name raises),
# rebuilt when registered else a tagged dict (TAGGED_UNKNOWN), or always a tagged dict
# without running any user code (TAGGED_ALL, for fsck and the walks of maintenance).
STRICT, TAGGED_UNKNOWN, TAGGED_ALL = 0, 1, 2
_mode: contextvars.ContextVar[int] = contextvars.ContextVar("castate_user_types", default=STRICT)


@contextlib.contextmanager
def reading_user_types(mode: int) -> Iterator[None]:
    token = _mode.set(mode)
    try:
        yield
    finally:
        _mode.reset(token)


def unregistered_as_dicts() -> contextlib.AbstractContextManager[None]:
    """Within this block, a stored user type that is not registered (or whose from_state
    refuses its state) reads as ``{"__castate_type__": name, "value": state}`` instead of
    raising ``UnregisteredTypeError``."""
    return reading_user_types(TAGGED_UNKNOWN)


def tagged(name: str, inner: Any) -> dict[str, Any]:
    return {TAG_KEY: name, "value": inner}


def build_container(code: int, inner: Any, name: str | None = None) -> Any:
    """The typed value of a container tag around its (already built) inner value."""
    if code == EXT_TUPLE:
        if type(inner) is not list:
            raise BadBody("a tuple whose body is not a list")
        return tuple(inner)
    if code == EXT_NDARRAY:
        if _mode.get() == TAGGED_ALL:
            return tagged("numpy.ndarray", inner)
        try:
            return _ndarray_from(inner)
        except Unregistered:
            if _mode.get() != STRICT:
                return tagged("numpy.ndarray", inner)
            raise
    if code in (EXT_SET, EXT_FROZENSET):
        if type(inner) is not list:
            raise BadBody(f"a {CODE_NAMES[code]} whose body is not a list")
        try:
            out: Any = set(inner) if code == EXT_SET else frozenset(inner)
        except TypeError:
            if _mode.get() != STRICT:  # holds user types read as (unhashable) tagged dicts
                return tagged(CODE_NAMES[code], inner)
            raise BadBody(f"a {CODE_NAMES[code]} holding an unhashable value") from None
        if len(out) != len(inner):
            raise BadBody(f"a {CODE_NAMES[code]} holding a value twice")
        return out
    assert name is not None
    mode = _mode.get()
    entry = _by_name.get(name) if mode != TAGGED_ALL else None
    if entry is None:
        if mode != STRICT:
            return tagged(name, inner)
        raise Unregistered(name, "is not registered in this process (castate.register it)")
    try:
        return entry.from_state(inner)
    except Exception as exc:
        if mode != STRICT:
            return tagged(name, inner)
        raise Unregistered(name, f"could not be rebuilt from its stored state: {exc}") from None


def readable(value: Any) -> tuple[str, str] | None:
    """(type label, text) of a built-in typed scalar or a non-finite float, as the diff and the
    command line show it (``("datetime", "2026-12-05T02:10:23+00:00")``); None otherwise.
    A datetime or time in a ZoneInfo zone adds the zone key in brackets (RFC 9557)."""
    t = type(value)
    if t is float:
        return None if value == value and value not in (float("inf"), float("-inf")) else ("float", repr(value))
    if t is dt.datetime or t is dt.time:
        text = value.isoformat()
        if type(value.tzinfo) is ZoneInfo:
            text += f"[{value.tzinfo.key}]"
        return (t.__name__, text)
    if t is dt.date:
        return ("date", value.isoformat())
    if t is dt.timedelta:
        return ("timedelta", str(value))
    if t is uuid.UUID:
        return ("UUID", str(value))
    if t is Decimal:
        return ("Decimal", str(value))
    return None


class HookError:
    """Where the last ext_hook failure of this thread is kept: ormsgpack replaces an
    exception raised in the hook by its own ValueError, so the reader fetches it from here."""

    _tls = threading.local()

    @classmethod
    def take(cls) -> Exception | None:
        exc: Exception | None = getattr(cls._tls, "exc", None)
        cls._tls.exc = None
        return exc

    @classmethod
    def put(cls, exc: Exception) -> None:
        cls._tls.exc = exc


def ext_hook(code: int, data: bytes) -> Any:
    """ormsgpack's ext_hook: the typed value of one ext value in a node body."""
    try:
        if code in CONTAINER_CODES:
            if code == EXT_USER:
                body = ormsgpack.unpackb(data, ext_hook=ext_hook)
                if type(body) is not list or len(body) != 2 or type(body[0]) is not str:
                    raise BadBody("bad registered-type body")
                return build_container(code, body[1], body[0])
            return build_container(code, ormsgpack.unpackb(data, ext_hook=ext_hook))
        if code in CODE_NAMES:
            return _scalar_from(code, data)
        raise BadBody(f"unknown ext type {code}")
    except (BadBody, Unregistered) as exc:
        HookError.put(exc)
        raise
    except ValueError as exc:
        if str(exc) == "ext_hook failed":  # an inner ext_hook failed: its exception is kept already
            raise
        HookError.put(BadBody(f"bad {CODE_NAMES.get(code, code)} body: {exc}"))
        raise


__all__ = [
    "CANONICAL_NAN",
    "RESERVED",
    "TAG_KEY",
    "BadBody",
    "Unregistered",
    "UserType",
    "build_container",
    "ext_hook",
    "readable",
    "reading_user_types",
    "register",
    "registered",
    "scalar_ext",
    "unregister",
    "unregistered_as_dicts",
]
