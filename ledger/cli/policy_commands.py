"""Data-policy commands: `policy apply|show`, `hold add|release`, `contract end`,
`retention plan|apply`, `handover`.

The use cases live in `ledger.policy` (services over the ledger); these commands only parse,
call and print. A legal hold refusing an erasure or a destruction exits with EXIT_HELD (5),
distinct from other refusals (3), so scripts can tell "held" from "try again".
"""

from __future__ import annotations

import argparse
import hashlib
from datetime import UTC, date, datetime
from pathlib import Path

from ledger.cli.common import AddCommand, emit, open_for, parse_customer_id
from ledger.cli.progress import progress_bar
from ledger.config import Settings
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.policy import holds, retention
from ledger.policy.classification import FIELDS
from ledger.policy.log import PolicyLog, PolicyVersion
from ledger.policy.model import load_policy_file


def _policy_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValidationFailed([FieldViolation("file", "no such file")])
    return path


def cmd_policy_apply(args: argparse.Namespace, settings: Settings) -> int:
    policy = load_policy_file(_policy_file(args.file))  # checked whole before anything is written
    with open_for(settings) as ledger:
        applied = PolicyLog(ledger).apply(policy, actor=settings.actor, reason=args.reason)
    emit(
        args,
        applied.to_json(),
        f"policy {policy.name!r} applied as version {applied.version} (sha256 {applied.digest})",
    )
    return 0


def classification_table() -> list[dict[str, str]]:
    return [
        {
            "field": entry.field,
            "category": entry.category,
            "sensitivity": entry.sensitivity.value,
            "description": entry.description,
        }
        for entry in FIELDS
    ]


def policy_text(current: PolicyVersion) -> str:
    policy = current.policy
    when = current.applied_at.isoformat() if current.applied_at else "shipped default"
    lines = [
        f"policy {policy.name!r} version {current.version} ({when}); sha256 {current.digest}",
        "",
        "purposes:",
    ]
    for purpose in policy.purposes:
        separate = ", separate consent" if purpose.separate_consent else ""
        lines.append(f"  {purpose.key}  [{purpose.lawful_basis.value}{separate}]")
        lines.append(f"    may use: {', '.join(purpose.categories)}")
    lines += ["", "retention:"]
    for rule in policy.retention:
        lines.append(f"  {rule.category}: {rule.keep_for_days} days after {rule.after.value}")
    lines += ["", "classification (field, category, sensitivity):"]
    for entry in FIELDS:
        lines.append(f"  {entry.field:<13} {entry.category:<32} {entry.sensitivity.value}")
    return "\n".join(lines)


def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_for(settings) as ledger:
        current = PolicyLog(ledger).latest()
    emit(
        args, {**current.to_json(), "classification": classification_table()}, policy_text(current)
    )
    return 0


