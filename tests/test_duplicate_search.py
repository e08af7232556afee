"""Duplicate detection as users reach it: `ledger duplicates` and the registration policy
through real processes, and FindDuplicates through a real gRPC server (owner-limited for
sales, masked, with field violations for bad input)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import pytest

from ledger.cli.duplicate_commands import COMPARED_FIELDS
from ledger.cli.main import main
from ledger.v1 import customer_service_pb2 as pb
from ledger.v1 import resources_pb2
from tests.api_support import Api, api, customer, fails
from tests.helpers import StoreHandle

__all__ = ["api"]  # the fixture
Code = grpc.StatusCode
ADA = ["--given-name", "Ada", "--family-name", "Lovelace", "--email", "ada@example.org",
       "--birth-date", "1915-12-10"]  # fmt: skip


def ledger_cli(
    store: StoreHandle, *args: str, code: int = 0, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    environ.update(LEDGER_ACTOR="cli-test", LEDGER_STORE=store.settings.store_url,
                   LEDGER_DATA_DIR=str(store.workdir), **env)  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", *args],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def test_duplicates_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["duplicates", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--min-score" in out and "--of" in out and "--json" in out


def test_register_warns_or_refuses_a_likely_duplicate(store: StoreHandle) -> None:
    first = as_json(ledger_cli(store, "register", *ADA, "--json"))["id"]
    assert "likely_duplicates" not in as_json(
        ledger_cli(store, "register", "--given-name", "Grace", "--family-name", "Hopper", "--json")
    )
    warned = ledger_cli(store, "register", *ADA, "--json")
    second = as_json(warned)["id"]
    assert [m["customer_id"] for m in as_json(warned)["likely_duplicates"]] == [first]
    assert first in warned.stderr and "warning" in warned.stderr

    with store.open() as ledger:
        events = ledger.recorder.max_notification_id()
    refused = ledger_cli(store, "register", *ADA, code=3, LEDGER_DUPLICATE_POLICY="refuse")
    assert first in refused.stderr and second in refused.stderr
    assert "Ada" not in refused.stderr and "ada@" not in refused.stderr  # ids only
    with store.open() as ledger:
        assert ledger.recorder.max_notification_id() == events  # nothing was written
    ledger_cli(store, "register", *ADA, LEDGER_DUPLICATE_POLICY="off")  # no check at all
    bad = ledger_cli(store, "register", *ADA, code=2, LEDGER_DUPLICATE_POLICY="sometimes")
    assert "LEDGER_DUPLICATE_POLICY" in bad.stderr
    bad = ledger_cli(store, "register", *ADA, code=2, LEDGER_DUPLICATE_THRESHOLD="1.5")
    assert "LEDGER_DUPLICATE_THRESHOLD" in bad.stderr


def test_duplicates_command_lists_pairs_clusters_and_external_ids(
    store: StoreHandle, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["given", "family", "born", "postcode", "crm"])
        writer.writerow(["Ada", "Lovelace", "1915-12-10", "SW1A 1AA", "A-1"])
        writer.writerow(["Ada", "Lovelase", "1915-12-10", "SW1A 1AA", "A-2"])
        writer.writerow(["Adah", "Lovelace", "1915-12-10", "SW1A 1AA", "A-3"])
        writer.writerow(["Grace", "Hopper", "1906-12-09", "10001", "G-1"])
    imported = as_json(
        ledger_cli(store, "import", str(path), "--map", "given=given_name",
                   "--map", "family=family_name", "--map", "born=birth_date",
                   "--map", "postcode=postcode", "--map", "crm=external_id:CRM",
                   "--default-country", "GB", "--json")
    )  # fmt: skip
    ids = {row["line"]: row["id"] for row in imported["registered"]}
    assert [note["line"] for note in imported["likely_duplicates"]] == [3, 4]

    report = as_json(ledger_cli(store, "duplicates", "--json"))
    adas = sorted(ids[line] for line in (2, 3, 4))
    assert [c["customer_ids"] for c in report["clusters"]] == [adas]
    assert len(report["pairs"]) == 3 and report["customers"] == 4
    pair = report["pairs"][0]
    assert {"field", "similarity", "agreement", "weight"} <= set(pair["explanation"][0])
    assert report["external_ids"][ids[2]] == {"CRM": "A-1"}
    assert ids[5] not in report["external_ids"]
    with store.open() as ledger:  # printing external ids is a recorded read
        [entry] = list(ledger.access_log.entries(customer_id=UUID(ids[2])))
        # Its external ids are printed, and its scores disclose how every compared field
        # of it agrees with another customer's: all of them are on the record.
        assert entry.fields == sorted(COMPARED_FIELDS) and entry.principal == "cli-test"

    of = as_json(ledger_cli(store, "duplicates", "--of", ids[2], "--json"))
    assert sorted(m["customer_id"] for m in of["matches"]) == sorted(set(adas) - {ids[2]})
    assert as_json(ledger_cli(store, "duplicates", "--of", ids[5], "--json"))["matches"] == []
    text = ledger_cli(store, "duplicates").stdout
    assert "cluster of 3" in text and "CRM:A-1" in text
    assert "--min-score" in ledger_cli(store, "duplicates", "--min-score", "2", code=2).stderr
    assert "id" in ledger_cli(store, "duplicates", "--of", "nope", code=2).stderr


# FindDuplicates ---------------------------------------------------------------------------


def _request(**fields: Any) -> pb.FindDuplicatesRequest:
    return pb.FindDuplicatesRequest(**fields)


def test_find_duplicates_ranks_masks_and_limits_sales_to_its_own(api: Api) -> None:
    admin = api.client("root", "admin")
    alices = admin.create_customer(customer(owner="sales.alice"))
    bobs = admin.create_customer(customer(owner="sales.bob", emails=["ada.l@example.org"]))
    admin.create_customer(customer(given_name="Grace", family_name="Hopper", emails=[],
                                   phones=[], external_ids={}))  # fmt: skip

    service = api.client("crm-sync", "service")
    found = service.customers.FindDuplicates(
        _request(candidate=customer(emails=["someone@example.org"])), **service.call_options
    )
    assert {m.customer.name for m in found.matches} == {alices.name, bobs.name}
    assert found.matches[0].score >= found.matches[1].score > 0.5
    assert found.matches[0].customer.given_name == "Ada"  # service reads personal data
    scores = {s.field: s for s in found.matches[0].field_scores}
    assert scores["family_name"].score == 1.0 and scores["family_name"].method == "exact"

    of_alices = service.customers.FindDuplicates(_request(name=alices.name), **service.call_options)
    assert [m.customer.name for m in of_alices.matches] == [bobs.name]

    alice = api.client("sales.alice", "sales")
    mine = alice.customers.FindDuplicates(_request(candidate=customer()), **alice.call_options)
    assert [m.customer.name for m in mine.matches] == [alices.name]  # never Bob's
    none = alice.customers.FindDuplicates(_request(name=alices.name), **alice.call_options)
    assert list(none.matches) == []  # Bob's customer is not even counted
    fails(
        lambda: alice.customers.FindDuplicates(_request(name=bobs.name), **alice.call_options),
        Code.PERMISSION_DENIED,
    )

    compliance = api.client("dpo", "compliance")
    paged = compliance.customers.FindDuplicates(
        _request(candidate=customer(), page_size=1), **compliance.call_options
    )
    assert len(paged.matches) == 1 and paged.next_page_token
    rest = compliance.customers.FindDuplicates(
        _request(candidate=customer(), page_size=1, page_token=paged.next_page_token),
        **compliance.call_options,
    )
    assert len(rest.matches) == 1 and not rest.next_page_token
    assert rest.matches[0].customer.name != paged.matches[0].customer.name
    auditor = api.client("audit.one", "auditor")
    fails(
        lambda: auditor.customers.FindDuplicates(_request(candidate=customer()),
                                                 **auditor.call_options),
        Code.PERMISSION_DENIED,
    )  # fmt: skip


def test_find_duplicates_bad_input_names_the_field(api: Api) -> None:
    client = api.client("crm-sync", "service")
    client.create_customer(customer())

    def violations(request: pb.FindDuplicatesRequest) -> dict[str, str]:
        details = fails(
            lambda: client.customers.FindDuplicates(request, **client.call_options),
            Code.INVALID_ARGUMENT,
        )
        violations: dict[str, str] = details["field_violations"]
        return violations

    assert "candidate" in violations(_request())
    assert "candidate" in violations(_request(candidate=resources_pb2.Customer()))
    assert "min_score" in violations(_request(candidate=customer(), min_score=1.5))
    assert "min_score" in violations(_request(candidate=customer(), min_score=float("nan")))
    assert "page_size" in violations(_request(candidate=customer(), page_size=-1))
    assert "page_token" in violations(_request(candidate=customer(), page_token="forged"))
    assert "name" in violations(_request(name="customers/not-a-uuid"))
    assert "candidate.emails[0]" in violations(_request(candidate=customer(emails=["nope"])))
