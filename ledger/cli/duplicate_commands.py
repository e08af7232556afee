"""`ledger duplicates`: likely-duplicate pairs and clusters, or the likely duplicates of one
customer; `ledger dismiss-duplicate`: "these two are not the same person"; and the
duplicate check that `ledger register` runs first."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping
from typing import Any

from ledger.application import CustomerLedger
from ledger.cli.audit_commands import purpose_option
from ledger.cli.common import AddCommand, emit, open_for, parse_customer_id, record_read
from ledger.cli.progress import progress_bar
from ledger.config import Settings
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import validate_registration
from ledger.projections.dedup import Match
from ledger.projections.duplicates import DuplicatesResult
from ledger.projections.wiring import duplicate_queries

SHOWN_CLUSTERS = 50
# The personal fields a duplicate score is computed from: printing a score (or that a
# customer is a likely duplicate) discloses how these fields of that customer compare.
COMPARED_FIELDS = (
    "given_name", "family_name", "birth_date", "emails", "phones", "addresses", "external_ids",
)  # fmt: skip


def matches_read(found: list[Match]) -> tuple[list[str], tuple[str, ...]]:
    """What printing these matches reads: (customer ids, fields) for `record_read`."""
    return [m.customer_id for m in found], COMPARED_FIELDS


def screen_registration(ledger: CustomerLedger, profile: Mapping[str, Any]) -> list[Match]:
    """Validate first (bad input is reported as such), then apply LEDGER_DUPLICATE_POLICY:
    raises `LikelyDuplicate` under `refuse`, returns the likely duplicates under `warn`."""
    settings = ledger.settings
    if settings.duplicate_policy == "off":
        return []
    validated = validate_registration(profile, default_region=settings.default_region)
    return duplicate_queries(ledger).check_registration(validated, policy=settings.duplicate_policy)


def warn_duplicates(found: list[Match]) -> None:
    listed = ", ".join(f"{m.customer_id} ({m.score:.2f})" for m in found)
    print(f"ledger: warning: registered, but likely a duplicate of {listed}", file=sys.stderr)


def _min_score(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ValidationFailed([FieldViolation("--min-score", "a score between 0 and 1")])
    return value


def _matches_text(customer_id: str, matches: list[Match]) -> str:
    if not matches:
        return f"no likely duplicates of {customer_id}"
    lines = [f"likely duplicates of {customer_id}:"]
    for match in matches:
        lines.append(f"  {match.customer_id}  score {match.score:.4f}")
        lines.append("    " + _explained(match.as_dict()["explanation"]))
    return "\n".join(lines)


def _explained(explanation: list[dict[str, Any]]) -> str:
    return ", ".join(f"{e['field']} {e['agreement']} ({e['weight']:+.1f})" for e in explanation)


def _report_text(result: DuplicatesResult, min_score: float) -> str:
    report = result.report
    lines = [
        f"{report.customers} customers, {report.candidate_pairs} candidate pairs: "
        f"{len(report.pairs)} likely-duplicate pairs in {len(report.clusters)} clusters "
        f"(score >= {min_score:g}, model {report.model.method})"
    ]
    for cluster in report.clusters[:SHOWN_CLUSTERS]:
        lines.append(
            f"cluster of {len(cluster.customer_ids)}, scores "
            f"{cluster.min_score:.4f}..{cluster.max_score:.4f}:"
        )
        for customer_id in cluster.customer_ids:
            ids = result.external_ids.get(customer_id) or {}
            shown = ", ".join(f"{scheme}:{value}" for scheme, value in sorted(ids.items()))
            lines.append(f"  {customer_id}  {shown}".rstrip())
    if len(report.clusters) > SHOWN_CLUSTERS:
        lines.append(f"... and {len(report.clusters) - SHOWN_CLUSTERS} more (see --json)")
    return "\n".join(lines)


def cmd_duplicates(args: argparse.Namespace, settings: Settings) -> int:
    min_score = _min_score(args.min_score)
    if args.limit < 1:
        raise ValidationFailed([FieldViolation("--limit", "must be 1 or more")])
    with open_for(settings) as ledger:
        queries = duplicate_queries(ledger)
        threshold = queries.threshold if min_score is None else min_score
        if args.of is not None:
            customer_id = parse_customer_id(args.of)
            ledger.get(customer_id)  # an unknown id is an error, not "no duplicates"
            matches = queries.candidates_of(customer_id, threshold, args.limit)
            if matches:
                ids, fields = matches_read(matches)
                record_read(ledger, args, settings, [str(customer_id), *ids], fields)
            found = {"customer_id": str(customer_id), "matches": [m.as_dict() for m in matches]}
            emit(args, found, _matches_text(str(customer_id), matches))
            return 0
        started = time.perf_counter()
        with progress_bar("comparing candidate pairs") as update:
            result = queries.report(threshold, progress=lambda _, done, total: update(done, total))
        seconds = time.perf_counter() - started
        # Every customer in a pair: its external ids are printed, and its scores disclose
        # how its personal data compares with another's.
        record_read(ledger, args, settings, result.customer_ids, COMPARED_FIELDS)
    if args.json:
        # One line with the C encoder: a report on a large ledger runs to megabytes, and
        # the indented (pure-Python) encoder would take longer than the search itself.
        data: dict[str, Any] = result.as_dict()
        data["seconds"] = round(seconds, 3)
        print(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    else:
        print(_report_text(result, threshold) + f"\n(searched in {seconds:.2f}s)")
    return 0


def cmd_dismiss_duplicate(args: argparse.Namespace, settings: Settings) -> int:
    first, second = parse_customer_id(args.first), parse_customer_id(args.second)
    with open_for(settings) as ledger:
        ledger.dismiss_duplicate(first, second, actor=settings.actor, reason=args.reason)
    data = {"customer_ids": [str(first), str(second)], "dismissed": True}
    emit(args, data, f"recorded: {first} and {second} are not duplicates")
    return 0


def add_commands(add: AddCommand) -> None:
    p = add(
        "duplicates",
        cmd_duplicates,
        "list likely-duplicate pairs and clusters with scores, per-field explanations and "
        "each customer's external ids (re-estimates the scoring model on this ledger's data); "
        "with --of, the likely duplicates of one customer",
    )
    p.add_argument(
        "--min-score",
        dest="min_score",
        metavar="S",
        help="only pairs scoring at least S, 0 to 1 (default LEDGER_DUPLICATE_THRESHOLD)",
    )
    p.add_argument("--of", metavar="ID", help="the likely duplicates of this customer only")
    p.add_argument("--limit", type=int, default=10, help="with --of: at most this many")
    purpose_option(p)

    p = add(
        "dismiss-duplicate",
        cmd_dismiss_duplicate,
        "record that customers FIRST and SECOND are different people (an audited event on "
        "both): they are no longer reported as likely duplicates of each other",
    )
    p.add_argument("first", help="one customer of the pair")
    p.add_argument("second", help="the other customer")
    p.add_argument("--reason", help="non-personal reason code or note (stored readable)")
