"""The castate commands, one coroutine each, over a ``StateManager`` on the chosen store.

Each takes the manager, the parsed arguments and the output, and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from castate.backends.base import ReflogEntry, RefRepairReport
from castate.cli.encryption import encryption_facts
from castate.cli.output import (
    Column,
    Output,
    human_bytes,
    local_time,
    plural,
    short_value,
)
from castate.display import iso_time, to_json
from castate.errors import InvalidKeyError, NotFoundError, UsageError
from castate.keys import RawKey
from castate.repository import refs as names
from castate.repository.diff import to_patch
from castate.repository.health import read_runs
from castate.repository.moved import session_moved_ns
from castate.repository.refspec import Revision, abbrev_length, known_commits, short_checkpoint_ids
from castate.repository.retention import ForgetReport, Policy, parse_duration
from castate.repository.tree import Loader, entry_at, parse_pointer
from castate.sessions.manager import StateManager

EXIT_OK = 0
EXIT_DAMAGE = 1
EXIT_USAGE = 2
EXIT_FAILED = 3

FREE_ALL = "castate gc --reflog-expire 0 --grace 0"  # what frees every object no ref reaches, at once


def _short(hex_id: str | None, length: int = 12) -> str:
    return hex_id[:length] if hex_id else "-"


async def _abbrev(
    sm: StateManager, args: argparse.Namespace, shown: list[bytes], reflog: Sequence[ReflogEntry] | None = None
) -> int:
    """How many hex digits the listing prints per commit: all with --full, else git's unique prefix."""
    if getattr(args, "full", False):
        return 64
    return abbrev_length(shown, await known_commits(sm.repository, reflog))


def _ref_label(ref: str, short: dict[str, str]) -> str:
    """A ref as the user names it: a session id, a (shortened) checkpoint id, or the ref itself."""
    if ref.startswith(names.SESSIONS):
        try:
            return names.session_of_ref(ref)
        except UnicodeDecodeError:
            return ref
    if ref.startswith(names.CHECKPOINTS):
        return short.get(ref[len(names.CHECKPOINTS) :], ref[len(names.CHECKPOINTS) :])
    return ref


def _short_ids(args: argparse.Namespace, cpids: Sequence[str], others: Sequence[str] = ()) -> dict[str, str]:
    """Checkpoint id -> what a listing prints: the shortest form that resolves back (full with --full)."""
    if getattr(args, "full", False):
        return {c: c for c in cpids}
    valid = [c for c in cpids if _is_cpid(c)]
    short = short_checkpoint_ids(valid, [c for c in others if _is_cpid(c)])
    return {c: short.get(c, c) for c in cpids}


def _is_cpid(text: str) -> bool:
    try:
        names.parse_checkpoint_id(text)
    except InvalidKeyError:
        return False
    return True


# -- listing ---------------------------------------------------------------------------------


