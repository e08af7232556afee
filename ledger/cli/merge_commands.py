"""Merging duplicates and undoing a merge."""

from __future__ import annotations

import argparse

from ledger.cli.common import AddCommand, emit, open_for, parse_customer_id
from ledger.config import Settings
from ledger.domain.customer import MERGEABLE_FIELDS


def cmd_merge(args: argparse.Namespace, settings: Settings) -> int:
    target, source = parse_customer_id(args.target), parse_customer_id(args.source)
    with open_for(settings) as ledger:
        changed = ledger.merge(
            target, source, actor=settings.actor, take=args.take or (), reason=args.reason
        )
    text = f"merged {source} into {target}"
    text += f"; {target} took {', '.join(changed)}" if changed else "; nothing to take"
    emit(args, {"target": str(target), "source": str(source), "changed_fields": changed}, text)
    return 0


def cmd_unmerge(args: argparse.Namespace, settings: Settings) -> int:
    source = parse_customer_id(args.source)
    with open_for(settings) as ledger:
        target, restored, kept = ledger.unmerge(source, actor=settings.actor, reason=args.reason)
    text = f"unmerged {source} from {target}"
    if restored:
        text += f"; {target} restored {', '.join(restored)}"
    if kept:
        text += f"; kept {', '.join(kept)} (changed since the merge)"
    data = {
        "source": str(source),
        "target": str(target),
        "restored_fields": restored,
        "kept_fields": kept,
    }
    emit(args, data, text)
    return 0


def add_commands(add: AddCommand) -> None:
    p = add(
        "merge",
        cmd_merge,
        "merge customer SOURCE into TARGET (SOURCE is hidden, its values fill TARGET's gaps; "
        "undo with unmerge)",
    )
    p.add_argument("target", help="the customer that stays")
    p.add_argument("source", help="the duplicate merged into it")
    p.add_argument(
        "--take",
        action="append",
        choices=MERGEABLE_FIELDS,
        metavar="FIELD",
        help="take SOURCE's value for FIELD instead of keeping TARGET's "
        f"(one of {', '.join(MERGEABLE_FIELDS)}); repeatable",
    )
    p.add_argument("--reason", help="non-personal reason code or note (stored readable)")

    p = add("unmerge", cmd_unmerge, "undo the merge of SOURCE: both customers as they were")
    p.add_argument("source", help="the customer that was merged into another")
    p.add_argument("--reason", help="non-personal reason code or note (stored readable)")
