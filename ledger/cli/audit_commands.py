"""Audit commands: verify the log, sign and print tree heads, prove inclusion and
consistency, export the log, and query field histories and the access log.

`verify`, `prove`, `consistency` and `events` need only the store and (for verify) the public
key: no data keys, so an auditor can run them on a copy of the database.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ledger.audit.access_log import DEFAULT_PURPOSE
from ledger.audit.key_check import check_keys
from ledger.audit.leaf_mac import leaf_key
from ledger.audit.proofs import consistency_proof, inclusion_proof
from ledger.audit.publication import PublicationError, PublishedHeads
from ledger.audit.read_alerts import alerts
from ledger.audit.storage import AuditStore, AuditStoreError
from ledger.audit.tree_heads import RefusedToSign, TreeHead, TreeHeadFormatError
from ledger.audit.verifier import Problem, Report, verify
from ledger.cli.common import AddCommand, emit, open_for, parse_customer_id, read_as
from ledger.cli.render import dumps, show
from ledger.config import Settings
from ledger.consent.reads import PurposeReads
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.signing import LedgerSigner, public_key_id

EXIT_INVALID = 2
EXIT_INTEGRITY = 4


def _guarded(handler: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
    """Integrity problems of the audit tables and unreadable tree heads end like every other
    user-facing failure: one line on stderr and an exit code, no traceback."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except (AuditStoreError, RefusedToSign) as exc:
            print(f"ledger: integrity error: {exc}", file=sys.stderr)
            return EXIT_INTEGRITY
        except PublicationError as exc:
            print(f"ledger: error: tree head not published: {exc}", file=sys.stderr)
            return 1
        except TreeHeadFormatError as exc:
            print(f"ledger: error: not a tree head: {exc}", file=sys.stderr)
            return EXIT_INVALID
        except BrokenPipeError:  # `ledger events | head`
            sys.stderr.close()
            return 0

    return run


