"""DESIGN invariants 6 and 7 for projections: after importing customers (and changing,
merging and erasing some), no personal value appears in any stored byte — projection rows
and index tables included — as typed, lower-cased or as digits; lookups still work, so the
data really is in there, sealed and keyed-hashed."""

from __future__ import annotations

import csv
from pathlib import Path

from ledger.importer import CsvImporter, parse_mapping
from ledger.projections.wiring import customer_queries
from tests.helpers import StoreHandle
from tests.projection_support import dump_tables
from tests.test_no_plaintext_at_rest import distinctive_people, leaked

CUSTOMERS = 300
MAP = ["given=given_name", "family=family_name", "email=emails", "phone=phones",
       "street=address_line1", "country=country", "crm=external_id:CRM"]  # fmt: skip


def write_csv(path: Path, people: list[dict[str, object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["given", "family", "email", "phone", "street", "country", "crm"])
        for p in people:
            writer.writerow([
                p["given_name"], p["family_name"], p["emails"][0], p["phones"][0],  # type: ignore[index]
                p["addresses"][0]["address_line1"], "DE", p["external_ids"]["CRM"],  # type: ignore[index]
            ])  # fmt: skip


def test_no_personal_value_in_projection_rows_or_indexes(
    store: StoreHandle, tmp_path: Path
) -> None:
    people = distinctive_people(CUSTOMERS, seed=4)
    for p in people:
        p["birth_date"] = None
    path = tmp_path / "people.csv"
    write_csv(path, people)
    with store.open() as ledger:
        summary = CsvImporter(ledger, parse_mapping(MAP), actor="loader").run(path)
        assert summary.imported == CUSTOMERS
        queries = customer_queries(ledger)
        ids = [queries.lookup(email=str(p["emails"][0]))[0].id for p in people]  # type: ignore[index]
        ledger.merge(ids[0], ids[1], actor="x")
        ledger.change(ids[2], {"phones": ["+4915999999999"]}, actor="x")
        for customer_id in ids[3:13]:
            ledger.erase(customer_id, actor="dpo", legal_basis="GDPR Art. 17")
        tables = dump_tables(store)
        assert len(tables["current_view"]) == CUSTOMERS
        assert len(tables["current_view_lookup"]) >= 3 * (CUSTOMERS - 10)
        assert leaked(store.dump_bytes(), people) == []  # SQLite: WAL included, still open
        [found] = queries.lookup(phone=str(people[200]["phones"][0]))  # type: ignore[index]
        assert found.id == ids[200]
    assert leaked(store.dump_bytes(), people) == []
