"""Import customers from a CSV file, the way legacy data actually looks.

Columns are mapped to the domain's field names (`--map COLUMN=FIELD`): `given_name`,
`family_name`, `emails`, `phones`, `birth_date`, `locale`, `owner`, `tags`, the address
parts (`street_number`, `address_line1`, `address_line2`, `locality`, `region`,
`postcode`, `country`) of the customer's one address, and `external_id:SCHEME` to keep a
source column as an external id. Several columns may feed `emails`, `phones` and `tags`.

Consent columns (`--map COLUMN=consent:PURPOSE`, PURPOSE a purpose of the data policy that
rests on consent) record a consent to that purpose for every row whose cell says yes (`yes`,
`y`, `true`, `1`, `x`); `no`, `n`, `false`, `0` or an empty cell records none. Each column is
a consent of its own (a checkbox per purpose, so PIPL's separate consent is met), recorded in
the same save as the registration, with the source `--consent-source` (default `import`),
`--consent-form` and `--consent-proof`. Any other value is a problem of the row's
`consent:PURPOSE` field like any other: the row is kept without that consent (or rejected
with `strict`).

Every value goes through the same validation as any other registration. By default a row
with an invalid value is kept with that value left out, and a data-quality warning naming
the field and the reason (never the value) is recorded against the new customer; a row that
cannot be kept at all (no name left) is rejected. `strict` rejects every row with a problem.
Problems are reported by line number and field, never by value.

Rows are registered in batches (`CustomerLedger.register_many`: the keys in one key-store
transaction, the events in one save), which is what makes thousands of rows take seconds.
Everything that can be checked before writing (the file, the header, the mapping, every
row) is: a row is validated once, with the default country, and that validated profile is
what is screened and registered.

Likely duplicates (LEDGER_DUPLICATE_POLICY, see `ledger.projections.duplicates`): each row
is looked up in the duplicate index (customers registered before the import) and among the
file's earlier kept rows, before anything is written. `warn` imports the row and reports
the line with the likely duplicates' ids (or line numbers); `refuse` rejects it, with the
same report. A ledger whose model is not fit yet screens with a model fit on the file.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger.application import CustomerLedger
from ledger.consent.service import ConsentService, ConsentSource, give_all
from ledger.domain.customer import Customer
from ledger.domain.errors import FieldViolation, ValidationFailed
from ledger.domain.profile import ADDRESS_FIELDS, EXTERNAL_ID_PREFIX, validate_registration
from ledger.policy.source import PolicySource
from ledger.projections.dedup import BlockingKeyer, DuplicateIndex, Model

SCALAR_FIELDS = ("given_name", "family_name", "birth_date", "locale", "owner")
CONSENT_PREFIX = "consent:"
YES = frozenset({"yes", "y", "true", "1", "x"})
NO = frozenset({"no", "n", "false", "0"})
LIST_FIELDS = ("emails", "phones", "tags")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
_PATH = re.compile(r"(?P<field>[a-z_]+)(?:\[(?P<index>\d+)\])?(?:\.(?P<part>[A-Za-z0-9_.-]+))?")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
DEFAULT_BATCH = 500
# Rows a screening model is fit on when the ledger's own model is not fit yet: enough for
# EM and chance agreement, and a bound on the time and memory the fit takes.
FIT_ROWS = 20_000
# Fewer rows than this are too few to fit on: chance agreement is counted on random pairs
# of rows, which are then too often the file's own duplicates. Such a file is screened
# with the starting model, as before (its few reports are read one by one).
MIN_FIT_ROWS = 200
_BATCH_POSITION = re.compile(r"\[(?P<index>\d+)\]\.(?P<field>.*)")

Progress = Callable[[int, int], None]
_Row = tuple[int, dict[str, Any], list[FieldViolation]]  # (line, validated profile, warnings)


def _mapping_error(reason: str) -> ValidationFailed:
    return ValidationFailed([FieldViolation("--map", reason)])


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """`COLUMN=FIELD` pairs → {column: field}; refuses unknown fields and a scalar field
    fed by two columns (which one would win?)."""
    if not items:
        raise _mapping_error("map at least one column, e.g. --map surname=family_name")
    mapping: dict[str, str] = {}
    for item in items:
        column, sep, target = item.rpartition("=")
        column, target = column.strip(), target.strip()
        if not sep or not column or not target:
            raise _mapping_error("expected COLUMN=FIELD")
        if target.startswith(EXTERNAL_ID_PREFIX):
            if not _SCHEME.fullmatch(target[len(EXTERNAL_ID_PREFIX) :]):
                raise _mapping_error(f"{target[:60]!r} does not name a valid external id scheme")
        elif target.startswith(CONSENT_PREFIX):
            pass  # the purpose is checked against the data policy by `CsvImporter`
        elif target not in (*SCALAR_FIELDS, *LIST_FIELDS, *ADDRESS_FIELDS):
            raise _mapping_error(f"{target[:60]!r} is not a field (see ledger import --help)")
        if column in mapping:
            raise _mapping_error(f"column {column[:60]!r} is mapped twice")
        if target not in LIST_FIELDS and target in mapping.values():
            raise _mapping_error(f"field {target} is fed by two columns")
        mapping[column] = target
    return mapping


@dataclass(frozen=True)
class RowProblem:
    line: int
    violations: list[FieldViolation]
    rejected: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "rejected": self.rejected,
            "problems": [{"field": v.field, "reason": v.reason} for v in self.violations],
        }

    def __str__(self) -> str:
        what = "rejected" if self.rejected else "kept without"
        return f"line {self.line}: {what} " + "; ".join(str(v) for v in self.violations)


@dataclass(frozen=True)
class DuplicateNote:
    """A row that looks like a customer already in the ledger or another row of the file:
    ids and line numbers with scores, never a value."""

    line: int
    matches: list[tuple[str, float]]  # (customer id or "line N", score), best first
    rejected: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "rejected": self.rejected,
            "likely_duplicates": [{"of": of, "score": round(s, 4)} for of, s in self.matches],
        }

    def __str__(self) -> str:
        what = "rejected as" if self.rejected else "imported, but"
        listed = ", ".join(f"{of} ({score:.2f})" for of, score in self.matches)
        return f"line {self.line}: {what} likely duplicate of {listed}"


@dataclass
class ImportSummary:
    file: str
    rows: int = 0
    imported: int = 0
    rejected: int = 0
    with_warnings: int = 0
    seconds: float = 0.0
    ignored_columns: list[str] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    registered: list[tuple[int, UUID]] = field(default_factory=list)  # (line, new id)
    duplicates: list[DuplicateNote] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "imported": self.imported,
            "rejected": self.rejected,
            "with_warnings": self.with_warnings,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds else None,
            "ignored_columns": self.ignored_columns,
            "problems": [p.to_json() for p in self.problems],
            "registered": [{"line": line, "id": str(i)} for line, i in self.registered],
            "likely_duplicates": [note.to_json() for note in self.duplicates],
        }


class CsvImporter:
    def __init__(
        self,
        ledger: CustomerLedger,
        mapping: dict[str, str],
        *,
        actor: str,
        reason: str | None = None,
        default_country: str | None = None,
        date_format: str | None = None,
        strict: bool = False,
        delimiter: str = ",",
        batch_size: int = DEFAULT_BATCH,
        duplicate_policy: str | None = None,
        consent_source: ConsentSource | None = None,
        policy: PolicySource | None = None,
    ) -> None:
        """`duplicate_policy`: off | warn | refuse (default: the ledger's setting).
        `consent_source`: what consent columns record as their source (default: channel
        `import`); `policy`: the data policy consent columns are checked against."""
        violations = []
        self.consent_source = consent_source or ConsentSource("import")
        consents = ConsentService(ledger, policy)
        purposes = [
            t[len(CONSENT_PREFIX) :] for t in mapping.values() if t.startswith(CONSENT_PREFIX)
        ]
        for purpose in purposes:
            try:
                consents.check([purpose], self.consent_source)
            except ValidationFailed as exc:
                violations += [
                    FieldViolation(
                        "--map" if v.field == "purpose" else f"--consent-{v.field}",
                        f"consent:{purpose[:60]}: {v.reason}" if v.field == "purpose" else v.reason,
                    )
                    for v in exc.violations
                ]
        # Per accepted line: the purposes its consent columns say yes to.
        self.consents: dict[int, list[str]] = {}
        if default_country is not None and not _COUNTRY.fullmatch(default_country):
            violations.append(FieldViolation("--default-country", "not a two-letter country code"))
        if date_format is not None and "%" not in date_format:
            violations.append(FieldViolation("--date-format", "not a strftime format, e.g. %Y%m%d"))
        if len(delimiter) != 1:
            violations.append(FieldViolation("--delimiter", "must be one character"))
        violations = list(dict.fromkeys(violations))
        if violations:
            raise ValidationFailed(violations)
        self.ledger = ledger
        self.mapping = mapping
        self.actor = actor
        self.reason = reason
        self.default_country = default_country.upper() if default_country else None
        self.date_format = date_format
        self.strict = strict
        self.delimiter = delimiter
        self.batch_size = batch_size
        self.duplicate_policy = duplicate_policy or ledger.settings.duplicate_policy

    # The whole file ----------------------------------------------------------------------------

    def run(self, path: Path, progress: Progress | None = None) -> ImportSummary:
        """Every row is read and validated (with the default country) before the first
        batch is written, so a row cannot abort the import half-way: the acceptable rows
        are written, the others reported by line. Costs holding the file's validated
        profiles in memory at once (a few hundred bytes a row)."""
        started = time.perf_counter()
        summary = ImportSummary(file=str(path))
        header, total = self._check_file(path)
        summary.ignored_columns = [c for c in header if c not in self.mapping]
        accepted: list[_Row] = []
        for line, profile, warnings, problem in self._rows(path):
            summary.rows += 1
            if problem is not None:
                summary.problems.append(problem)
            if profile is None:
                summary.rejected += 1
            else:
                accepted.append((line, profile, warnings))
                summary.with_warnings += 1 if warnings else 0
            if progress is not None and summary.rows % 100 == 0:
                progress(summary.rows, total)
        self._screen(accepted, summary)
        for start in range(0, len(accepted), self.batch_size):
            self._register(accepted[start : start + self.batch_size], summary)
        if progress is not None:
            progress(summary.rows, total)
        summary.seconds = time.perf_counter() - started
        return summary

    def _register(self, batch: list[_Row], summary: ImportSummary) -> None:
        """One batch, validated as the importer validated it (same region). Should the
        ledger still refuse a profile, the error names its line, not its batch position."""
        try:
            ids = self.ledger.register_many(
                [(profile, warnings) for _, profile, warnings in batch],
                actor=self.actor,
                reason=self.reason,
                default_region=self._region(),
                then=lambda index, customer: self._give_consents(batch[index][0], customer),
            )
        except ValidationFailed as exc:
            raise ValidationFailed([_by_line(v, batch) for v in exc.violations]) from None
        summary.registered += [(line, i) for (line, _, _), i in zip(batch, ids, strict=True)]
        summary.imported += len(ids)

    def _give_consents(self, line: int, customer: Customer) -> None:
        for purpose in self.consents.get(line, []):  # one act per column: separate consents
            give_all(customer, [purpose], self.consent_source, actor=self.actor, reason=self.reason)

    def _screen(self, accepted: list[_Row], summary: ImportSummary) -> None:
        """Apply the duplicate policy to the file's rows (refused rows leave `accepted`),
        before anything is written. Each row is looked up, as validated (E.164 phones,
        canonical emails), among the ledger's customers and the file's earlier kept rows.

        Scored with the ledger's model once it has been fit on the ledger's data. Until
        then (a new or small ledger) the starting model is a vague one that scores people
        sharing a surname and a town as likely duplicates, so the model is first fit on
        the file's own rows (`DuplicateIndex.refit`: EM on the candidate pairs, or chance
        agreement from random pairs of rows when the file has too few duplicates), when the
        file has `MIN_FIT_ROWS` rows or more."""
        if self.duplicate_policy == "off" or not accepted:
            return
        from ledger.projections.wiring import duplicate_queries

        queries = duplicate_queries(self.ledger)
        model = queries.model
        if model.method == "start" and len(accepted) >= MIN_FIT_ROWS:
            model = self._fit_on_file(queries.keyer, accepted)
        seen = DuplicateIndex(queries.keyer, model=model)  # the file's kept rows so far
        kept = []
        for line, profile, warnings in accepted:
            found = [(m.customer_id, m.score) for m in queries.candidates(profile, model=model)]
            found += [
                (f"line {m.customer_id}", m.score)
                for m in seen.lookup(profile, min_score=queries.threshold)
            ]
            found.sort(key=lambda match: -match[1])
            refused = bool(found) and self.duplicate_policy == "refuse"
            if found:
                summary.duplicates.append(DuplicateNote(line, found[:5], refused))
            if refused:
                summary.rejected += 1
                summary.with_warnings -= 1 if warnings else 0
                continue
            seen.add(str(line), profile)
            kept.append((line, profile, warnings))
        accepted[:] = kept

    @staticmethod
    def _fit_on_file(keyer: BlockingKeyer, accepted: list[_Row]) -> Model:
        """The model fit on (the first `FIT_ROWS` of) the file's rows, in memory only:
        the ledger's stored model is left alone (`ledger import` refits it on the ledger
        after a large import)."""
        index = DuplicateIndex(keyer)
        for line, profile, _ in accepted[:FIT_ROWS]:
            index.add(str(line), profile)
        return index.refit()

    def _check_file(self, path: Path) -> tuple[list[str], int]:
        """Read the whole file once before writing anything: unreadable text, a missing
        header, a mapped column that is not there, or a quote that is not closed where its
        row ends is refused up front."""
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                lines = _RecordLines(handle)
                reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
                header = _next_record(reader, lines)
                total = 0
                while _next_record(reader, lines) is not None:
                    total += 1
        except FileNotFoundError:
            raise ValidationFailed([FieldViolation("file", "does not exist")]) from None
        except UnicodeDecodeError:
            raise ValidationFailed([FieldViolation("file", "is not UTF-8 text")]) from None
        except (OSError, csv.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "is not valid CSV"
            raise ValidationFailed([FieldViolation("file", f"cannot be read ({reason})")]) from None
        if not header:
            raise ValidationFailed([FieldViolation("file", "has no header line")])
        header = [c.strip() for c in header]
        absent = [c for c in self.mapping if c not in header]
        if absent:
            raise _mapping_error(
                f"no column {', '.join(repr(c[:60]) for c in absent)} in the header"
            )
        return header, total

    def _rows(
        self, path: Path
    ) -> Iterator[tuple[int, dict[str, Any] | None, list[FieldViolation], RowProblem | None]]:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=self.delimiter)
            header = [c.strip() for c in next(reader)]
            columns = [(i, name) for i, name in enumerate(header) if name in self.mapping]
            for cells in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue  # blank line
                values = {name: cells[i] if i < len(cells) else "" for i, name in columns}
                yield (line, *self.row(line, values))

    # One row ---------------------------------------------------------------------------------

    def row(
        self, line: int, values: dict[str, str]
    ) -> tuple[dict[str, Any] | None, list[FieldViolation], RowProblem | None]:
        """(validated profile to register or None, warnings to record, problem to report).
        The profile is the validated one (phones E.164 read with the default country,
        emails canonical): it is what is screened for duplicates and registered."""
        profile, violations = self._profile(values)
        consents, consent_problems = self._consents_of(values)
        violations += consent_problems
        try:
            validated = validate_registration(profile, default_region=self._region())
        except ValidationFailed as exc:
            violations += exc.violations
        self.consents[line] = consents
        if not violations:
            return validated, [], None
        if self.strict:
            return None, [], RowProblem(line, violations, rejected=True)
        for violation in violations:
            if violation.field.startswith(CONSENT_PREFIX):
                continue  # kept without that consent: none is recorded
            if not _drop(profile, violation.field):
                return None, [], RowProblem(line, violations, rejected=True)
        _compact(profile)
        try:
            validated = validate_registration(profile, default_region=self._region())
        except ValidationFailed as exc:
            return None, [], RowProblem(line, violations + exc.violations, rejected=True)
        return validated, violations, RowProblem(line, violations, rejected=False)

    def _consents_of(self, values: dict[str, str]) -> tuple[list[str], list[FieldViolation]]:
        """The purposes the row's consent columns say yes to, and its unreadable cells."""
        given: list[str] = []
        problems: list[FieldViolation] = []
        for column, raw in values.items():
            target = self.mapping[column]
            if not target.startswith(CONSENT_PREFIX):
                continue
            answer = raw.strip().lower()
            if answer in YES:
                given.append(target[len(CONSENT_PREFIX) :])
            elif answer and answer not in NO:
                problems.append(FieldViolation(target, "must be yes or no (y/n, true/false, 1/0)"))
        return given, problems

    def _region(self) -> str | None:
        return self.default_country or self.ledger.settings.default_region

    def _profile(self, values: dict[str, str]) -> tuple[dict[str, Any], list[FieldViolation]]:
        profile: dict[str, Any] = {}
        address: dict[str, str] = {}
        external: dict[str, str] = {}
        violations: list[FieldViolation] = []
        for column, raw in values.items():
            text = raw.strip()
            if not text:
                continue
            target = self.mapping[column]
            if target.startswith(CONSENT_PREFIX):
                continue  # not a profile field (`_consents_of`)
            if target.startswith(EXTERNAL_ID_PREFIX):
                external[target[len(EXTERNAL_ID_PREFIX) :]] = text
            elif target in ADDRESS_FIELDS:
                address[target] = text
            elif target == "tags":
                profile.setdefault("tags", []).extend(
                    t.strip() for t in re.split(r"[,;]", text) if t.strip()
                )
            elif target in LIST_FIELDS:
                profile.setdefault(target, []).append(text)
            elif target == "birth_date" and self.date_format:
                try:
                    profile[target] = datetime.strptime(text, self.date_format).date().isoformat()
                except ValueError:
                    violations.append(
                        FieldViolation("birth_date", f"not a real date ({self.date_format})")
                    )
            else:
                profile[target] = text
        if address:
            if self.default_country:
                address.setdefault("country", self.default_country)
            profile["addresses"] = [address]
        if external:
            profile["external_ids"] = external
        return profile, violations


