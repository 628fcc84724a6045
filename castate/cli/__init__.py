"""The ``castate`` command: inspect, roll back, fork and clean up a castate store from a shell.

``castate [--store PATH] COMMAND ...``; the store is ``--store``, else ``$CASTATE_STORE``,
else ``./state``. An encrypted store's key comes from ``--key-file PATH``, the environment
(``CASTATE_PASSWORD``, ``CASTATE_KEY``, ``CASTATE_KEY_FILE``) or a passphrase prompt on a
terminal (castate/cli/encryption.py). docs/cli.md lists every command. Exit codes: 0 ok, 1 fsck found
damage, 2 bad usage (bad arguments, unknown names), 3 the command failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from castate.backends.base import Backend
from castate.backends.blob import BlobBackend
from castate.backends.urls import open_backend, scheme_of
from castate.cli import commands as c
from castate.cli import encryption
from castate.cli.output import Output, printable
from castate.codec.types import unregistered_as_dicts
from castate.errors import (
    AlreadyExistsError,
    CastateError,
    ConflictError,
    CorruptionError,
    InvalidKeyError,
    KeyRequiredError,
    NotFoundError,
    StoreError,
    StoreIOError,
    UnsupportedFormatError,
    UsageError,
    WrongKeyError,
)
from castate.keys import secret_from_env
from castate.repository.packs.upgrade import upgrade_store
from castate.sessions.manager import StateManager

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

DEFAULT_STORE = "./state"
REF_HELP = (
    "a session (its head), SESSION@NAME (newest checkpoint of that name), SESSION/NAME, a checkpoint id, "
    "a commit prefix; REF~N: N saves before (docs/cli.md, references)"
)
Command = Callable[[StateManager, argparse.Namespace, Output], Awaitable[int]]

EPILOG = """exit codes: 0 ok, 1 fsck found damage, 2 bad usage or unknown name, 3 the command failed
store: --store PATH, else $CASTATE_STORE, else ./state
encrypted store: --key-file PATH, else $CASTATE_PASSWORD, $CASTATE_KEY or $CASTATE_KEY_FILE, else a prompt
examples:
  castate sessions
  castate diff run-1/before_api run-1
  castate show run-1@before_api --path /messages/0
  castate forget --all --keep-last 5 --forget-named --dry-run && castate gc
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with what it echoes of the command line (a bad value, an unknown choice)
    escaped like every other human output: an argument can hold control characters too."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        super()._print_message("\n".join(printable(line) for line in message.split("\n")), file)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="castate",
        description="Inspect, roll back, fork and clean up a castate store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--store",
        metavar="PATH",
        help="the store: a directory, or a URL (sqlite:///file.db, postgresql://..., redis://..., s3://...); "
        "default: $CASTATE_STORE or ./state",
    )
    p.add_argument(
        "--key-file",
        metavar="PATH",
        help="the raw key of an encrypted store, in a file (else $CASTATE_PASSWORD, $CASTATE_KEY, "
        "$CASTATE_KEY_FILE, or a passphrase prompt on a terminal)",
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of errors")
    p.add_argument("--version", action="version", version=f"castate {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The global options are accepted after the command too (`castate sessions --store X`);
    # SUPPRESS keeps a command's parser from resetting what was given before the command.
    common = _Parser(add_help=False)
    common.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS, help="the store (as before the command)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of errors")
    # The key options: every command but `key add` and `key change`, whose --key-file is the NEW key.
    keyed = _Parser(add_help=False, parents=[common])
    keyed.add_argument(
        "--key-file", metavar="PATH", default=argparse.SUPPRESS, help="the raw key of an encrypted store, in a file"
    )

    def add(name: str, help_: str, example: str, fn: Command | None, *, json: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name,
            parents=[keyed],
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.set_defaults(func=fn)
        if json:
            sp.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sp

    sp = add("init", "create an empty store", "castate --store ./state init --encrypt", None, json=False)
    sp.add_argument(
        "--encrypt",
        action="store_true",
        help="make it encrypted: the passphrase from $CASTATE_PASSWORD or typed twice, or a raw key (--key-file)",
    )
    add(
        "upgrade",
        "move a format-1 database store's objects into format-2 packs",
        "castate --store sqlite:///state.db upgrade",
        None,
    )

    sp = add(
        "sessions",
        "list sessions with when they last changed and their checkpoint count",
        "castate sessions --json",
        c.cmd_sessions,
    )
    _full(sp)

    sp = add(
        "checkpoints", "list a session's checkpoints, newest first", "castate checkpoints run-1", c.cmd_checkpoints
    )
    sp.add_argument("session", metavar="SESSION")
    _full(sp)

    sp = add("log", "list a session's saves, newest first", "castate log run-1 -n 20 --oneline", c.cmd_log)
    sp.add_argument("session", metavar="SESSION")
    sp.add_argument("-n", "--limit", type=_positive, metavar="N", help="show at most N saves")
    sp.add_argument("--oneline", action="store_true", help="one line per save: commit, time, checkpoints, metadata")
    _full(sp)

    sp = add(
        "reflog",
        "list ref changes (saves, checkpoints, restores, removals), newest first",
        "castate reflog run-1 -n 10",
        c.cmd_reflog,
    )
    sp.add_argument("session", metavar="SESSION", nargs="?", help="only this session's head and checkpoints")
    sp.add_argument("-n", "--limit", type=_positive, metavar="N", help="show at most N changes")
    sp.add_argument("--all", action="store_true", help="include castate's own records (meta/health: gc and fsck runs)")
    _full(sp)

    sp = add(
        "show",
        "print a state (or the part at --path) as JSON",
        "castate show run-1 --path /messages/0",
        c.cmd_show,
        json=False,
    )
    sp.add_argument("ref", metavar="REF", help=REF_HELP + "; REF:/POINTER prints one value")
    sp.add_argument("--path", metavar="POINTER", help="a JSON pointer (RFC 6901) into the state, e.g. /agents/coder")
    sp.add_argument("--commit", action="store_true", help="print the commit (time, parents, metadata) instead")

    sp = add(
        "diff",
        "show what changed from state A to state B",
        "castate diff run-1~1 run-1 --patch",
        c.cmd_diff,
        json=False,
    )
    sp.add_argument("a", metavar="A", help=REF_HELP)
    sp.add_argument("b", metavar="B", help=REF_HELP)
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the changes as JSON (op, path, old, new)")
    fmt.add_argument("--patch", action="store_true", help="print an RFC 6902 JSON Patch")

    sp = add(
        "checkpoint", "checkpoint a session's current state", "castate checkpoint run-1 before_deploy", c.cmd_checkpoint
    )
    sp.add_argument("session", metavar="SESSION")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata to record (repeatable)")

    sp = add(
        "restore",
        "make a checkpoint (or commit) the current state of its session",
        "castate restore run-1@before_deploy",
        c.cmd_restore,
    )
    sp.add_argument("checkpoint", metavar="REF", help=REF_HELP)
    sp.add_argument("--session", metavar="S", help="the session to restore into (default: the checkpoint's own)")

    sp = add(
        "fork",
        "start a new session from a checkpoint, session or commit (no copy)",
        "castate fork run-1@before_deploy run-1-retry",
        c.cmd_fork,
    )
    sp.add_argument("checkpoint", metavar="REF", help=REF_HELP)
    sp.add_argument("new_session", metavar="NEW_SESSION")

    sp = add(
        "rm",
        "remove sessions with their checkpoints (refs only; gc frees the bytes)",
        "castate rm run-1 run-2",
        c.cmd_rm,
    )
    sp.add_argument("sessions", metavar="SESSION", nargs="+")

    sp = add(
        "forget",
        "remove the checkpoints (or whole sessions) a retention policy does not keep",
        "castate forget --all --keep-last 3 --forget-named --dry-run",
        c.cmd_forget,
    )
    sp.add_argument("sessions", metavar="SESSION", nargs="*", help="sessions whose checkpoints to consider")
    sp.add_argument("--all", action="store_true", help="consider the checkpoints of every session")
    sp.add_argument(
        "--sessions",
        dest="whole_sessions",
        action="store_true",
        help="decide on whole sessions (timed by when their head last moved) instead of checkpoints",
    )
    sp.add_argument("--keep-last", type=_count, metavar="N", help="keep the newest N (and every named one)")
    sp.add_argument("--keep-within", metavar="DURATION", help="keep everything younger than DURATION (30d, 12h, 2w)")
    sp.add_argument("--keep-hourly", type=_count, metavar="N", help="keep the newest of each of the last N hours")
    sp.add_argument("--keep-daily", type=_count, metavar="N", help="keep the newest of each of the last N days")
    sp.add_argument("--keep-weekly", type=_count, metavar="N", help="keep the newest of each of the last N weeks")
    sp.add_argument("--keep-monthly", type=_count, metavar="N", help="keep the newest of each of the last N months")
    sp.add_argument(
        "--forget-named",
        action="store_true",
        help="apply the policy to named checkpoints too (otherwise every name but checkpoint and auto is kept)",
    )
    _full(sp)
    sp.add_argument("--dry-run", action="store_true", help="show what would be forgotten; change nothing")

    sp = add("gc", "delete objects that nothing refers to any more", "castate gc --dry-run", c.cmd_gc)
    sp.add_argument(
        "--grace", default="1h", metavar="DURATION", help="keep unreferenced objects younger than this (default 1h)"
    )
    sp.add_argument(
        "--reflog-expire",
        default="7d",
        metavar="DURATION",
        help="keep what the reflog recorded within this, and forget older entries (default 7d)",
    )
    sp.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")

    sp = add("fsck", "check that every ref leads to complete, intact data", "castate fsck --full", c.cmd_fsck)
    sp.add_argument("--full", action="store_true", help="also verify every stored object and count dangling ones")
    sp.add_argument("--no-quarantine", action="store_true", help="report corrupt objects but leave them in place")
    sp.add_argument(
        "--repair-refs",
        action="store_true",
        help="rebuild a damaged ref journal from its intact records (the damaged file is kept), "
        "and move refs whose data is damaged back to their newest intact state in the reflog",
    )

    sp = add("stats", "show objects, bytes, logical sizes and the dedup ratio", "castate stats --top 5", c.cmd_stats)
    sp.add_argument("--top", type=_count, default=10, metavar="N", help="list the N largest sessions (default 10)")

    add(
        "doctor",
        "explain the store's health in plain words (a quick read-only check, the last gc and fsck)",
        "castate doctor",
        c.cmd_doctor,
    )

    sp = add(
        "completion",
        "print a shell completion script (bash, zsh or fish)",
        "castate completion bash > ~/.local/share/bash-completion/completions/castate",
        None,
        json=False,
    )
    sp.add_argument("shell", choices=["bash", "zsh", "fish"], metavar="SHELL", help="bash, zsh or fish")

    sp = add(
        "export",
        "write a session with its checkpoints to one bundle file",
        "castate export run-1 run-1.castate",
        c.cmd_export,
    )
    sp.add_argument("session", metavar="SESSION")
    sp.add_argument("file", metavar="FILE")

    sp = add(
        "import",
        "import a session from a bundle file",
        "castate import run-1.castate --session run-1-copy",
        c.cmd_import,
    )
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--session", metavar="S", help="import under this session id instead of the bundle's")
    sp.add_argument(
        "--bundle-key-file",
        metavar="PATH",
        help="the raw key of the store an encrypted bundle came from (else $CASTATE_BUNDLE_PASSWORD, "
        "$CASTATE_BUNDLE_KEY, $CASTATE_BUNDLE_KEY_FILE, or this store's own key)",
    )
    sp.add_argument(
        "--plain",
        action="store_true",
        help="let an encrypted bundle go into an empty plain store, decrypted (else that is refused)",
    )

    sp = add(
        "import-marsys",
        "import a MARSYS FileStorageBackend directory (sessions/ and checkpoints/ JSON files)",
        "castate --store ./state import-marsys ./marsys_state",
        c.cmd_import_marsys,
    )
    sp.add_argument("source", metavar="DIR", help="the MARSYS base_path")
    sp.add_argument("--no-overwrite", action="store_true", help="skip keys the store holds with other content")

    _key_parser(add, common)

    sp = add(
        "ui",
        "serve a local web page to explore the store (needs castate[ui])",
        "castate ui --port 8765",
        None,
        json=False,
    )
    sp.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1; loopback only)")
    sp.add_argument("--port", type=_port, default=8765, metavar="N", help="port (default 8765; 0 picks a free one)")
    sp.add_argument(
        "--allow-writes",
        action="store_true",
        help="offer restore, fork and checkpoint (read-only otherwise)",
    )
    sp.add_argument(
        "--allow-remote", action="store_true", help="allow an address other than loopback (the page has no login)"
    )
    return p


def _key_parser(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """``castate key list|add|remove|change``: an encrypted store's key slots."""
    sp = add(
        "key",
        "list, add, remove or change the passphrases and keys of an encrypted store",
        "CASTATE_NEW_PASSWORD=... castate key add --label laptop",
        encryption.cmd_key,
        json=False,
    )
    ops = sp.add_subparsers(dest="key_command", metavar="ACTION", required=True)

    def op(name: str, help_: str, example: str, parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
        action = ops.add_parser(
            name,
            parents=[parent],
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        action.add_argument("--json", action="store_true", help="print JSON for scripts")
        return action

    opening = _Parser(add_help=False, parents=[common])
    opening.add_argument(
        "--key-file", metavar="PATH", default=argparse.SUPPRESS, help="the raw key that opens the store, in a file"
    )
    op("list", "list the key slots (* marks the one whose key opened the store)", "castate key list", opening)
    for name, help_, example in (
        (
            "add",
            "add a key slot for a new passphrase (typed twice, or $CASTATE_NEW_PASSWORD) or raw key (--key-file)",
            "castate --key-file old.key key add --key-file new.key --label ci",
        ),
        (
            "change",
            "add a slot for a new passphrase or key, then remove the slot that opened the store",
            "CASTATE_PASSWORD=old CASTATE_NEW_PASSWORD=new castate key change",
        ),
    ):
        action = op(name, help_, example, common)
        action.add_argument(
            "--key-file",
            dest="new_key_file",
            metavar="PATH",
            help="the NEW raw key, in a file (the key that opens the store goes before the command: "
            "castate --key-file OLD key ...)",
        )
        action.add_argument("--label", metavar="L", help="a note shown by `castate key list`")
    action = op("remove", "remove a key slot (never the last one)", "castate key remove 3fa9c1d2", opening)
    action.add_argument("slot", metavar="SLOT", help="the slot id, or a unique prefix of it")
    action.add_argument("--force", action="store_true", help="remove the slot whose key opened the store now too")


def _full(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--full", action="store_true", help="print whole commit and checkpoint ids, not unique prefixes")


def _version() -> str:
    from castate import __version__

    return __version__


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return n


def _port(text: str) -> int:
    n = _count(text)
    if n > 65535:
        raise argparse.ArgumentTypeError("must be at most 65535")
    return n


def _positive(text: str) -> int:
    n = _count(text)
    if n == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


#: The commands that write into a store that may be empty, and so create it when missing
#: (besides ``init``). Every other command needs an existing store: reading a missing one is
#: an error naming it (exit 3), whatever the store kind.
CREATING = frozenset(("import", "import-marsys"))


def _backend(path: str, *, create: bool) -> Backend | BlobBackend:
    """The backend a --store value names: a directory, or a store URL (sqlite://, postgresql://, redis://, s3://)."""
    try:
        return open_backend(path, create=create)
    except ValueError as exc:  # a malformed URL: bad usage
        raise UsageError(f"--store: {exc}") from None


def _make(path: str, create: bool) -> Backend | BlobBackend:
    return _backend(path, create=create)


async def _run_init(path: str, args: argparse.Namespace, out: Output) -> int:
    if args.encrypt:
        return await encryption.init_encrypted(path, args, _make, out)
    if getattr(args, "key_file", None) is not None:
        raise UsageError("init --key-file makes an encrypted store only with --encrypt")
    if scheme_of(path):
        backend = _backend(path, create=True)
        await backend.open()  # creates or migrates the database schema
        await backend.close()
        out.line(f"{backend.location} is ready.")
        return c.EXIT_OK
    existed = os.path.exists(os.path.join(path, "castate.json"))
    backend = _backend(path, create=True)
    await backend.open()
    await backend.close()
    if existed:
        encrypted = bool(await encryption.peek_slots(_backend(path, create=False)))
        out.line(f"{path} is already {'an encrypted' if encrypted else 'a'} castate store.")
    else:
        out.line(f"Created an empty castate store at {path}.")
        if secret_from_env() is not None:
            out.line("A key is set in the environment: the store becomes encrypted with it at its first use.")
    return c.EXIT_OK


async def _run_upgrade(path: str, args: argparse.Namespace, out: Output) -> int:
    backend = _backend(path, create=False)
    if not isinstance(backend, BlobBackend):
        out.line(f"{path}: an in-process store has no older format; nothing to upgrade.")
        return c.EXIT_OK
    report = await upgrade_store(backend)
    if args.json:
        out.json(
            {"store": report.location, "legacy": report.legacy, "packed": report.packed, "damaged": report.damaged}
        )
    elif not report.legacy:
        out.line(f"{report.location} holds no format-1 objects; nothing to upgrade.")
    else:
        out.line(f"{report.location}: moved {report.legacy} format-1 objects into packs ({report.packed} new).")
        if report.damaged:
            out.line(f"{len(report.damaged)} damaged objects were kept aside as quarantine/<id> blobs.")
    return c.EXIT_FAILED if report.damaged else c.EXIT_OK


async def _run(args: argparse.Namespace, out: Output) -> int:
    path = args.store or os.environ.get("CASTATE_STORE") or DEFAULT_STORE
    if args.command == "completion":  # needs no store
        return c.cmd_completion(args, _parser())
    if args.command == "init":  # the one command that may create the store
        return await _run_init(path, args, out)
    if args.command == "upgrade":  # before opening: a format-1 store does not open
        return await _run_upgrade(path, args, out)
    args.store_path = path
    func: Command = args.func
    if args.command == "ui":
        ui = _load_ui(args, out)
        if ui is None:
            return c.EXIT_FAILED
        func = ui

    async def repair(sm: StateManager) -> None:  # before opening: a damaged journal stops that
        if args.command == "fsck" and args.repair_refs:
            args.ref_repair = await sm.repair_refs()

    sm = await encryption.open_manager(path, args, _make, create=args.command in CREATING, before_open=repair)
    try:
        return int(await func(sm, args, out))
    finally:
        await sm.close()


def _load_ui(args: argparse.Namespace, out: Output) -> Command | None:
    """``castate ui``: checks the address, then imports the optional UI (None when it is not installed)."""
    from castate.cli.ui import missing_extra
    from castate.ui.address import check_address

    check_address(args.host, args.allow_remote)
    missing = missing_extra()
    if missing:
        out.error(f"castate ui needs the optional extra castate[ui] (missing: {missing}); pip install 'castate[ui]'")
        return None
    from castate.cli.ui import cmd_ui

    return cmd_ui


_HINTS: list[tuple[type[BaseException], str, int]] = [
    (NotFoundError, "list what exists with `castate sessions` or `castate checkpoints SESSION`", c.EXIT_USAGE),
    (InvalidKeyError, "see `castate COMMAND --help`", c.EXIT_USAGE),
    (UsageError, "see `castate COMMAND --help`", c.EXIT_USAGE),
    (AlreadyExistsError, "", c.EXIT_USAGE),  # the message says what to do
    (ConflictError, "another process changed it meanwhile; look again and retry", c.EXIT_FAILED),
    (UnsupportedFormatError, "upgrade castate to read this store", c.EXIT_FAILED),
    (KeyRequiredError, "", c.EXIT_FAILED),  # the message says where a key comes from
    (
        WrongKeyError,
        "check the passphrase or key: $CASTATE_PASSWORD, $CASTATE_KEY, $CASTATE_KEY_FILE or --key-file",
        c.EXIT_FAILED,
    ),
    (CorruptionError, "run `castate fsck` to find and quarantine the damage", c.EXIT_FAILED),
    (StoreIOError, "the store's disk failed; free space or fix it and retry: what was stored is intact", c.EXIT_FAILED),
    (StoreError, "check --store (or $CASTATE_STORE)", c.EXIT_FAILED),
    (CastateError, "run with --debug for details", c.EXIT_FAILED),
    (FileNotFoundError, "check the file name", c.EXIT_USAGE),
    (PermissionError, "check the permissions of the store and files", c.EXIT_FAILED),
    (OSError, "check the store's disk and files", c.EXIT_FAILED),
]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    out = Output()
    try:
        # The command line has no user types registered: it shows them as tagged dicts.
        with unregistered_as_dicts():
            return asyncio.run(_run(args, out))
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        for kind, hint, code in _HINTS:
            if isinstance(exc, kind):
                message = str(exc) or type(exc).__name__
                if isinstance(exc, OSError) and exc.filename is not None:
                    message = f"{exc.strerror or exc}: {exc.filename}"
                if isinstance(exc, StoreError) and message.startswith("no castate store at"):
                    hint = "create one with `castate init`, or import into it with `castate import FILE`"
                if hint and "`castate" not in message and "pip install" not in message:  # no next step of its own
                    message = f"{message} ({hint})"
                out.error(_one_line(message))
                return code
        out.error(_one_line(f"unexpected {type(exc).__name__}: {exc} (run with --debug and report it)"))
        return c.EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