async def cmd_sessions(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    sessions = await sm.list_sessions()  # each timestamp: when its head last moved
    reflog = await sm.repository.reflog()  # for the move times to the nanosecond and the id prefixes
    moved = await session_moved_ns(sm.repository, reflog=reflog)
    updated = {s.session_id: moved.get(names.session_ref(s.session_id), int(s.timestamp * 1e9)) for s in sessions}
    heads = await sm.repository.read_commits([bytes.fromhex(s.head) for s in sessions])  # read by list_sessions
    saved = {s.session_id: heads[bytes.fromhex(s.head)].time_ns / 1e9 for s in sessions}
    if args.json:
        out.json(
            [
                {
                    "session_id": s.session_id,
                    "updated": iso_time(updated[s.session_id] / 1e9),
                    "updated_ns": updated[s.session_id],
                    "saved": iso_time(saved[s.session_id]),
                    "timestamp": s.timestamp,
                    "checkpoints": s.checkpoint_count,
                    "head": s.head,
                    "metadata": s.metadata,
                }
                for s in sessions
            ]
        )
        return EXIT_OK
    if not sessions:
        out.line("No sessions in this store.")
        return EXIT_OK
    n = await _abbrev(sm, args, [bytes.fromhex(s.head) for s in sessions if s.head], reflog)
    out.table(
        [Column("SESSION"), Column("UPDATED"), Column("CHECKPOINTS", right=True), Column("HEAD")],
        [
            (s.session_id, local_time(updated[s.session_id] / 1e9), f"{s.checkpoint_count:,}", _short(s.head, n))
            for s in sessions
        ],
    )
    return EXIT_OK


async def cmd_checkpoints(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    cps = await sm.list_checkpoints(args.session)
    if not cps and (await sm.repository.head(names.session_ref(args.session))) is None:
        raise NotFoundError(f"no session {args.session!r}")
    if args.json:
        out.json(
            [
                {
                    "checkpoint_id": c.checkpoint_id,
                    "name": c.name,
                    "created": iso_time(c.timestamp),
                    "timestamp": c.timestamp,
                    "commit": c.commit,
                    "metadata": c.metadata,
                }
                for c in cps
            ]
        )
        return EXIT_OK
    if not cps:
        out.line(f"Session {args.session} has no checkpoints.")
        return EXIT_OK
    short = _short_ids(args, [c.checkpoint_id for c in cps])
    n = await _abbrev(sm, args, [bytes.fromhex(c.commit) for c in cps if c.commit])
    out.table(
        [Column("CHECKPOINT"), Column("NAME", drop=2), Column("CREATED"), Column("COMMIT", drop=1)],
        [(short[c.checkpoint_id], c.name, local_time(c.timestamp), _short(c.commit, n)) for c in cps],
    )
    return EXIT_OK


async def cmd_log(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    repo = sm.repository
    ref = names.session_ref(args.session)
    entries = await repo.log(ref, args.limit)
    if not entries:
        raise NotFoundError(f"no session {args.session!r}")
    labels: dict[bytes, list[str]] = {}
    for cp_ref, cid in (await repo.list_refs(names.checkpoint_prefix(args.session))).items():
        labels.setdefault(cid, []).append(names.parse_checkpoint_id(cp_ref[len(names.CHECKPOINTS) :])[1])
    last = entries[-1][1]
    truncated = bool(last.parents) and (args.limit is None or len(entries) < args.limit)
    if args.json:
        out.json(
            {
                "session_id": args.session,
                "commits": [
                    {
                        "commit": cid.hex(),
                        "saved": iso_time(c.time_ns / 1e9),
                        "time_ns": c.time_ns,
                        "parents": [p.hex() for p in c.parents],
                        "session": c.session,
                        "name": c.name,
                        "meta": c.meta,
                        "checkpoints": sorted(labels.get(cid, [])),
                    }
                    for cid, c in entries
                ],
                "older_history_removed": truncated,
            }
        )
        return EXIT_OK
    n = await _abbrev(sm, args, [cid for cid, _ in entries])
    if args.oneline:
        for cid, c in entries:
            cps = ", ".join(sorted(labels.get(cid, [])))
            parts = [_short(cid.hex(), n), local_time(c.time_ns / 1e9)]
            parts += [f"({cps})"] if cps else []
            parts += [to_json(c.meta, indent=False)] if c.meta else []
            out.line(" ".join(parts))
    else:
        out.table(
            [Column("COMMIT"), Column("SAVED"), Column("CHECKPOINTS", wrap=True), Column("METADATA", wrap=True)],
            [
                (
                    _short(cid.hex(), n),
                    local_time(c.time_ns / 1e9),
                    ", ".join(sorted(labels.get(cid, []))),
                    to_json(c.meta, indent=False) if c.meta else "",
                )
                for cid, c in entries
            ],
        )
    if truncated:
        out.line("(earlier saves are no longer stored: gc removed them once their reflog entries expired)", "dim")
    return EXIT_OK


async def cmd_reflog(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    repo = sm.repository
    entries = everything = await repo.reflog()
    if args.session is not None:
        head = names.session_ref(args.session)
        prefix = names.checkpoint_prefix(args.session)
        entries = [e for e in entries if e.name == head or e.name.startswith(prefix)]
    elif not args.all:  # castate's own records (gc and fsck runs) are not the user's history
        entries = [e for e in entries if not e.name.startswith(names.META)]
    entries = entries[::-1][: args.limit] if args.limit else entries[::-1]
    rows = [
        {
            "time": iso_time(e.time_ns / 1e9),
            "time_ns": e.time_ns,
            "ref": e.name,
            "old": e.old.hex() if e.old else None,
            "new": e.new.hex() if e.new else None,
            "message": e.message,
        }
        for e in entries
    ]
    if args.json:
        out.json(rows)
        return EXIT_OK
    if not rows:
        out.line("No ref changes recorded.")
        return EXIT_OK
    cpids = [e.name[len(names.CHECKPOINTS) :] for e in entries if e.name.startswith(names.CHECKPOINTS)]
    existing = [r[len(names.CHECKPOINTS) :] for r in await repo.list_refs(names.CHECKPOINTS)]
    short = _short_ids(args, cpids, existing)
    n = await _abbrev(sm, args, [c for e in entries for c in (e.old, e.new) if c is not None], everything)
    out.table(
        [Column("TIME"), Column("REF"), Column("OLD", drop=2), Column("NEW"), Column("MESSAGE", wrap=True, drop=1)],
        [
            (
                local_time(e.time_ns / 1e9),
                _ref_label(e.name, short),
                _short(e.old.hex() if e.old else None, n),
                _short(e.new.hex() if e.new else None, n),
                e.message,
            )
            for e in entries
        ],
    )
    return EXIT_OK


# -- reading ---------------------------------------------------------------------------------


async def cmd_show(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    repo = sm.repository
    rev, pointer = await _ref_and_path(sm, args.ref, args.path)
    commit = await repo.read_commit(rev.commit)
    parts = parse_pointer(pointer)
    loader = Loader(repo.backend)
    entry = await entry_at(loader, commit.root, parts)
    (value,) = await loader.values([entry])
    if args.commit:
        value = {
            "commit": rev.commit.hex(),
            "root": commit.root.hex(),
            "parents": [p.hex() for p in commit.parents],
            "session": commit.session,
            "name": commit.name,
            "saved": iso_time(commit.time_ns / 1e9),
            "time_ns": commit.time_ns,
            "meta": commit.meta,
        }
    text = to_json(value)
    if out.out.is_terminal and not out.out.no_color:
        out.out.print_json(text)
    else:
        out.json(value)
    return EXIT_OK


async def _ref_and_path(sm: StateManager, text: str, path: str | None) -> tuple[Revision, str]:
    """``REF`` with ``--path``, or ``REF:POINTER`` (git's ``rev:path``): ``run-1:/messages/0``;
    the leading ``/`` may be left out. A whole reference that resolves wins over the split,
    and the split is never inside ``@{...}`` (a time has colons: ``run-1@{10:30}:/step``)."""
    try:
        return await sm.resolve(text), path or ""
    except (NotFoundError, InvalidKeyError):
        braced, brace, tail = text.rpartition("}")
        ref, sep, pointer = tail.rpartition(":")
        ref = braced + brace + ref
        if not sep or not ref or path is not None:
            raise
        rev = await sm.resolve(ref)  # when this fails too, its error names the reference part
    return rev, pointer if pointer.startswith("/") or not pointer else "/" + pointer


async def cmd_diff(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    changes = await sm.diff(args.a, args.b)
    if args.json:
        out.json([c.to_dict() for c in changes])
        return EXIT_OK
    if args.patch:
        out.json(to_patch(changes))
        return EXIT_OK
    if not changes:
        out.line("No differences.")
        return EXIT_OK
    for c in changes:
        path = c.path or "/"
        if c.op == "add":
            out.line(f"+ {path}  {short_value(c.new)}", "green")
        elif c.op == "remove":
            out.line(f"- {path}  {short_value(c.old)}", "red")
        else:
            out.line(f"~ {path}  {short_value(c.old, 60)} -> {short_value(c.new, 60)}", "yellow")
    counts = {op: sum(1 for c in changes if c.op == op) for op in ("add", "remove", "replace")}
    out.line(
        f"{plural(len(changes), 'change')}: {counts['add']:,} added, {counts['remove']:,} removed, "
        f"{counts['replace']:,} replaced",
        "dim",
    )
    return EXIT_OK


# -- moving refs -------------------------------------------------------------------------------


async def cmd_checkpoint(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    meta = dict(_key_value(kv) for kv in args.meta or ())
    cpid = await sm.create_checkpoint(args.session, args.name, metadata=meta or None)
    if args.json:
        out.json({"checkpoint_id": cpid})
    else:
        out.line(cpid)
    return EXIT_OK


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--meta takes KEY=VALUE, not {text!r}")
    return key, value


async def cmd_restore(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    result = await sm.reset_session(args.session, to=args.checkpoint)
    if args.json:
        out.json(result.to_dict())
        return EXIT_OK
    if not result.changed:
        out.line(f"Session {result.session_id} is already at {_short(result.current)}; nothing to do.")
        return EXIT_OK
    was = f" (was {_short(result.previous)})" if result.previous else " (new session)"
    out.line(f"Session {result.session_id} is now at {_short(result.current)}{was}.")
    if result.previous:
        out.line(f"To undo: castate restore {result.previous} --session {_quote(result.session_id)}", "dim")
    return EXIT_OK


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


async def cmd_fork(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    commit = await sm.fork(args.checkpoint, args.new_session)
    if args.json:
        out.json({"session_id": args.new_session, "head": commit})
    else:
        out.line(f"Session {args.new_session} forked from {args.checkpoint} at {_short(commit)}.")
    return EXIT_OK


async def cmd_rm(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    removed = {}
    for session in args.sessions:
        if await sm.repository.head(names.session_ref(session)) is None and not await sm.list_checkpoints(session):
            raise NotFoundError(f"no session {session!r}")
    for session in args.sessions:
        removed[session] = await sm.delete_session(session)
    if args.json:
        out.json({"removed_refs": removed})
        return EXIT_OK
    for session, n in removed.items():
        out.line(f"Removed session {session} ({plural(n, 'ref')}: its head and checkpoints).")
    out.line("Its data stays in the store until `castate gc` (after the reflog expiry).", "dim")
    return EXIT_OK


# -- retention and maintenance ------------------------------------------------------------------


def policy_from(args: argparse.Namespace) -> Policy:
    return Policy(
        last=args.keep_last or 0,
        within=parse_duration(args.keep_within) if args.keep_within else 0.0,
        hourly=args.keep_hourly or 0,
        daily=args.keep_daily or 0,
        weekly=args.keep_weekly or 0,
        monthly=args.keep_monthly or 0,
        keep_named=not args.forget_named,
    )


async def cmd_forget(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    policy = policy_from(args)
    policy.check()
    if not args.whole_sessions and not args.sessions and not args.all:
        raise UsageError("name the sessions whose checkpoints to forget, or pass --all (or --sessions)")
    if args.all and args.sessions:
        raise UsageError("pass either session ids or --all, not both")
    report = await sm.forget(
        policy,
        session_ids=args.sessions or None,
        whole_sessions=args.whole_sessions,
        dry_run=args.dry_run,
    )
    if args.json:
        out.json(_forget_json(report))
        return EXIT_OK
    _forget_table(report, args, out)
    return EXIT_OK


def _forget_json(report: ForgetReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "refs_removed": report.refs_removed,
        "skipped": report.skipped,
        "decisions": [
            {
                "kind": d.item.kind,
                "id": d.item.id,
                "session_id": d.item.session,
                "time": iso_time(d.item.time),
                "keep": d.keep,
                "reasons": list(d.reasons),
            }
            for d in report.decisions
        ],
    }


def _forget_table(report: ForgetReport, args: argparse.Namespace, out: Output) -> None:
    if not report.decisions:
        out.line("Nothing to decide: no matching checkpoints or sessions.")
        return
    verb = "would forget" if report.dry_run else "forget"
    cpids = [d.item.id for d in report.decisions if d.item.kind == "checkpoint"]
    short = _short_ids(args, cpids)
    out.table(
        [Column("ACTION"), Column("KIND", drop=1), Column("ID"), Column("TIME"), Column("WHY KEPT", wrap=True)],
        [
            (
                "keep" if d.keep else verb,
                d.item.kind,
                short.get(d.item.id, d.item.id),
                local_time(d.item.time),
                ", ".join(d.reasons),
            )
            for d in report.decisions
        ],
    )
    kinds = {d.item.kind for d in report.decisions}
    what = "session" if kinds == {"session"} else "checkpoint"
    gone = len(report.removed) - len(report.skipped)
    only_named = sum(1 for d in report.decisions if d.reasons == ("named",))
    if report.dry_run:
        out.line(f"Dry run: would forget {plural(len(report.removed), what)}, keep {len(report.kept):,}.", "dim")
    else:
        out.line(
            f"Forgot {plural(gone, what)} ({plural(report.refs_removed, 'ref')}), kept {len(report.kept):,}.", "dim"
        )
        if report.skipped:
            out.line(f"Left alone because they changed meanwhile: {', '.join(report.skipped)}", "yellow")
        out.line("Run `castate gc` to free their space.", "dim")
    if only_named:
        out.line(
            f"{plural(only_named, what)} kept only because named (any name but checkpoint and auto): "
            "add --forget-named to apply the policy to them too.",
            "dim",
        )


async def cmd_gc(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    grace = parse_duration(args.grace)
    expire = parse_duration(args.reflog_expire)
    if grace == 0:
        out.warn(
            "--grace 0 drops the safety margin for writers that do not take the gc lock "
            "(other tools, backends without one); use it on an idle store"
        )
    started = time.monotonic()
    with out.progress("gc") as update:
        report = await sm.gc(grace=grace, reflog_expire=expire, dry_run=args.dry_run, progress=update, record=True)
    elapsed = time.monotonic() - started
    for w in report.warnings:
        out.warn(w)
    if args.json:
        data = {k: getattr(report, k) for k in report.__slots__}
        data["seconds"] = round(elapsed, 3)
        out.json(data)
        return EXIT_OK
    verb = "Would delete" if report.dry_run else "Deleted"
    out.line(
        f"{verb} {report.deleted:,} of {plural(report.objects, 'object')} ({human_bytes(report.deleted_bytes)} of "
        f"{human_bytes(report.object_bytes)} object bytes) in {elapsed:.1f}s."
    )
    out.line(
        f"Kept {report.reachable:,} reachable from refs and from reflog entries younger than {args.reflog_expire}, "
        f"and {report.recent:,} unreachable but younger than the grace period ({args.grace}).",
        "dim",
    )
    if report.reachable and expire > 0:
        out.line(
            f"What only the reflog keeps goes once its entries are older than {args.reflog_expire}; "
            f"`{FREE_ALL}` frees it now (older rm, forget and restore can then no longer be undone).",
            "dim",
        )
    if report.left:
        out.line(
            f"{plural(report.left, 'object')} could not be deleted yet (in a pack another process is still writing).",
            "dim",
        )
    if not report.dry_run:
        out.line(f"Expired {plural(report.reflog_expired, 'reflog record')} older than {args.reflog_expire}.", "dim")
        if report.store_bytes_before is not None and report.store_bytes_after is not None:
            out.line(
                f"Store on disk: {human_bytes(report.store_bytes_before)} -> {human_bytes(report.store_bytes_after)}.",
                "dim",
            )
    return EXIT_OK


async def cmd_fsck(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    with out.progress("fsck") as update:
        report = await sm.fsck(full=args.full, quarantine=not args.no_quarantine, progress=update, record=True)
    for w in report.warnings:
        out.warn(w)
    repair: RefRepairReport | None = getattr(args, "ref_repair", None)
    rollbacks = await sm.roll_back_damaged(list(report.damaged_refs)) if args.repair_refs else []
    damaged = not report.ok or (repair is not None and repair.damaged)
    if args.json:
        out.json(
            {
                "ok": not damaged,
                "full": report.full,
                "refs": report.refs,
                "reachable_objects": report.reachable,
                "reachable_bytes": report.reachable_bytes,
                "logical_bytes": report.logical_bytes,
                "stored_objects_checked": report.stored_checked,
                "problems": [
                    {
                        "object": p.id.hex(),
                        "problem": p.what,
                        "detail": p.detail,
                        "parent": p.parent.hex() if p.parent else None,
                    }
                    for p in report.problems
                ],
                "damaged_refs": report.damaged_refs,
                "stored_corrupt": [{"object": p.id.hex(), "detail": p.detail} for p in report.stored_corrupt],
                "dangling_objects": report.dangling,
                "dangling_bytes": report.dangling_bytes,
                "quarantined": report.quarantined,
                "storage": report.storage,
                "ref_repair": _repair_json(repair) if repair is not None else None,
                "rolled_back": [
                    {
                        "ref": r.ref,
                        "damaged": r.damaged.hex(),
                        "restored": r.restored.hex() if r.restored else None,
                        "damaged_earlier_targets": r.skipped,
                    }
                    for r in rollbacks
                ],
            }
        )
        return EXIT_DAMAGE if damaged else EXIT_OK
    if repair is not None:
        _print_repair(repair, out)
    mode = "full" if report.full else "quick"
    out.line(f"Checked {plural(report.refs, 'ref')} and {plural(report.reachable, 'reachable object')} ({mode} check).")
    if report.full:
        out.line(
            f"Checked {plural(report.stored_checked, 'stored object')}; {report.dangling:,} dangling "
            f"({human_bytes(report.dangling_bytes)}): no ref reaches them."
        )
        if report.dangling:
            out.line(
                "gc keeps what the reflog recorded for 7 days (so rm, forget and restore can be undone) and "
                "anything younger than 1 hour, and deletes the rest; `castate gc --dry-run` counts what it "
                f"would delete now, `{FREE_ALL}` frees every dangling object (undo then ends).",
                "dim",
            )
    for line in report.storage:
        out.line(f"storage: {line}", "red")
    for p in report.problems:
        parent = f" (referenced by {p.parent.hex()[:12]})" if p.parent else ""
        detail = p.detail if p.id.hex() in p.detail else f"{p.id.hex()}: {p.detail}"
        out.line(f"{p.what}{parent}: {detail}", "red")
    for p in report.stored_corrupt:
        detail = p.detail if p.id.hex() in p.detail else f"{p.id.hex()}: {p.detail}"
        out.line(f"corrupt (unreachable): {detail}", "red")
    for ref, bad in report.damaged_refs.items():
        out.line(f"damaged ref {ref}: {plural(len(bad), 'bad object')} under it", "red")
    if report.quarantined:
        out.line(
            f"Moved {plural(report.quarantined, 'corrupt object')} to the quarantine; "
            "saving the same content again restores them.",
            "yellow",
        )
    for r in rollbacks:
        if r.restored is None:
            out.line(f"{r.ref}: no intact earlier state in its reflog; left as it is", "red")
        else:
            out.line(
                f"Moved {r.ref} back from damaged {_short(r.damaged.hex())} to {_short(r.restored.hex())}, "
                "its newest intact state in the reflog (the reflog keeps the damaged one).",
                "yellow",
            )
    if not damaged:
        out.line("No damage found.", "green")
        return EXIT_OK
    out.line("Damage found (exit code 1).", "bold red")
    return EXIT_DAMAGE


def _repair_json(r: RefRepairReport) -> dict[str, Any]:
    return {
        "location": r.location,
        "damaged": r.damaged,
        "kept_records": r.kept,
        "damaged_spans": [list(span) for span in r.damaged_spans],
        "lost_records": r.lost_records,
        "inferred": {
            ref: {"before": a.hex() if a else None, "restored": b.hex() if b else None}
            for ref, (a, b) in sorted(r.inferred.items())
        },
        "maybe_lost": r.maybe_lost,
        "refs": r.refs,
        "saved_as": r.saved_as,
        "blobs_found": r.blobs_found,
    }


def _print_repair(r: RefRepairReport, out: Output) -> None:
    if not r.damaged:
        out.line(f"Ref journal {r.location}: intact ({plural(r.kept, 'record')}, {plural(r.refs, 'ref')}).")
        return
    spans = ", ".join(f"{a}-{b}" for a, b in r.damaged_spans)
    out.line(
        f"Ref journal {r.location} was damaged (bytes {spans}): rebuilt from its {plural(r.kept, 'intact record')}; "
        f"{plural(r.refs, 'ref')} now.",
        "yellow",
    )
    out.line(f"Lost: {plural(r.lost_records, 'record')} of ref changes.", "red" if r.lost_records else None)
    for ref, (before, after) in sorted(r.inferred.items()):
        out.line(
            f"  {ref}: a lost record moved it from {_short(before.hex() if before else None)} "
            f"to {_short(after.hex() if after else None)}; a later record shows it, so that is kept"
        )
    if r.maybe_lost:
        out.line(
            "The unreadable bytes mention these refs; a change to them may be lost (see `castate reflog`): "
            + ", ".join(r.maybe_lost[:20])
            + (" ..." if len(r.maybe_lost) > 20 else "")
        )
    if r.blobs_found:
        out.line(f"Found {plural(r.blobs_found, 'stored blob')} that lost records had placed; placed again.")
    out.line(f"The damaged journal is kept at {r.saved_as}.")


async def cmd_stats(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    s = await sm.stats(top=args.top)
    encrypted, slots = await encryption_facts(sm)
    if args.json:
        out.json(
            {
                "objects": s.objects,
                "object_bytes": s.object_bytes,
                "reachable_objects": s.reachable_objects,
                "reachable_bytes": s.reachable_bytes,
                "disk_bytes": s.disk_bytes,
                "sessions": s.sessions,
                "checkpoints": s.checkpoints,
                "other_refs": s.other_refs,
                "logical_bytes": s.logical_bytes,
                "dedup_ratio": round(s.dedup_ratio, 3),
                "backend": s.backend,
                "encrypted": encrypted,
                "key_slots": slots,
                "largest_sessions": [
                    {
                        "session_id": x.session,
                        "head_bytes": x.head_bytes,
                        "checkpoints": x.checkpoints,
                        "checkpoint_bytes": x.checkpoint_bytes,
                    }
                    for x in s.largest
                ],
            }
        )
        return EXIT_OK
    out.table(
        ["what", "value"],
        header=False,
        rows=[
            ("sessions", f"{s.sessions:,}"),
            ("checkpoints", f"{s.checkpoints:,}"),
            ("objects", f"{s.objects:,} ({s.reachable_objects:,} reachable)"),
            ("object bytes", f"{human_bytes(s.object_bytes)} ({human_bytes(s.reachable_bytes)} reachable)"),
            ("bytes on disk", human_bytes(s.disk_bytes)),
            ("logical bytes", f"{human_bytes(s.logical_bytes)} (every head and checkpoint as a full copy)"),
            ("dedup ratio", f"{s.dedup_ratio:.1f}x"),
            ("encrypted", f"yes ({plural(slots, 'key slot')})" if encrypted else "no"),
        ],
    )
    if s.largest:
        out.line()
        out.table(
            ["LARGEST SESSIONS", "HEAD", "CHECKPOINTS", "IN CHECKPOINTS"],
            [
                (x.session, human_bytes(x.head_bytes), f"{x.checkpoints:,}", human_bytes(x.checkpoint_bytes))
                for x in s.largest
            ],
            right=["HEAD", "CHECKPOINTS", "IN CHECKPOINTS"],
        )
    return EXIT_OK


async def cmd_export(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    with out.progress("export") as update:
        report = await sm.export_session(args.session, Path(args.file), progress=lambda n, t: update("objects", n, t))
    if args.json:
        out.json(
            {
                "file": report.path,
                "session_id": report.session,
                "refs": report.refs,
                "objects": report.objects,
                "bytes": report.bytes,
            }
        )
    else:
        out.line(
            f"Exported session {report.session} ({plural(len(report.refs), 'ref')}, "
            f"{plural(report.objects, 'object')}) "
            f"to {report.path} ({human_bytes(report.bytes)})."
        )
    return EXIT_OK


async def cmd_import(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    with out.progress("import") as update:
        bundle_key = None if args.bundle_key_file is None else RawKey.from_file(args.bundle_key_file)
        report = await sm.import_session(
            Path(args.file),
            session_id=args.session,
            progress=lambda n, t: update("bytes", n, t),
            key=bundle_key,
            plain=args.plain,
        )
    if args.json:
        out.json(
            {
                "file": report.path,
                "session_id": report.session,
                "refs": report.refs,
                "objects": report.objects,
                "written": report.written,
            }
        )
    else:
        out.line(
            f"Imported session {report.session} ({plural(len(report.refs), 'ref')}): "
            f"{plural(report.objects, 'object')} verified, {report.written:,} new to this store."
        )
    return EXIT_OK


async def cmd_import_marsys(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    from castate.compat.marsys_import import import_marsys_directory

    report = await import_marsys_directory(args.source, args.store_path, overwrite=not args.no_overwrite)
    if args.json:
        out.json(
            {
                "source": report.source,
                "imported": report.imported,
                "unchanged": report.unchanged,
                "skipped": report.skipped,
                "source_bytes": report.source_bytes,
                "store_bytes_added": report.store_bytes_added,
                "ok": report.ok,
            }
        )
    else:
        out.line(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED  # some files were skipped: the summary names them


# -- doctor ----------------------------------------------------------------------------------------


def _ago(epoch: float) -> str:
    seconds = max(0.0, time.time() - epoch)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return f"{plural(int(seconds // size), unit)} ago"
    return "just now"


async def cmd_doctor(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    """The store's health in plain words: a quick read-only check, the last gc and fsck, the reflog."""
    repo = sm.repository
    report = await sm.fsck(full=False, quarantine=False)  # read-only: no quarantine, no record
    stats = await sm.stats(top=0)
    runs = await read_runs(repo)
    reflog = await repo.reflog()
    encrypted, _ = await encryption_facts(sm)
    last = {
        op: next((r for r in reversed(runs) if r.get("op") == op and (op != "fsck" or r.get("full"))), None)
        for op in ("gc", "fsck")
    }
    advice: list[str] = []
    if not report.ok:
        advice.append("run `castate fsck` to find and quarantine the damage, then `castate fsck --repair-refs`")
    if last["fsck"] is None:
        advice.append("run `castate fsck --full` once to verify every stored object")
    if last["gc"] is None or time.time() - last["gc"]["time"] > 30 * 86400:
        advice.append("run `castate gc --dry-run` to see how much space gc would free")
    if args.json:
        out.json(
            {
                "ok": report.ok,
                "store": args.store_path,
                "sessions": stats.sessions,
                "checkpoints": stats.checkpoints,
                "disk_bytes": stats.disk_bytes,
                "encrypted": encrypted,
                "refs_checked": report.refs,
                "damaged_refs": sorted(report.damaged_refs),
                "problems": len(report.problems) + len(report.storage),
                "last_gc": last["gc"],
                "last_full_fsck": last["fsck"],
                "reflog_records": len(reflog),
                "advice": advice,
            }
        )
        return EXIT_OK if report.ok else EXIT_DAMAGE
    out.line(
        f"Store {args.store_path}: {plural(stats.sessions, 'session')}, {plural(stats.checkpoints, 'checkpoint')}, "
        f"{human_bytes(stats.disk_bytes)} on disk{', encrypted' if encrypted else ''}."
    )
    if report.ok:
        out.line(f"Data: every ref leads to complete, intact data ({plural(report.refs, 'ref')} checked).", "green")
    else:
        damaged = ", ".join(sorted(report.damaged_refs)[:5]) or "the store's files"
        out.line(f"Data: DAMAGED ({damaged}); `castate fsck` says what and where.", "bold red")
    for line in report.storage:
        out.line(f"Storage: {line}", "red")
    fsck_run = last["fsck"]
    if fsck_run is None:
        out.line("Full check: never run (it reads every stored object, not only what refs reach).")
    else:
        verdict = "no damage" if fsck_run.get("ok") else "damage found"
        out.line(f"Full check: {_ago(fsck_run['time'])}, {verdict}.")
    gc_run = last["gc"]
    if gc_run is None:
        out.line("gc: never run here; objects nothing needs any more stay on disk until it runs.")
    else:
        out.line(
            f"gc: {_ago(gc_run['time'])}, deleted {plural(gc_run.get('deleted', 0), 'object')} "
            f"({human_bytes(gc_run.get('deleted_bytes'))})."
        )
    if reflog:
        out.line(
            f"Reflog: {plural(len(reflog), 'record')}, the oldest {_ago(reflog[0].time_ns / 1e9)}; it keeps rm, "
            "forget and restore undoable until gc expires its records (7 days by default)."
        )
    for line in advice:
        out.line(f"To do: {line}.", "yellow")
    if not advice:
        out.line("Nothing to do.", "green")
    return EXIT_OK if report.ok else EXIT_DAMAGE


def cmd_completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the completion script for ``args.shell``; needs no store."""
    from castate.cli.completion import SHELLS

    sys.stdout.write(SHELLS[args.shell](parser))
    return EXIT_OK
