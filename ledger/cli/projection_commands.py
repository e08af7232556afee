"""Commands on projections and the queries they answer: status, the worker, rebuilds,
listing and looking up customers, and the data-quality report."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import datetime
from types import FrameType
from typing import Any

from ledger.application import CustomerLedger
from ledger.cli.audit_commands import purpose_option
from ledger.cli.common import AddCommand, emit, open_for, parse_customer_id, record_read
from ledger.cli.progress import progress_bar
from ledger.cli.render import show
from ledger.config import Settings
from ledger.consent.reads import PurposeReads, mask, masked_record
from ledger.domain.erased import ErasedValue
from ledger.domain.errors import CustomerNotFound, FieldViolation, ValidationFailed
from ledger.domain.profile import PERSONAL_FIELDS
from ledger.projections.quality import quality_report
from ledger.projections.queries import ORDERS, STATUSES, CustomerRecord, ListFilter
from ledger.projections.runner import ProjectionRunner, UnknownProjection
from ledger.projections.wiring import customer_queries, runner_of

EXIT_INTEGRITY = 4  # as `ledger verify`


def _caught_up(ledger: CustomerLedger) -> ProjectionRunner:
    """In inline mode a query first applies what other processes wrote since; in worker
    mode that is the worker's job (and the lag shows in `ledger projections`)."""
    runner = runner_of(ledger)
    if ledger.settings.projection_mode == "inline":
        runner.catch_up_quietly()
    return runner


def cmd_projections(args: argparse.Namespace, settings: Settings) -> int:
    """With `--check`, every row is also checked against its MAC (and index entries against
    their rows); any that fails is listed by customer id and the exit status is 4."""
    tampered: list[tuple[str, str, str]] = []
    with open_for(settings) as ledger:
        runner = runner_of(ledger)
        statuses = runner.status()
        if args.check:
            tampered = runner.tampered()
    data: dict[str, Any] = {
        "mode": settings.projection_mode,
        "projections": [s.to_json() for s in statuses],
    }
    lines = [f"{'projection':<16} {'position':>10} {'head':>10} {'lag':>8} {'rows':>10}"]
    for s in statuses:
        lines.append(f"{s.name:<16} {s.position:>10} {s.head:>10} {s.lag:>8} {s.rows:>10}")
    lines.append(f"mode: {settings.projection_mode}")
    if args.check:
        data["tampered"] = [
            {"projection": name, "table": table, "customer_id": customer_id}
            for name, table, customer_id in tampered
        ]
        lines += [f"TAMPERED {table} row of customer {c} ({n})" for n, table, c in tampered]
        if tampered:
            lines.append("repair with `ledger rebuild`")
        else:
            lines.append("every row checked: none altered")
    emit(args, data, "\n".join(lines))
    return EXIT_INTEGRITY if tampered else 0


def cmd_project(args: argparse.Namespace, settings: Settings) -> int:
    if args.interval <= 0:
        raise ValidationFailed([FieldViolation("--interval", "must be more than 0 seconds")])
    stop = threading.Event()
    applied = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_progress(count: int) -> None:
        nonlocal applied
        applied += count
        if not args.json:
            print(f"applied {count} events (total {applied})", file=sys.stderr, flush=True)

    with open_for(settings) as ledger:
        runner = runner_of(ledger)
        if args.once:
            applied = runner.catch_up()
        else:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, on_signal)
            if not args.json:
                print(
                    f"projecting {', '.join(runner.names)} every {args.interval}s; "
                    "stop with Ctrl-C or SIGTERM",
                    file=sys.stderr,
                    flush=True,
                )
            runner.run(stop, interval=args.interval, on_progress=on_progress)
        head = runner.head()
    emit(args, {"applied": applied, "head": head}, f"stopped after {applied} events")
    return 0


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    with open_for(settings) as ledger:
        runner = runner_of(ledger)
        names = [args.projection] if args.projection else runner.names
        try:
            for name in names:
                runner.get(name)
        except UnknownProjection as exc:
            raise ValidationFailed([FieldViolation("projection", str(exc))]) from None
        started = time.perf_counter()
        with progress_bar(f"rebuilding {', '.join(names)}") as update:
            events = runner.rebuild(names, progress=update)
        seconds = time.perf_counter() - started
    rate = round(events / seconds) if seconds > 0 else None
    emit(
        args,
        {
            "rebuilt": names,
            "events": events,
            "seconds": round(seconds, 3),
            "events_per_second": rate,
        },
        f"rebuilt {', '.join(names)} from {events} events in {seconds:.2f}s",
    )
    return 0


def _record_line(record: CustomerRecord) -> str:
    data = record.to_json()
    name = " ".join(show(data[n]) for n in ("given_name", "family_name") if data.get(n))
    if record.status == "erased":
        name = "<erased>"
    owner = show(record.owner or "-")
    return (
        f"{record.id}  {record.status:<7} {owner:<14} {record.country or '--'}  "
        f"{data['updated_at']}  {name}"
    )


NAME_FIELDS = ("given_name", "family_name")