def _by_line(violation: FieldViolation, batch: list[_Row]) -> FieldViolation:
    """`[i].field` (a position in the batch) → `line N: field`."""
    match = _BATCH_POSITION.fullmatch(violation.field)
    if match is None or int(match["index"]) >= len(batch):
        return violation
    return FieldViolation(
        f"line {batch[int(match['index'])][0]}: {match['field']}", violation.reason
    )


def _drop(profile: dict[str, Any], path: str) -> bool:
    """Leave out the value a violation is about; False when there is nothing to leave out
    (then the row cannot be kept, e.g. it has no name at all)."""
    match = _PATH.fullmatch(path)
    if match is None:
        return False
    name, index, part = match["field"], match["index"], match["part"]
    if name not in profile:
        return name == "birth_date"  # already left out (an unparseable date)
    if name in LIST_FIELDS and index is not None:
        items = profile[name]
        position = int(index)
        if position < len(items):
            items[position] = None  # removed after all violations are handled
            return True
        return False
    if name == "addresses":
        if part is not None and part != "country" and index is not None:
            profile["addresses"][int(index)].pop(part, None)
        else:
            profile.pop("addresses")
        return True
    if name == "external_ids" and part is not None:
        profile["external_ids"].pop(part, None)
        if not profile["external_ids"]:
            profile.pop("external_ids")
        return True
    if name in ("given_name", "family_name") and not any(
        profile.get(n) for n in ("given_name", "family_name") if n != name
    ):
        return False  # leaving the only name out would leave no customer
    profile.pop(name)
    return True


