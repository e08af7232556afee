"""Import fixes on both stores: one validation per row with `--default-country` (national
phone numbers on rows without an address), screening on the validated values, and a
screening model fit on the file while the ledger's own is untrained."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest

from ledger.cli.main import main
from ledger.importer import CsvImporter, parse_mapping
from ledger.projections.wiring import customer_queries
from tests.helpers import StoreHandle

ACTOR = "importer"
CN_MAP = ["given=given_name", "family=family_name", "tel=phones", "town=locality",
          "cc=country", "id=external_id:LEGACY"]  # fmt: skip


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_cn_national_phones_without_address_import_fully(
    store: StoreHandle, tmp_path: Path
) -> None:
    """The batch after the first held rows without an address: the ledger validated them
    again with only LEDGER_DEFAULT_REGION and aborted, the first batch already written."""
    rows = [
        ["Wei", "Zhang", "13800138000", "Beijing", "CN", "C-1"],
        ["Li", "Wang", "13900139000", "Shanghai", "CN", "C-2"],
        ["Min", "Liu", "138-0013-8001", "", "", "C-3"],  # no address: national, read in CN
        ["Jun", "Chen", "13700137000", "", "", "C-4"],
        ["Na", "Yang", "12", "", "", "C-5"],  # not a phone number: left out, by line
    ]
    path = write_rows(tmp_path / "cn.csv", ["given", "family", "tel", "town", "cc", "id"], rows)
    with store.open() as ledger:
        summary = CsvImporter(
            ledger, parse_mapping(CN_MAP), actor=ACTOR, default_country="CN", batch_size=2
        ).run(path)
        assert (summary.rows, summary.imported, summary.rejected) == (5, 5, 0)
        assert [(p.line, [v.field for v in p.violations]) for p in summary.problems] == [
            (6, ["phones[0]"])
        ]
        queries = customer_queries(ledger)
        phones = {}
        for n in range(1, 5):
            [customer] = queries.lookup(external_id=f"LEGACY:C-{n}")
            assert isinstance(customer.personal, dict)
            phones[n] = customer.personal["phones"]
        assert phones == {
            1: ["+8613800138000"], 2: ["+8613900139000"],
            3: ["+8613800138001"], 4: ["+8613700137000"],
        }  # fmt: skip


def test_cli_import_with_default_country_exits_0_and_prints_the_summary(
    store: StoreHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ledger import --default-country CN` exited 2 with no summary on the row without
    an address (the ledger validated it again without the default country)."""
    for name in [k for k in os.environ if k.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    monkeypatch.setenv("LEDGER_DUPLICATE_POLICY", "refuse")
    rows = [
        ["Wei", "Zhang", "13800138000", "Beijing", "CN", "C-1"],
        ["Min", "Liu", "138-0013-8001", "", "", "C-2"],
        ["Na", "Yang", "12", "", "", "C-3"],
    ]
    path = write_rows(tmp_path / "cn.csv", ["given", "family", "tel", "town", "cc", "id"], rows)
    maps = [arg for item in CN_MAP for arg in ("--map", item)]
    code = main(["import", str(path), *maps, "--default-country", "CN", "--actor", "importer",
                 "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out)
    assert (summary["rows"], summary["imported"], summary["rejected"]) == (3, 3, 0)
    assert [(p["line"], p["rejected"]) for p in summary["problems"]] == [(4, False)]
    assert "12" not in json.dumps(summary["problems"])


def test_strict_failing_row_is_reported_by_line_and_written_by_nobody(
    store: StoreHandle, tmp_path: Path
) -> None:
    rows = [
        ["Wei", "Zhang", "13800138000", "", "", "C-1"],
        ["Li", "Wang", "13900139000", "", "", "C-2"],
        ["Na", "Yang", "12", "", "", "C-3"],
    ]
    path = write_rows(tmp_path / "cn.csv", ["given", "family", "tel", "town", "cc", "id"], rows)
    with store.open() as ledger:
        summary = CsvImporter(
            ledger, parse_mapping(CN_MAP), actor=ACTOR, default_country="CN", strict=True,
            batch_size=1,
        ).run(path)  # fmt: skip
        assert (summary.imported, summary.rejected) == (2, 1)
        assert [(p.line, p.rejected) for p in summary.problems] == [(4, True)]
        assert [line for line, _ in summary.registered] == [2, 3]
        assert customer_queries(ledger).lookup(external_id="LEGACY:C-3") == []


def test_screening_looks_up_the_normalised_phone(store: StoreHandle, tmp_path: Path) -> None:
    """ "138-0013-8000" was looked up raw (as +13800138000) and missed the customer."""
    mapping = parse_mapping(["family=family_name", "tel=phones"])
    first = write_rows(tmp_path / "a.csv", ["family", "tel"], [["Zhang", "+8613800138000"]])
    second = write_rows(tmp_path / "b.csv", ["family", "tel"], [["Zhang", "138-0013-8000"]])
    with store.open() as ledger:
        [(_, existing)] = CsvImporter(ledger, mapping, actor=ACTOR).run(first).registered
        summary = CsvImporter(
            ledger, mapping, actor=ACTOR, default_country="CN", duplicate_policy="refuse"
        ).run(second)
        assert (summary.imported, summary.rejected) == (0, 1)
        [note] = summary.duplicates
        assert note.line == 2 and note.rejected
        assert [of for of, _ in note.matches] == [str(existing)]


GIVEN = ["Anna", "Lena", "Marie", "Sophie", "Laura", "Julia", "Lea", "Hannah", "Sarah", "Lisa",
         "Paul", "Lukas", "Felix", "Jonas", "Leon", "Maximilian", "Ben", "Tim", "Jan", "Finn",
         "Katharina", "Johanna", "Emma", "Mia", "Clara", "Thomas", "Michael", "Stefan",
         "Andreas", "Peter"]  # fmt: skip
FAMILY = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
          "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf",
          "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann",
          "Hartmann", "Lange"]  # fmt: skip
TOWNS = [("Berlin", "10115"), ("Hamburg", "20095"), ("München", "80331"), ("Köln", "50667"),
         ("Frankfurt am Main", "60311"), ("Stuttgart", "70173"), ("Leipzig", "04109"),
         ("Dresden", "01067")]  # fmt: skip
STREETS = ["Hauptstraße", "Schulstraße", "Gartenstraße", "Bahnhofstraße", "Dorfstraße",
           "Bergstraße", "Lindenstraße", "Kirchstraße"]  # fmt: skip
DE_HEADER = ["first", "last", "mail", "tel", "dob", "street", "no", "town", "zip", "person"]
DE_MAP = ["first=given_name", "last=family_name", "mail=emails", "tel=phones",
          "dob=birth_date", "street=address_line1", "no=street_number", "town=locality",
          "zip=postcode"]  # fmt: skip


def german_rows(count: int, duplicates: int, seed: int = 7) -> list[list[str]]:
    """`count` distinct people in a few towns (so many share a surname, a street, a town),
    then `duplicates` of them again with a typo'd given name and another phone; the last
    column names the person, for the test only (it is not imported)."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        town, postcode = rng.choice(TOWNS)
        rows.append([
            given, family, f"{rng.getrandbits(40):010x}@example.de",
            f"0{rng.randint(30, 89)} {rng.randint(1000000, 9999999)}",
            f"{rng.randint(1940, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            rng.choice(STREETS), str(rng.randint(1, 400)), town, postcode, f"P{n}",
        ])  # fmt: skip
    for original in rng.sample(rows[:], duplicates):
        copy = list(original)
        copy[0] = copy[0][:-1] + "e" if not copy[0].endswith("e") else copy[0][:-1] + "a"
        copy[3] = f"0{rng.randint(150, 179)} {rng.randint(1000000, 9999999)}"
        rows.append(copy)
    rng.shuffle(rows)
    return rows


def wrongly_refused(rows: list[list[str]], summary_notes: list[object]) -> list[int]:
    """Lines refused with no row of the same person among their matches."""
    person = {line: row[-1] for line, row in enumerate(rows, start=2)}
    wrong = []
    for note in summary_notes:
        line, matches, rejected = note.line, note.matches, note.rejected  # type: ignore[attr-defined]
        if not rejected:
            continue
        same = [
            of
            for of, _ in matches
            if of.startswith("line ") and person[int(of[5:])] == person[line]
        ]
        if not same:
            wrong.append(line)
    return wrong


def test_first_import_into_a_new_ledger_refuses_no_row_without_a_true_duplicate(
    store: StoreHandle, tmp_path: Path
) -> None:
    rows = german_rows(2000, duplicates=10)
    path = write_rows(tmp_path / "de.csv", DE_HEADER, rows)
    with store.open() as ledger:
        summary = CsvImporter(
            ledger, parse_mapping(DE_MAP), actor=ACTOR, default_country="DE",
            duplicate_policy="refuse",
        ).run(path)  # fmt: skip
        assert wrongly_refused(rows, summary.duplicates) == []
        assert summary.rows == 2010
        assert summary.rejected >= 8  # the true duplicates are still found
