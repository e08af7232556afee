"""Backup commands: `ledger backup` (take, list, verify, setup) and `ledger restore`.

SQLite ledgers: snapshots through SQLite's online backup API. PostgreSQL ledgers:
pgBackRest (full, differential, incremental backups; WAL archiving; point-in-time
restores). See ledger.operations.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from ledger.cli.common import AddCommand, Handler, emit
from ledger.cli.progress import progress_bar
from ledger.config import Settings
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.observability.backup_state import record_backup_success
from ledger.operations import drill, snapshot
from ledger.operations.restore import finish, restore_postgres, restore_sqlite
from ledger.operations.targets import Target, parse_targets, pick
from ledger.store_state import require_ledger

EXIT_REFUSED = 3
EXIT_INTEGRITY = 4


def _guarded(handler: Handler) -> Handler:
    """A backup or restore that cannot go ahead ends with one line and an exit code: 3 when
    it was refused (--force), 4 when a backup is damaged, 1 otherwise."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except snapshot.RestoreRefused as exc:
            print(f"ledger: refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except snapshot.DamagedBackup as exc:
            print(f"ledger: integrity error: {exc}", file=sys.stderr)
            return EXIT_INTEGRITY
        except snapshot.BackupError as exc:
            print(f"ledger: error: {exc}", file=sys.stderr)
            return 1

    return run


def _targets(args: argparse.Namespace, settings: Settings) -> tuple[list[Target], Target]:
    targets = parse_targets(settings.resolved_backup_repos)
    wanted = getattr(args, "to", None) or getattr(args, "source", None)
    target = pick(targets, wanted)
    if target.index == 0 and settings.store.kind == "postgresql":
        name = "to" if getattr(args, "to", None) else "from"
        raise ValidationFailed(
            [FieldViolation(name, "not one of LEDGER_BACKUP_REPOS (pgBackRest's repositories)")]
        )
    return targets, target


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed([FieldViolation("time", "not an ISO-8601 time")]) from None
    if moment.tzinfo is None:
        raise ValidationFailed([FieldViolation("time", "needs a UTC offset, e.g. Z")])
    return moment


def _step(args: argparse.Namespace) -> drill.Step:
    def say(text: str) -> None:
        if sys.stderr.isatty() and not args.json:
            print(f"… {text}", file=sys.stderr)

    return say


@_guarded
def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    action = args.action or "take"
    postgres = settings.store.kind == "postgresql"
    if action == "setup":
        return _setup(args, settings)
    if action == "schedule":
        return _schedule(args, postgres)
    if action == "list":
        return _list(args, settings, postgres)
    if action == "verify":
        return _verify(args, settings, postgres)
    require_ledger(settings)
    targets, target = _targets(args, settings)
    if postgres:
        from ledger.operations.pgbackrest import PgBackRest

        _step(args)(f"pgBackRest {args.type} backup (this copies the cluster's changed files)")
        repos = PgBackRest(settings).backup(args.type, target.index if args.to else None)
        record_backup_success(settings.resolved_data_dir)
        emit(args, {"repos": repos, "type": args.type},
             f"{args.type} backup taken in repo(s) {', '.join(map(str, repos))}")  # fmt: skip
        return 0
    if args.type != "full":
        raise ValidationFailed([FieldViolation("type", "SQLite snapshots are always full")])
    chosen = [target] if args.to else targets
    with progress_bar("backing up") as update:
        taken = snapshot.take(settings, chosen, update)
    record_backup_success(settings.resolved_data_dir)
    counts = taken[0].counts
    lines = [f"backup {taken[0].name}: {counts.events} events, {counts.customers} customers, "
             f"{counts.live_keys} live keys"]  # fmt: skip
    lines += [f"  {s.folder}" for s in taken]
    emit(args, [s.to_json() for s in taken], "\n".join(lines))
    return 0


def _setup(args: argparse.Namespace, settings: Settings) -> int:
    if settings.store.kind != "postgresql":
        emit(args, {}, "SQLite ledgers need no setup: `ledger backup` snapshots them")
        return 0
    from ledger.operations.pgbackrest import PgBackRest, server_settings

    backrest = PgBackRest(settings)
    if not args.print:
        backrest.setup()
    lines = server_settings(settings)
    emit(args, {"config": str(backrest.config), "stanza": backrest.stanza,
                "postgresql_conf": lines.splitlines()},
         f"# pgBackRest config: {backrest.config} (stanza {backrest.stanza})\n"
         f"# add to postgresql.conf, then restart PostgreSQL:\n{lines}")  # fmt: skip
    return 0


def _schedule(args: argparse.Namespace, postgres: bool) -> int:
    """Crontab lines: the schedule is cron's (or a systemd timer's), not a process of ours."""
    if postgres:
        jobs = [
            ("0 1 * * 0", "ledger backup --type full"),
            ("0 1 * * 1-6", "ledger backup --type diff"),
            ("0 * * * *", "ledger backup --type incr --to 1"),
            ("30 3 * * *", "ledger backup verify"),
        ]
    else:
        jobs = [("0 * * * *", "ledger backup"), ("30 3 * * *", "ledger backup verify")]
    lines = [
        "# crontab of the account that runs the ledger; put its LEDGER_* settings above",
        "# these lines (NAME=value) or in an environment file the job reads",
        *(f"{when}  {command}" for when, command in jobs),
    ]
    emit(args, [{"cron": when, "command": command} for when, command in jobs], "\n".join(lines))
    return 0


def _list(args: argparse.Namespace, settings: Settings, postgres: bool) -> int:
    rows: list[dict[str, Any]] = []
    if postgres:
        from ledger.operations.pgbackrest import PgBackRest

        rows = PgBackRest(settings).info()
        text = [f"repo{b['repo']}  {b['label']}  {b['type']:<4}  {b['finished_at']}  "
                f"{b['size'] or 0:>12,} bytes" for b in rows]  # fmt: skip
    else:
        targets, _ = _targets(args, settings)
        text = []
        for target in targets:
            for s in snapshot.snapshots(target.local_path):
                rows.append({"repo": target.index, **s.to_json()})
                c = s.counts
                text.append(f"repo{target.index}  {s.name}  {c.events:>8} events  "
                            f"{c.customers:>6} customers  {s.folder}")  # fmt: skip
    emit(args, rows, "\n".join(text) or "no backups")
    return 0


def _verify(args: argparse.Namespace, settings: Settings, postgres: bool) -> int:
    require_ledger(settings)
    _, target = _targets(args, settings)
    step = _step(args)
    if postgres:
        result = drill.drill_postgres(settings, target.index, step)
    else:
        result = drill.drill_sqlite(settings, target, step)
    data = result.to_json()
    lines = [
        f"backup {result.backup} ({result.backup_time}) restored and opened in "
        f"{result.restore_seconds:.2f}s (RTO)",
        f"restored: {result.restored.events} events, {result.restored.customers} customers, "
        f"{result.restored.live_keys} live keys, {result.restored.destroyed_keys} destroyed",
        f"live:     {result.live.events} events, {result.live.customers} customers, "
        f"{result.live.live_keys} live keys, {result.live.destroyed_keys} destroyed",
        f"a restore now would lose {result.lost_events} event(s) written in the last "
        f"{result.lost_seconds:.0f}s at most (RPO)",
        f"verify: {'OK' if result.report.ok else 'FAILED'} "
        "(the restored log's own signed heads; published heads not checked)",
    ]
    lines += [f"  problem: {p}" for p in [*map(str, result.report.problems), *result.problems]]
    emit(args, data, "\n".join(lines))
    if not result.ok:
        print("ledger: backup verify FAILED", file=sys.stderr)
        return EXIT_INTEGRITY
    return 0


@_guarded
def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    until = _time(args.time)
    if settings.store.kind == "postgresql":
        if args.finish:
            restored = finish(settings, "the restarted server")
        else:
            _, target = _targets(args, settings)
            done = restore_postgres(settings, target.index, until=until, force=args.force)
            if done is None:
                emit(args, {"finished": False},
                     "restored; start PostgreSQL, then run `ledger restore --finish`")  # fmt: skip
                return 0
            restored = done
    else:
        if args.finish:
            raise ValidationFailed([FieldViolation("finish", "only for PostgreSQL ledgers")])
        _, target = _targets(args, settings)
        restored = restore_sqlite(settings, target, before=until, force=args.force)
    emit(args, {"finished": True, "source": restored.source, "backup": restored.backup,
                "restored_size": restored.restored_size},
         f"restored {restored.backup or 'the cluster'} from {restored.source}: the log holds "
         f"{restored.restored_size} events")  # fmt: skip
    return 0


def add_commands(add: AddCommand) -> None:
    p = add(
        "backup",
        cmd_backup,
        "back up the ledger to every backup target (LEDGER_BACKUP_REPOS); `backup list`, "
        "`backup verify` (restore drill: RPO and RTO), `backup setup` (PostgreSQL), "
        "`backup schedule` (crontab lines)",
    )
    p.add_argument("action", nargs="?", choices=("list", "verify", "setup", "schedule"))
    p.add_argument(
        "--type",
        choices=("full", "diff", "incr"),
        default="full",
        help="PostgreSQL: full, differential or incremental (default full)",
    )
    p.add_argument(
        "--to",
        "--repo",
        dest="to",
        metavar="REPO",
        help="one target: its number in LEDGER_BACKUP_REPOS, or a path or URL",
    )
    p.add_argument(
        "--print", action="store_true", help="setup: only print the postgresql.conf lines"
    )
    p = add(
        "restore",
        cmd_restore,
        "restore the ledger from a backup target (refuses to replace one without --force)",
    )
    p.add_argument(
        "--from",
        dest="source",
        metavar="REPO",
        help="target number, path or URL (default: the first target)",
    )
    p.add_argument(
        "--time",
        metavar="T",
        help="PostgreSQL: recover to this time; SQLite: the newest backup taken "
        "at or before it (ISO-8601 with offset)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing ledger")
    p.add_argument(
        "--finish",
        action="store_true",
        help="PostgreSQL: after starting a restored server yourself",
    )