def _compact(profile: dict[str, Any]) -> None:
    for name in LIST_FIELDS:
        if name in profile:
            profile[name] = [v for v in profile[name] if v is not None]
            if not profile[name]:
                profile.pop(name)


class _RecordLines:
    """The file's lines as the CSV reader takes them, keeping those of the current record
    (the reader takes exactly one record's lines per row)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.current: list[str] = []
        self.first_line = 1  # of the current record

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.current.append(line)
        return line

    def start_record(self, line_num: int) -> None:
        self.current = []
        self.first_line = line_num + 1


def _next_record(reader: Any, lines: _RecordLines) -> list[str] | None:
    """The next record, or None at the end. An unbalanced quote makes the CSV reader take
    the following rows into one field until a later quote (or the end of the file): a
    record running over several lines, or one the strict reader refuses, is refused
    naming the line its quoted field opened on. A cell cannot hold a line break anyway
    (stored text is one line, see `ledger.domain.text`), so no good row is lost."""
    lines.start_record(reader.line_num)
    try:
        record: list[str] | None = next(reader, None)
    except csv.Error:
        if any('"' in text for text in lines.current):
            raise _unbalanced(lines) from None
        raise
    if len(lines.current) > 1:
        raise _unbalanced(lines)
    return record


def _unbalanced(lines: _RecordLines) -> ValidationFailed:
    return ValidationFailed(
        [
            FieldViolation(
                f"line {_quote_opened(lines)}",
                "a quoted field opens here and is not closed where its row ends "
                "(an unbalanced quote); nothing was imported",
            )
        ]
    )


def _quote_opened(lines: _RecordLines) -> int:
    """The first line of the record at whose end a quote is still open (the quote that
    swallowed what follows opened on it); else the record's first line."""
    quotes = 0
    for offset, text in enumerate(lines.current):
        quotes += text.count('"')
        if quotes % 2:
            return lines.first_line + offset
    return lines.first_line
