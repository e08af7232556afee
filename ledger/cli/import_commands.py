"""`ledger import`: register customers from a CSV file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ledger.cli.common import AddCommand, emit, open_for, record_read
from ledger.cli.duplicate_commands import COMPARED_FIELDS
from ledger.cli.progress import progress_bar
from ledger.config import Settings
from ledger.consent.service import ConsentSource
from ledger.domain.profile import ADDRESS_FIELDS
from ledger.importer import LIST_FIELDS, SCALAR_FIELDS, CsvImporter, ImportSummary, parse_mapping
from ledger.projections.wiring import duplicate_queries

SHOWN_PROBLEMS = 20
REFIT_AFTER = 1000  # imported rows


def _summary_text(summary: ImportSummary) -> str:
    lines = [
        f"{summary.rows} rows: {summary.imported} imported "
        f"({summary.with_warnings} with warnings), {summary.rejected} rejected, "
        f"in {summary.seconds:.2f}s"
    ]
    if summary.ignored_columns:
        lines.append(f"ignored columns: {', '.join(summary.ignored_columns)}")
    for problem in summary.problems[:SHOWN_PROBLEMS]:
        lines.append(f"  {problem}")
    if len(summary.problems) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(summary.problems) - SHOWN_PROBLEMS} more (see --json)")
    if summary.duplicates:
        lines.append(f"{len(summary.duplicates)} rows look like duplicates:")
        lines += [f"  {note}" for note in summary.duplicates[:SHOWN_PROBLEMS]]
        if len(summary.duplicates) > SHOWN_PROBLEMS:
            more = len(summary.duplicates) - SHOWN_PROBLEMS
            lines.append(f"  ... and {more} more (see --json or ledger duplicates)")
    return "\n".join(lines)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    mapping = parse_mapping(args.map)
    with open_for(settings, create=True) as ledger:
        importer = CsvImporter(
            ledger,
            mapping,
            actor=settings.actor,
            reason=args.reason,
            default_country=args.default_country,
            date_format=args.date_format,
            strict=args.strict,
            delimiter=args.delimiter,
            consent_source=ConsentSource(
                args.consent_source, args.consent_form or "", args.consent_proof or ""
            ),
        )
        with progress_bar(f"importing {Path(args.file).name}") as update:
            summary = importer.run(Path(args.file), progress=update)
        if summary.imported >= REFIT_AFTER:
            # Many new customers: re-estimate the duplicate model on them, so registrations
            # and look-ups that follow are scored for this ledger's data.
            duplicate_queries(ledger).refit()
        # Rows reported as likely duplicates of existing customers disclose how those
        # customers' personal data compares: recorded before the report is printed.
        existing = [of for note in summary.duplicates for of, _ in note.matches]
        record_read(
            ledger, args, settings, [c for c in existing if not c.startswith("line ")],
            COMPARED_FIELDS,
        )  # fmt: skip
    emit(args, summary.to_json(), _summary_text(summary))
    return 0 if summary.rejected == 0 else 1


def add_commands(add: AddCommand) -> None:
    fields = [*SCALAR_FIELDS, *LIST_FIELDS, *ADDRESS_FIELDS, "external_id:SCHEME",
              "consent:PURPOSE (yes/no)"]  # fmt: skip
    p = add(
        "import",
        cmd_import,
        "register customers from a CSV file (invalid values are left out and recorded as "
        "data-quality warnings; --strict rejects such rows). Rows that look like customers "
        "already in the ledger (or like other rows) are reported by line, or rejected with "
        "LEDGER_DUPLICATE_POLICY=refuse",
    )
    p.add_argument("file", help="UTF-8 CSV with a header line")
    p.add_argument(
        "--map",
        action="append",
        required=True,
        metavar="COLUMN=FIELD",
        help=f"FIELD is one of {', '.join(fields)}; emails, phones and tags may be fed by "
        "several columns; unmapped columns are ignored",
    )
    p.add_argument(
        "--default-country",
        dest="default_country",
        metavar="CC",
        help="country of addresses without one; region of national phone numbers",
    )
    p.add_argument("--date-format", dest="date_format", metavar="FORMAT",
                   help="how birth dates are written, e.g. %%Y%%m%%d or %%d/%%m/%%Y "
                   "(default YYYY-MM-DD)")  # fmt: skip
    p.add_argument("--delimiter", default=",", help="field separator (default ,)")
    p.add_argument("--strict", action="store_true", help="reject rows with any invalid value")
    p.add_argument("--consent-source", default="import", metavar="CHANNEL",
                   help="channel recorded with consents from consent:PURPOSE columns "
                   "(default import)")  # fmt: skip
    p.add_argument("--consent-form", metavar="CODE", help="form or version those consents used")
    p.add_argument("--consent-proof", metavar="CODE", help="reference to their proof")
    p.add_argument("--reason", help="non-personal reason code recorded on each registration")
