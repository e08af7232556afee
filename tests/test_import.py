"""CSV import on both stores: lenient by default (bad values left out, warnings recorded
by field and reason), strict on request, problems by line number, nothing written on a bad
mapping or file, and never a value in a problem report."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.domain.errors import ValidationFailed
from ledger.importer import CsvImporter, parse_mapping
from ledger.projections.quality import quality_report
from ledger.projections.wiring import customer_queries, runner_of
from tests.helpers import StoreHandle

ACTOR = "importer"
MAP = [
    "first=given_name", "last=family_name", "mail=emails", "tel=phones", "dob=birth_date",
    "street=address_line1", "no=street_number", "town=locality", "zip=postcode", "cc=country",
    "id=external_id:LEGACY", "seg=tags",
]  # fmt: skip
CSV = """first,last,mail,tel,dob,street,no,town,zip,cc,id,seg,notes
Anna,Alpha,anna@example.org,030 1234567,19800517,Hauptstr.,1,Berlin,10115,,L-1,vip;web,x
Bert,Beta,not-an-email,12,19890230,Ring,2,Köln,50667,DE,L-2,,y
,,,,19700101,,,,,,,,z
Cara,Gamma,cara@example.org,+33 1 42 68 53 00,19991231,Rue,3,Paris,75001,FR,L-4,,
"""


def write(tmp_path: Path, text: str = CSV, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def importer(ledger: object, **options: object) -> CsvImporter:
    return CsvImporter(
        ledger,  # type: ignore[arg-type]
        parse_mapping(MAP),
        actor=ACTOR,
        default_country="DE",
        date_format="%Y%m%d",
        **options,  # type: ignore[arg-type]
    )


def test_lenient_import_keeps_rows_and_records_warnings(store: StoreHandle, tmp_path: Path) -> None:
    path = write(tmp_path)
    with store.open() as ledger:
        summary = importer(ledger, batch_size=2).run(path)
        assert (summary.rows, summary.imported, summary.rejected, summary.with_warnings) == (
            4, 3, 1, 1
        )  # fmt: skip
        assert summary.ignored_columns == ["notes"]
        problems = {p.line: p for p in summary.problems}
        assert set(problems) == {3, 4}
        assert not problems[3].rejected
        assert {v.field for v in problems[3].violations} == {"emails[0]", "phones[0]", "birth_date"}
        assert problems[4].rejected  # no name, contact or id: nobody to keep
        reported = " ".join(str(p) for p in problems.values())
        assert "not-an-email" not in reported and "19890230" not in reported

        queries = customer_queries(ledger)
        [anna] = queries.lookup(external_id="LEGACY:L-1")
        assert [line for line, _ in summary.registered] == [2, 3, 5]
        assert summary.registered[0][1] == anna.id
        assert isinstance(anna.personal, dict)
        assert anna.personal["phones"] == ["+49301234567"]  # national, read in --default-country
        assert anna.personal["birth_date"] == "1980-05-17"
        assert anna.personal["addresses"][0]["country"] == "DE"
        assert anna.tags == ["vip", "web"]
        [bert] = queries.lookup(external_id="LEGACY:L-2")
        assert isinstance(bert.personal, dict)
        assert "emails" not in bert.personal and "birth_date" not in bert.personal
        flagged = ledger.history(bert.id)[1]
        assert flagged.event_type == "DataQualityFlagged"
        assert flagged.personal is None  # a readable event, holding field names and reasons
        assert {w["field"] for w in flagged.details["warnings"]} == {
            "emails[0]",
            "phones[0]",
            "birth_date",
        }
        report = quality_report(runner_of(ledger).db, review_after_days=365)
        assert report.with_warnings == 1
        assert queries.lookup(external_id="LEGACY:L-3") == []


def test_strict_import_rejects_rows_with_any_problem(store: StoreHandle, tmp_path: Path) -> None:
    with store.open() as ledger:
        summary = importer(ledger, strict=True).run(write(tmp_path))
        assert (summary.imported, summary.rejected) == (2, 2)
        assert [p.line for p in summary.problems] == [3, 4]
        assert all(p.rejected for p in summary.problems)


@pytest.mark.parametrize(
    ("mapping", "text", "field"),
    [
        (["last=family_nam"], CSV, "--map"),
        (["absent=family_name"], CSV, "--map"),
        (["last=family_name", "first=family_name"], CSV, "--map"),
        (["last=external_id:bad scheme"], CSV, "--map"),
        (["last=family_name"], "", "file"),
    ],
)
def test_bad_mapping_or_file_writes_nothing(
    store: StoreHandle, tmp_path: Path, mapping: list[str], text: str, field: str
) -> None:
    path = write(tmp_path, text)
    with store.open() as ledger:
        with pytest.raises(ValidationFailed) as refused:
            CsvImporter(ledger, parse_mapping(mapping), actor=ACTOR).run(path)
        assert refused.value.violations[0].field == field
        assert ledger.recorder.max_notification_id() in (None, 0)


def test_unreadable_file_writes_nothing(store: StoreHandle, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("last\nMüller\n".encode("latin-1"))
    with store.open() as ledger:
        with pytest.raises(ValidationFailed, match="UTF-8"):
            CsvImporter(ledger, parse_mapping(["last=family_name"]), actor=ACTOR).run(path)
        with pytest.raises(ValidationFailed, match="does not exist"):
            CsvImporter(ledger, parse_mapping(["last=family_name"]), actor=ACTOR).run(
                tmp_path / "missing.csv"
            )
        with pytest.raises(ValidationFailed) as bad:
            CsvImporter(ledger, parse_mapping(["last=family_name"]), actor=ACTOR,
                        default_country="Germany", date_format="YYYY")  # fmt: skip
        assert {v.field for v in bad.value.violations} == {"--default-country", "--date-format"}
        assert ledger.recorder.max_notification_id() in (None, 0)


UNBALANCED = [
    # An opening quote never closed: every following row would become part of one name.
    pytest.param('first,last\nAnna,Alpha\n"Bert,Beta\nCara,Gamma\nDora,Delta\n', 3, id="to-eof"),
    # Closed again by a later row's quote: the rows in between were silently one field.
    pytest.param(
        'first,last\nAnna,Alpha\nBert,"Beta\nCara,Gamma\n"Dora",Delta\n', 3, id="reclosed"
    ),
    # Closed on a later line with nothing else wrong: a cell spanning rows.
    pytest.param('first,last\nAnna,Alpha\nBert,"Beta\nCara"\nDora,Delta\n', 3, id="spanning"),
    # Text after a closing quote: the quote belonged to something else.
    pytest.param('first,last\nAnna,Alpha\n"Bert"x,Beta\n', 3, id="stray"),
    # The header's own quote.
    pytest.param('first,"last\nAnna,Alpha\n', 1, id="header"),
]


@pytest.mark.parametrize(("text", "line"), UNBALANCED)
def test_unbalanced_quote_is_refused_naming_its_line_and_writes_nothing(
    store: StoreHandle, tmp_path: Path, text: str, line: int
) -> None:
    path = write(tmp_path, text)
    with store.open() as ledger:
        with pytest.raises(ValidationFailed) as refused:
            CsvImporter(
                ledger, parse_mapping(["first=given_name", "last=family_name"]), actor=ACTOR
            ).run(path)
        assert [v.field for v in refused.value.violations] == [f"line {line}"]
        assert "quote" in str(refused.value)
        assert "Beta" not in str(refused.value) and "Gamma" not in str(refused.value)
        assert ledger.recorder.max_notification_id() in (None, 0)


def test_quotes_used_properly_still_import(store: StoreHandle, tmp_path: Path) -> None:
    text = 'first,last\n"Anna","Alpha, Jr."\n5" Bert,"Be""ta"\n'
    path = write(tmp_path, text)
    with store.open() as ledger:
        summary = CsvImporter(
            ledger, parse_mapping(["first=given_name", "last=family_name"]), actor=ACTOR
        ).run(path)
        assert (summary.rows, summary.imported, summary.problems) == (2, 2, [])
        names = {ledger.get(i).to_json()["family_name"] for _, i in summary.registered}
        assert names == {"Alpha, Jr.", 'Be"ta'}


def test_reimporting_an_erased_person_creates_an_unlinked_customer(
    store: StoreHandle, tmp_path: Path
) -> None:
    path = write(tmp_path, CSV.splitlines()[0] + "\n" + CSV.splitlines()[1] + "\n")
    with store.open() as ledger:
        [(_, old)] = importer(ledger).run(path).registered
        ledger.erase(old, actor="dpo", legal_basis="GDPR Art. 17")
        [(_, new)] = importer(ledger).run(path).registered
        assert new != old
        queries = customer_queries(ledger)
        for query in ({"email": "anna@example.org"}, {"phone": "+49 30 1234567"},
                      {"external_id": "LEGACY:L-1"}):  # fmt: skip
            assert [r.id for r in queries.lookup(**query)] == [new]
        for table in ("current_view_lookup", "current_view_tags"):
            rows = store.execute(
                f"SELECT COUNT(*) FROM {table} WHERE customer_id = {store.ph}", (str(old),)
            )
            assert rows[0][0] == 0
        erased = queries.get(old)
        assert erased is not None and erased.status == "erased" and erased.tags == []


def test_a_row_without_a_name_is_kept_when_a_contact_or_id_identifies_it(
    store: StoreHandle, tmp_path: Path
) -> None:
    """An e-mail-only sign-up or a loyalty card is a customer; the same contact arriving
    again later is reported as that customer, by line and id, never by value."""
    first = (
        "first,last,mail,tel,dob,street,no,town,zip,cc,id,seg,notes\n"
        ",,nameless@example.org,030 7654321,,,,,,,L-9,,\n"
    )
    again = (
        "first,last,mail,tel,dob,street,no,town,zip,cc,id,seg,notes\n"
        "Nora,Nameless,nameless@example.org,030 7654321,,,,,,,,,\n"
    )
    with store.open() as ledger:
        summary = importer(ledger).run(write(tmp_path, first, "first.csv"))
        assert (summary.imported, summary.rejected, summary.problems) == (1, 0, [])
        [(_, nameless)] = summary.registered
        [found] = customer_queries(ledger).lookup(external_id="LEGACY:L-9")
        assert found.id == nameless
        summary = importer(ledger).run(write(tmp_path, again, "again.csv"))
        assert summary.imported == 1
        [note] = summary.duplicates
        assert note.line == 2 and note.matches[0][0] == str(nameless)
