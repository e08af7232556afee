"""Commands on customers: register, change, assign owner, verify, read, erase."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from ledger.cli.audit_commands import purpose_option
from ledger.cli.common import (
    AddCommand,
    command_options,
    emit,
    open_for,
    parse_customer_id,
    read_as,
    record_read,
)
from ledger.cli.duplicate_commands import matches_read, screen_registration, warn_duplicates
from ledger.cli.render import customer_text, history_text, masks_text, with_masks
from ledger.cli.values import ADDRESS_OPTIONS, parse_assignment, registration_profile
from ledger.config import Settings
from ledger.consent.reads import PurposeReads
from ledger.crypto_shred.category_erasure import destroy_categories
from ledger.crypto_shred.journal import JournalWriteFailed
from ledger.domain.errors import FieldViolation, ValidationFailed


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    profile = registration_profile(vars(args))
    with open_for(settings, create=True) as ledger:
        found = screen_registration(ledger, profile)  # refuses a likely duplicate
        customer_id = ledger.register(profile, actor=settings.actor, reason=args.reason)
        # How existing customers compare with the new one is derived from their personal
        # data: a read of those customers, recorded before it is printed.
        record_read(ledger, args, settings, *matches_read(found))
    result: dict[str, Any] = {"id": str(customer_id)}
    if found:
        result["likely_duplicates"] = [m.as_dict() for m in found]
        warn_duplicates(found)
    emit(args, result, str(customer_id))
    return 0


def cmd_change(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, Any] = {}
    for assignment in args.set:
        field, value = parse_assignment(assignment)
        changes[field] = value
    customer_id = parse_customer_id(args.id)  # the input first, then the store
    with open_for(settings) as ledger:
        changed = ledger.change(
            customer_id,
            changes,
            actor=settings.actor,
            expected_version=args.expected_version,
            reason=args.reason,
        )
        version = ledger.get(customer_id).version
    text = f"changed {', '.join(changed)}; now version {version}" if changed else "nothing changed"
    emit(args, {"id": args.id, "changed_fields": changed, "version": version}, text)
    return 0


def cmd_assign_owner(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)  # the input first, then the store
    with open_for(settings) as ledger:
        changed = ledger.assign_owner(
            customer_id,
            args.owner,
            actor=settings.actor,
            expected_version=args.expected_version,
            reason=args.reason,
        )
        version = ledger.get(customer_id).version
    text = f"owner is now {args.owner}" if changed else "owner unchanged"
    emit(args, {"id": args.id, "changed": changed, "version": version}, text)
    return 0


def cmd_mark_verified(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)  # the input first, then the store
    with open_for(settings) as ledger:
        ledger.mark_verified(
            customer_id,
            actor=settings.actor,
            expected_version=args.expected_version,
            reason=args.reason,
        )
        view, hidden = PurposeReads(ledger).read(
            customer_id, principal=settings.actor, purpose=args.purpose, **read_as(args)
        )
    emit(args, with_masks(view.to_json(), hidden), f"verified; now version {view.version}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        view, hidden = PurposeReads(ledger).read(
            customer_id,
            principal=settings.actor,
            purpose=args.purpose,
            **read_as(args),
        )
    emit(args, with_masks(view.to_json(), hidden), masks_text(customer_text(view), hidden))
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        entries, hidden = PurposeReads(ledger).read_history(
            customer_id,
            principal=settings.actor,
            purpose=args.purpose,
            **read_as(args),
        )
    emit(args, [e.to_json() for e in entries], masks_text(history_text(entries), hidden))
    return 0


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed([FieldViolation("time", "not an ISO-8601 time")]) from None


def cmd_as_of(args: argparse.Namespace, settings: Settings) -> int:
    at = _parse_time(args.time) if args.time else None
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        view, hidden = PurposeReads(ledger).read_as_of(
            customer_id,
            principal=settings.actor,
            purpose=args.purpose,
            version=args.version,
            at=at,
            **read_as(args),
        )
    emit(args, with_masks(view.to_json(), hidden), masks_text(customer_text(view), hidden))
    return 0


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        try:
            if args.category:
                certificate = destroy_categories(
                    ledger,
                    customer_id,
                    args.category,
                    actor=settings.actor,
                    legal_basis=args.legal_basis,
                    reason=args.reason,
                )
            else:
                certificate = ledger.erase(
                    customer_id,
                    actor=settings.actor,
                    legal_basis=args.legal_basis,
                    reason=args.reason,
                )
        except JournalWriteFailed as exc:
            print(exc.certificate.to_json())  # the erasure is done: its certificate holds
            print(f"ledger: error: {exc}", file=sys.stderr)
            return 1
    print(certificate.to_json())
    return 0


def add_commands(add: AddCommand) -> None:
    p = add(
        "register",
        cmd_register,
        "register a new customer and print its id (likely duplicates are warned about on "
        "stderr, or refused with LEDGER_DUPLICATE_POLICY=refuse)",
    )
    p.add_argument("--given-name", dest="given_name")
    p.add_argument("--family-name", dest="family_name")
    p.add_argument("--email", action="append", metavar="ADDRESS")
    p.add_argument(
        "--phone",
        action="append",
        metavar="NUMBER",
        help="international (+CC...) or national in --country / LEDGER_DEFAULT_REGION",
    )
    p.add_argument("--birth-date", dest="birth_date", metavar="YYYY-MM-DD")
    for option in ADDRESS_OPTIONS:
        p.add_argument(
            "--" + option.replace("_", "-"),
            dest=option,
            metavar="CC" if option == "country" else "TEXT",
        )
    p.add_argument("--external-id", dest="external_id", action="append", metavar="SCHEME:VALUE")
    p.add_argument("--owner")
    p.add_argument("--locale", metavar="TAG", help="BCP 47, e.g. en-GB")
    p.add_argument("--tag", action="append")
    command_options(p, versioned=False)
    purpose_option(p)  # likely duplicates it reports are reads of those customers

    p = add("change", cmd_change, "change profile fields (one event carrying only what changed)")
    p.add_argument("id")
    p.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="FIELD=VALUE",
        help="e.g. emails=a@x.org,b@y.org  phones=+4930123456  "
        'external_id:CRM=42  addresses=\'[{"country":"DE"}]\'  '
        "birth_date=  (empty clears)",
    )
    command_options(p)

    p = add("assign-owner", cmd_assign_owner, "make a salesperson or team responsible")
    p.add_argument("id")
    p.add_argument("owner")
    command_options(p)

    p = add("mark-verified", cmd_mark_verified, "record that a review confirmed the data")
    p.add_argument("id")
    command_options(p)
    purpose_option(p)  # it prints the customer: a read of personal data

    p = add("show", cmd_show, "show a customer's current state")
    p.add_argument("id")
    purpose_option(p)

    p = add("history", cmd_history, "list every event of a customer")
    p.add_argument("id")
    purpose_option(p)

    p = add("as-of", cmd_as_of, "show a customer as it stood at a time or version")
    p.add_argument("id")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--time", metavar="ISO8601", help="e.g. 2026-01-31T12:00:00Z")
    when.add_argument("--version", type=int, metavar="N")
    purpose_option(p)

    p = add("erase", cmd_erase, "erase a customer (destroy its key) and print a signed certificate")
    p.add_argument("id")
    p.add_argument(
        "--category",
        action="append",
        metavar="CATEGORY",
        help="destroy only this data category (repeatable; e.g. user.contact covers email, "
        "phone and address) and keep the rest; see `ledger policy show`",
    )
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--legal-basis", dest="legal_basis", required=True, help="e.g. 'GDPR Art. 17(1)(a)'"
    )
