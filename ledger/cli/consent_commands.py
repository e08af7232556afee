"""`ledger consent give|withdraw|list`: a customer's consents per purpose of the data policy."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ledger.cli.common import AddCommand, emit, open_for, parse_customer_id, record_read
from ledger.config import Settings
from ledger.consent.records import ConsentEntry, in_force
from ledger.consent.service import ConsentService, ConsentSource
from ledger.consent.subject_access import (
    personal_fields_in,
    subject_access_document,
    subject_access_text,
)
from ledger.policy.source import policy_for


def _line(entry: ConsentEntry) -> str:
    state = "given    " if entry.given else "withdrawn"
    source = f"via {entry.channel}"
    if entry.form:
        source += f" form {entry.form}"
    if entry.proof:
        source += f" proof {entry.proof}"
    if entry.given and len(entry.bundle) > 1:
        source += f" (with {', '.join(p for p in entry.bundle if p != entry.purpose)})"
    elif entry.separate:
        source += " (separate)"
    return f"{entry.at.isoformat(timespec='seconds')}  {state}  {entry.purpose}  {source}"


def cmd_consent_give(args: argparse.Namespace, settings: Settings) -> int:
    source = ConsentSource(channel=args.source, form=args.form or "", proof=args.proof or "")
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        entries = ConsentService(ledger).give(
            customer_id,
            args.purpose,
            source,
            actor=settings.actor,
            reason=args.reason,
            expected_version=args.expected_version,
        )
    emit(
        args,
        {"id": args.id, "recorded": [e.to_json() for e in entries]},
        "\n".join(_line(e) for e in entries),
    )
    return 0


def cmd_consent_withdraw(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        withdrawn = ConsentService(ledger).withdraw(
            customer_id,
            args.purpose,
            channel=args.source,
            actor=settings.actor,
            reason=args.reason,
            expected_version=args.expected_version,
        )
    text = (
        f"consent to {args.purpose} withdrawn"
        if withdrawn
        else f"no consent to {args.purpose} in force: nothing to withdraw"
    )
    emit(args, {"id": args.id, "purpose": args.purpose, "withdrawn": withdrawn}, text)
    return 0


def cmd_consent_list(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        history = ConsentService(ledger).history(customer_id)
    current = in_force(history)
    data = {
        "id": args.id,
        "in_force": sorted(key for key, entry in current.items() if entry.given),
        "history": [entry.to_json() for entry in history],
    }
    lines = [_line(entry) for entry in history] or ["no consent recorded"]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """Subject access and portability: everything held, consents, purposes and lawful
    bases, categories, retention dates and recipients; the export is itself a recorded read
    (purpose `--purpose`, default essential.legal_obligation: answering the request is one)."""
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        document = subject_access_document(
            ledger, customer_id, policy_for(ledger), datetime.now(UTC)
        )
        record_read(ledger, args, settings, [customer_id], personal_fields_in(document))
    emit(args, document, subject_access_text(document))
    return 0


def cmd_consent(args: argparse.Namespace, settings: Settings) -> int:
    result: int = args.consent_handler(args, settings)
    return result


def add_commands(add: AddCommand) -> None:
    p = add("consent", cmd_consent, "record and list a customer's consents per purpose")
    sub = p.add_subparsers(dest="consent_command", required=True, metavar="ACTION")
    give = sub.add_parser(
        "give",
        help="record a consent to one or more purposes of the data policy",
        description="record a consent given to one purpose, or to several in one act "
        "(a purpose that needs a separate consent must be given on its own)",
    )
    give.set_defaults(consent_handler=cmd_consent_give)
    give.add_argument(
        "--purpose", action="append", required=True, metavar="PURPOSE",
        help="a purpose of the data policy resting on consent (repeatable: one act)",
    )  # fmt: skip
    give.add_argument("--form", metavar="CODE", help="the form or its version, e.g. signup-v3")
    give.add_argument("--proof", metavar="CODE", help="a reference to the proof, e.g. ticket:4711")
    withdraw = sub.add_parser("withdraw", help="record the withdrawal of a consent")
    withdraw.set_defaults(consent_handler=cmd_consent_withdraw)
    withdraw.add_argument("--purpose", required=True, metavar="PURPOSE")
    listing = sub.add_parser("list", help="every consent event of a customer, and what is in force")
    listing.set_defaults(consent_handler=cmd_consent_list)
    for action in (give, withdraw, listing):
        action.add_argument("id")
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        action.add_argument("--store", default=argparse.SUPPRESS, help="store URL")
        action.add_argument("--actor", default=argparse.SUPPRESS, help="who is acting")
    for action in (give, withdraw):
        action.add_argument(
            "--source", required=True, metavar="CHANNEL",
            help="the channel it came through, a code: web, app, call-centre, import, ...",
        )  # fmt: skip
        action.add_argument("--reason", help="non-personal reason code (stored readable)")
        action.add_argument("--expected-version", type=int, metavar="N")

    p = add(
        "export",
        cmd_export,
        "subject access and portability: everything held on a customer, its consents, "
        "purposes and lawful bases, categories, retention dates and recipients "
        "(--json: the documented machine-readable format, docs/subject-access.md)",
    )
    p.add_argument("id")
    p.add_argument(
        "--purpose",
        default="essential.legal_obligation",
        help="recorded in the access log (default: essential.legal_obligation)",
    )