def _record_shown(
    ledger: CustomerLedger,
    args: argparse.Namespace,
    settings: Settings,
    records: list[CustomerRecord],
) -> list[CustomerRecord]:
    """Mask what the declared purpose may not show, and record the read of what is about
    to be printed (names in text, every personal field with --json, for each record that
    still has personal data) with what was masked and why. Returns the masked records."""
    reads = PurposeReads(ledger)
    shown = [r.id for r in records if not isinstance(r.personal, ErasedValue)]
    masks = reads.masks(reads.purpose(args.purpose), shown)
    printed = PERSONAL_FIELDS if args.json else NAME_FIELDS
    fields = {f for hidden in masks.values() for f in printed if f not in hidden}
    masked = masked_record(
        {c: {f: r for f, r in hidden.items() if f in printed} for c, hidden in masks.items()},
        shown,
    )
    record_read(ledger, args, settings, shown, fields, masked)
    args.masked = masks
    return [mask(r, masks.get(r.id, {})) for r in records]


def _records_json(records: list[CustomerRecord], args: argparse.Namespace) -> list[Any]:
    """Each record's JSON, with the fields its read left out and why (`masked_fields`)."""
    return [{**r.to_json(), "masked_fields": args.masked.get(r.id, {})} for r in records]


def _parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed([FieldViolation("updated_since", "not an ISO-8601 time")]) from None


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    filters = ListFilter(
        owner=args.owner,
        country=args.country,
        tag=args.tag,
        status=args.status,
        updated_since=_parse_since(args.updated_since),
    )
    with open_for(settings) as ledger:
        _caught_up(ledger)
        page = customer_queries(ledger).list_customers(
            filters,
            order_by=args.order_by,
            descending=args.desc,
            page_size=args.page_size,
            page_token=args.page_token,
        )
        records = _record_shown(ledger, args, settings, page.records)
    lines = [_record_line(r) for r in records] or ["no customers match"]
    if page.next_page_token:
        lines.append(f"next page: --page-token {page.next_page_token}")
    data = {"customers": _records_json(records, args), "next_page_token": page.next_page_token}
    emit(args, data, "\n".join(lines))
    return 0


def cmd_lookup(args: argparse.Namespace, settings: Settings) -> int:
    wanted = parse_customer_id(args.id) if args.id is not None else None
    with open_for(settings) as ledger:
        _caught_up(ledger)
        queries = customer_queries(ledger)
        if wanted is not None:
            record = queries.get(wanted, follow_merges=True)
            if record is None:
                raise CustomerNotFound(args.id)
            records = [record]
        else:
            records = queries.lookup(
                email=args.email, phone=args.phone, external_id=args.external_id
            )
        records = _record_shown(ledger, args, settings, records)
    data: dict[str, Any] = {"customers": _records_json(records, args)}
    emit(args, data, "\n".join(_record_line(r) for r in records) or "no customer found")
    return 0 if records else 1


def cmd_quality(args: argparse.Namespace, settings: Settings) -> int:
    if args.worst < 0:
        raise ValidationFailed([FieldViolation("--worst", "must be 0 or more")])
    with open_for(settings) as ledger:
        runner = _caught_up(ledger)
        report = quality_report(
            runner.db, review_after_days=settings.review_after_days, worst=args.worst
        )
    lines = [
        f"customers {report.customers}   average completeness {report.average_score}%   "
        f"complete {report.complete}   with warnings {report.with_warnings}   "
        f"review due {report.review_due} (not verified for {report.review_after_days} days)",
    ]
    if report.missing:
        lines.append("missing: " + ", ".join(f"{k} {v}" for k, v in report.missing.items()))
    if report.worst:
        lines.append("worst records:")
    for record in report.worst:
        notes = [f"missing {', '.join(record.missing)}"] if record.missing else []
        if record.warnings:
            notes.append(
                "warnings " + ", ".join(f"{w['field']} ({w['reason']})" for w in record.warnings)
            )
        if record.review_due:
            notes.append("review due")
        lines.append(f"  {record.customer_id}  {record.score:>3}%  " + "; ".join(notes))
    emit(args, report.to_json(), "\n".join(lines))
    return 0


def add_commands(add: AddCommand) -> None:
    p = add(
        "projections",
        cmd_projections,
        "show each projection's position, the log's head and the lag",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="also check every row's integrity (MAC); exit 4 naming any altered row",
    )

    p = add("project", cmd_project, "run the projection worker: apply new events as they come")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often to poll the log when idle (default 1)")  # fmt: skip
    p.add_argument("--once", action="store_true", help="catch up once, then exit")

    p = add("rebuild", cmd_rebuild, "drop projections and rebuild them from the whole log")
    p.add_argument("projection", nargs="?", help="one projection (default: all)")

    p = add("list", cmd_list, "list customers from the current view, with filters and paging")
    p.add_argument("--owner")
    p.add_argument("--country", metavar="CC")
    p.add_argument("--tag")
    p.add_argument("--status", choices=STATUSES, default="active")
    p.add_argument("--updated-since", dest="updated_since", metavar="ISO8601")
    p.add_argument("--order-by", dest="order_by", choices=tuple(ORDERS), default="updated_at")
    p.add_argument("--desc", action="store_true", help="newest / highest first")
    p.add_argument("--page-size", dest="page_size", type=int, default=50, metavar="N")
    p.add_argument("--page-token", dest="page_token", metavar="TOKEN")
    purpose_option(p)

    p = add("lookup", cmd_lookup, "find customers by exact email, phone, external id or id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--email")
    which.add_argument("--phone", help="international, or national in LEDGER_DEFAULT_REGION")
    which.add_argument("--external-id", dest="external_id", metavar="SCHEME:VALUE")
    which.add_argument("--id", help="a customer id; a merged one leads to its survivor")
    purpose_option(p)

    p = add(
        "quality", cmd_quality, "data-quality totals and the worst records (ids and field names)"
    )
    p.add_argument("--worst", type=int, default=10, metavar="N", help="how many records to list")