def _read_text(path: str, field: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValidationFailed([FieldViolation(field, f"cannot be read ({reason})")]) from None


def _load_head(path: str) -> TreeHead:
    try:
        data = json.loads(_read_text(path, "from_tree_head"))
    except json.JSONDecodeError:
        raise TreeHeadFormatError("the file is not JSON") from None
    return TreeHead.from_json(data)


def _public_key(args: argparse.Namespace, settings: Settings) -> str:
    if args.public_key:
        return _read_text(args.public_key, "public_key")
    key_file = settings.resolved_signing_key_file
    if not key_file.exists():
        raise ValidationFailed(
            [FieldViolation("public_key", "no signing key here: pass --public-key FILE")]
        )
    return LedgerSigner.load(key_file, setting="LEDGER_SIGNING_KEY_FILE").public_key_pem()


def _leaf_key(settings: Settings, public_key: str) -> bytes | None:
    """The leaf MAC key, when this host holds the private key of the key verified with
    (an auditor with the public key alone cannot check MACs; the heads still hold)."""
    key_file = settings.resolved_signing_key_file
    if not key_file.exists():
        return None
    signer = LedgerSigner.load_or_create(key_file)
    return leaf_key(signer) if signer.key_id() == public_key_id(public_key) else None


def _published_head(
    args: argparse.Namespace, settings: Settings
) -> tuple[TreeHead | None, str | None, str | None]:
    """(the last published head, where it came from, why there is none)."""
    if args.no_published_heads or (args.from_tree_head and not args.published_heads):
        return None, None, None
    path = Path(args.published_heads) if args.published_heads else settings.resolved_tree_head_file
    if args.published_heads and not path.exists():
        raise ValidationFailed([FieldViolation("published_heads", f"no file at {path}")])
    try:
        head = PublishedHeads(path).latest(None)  # its signature is checked by `verify`
    except PublicationError as exc:
        raise ValidationFailed([FieldViolation("published_heads", str(exc))]) from None
    if head is None:
        return None, None, f"no head is published in {path}"
    return head, str(path), None


def _restores(report: Report, path: Path, public_key: str) -> None:
    """Signed restore statements are information (the published heads above the restored
    size were abandoned on purpose); one not signed by the ledger's key is a problem."""
    try:
        statements = PublishedHeads(path).restores()
    except PublicationError as exc:
        report.problems.append(Problem(None, str(exc)))
        return
    for statement in statements:
        if not statement.verify(public_key):
            report.problems.append(
                Problem(
                    None,
                    f"a restore statement in {path} (restored size {statement.restored_size}) "
                    "is not signed by this ledger's key (forged or altered)",
                )
            )
            continue
        report.restores.append(
            {
                "restored_size": statement.restored_size,
                "abandoned_size": statement.abandoned_size,
                "lost_events": statement.lost,
                "at": statement.to_json()["timestamp"],
                "reason": statement.reason,
            }
        )


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal; nothing when output is piped or captured."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("verifying", total=total)
        yield lambda done: bar.update(task, completed=done)


def _summary(report: Report, source: str | None = None) -> str:
    lines = [
        f"checked {report.events:,} events ({report.leaves:,} leaves, "
        f"{report.interior_nodes:,} interior nodes, {report.aggregates:,} aggregates) "
        f"in {report.seconds:.2f}s ({report.rate:,.0f} events/s)",
        f"tree heads: {report.tree_heads:,} checked; the newest signed one covers "
        f"{report.latest_tree_size:,} events; {report.uncovered:,} not yet covered",
    ]
    if report.saved_tree_head is not None:
        lines.append(f"your saved tree head of size {report.saved_tree_head:,} was checked")
    if report.published_tree_head is not None:
        lines.append(
            f"checked against the published tree head of size {report.published_tree_head:,}"
            + (f" ({source})" if source else "")
        )
    else:
        lines.append("no published tree head was checked")
    for restore in report.restores:
        lost = restore["lost_events"]
        lines.append(
            f"restore (signed, {restore['at']}): the databases were restored to "
            f"{restore['restored_size']:,} events; "
            + (
                f"positions {restore['restored_size'] + 1:,} to {restore['abandoned_size']:,} "
                f"published before were lost ({lost:,} events)"
                if lost
                else "no published event was lost"
            )
        )
    lines.append(
        "leaf MACs: every leaf checked"
        if report.leaf_macs_checked
        else "leaf MACs: not checked (they need the ledger's private key)"
    )
    if report.ok:
        lines.append("OK: no event was altered, removed, reordered or inserted")
    else:
        lines.append(f"FAILED: {len(report.problems)} problem(s), first in log order first:")
        lines += [
            f"  {p}" + ("  (consequence of the above)" if p.consequence else "")
            for p in report.problems
        ]
        if report.truncated_report:
            lines.append("  … (more not listed)")
    return "\n".join(lines)


@_guarded
def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    public_key = _public_key(args, settings)
    saved = _load_head(args.from_tree_head) if args.from_tree_head else None
    published, source, unpublished = _published_head(args, settings)
    with AuditStore.open(settings) as store:
        store.check_tables()
        with _progress(store.size(), sys.stderr.isatty() and not args.json) as progress:
            report = verify(
                store,
                public_key,
                saved_head=saved,
                published_head=published,
                unpublished=unpublished,
                leaf_key=_leaf_key(settings, public_key),
                progress=progress,
            )
        if not args.skip_keys:
            report.problems += check_keys(store, settings)
    if source is not None:
        _restores(report, Path(source), public_key)
    data = report.to_json()
    data["published_tree_heads_file"] = source
    emit(args, data, _summary(report, source))
    first = report.first
    if first is not None:
        print(f"ledger: verification FAILED at {first}", file=sys.stderr)
        return EXIT_INTEGRITY
    return 0


@_guarded
def cmd_tree_head(args: argparse.Namespace, settings: Settings) -> int:
    with open_for(settings) as ledger:
        head = ledger.issue_tree_head()
    print(dumps(head.to_json()))
    return 0


@_guarded
def cmd_prove(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with AuditStore.open(settings) as store:
        store.check_tables()
        proof = inclusion_proof(store, customer_id, args.version, args.tree_size)
    print(dumps(proof.to_json()))
    return 0


@_guarded
def cmd_consistency(args: argparse.Namespace, settings: Settings) -> int:
    with AuditStore.open(settings) as store:
        store.check_tables()
        proof = consistency_proof(store, args.old_size, args.new_size)
    print(dumps(proof.to_json()))
    return 0


def _event_type(topic: str) -> str:
    return topic.rpartition(":")[2] or topic


@_guarded
def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    if args.start < 1:
        raise ValidationFailed([FieldViolation("from", "positions start at 1")])
    out = sys.stdout
    with AuditStore.open(settings) as store:
        store.check_tables()
        with store.snapshot():
            for count, event in enumerate(store.events(after=args.start - 1), 1):
                if args.limit is not None and count > args.limit:
                    break
                if args.json:
                    record = {
                        "position": event.position,
                        "originator_id": event.originator_id,
                        "version": event.version,
                        "topic": event.topic,
                        "state": base64.b64encode(event.state).decode("ascii"),
                    }
                    out.write(json.dumps(record, separators=(",", ":")) + "\n")
                else:
                    out.write(
                        f"{event.position:>10}  {event.originator_id}  v{event.version:<4} "
                        f"{_event_type(event.topic):<16} {len(event.state):>6} bytes\n"
                    )
    out.flush()
    return 0


def cmd_field_history(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        changes, hidden = PurposeReads(ledger).read_field_history(
            customer_id,
            args.field,
            principal=settings.actor,
            purpose=args.purpose,
            **read_as(args),
        )
    lines = []
    for change in changes:
        shown = "<erased>" if change.erased else ("-" if change.value is None else change.value)
        if hidden and not change.erased:
            shown = f"<masked: {next(iter(hidden.values()))}>"
        if isinstance(shown, list | dict):
            shown = json.dumps(shown, ensure_ascii=False)
        lines.append(
            f"v{change.version}  {change.timestamp.isoformat(timespec='seconds')}  "
            f"{show(change.event_type):<15} by {show(change.actor)}: {show(shown)}"
        )
    data = [{**c.to_json(), **({"masked": dict(hidden)} if hidden else {})} for c in changes]
    emit(args, data, "\n".join(lines) or "no changes recorded")
    return 0


def _time(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed([FieldViolation(field, "not an ISO-8601 time")]) from None
    if moment.tzinfo is None:
        raise ValidationFailed([FieldViolation(field, "needs a UTC offset, e.g. Z")])
    return moment


def _masked_text(masked: list[dict[str, Any]]) -> str:
    if not masked:
        return ""
    return "  masked=" + ",".join(f"{m['field']}({m['reason']})" for m in masked)


def cmd_access_log(args: argparse.Namespace, settings: Settings) -> int:
    customer = parse_customer_id(args.customer) if args.customer else None
    since, until = _time(args.since, "since"), _time(args.until, "until")
    with open_for(settings) as ledger:
        entries = list(
            ledger.access_log.entries(
                customer_id=customer, principal=args.principal, since=since, until=until
            )
        )
    lines = [
        f"{e.position:>8}  {e.at.isoformat(timespec='seconds')}  {e.principal}"
        f"{f' [{e.os_user}]' if e.os_user else ''}  "
        f"method={e.method or '-'}  purpose={e.purpose}  customers={','.join(e.customer_ids)}  "
        f"fields={','.join(e.fields)}{_masked_text(e.masked)}"
        for e in entries
    ]
    emit(args, [e.to_json() for e in entries], "\n".join(lines) or "no reads recorded")
    return 0


def cmd_access_alerts(args: argparse.Namespace, settings: Settings) -> int:
    with open_for(settings) as ledger:
        found = list(alerts(ledger, principal=args.principal))
    lines = [
        f"{a.position:>8}  {a.at.isoformat(timespec='seconds')}  {a.principal}  read "
        f"{a.distinct_customers} customers in {a.window_seconds:g}s (threshold {a.threshold}) "
        f"between {a.first_access.isoformat(timespec='seconds')} and "
        f"{a.last_access.isoformat(timespec='seconds')}"
        for a in found
    ]
    emit(args, [a.to_json() for a in found], "\n".join(lines) or "no alerts raised")
    return 0


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_commands(add: AddCommand) -> None:
    p = add(
        "verify",
        cmd_verify,
        "check the whole log against its Merkle tree and signed tree heads (exit 4 naming "
        "the first bad position if anything was altered, removed, reordered or inserted), "
        "and that every customer the log does not record as erased has a live data key "
        "(exit 4 naming a customer whose key was lost)",
    )
    p.add_argument(
        "--skip-keys",
        action="store_true",
        help="leave out the key check (an auditor with a copy of the event store only)",
    )
    p.add_argument(
        "--from-tree-head",
        metavar="FILE",
        help="a tree head you saved earlier (`ledger tree-head`): the log must still extend it "
        "(instead of the published heads, unless --published-heads is given too)",
    )
    p.add_argument(
        "--published-heads",
        metavar="FILE",
        help="the published tree heads (JSON lines) to check the log against (default: "
        "LEDGER_TREE_HEAD_DIR/published-tree-heads.jsonl, as this ledger writes it)",
    )
    p.add_argument(
        "--no-published-heads",
        action="store_true",
        help="check the database alone, without the published heads",
    )
    p.add_argument(
        "--public-key",
        metavar="PEM_FILE",
        help="the ledger's public key (`ledger public-key`; default: this ledger's own)",
    )

    add(
        "tree-head",
        cmd_tree_head,
        "sign the log as it stands and print the latest signed tree head (JSON) for keeping",
    )

    p = add("prove", cmd_prove, "print an inclusion proof (JSON) for one event of a customer")
    p.add_argument("id", help="customer (or other aggregate) id")
    p.add_argument("version", type=_non_negative, help="the event's version")
    p.add_argument("--tree-size", type=_non_negative, metavar="N", help="a signed tree head's size")

    p = add(
        "consistency",
        cmd_consistency,
        "print a consistency proof (JSON) between two signed tree heads",
    )
    p.add_argument("old_size", type=_non_negative, metavar="OLD_SIZE")
    p.add_argument(
        "new_size", type=_non_negative, metavar="NEW_SIZE", nargs="?", help="default: newest"
    )

    p = add(
        "events",
        cmd_events,
        "stream every stored event from a position, as stored (with --json: one JSON object "
        "per line, state in base64, for replay and independent checking)",
    )
    p.add_argument(
        "--from", dest="start", type=int, default=1, metavar="POSITION", help="default: 1"
    )
    p.add_argument("--limit", type=_non_negative, metavar="N")

    p = add("field-history", cmd_field_history, "every change of one field of a customer")
    p.add_argument("id")
    p.add_argument("field", help="e.g. emails, owner, external_id:CRM")
    purpose_option(p)

    p = add("access-log", cmd_access_log, "list recorded reads of personal data")
    p.add_argument("--customer", metavar="ID")
    p.add_argument("--principal", metavar="NAME")
    p.add_argument("--since", metavar="ISO8601")
    p.add_argument("--until", metavar="ISO8601")

    p = add(
        "access-alerts",
        cmd_access_alerts,
        "list read-rate alerts: principals that read more than LEDGER_READ_ALERT_RATE "
        "distinct customers within LEDGER_READ_ALERT_WINDOW seconds through the API",
    )
    p.add_argument("--principal", metavar="NAME", help="only this principal's alerts")


def purpose_option(parser: argparse.ArgumentParser) -> None:
    """Reads of personal data say why (recorded in the access log)."""
    parser.add_argument(
        "--purpose",
        default=DEFAULT_PURPOSE,
        help=f"why you read this personal data, recorded in the access log "
        f"(a reason code, not personal data; default: {DEFAULT_PURPOSE})",
    )