def cmd_hold_add(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        placed = holds.place_hold(ledger, customer_id, actor=settings.actor, reason=args.reason)
    text = "placed" if placed else "was already in place"
    emit(
        args,
        {"customer_id": str(customer_id), "legal_hold": True, "placed": placed},
        f"legal hold on customer {customer_id} {text}",
    )
    return 0


def cmd_hold_release(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    with open_for(settings) as ledger:
        holds.release_hold(ledger, customer_id, actor=settings.actor, reason=args.reason)
    emit(
        args,
        {"customer_id": str(customer_id), "legal_hold": False},
        f"legal hold on customer {customer_id} released",
    )
    return 0


def cmd_contract_end(args: argparse.Namespace, settings: Settings) -> int:
    customer_id = parse_customer_id(args.id)
    ended = holds.parse_day(args.on, "--on") if args.on else datetime.now(UTC).date()
    with open_for(settings) as ledger:
        holds.end_contract(ledger, customer_id, ended, actor=settings.actor, reason=args.reason)
    emit(
        args,
        {"customer_id": str(customer_id), "contract_ended_on": ended.isoformat()},
        f"contract of customer {customer_id} ended on {ended.isoformat()}",
    )
    return 0


def parse_now(text: str | None) -> datetime | None:
    """`--now`: a date (midnight UTC) or a time with a UTC offset."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            [FieldViolation("--now", "not a date (YYYY-MM-DD) or time")]
        ) from None
    if moment.tzinfo is None:
        raise ValidationFailed([FieldViolation("--now", "needs a UTC offset, e.g. Z")])
    return moment


def cmd_retention_plan(args: argparse.Namespace, settings: Settings) -> int:
    now = parse_now(args.now)
    with open_for(settings) as ledger:
        current = retention.plan(ledger, now=now)
    lines = [
        f"retention due as of {current.now.date().isoformat()} under policy "
        f"v{current.policy_version}: {len(current.customers)} customers"
    ]
    for due in current.customers:
        what = "whole customer" if due.whole_customer else "categories"
        held = " [LEGAL HOLD: skipped]" if due.held else ""
        lines.append(f"{due.customer_id} ({what}){held}")
        for item in due.categories:
            lines.append(
                f"  {item.category:<32} {item.rule.keep_for_days}d after {item.rule.after.value}"
                f" (rule {item.rule.category}) from {item.trigger_date.date().isoformat()}"
                f" due {item.due_date.date().isoformat()}"
            )
    emit(args, current.to_json(), "\n".join(lines))
    return 0


def cmd_retention_apply(args: argparse.Namespace, settings: Settings) -> int:
    now = parse_now(args.now)
    folder = Path(args.certificates) if args.certificates else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def keep(destruction: retention.Destruction) -> None:
        if folder is not None:
            # One file per certificate (its signature's digest: never overwritten).
            tag = hashlib.sha256(destruction.certificate.signature.encode()).hexdigest()[:12]
            path = folder / f"{destruction.customer_id}-{tag}.json"
            path.write_text(destruction.certificate.to_json() + "\n", encoding="utf-8")

    with open_for(settings) as ledger, progress_bar("applying retention") as update:
        report = retention.apply(
            ledger,
            actor=settings.actor,
            now=now,
            destroyer=retention.default_destroyer(),
            progress=update,
            on_destroyed=keep,
        )
    lines = [
        f"retention under policy v{report.policy_version}: {len(report.destroyed)} destroyed, "
        f"{len(report.held)} skipped under legal hold, {len(report.pending)} pending, "
        f"{len(report.failed)} refused"
    ]
    lines += [
        f"destroyed {d.customer_id}: "
        + ("whole customer" if d.whole_customer else ", ".join(d.categories))
        for d in report.destroyed
    ]
    lines += [f"held {customer_id}" for customer_id in report.held]
    lines += [
        f"pending {customer_id}: registered before category keys; erased whole once all is due"
        for customer_id in report.pending
    ]
    lines += [f"refused {customer_id}: {why}" for customer_id, why in report.failed.items()]
    emit(args, report.to_json(), "\n".join(lines))
    return 1 if report.failed else 0


def cmd_handover(args: argparse.Namespace, settings: Settings) -> int:
    from ledger.api.api_store import open_api_store
    from ledger.policy.handover import hand_over

    with open_for(settings) as ledger, open_api_store(settings) as store:
        result = hand_over(
            ledger, store, args.from_principal, args.to_principal,
            actor=settings.actor, reason=args.reason,
        )  # fmt: skip
    emit(
        args,
        result.to_json(),
        f"handed {len(result.customer_ids)} customers from {result.from_principal} to "
        f"{result.to_principal}; every credential of {result.from_principal} issued up to "
        f"{result.revoked_at.isoformat()} is revoked",
    )
    return 0


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    code: int = args.action_handler(args, settings)
    return code


def add_commands(add: AddCommand) -> None:
    def actions(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        p = add(name, _dispatch, help_text)
        return p.add_subparsers(dest=f"{name}_action", required=True, metavar="ACTION")

    def action(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        handler: object,
        help_text: str,
    ) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(action_handler=handler)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        p.add_argument("--store", default=argparse.SUPPRESS, help="store URL")
        p.add_argument("--actor", default=argparse.SUPPRESS, help="who is acting")
        return p

    group = actions("policy", "the data policy: apply a version from a file, show the current")
    p = action(
        group,
        "apply",
        cmd_policy_apply,
        "check a policy file (TOML or YAML) and store it as the next version",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--reason", help="non-personal reason code (stored readable)")
    action(group, "show", cmd_policy_show, "the policy in force and the classification table")

    group = actions("hold", "legal holds: block erasure and retention of a customer")
    p = action(group, "add", cmd_hold_add, "place a legal hold on a customer")
    p.add_argument("id")
    p.add_argument("--reason", required=True, help="non-personal reason code, e.g. a case number")
    p = action(group, "release", cmd_hold_release, "release a customer's legal hold")
    p.add_argument("id")
    p.add_argument("--reason", help="non-personal reason code")

    group = actions("contract", "contract records that start end_of_contract retention")
    p = action(group, "end", cmd_contract_end, "record that a customer's contract ended")
    p.add_argument("id")
    p.add_argument("--on", metavar="DATE", help="the day it ended (default: today, UTC)")
    p.add_argument("--reason", help="non-personal reason code")

    group = actions("retention", "what the policy says must be destroyed, and destroying it")
    p = action(group, "plan", cmd_retention_plan, "list what is due (changes nothing)")
    p.add_argument("--now", metavar="DATE", help="plan as of this date or time (default: now)")
    p = action(
        group, "apply", cmd_retention_apply,
        "destroy what is due (resumable: run again to finish an interrupted run)",
    )  # fmt: skip
    p.add_argument("--now", metavar="DATE", help="apply as of this date or time (default: now)")
    p.add_argument("--certificates", metavar="DIR", help="also write each signed certificate here")

    p = add(
        "handover",
        cmd_handover,
        "staff departure: move every customer of FROM to TO and revoke FROM's credentials",
    )
    p.add_argument("from_principal", metavar="FROM")
    p.add_argument("to_principal", metavar="TO")
    p.add_argument("--reason", required=True, help="non-personal reason code")
