"""castate's exception hierarchy: every error castate raises on purpose is a CastateError."""

from __future__ import annotations


class CastateError(Exception):
    """Base class of every error castate raises on purpose."""


class NotFoundError(CastateError, KeyError):
    """A session, checkpoint, ref or commit that was asked for does not exist."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else "not found"


class InvalidKeyError(CastateError, ValueError):
    """A session id, key or checkpoint name that castate cannot store safely."""


class UsageError(CastateError, ValueError):
    """An argument castate cannot use that is not a key: a command-line option, an HTTP
    request's parameter or body, an address to serve on."""


class UnsupportedValueError(CastateError, TypeError):
    """A value outside castate's value domain; ``path`` names where it sits in the state."""

    def __init__(self, message: str, path: str = "state") -> None:
        super().__init__(f"{message} at {path}")
        self.path = path


class RegistrationError(CastateError, ValueError):
    """``castate.register`` refused: a reserved or taken name, or a class registered already."""


class UnregisteredTypeError(CastateError, TypeError):
    """A stored user type that this process cannot rebuild: its name is not registered, or
    its ``from_state`` refused the stored state. ``name`` is the stored type name, ``path``
    where it sits in the state. ``castate.unregistered_as_dicts()`` reads it as a tagged dict."""

    def __init__(self, name: str, reason: str, path: str = "state") -> None:
        super().__init__(
            f"stored type {name!r} {reason} at {path}; read it as a plain tagged dict with "
            "castate.unregistered_as_dicts()"
        )
        self.name = name
        self.path = path


class ConflictError(CastateError):
    """A compare-and-swap on a ref lost a race: another writer moved the ref first.

    ``ref`` is the internal ref name. On a session's save or checkpoint, ``session_id`` names
    the session, ``expected`` the head the caller built on and ``current`` the head the store
    holds now (commit ids in hex; None for "no session"), when castate knows them.
    ``StateManager.update_session`` retries such conflicts for you.
    """

    def __init__(
        self,
        message: str,
        ref: str | None = None,
        *,
        session_id: str | None = None,
        expected: str | None = None,
        current: str | None = None,
    ) -> None:
        super().__init__(message)
        self.ref = ref
        self.session_id = session_id
        self.expected = expected
        self.current = current


class AlreadyExistsError(ConflictError):
    """A new name (a forked or imported session) is taken: a usage error, not a race to retry.

    A ConflictError, so code that catches those keeps working."""


class StoreError(CastateError):
    """The store cannot be used as asked (not a castate store, closed, locked, I/O failure)."""


class StoreNotFoundError(StoreError):
    """There is no castate store where one was asked for (and nothing was created there)."""


class BackendUnavailableError(StoreError):
    """The store's server could not be reached, dropped the connection or did not answer in time.

    Whatever the call was, no ref is half-moved: a ref update either happened whole or not at
    all (when the connection broke during a commit, the error says the outcome is unknown;
    reload the ref to see). The next call reconnects once the server is back.
    """


class StoreIOError(StoreError, OSError):
    """The store's disk failed an operation (full, I/O error, no permission): an OSError with
    the system's ``errno`` and the ``filename`` it failed on.

    The call that raised it did not take effect: what the store held before is intact, and
    the next call works once the disk does (docs/reliability.md).
    """

    def __str__(self) -> str:
        return f"I/O error in the store: {OSError.__str__(self)}"


class KeyRequiredError(StoreError):
    """The store is encrypted and no key was given (``key=``, or ``CASTATE_PASSWORD``,
    ``CASTATE_KEY`` or ``CASTATE_KEY_FILE`` in the environment)."""


class WrongKeyError(StoreError):
    """The key given opens none of the encrypted store's key slots."""


class UnsupportedFormatError(StoreError):
    """The store or an object was written in a format version this castate cannot read."""


class CorruptionError(StoreError):
    """Stored bytes do not match what was written: never returned as data."""


class CorruptObjectError(CorruptionError):
    """An object failed verification (hash mismatch, undecodable frame or node); names its id."""

    def __init__(self, object_id: str, reason: str) -> None:
        super().__init__(f"corrupt object {object_id}: {reason}")
        self.object_id = object_id
        self.reason = reason


class MissingObjectError(CorruptionError):
    """An object that a reachable node points at is not in the store; names its id."""

    def __init__(self, object_id: str, detail: str = "") -> None:
        super().__init__(f"missing object {object_id}" + (f" ({detail})" if detail else ""))
        self.object_id = object_id


class CorruptFileError(CorruptionError):
    """A store file (pack, ref journal, config) is damaged; names the file and where."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt store file {path}: {reason}")
        self.path = path
        self.reason = reason


class KeyNotFoundError(NotFoundError, FileNotFoundError):
    """A key of the bytes storage interface does not exist (a FileNotFoundError, as that interface requires)."""


class StoreWarning(UserWarning):
    """Something about a store castate can work with but you should fix (a store others can read)."""
