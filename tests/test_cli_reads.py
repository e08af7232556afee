"""Every CLI command that prints personal data records the read first, naming the operating
system account as well as `--actor`: `main()` in-process on both stores."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
from typing import Any

import pytest

from ledger.audit.access_log import RECORDED_TOPIC, AccessEntry, AccessRecord
from ledger.cli.main import main
from ledger.domain.profile import PERSONAL_FIELDS
from tests.helpers import StoreHandle

ACCOUNT = f"{pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"


@pytest.fixture
def cli(
    store: StoreHandle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    for name in [k for k in os.environ if k.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    monkeypatch.setenv("USER", "someone-else")  # the account comes from the uid, not $USER
    monkeypatch.setenv("LOGNAME", "someone-else")

    def run(*args: str) -> Any:
        capsys.readouterr()
        assert main([*args, "--actor", "typed-name", "--json"]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    return run


def entries(store: StoreHandle) -> list[AccessEntry]:
    with store.open() as ledger:
        return list(ledger.access_log.entries())


def register(store: StoreHandle, given: str, email: str) -> str:
    with store.open() as ledger:
        profile = {"given_name": given, "family_name": "Lovelace", "emails": [email],
                   "birth_date": "1985-12-10", "external_ids": {"CRM": f"{given}-1"}}  # fmt: skip
        return str(ledger.register(profile, actor="clerk"))


def test_list_and_lookup_record_what_they_print(store: StoreHandle, cli: Any) -> None:
    ada = register(store, "Ada", "ada@example.org")
    grace = register(store, "Grace", "grace@example.org")

    listed = cli("list")
    assert {c["given_name"] for c in listed["customers"]} == {"Ada", "Grace"}
    found = cli("lookup", "--email", "ada@example.org")
    assert [c["id"] for c in found["customers"]] == [ada]

    first, second = entries(store)
    assert sorted(first.customer_ids) == sorted([ada, grace])
    assert first.method == "cli:list" and first.purpose == "essential.service"
    assert first.fields == sorted(PERSONAL_FIELDS)  # --json prints every personal field
    assert second.customer_ids == [ada] and second.method == "cli:lookup"
    for entry in (first, second):
        assert entry.principal == "typed-name" and entry.os_user == ACCOUNT


def test_every_read_command_names_the_account(store: StoreHandle, cli: Any) -> None:
    ada = register(store, "Ada", "ada@example.org")
    cli("show", ada)
    cli("history", ada)
    cli("as-of", ada, "--version", "1")
    cli("field-history", ada, "emails")
    cli("mark-verified", ada)
    recorded = entries(store)
    assert [e.method for e in recorded] == [
        "cli:show", "cli:history", "cli:as-of", "cli:field-history", "cli:mark-verified",
    ]  # fmt: skip
    assert {(e.principal, e.os_user) for e in recorded} == {("typed-name", ACCOUNT)}
    assert all(e.customer_ids == [ada] for e in recorded)


def test_duplicate_reports_record_the_customers_they_score(store: StoreHandle, cli: Any) -> None:
    ada = register(store, "Ada", "ada@example.org")
    twin = register(store, "Ada", "ada@example.org")
    found = cli("duplicates", "--of", ada, "--purpose", "dedup")
    assert [m["customer_id"] for m in found["matches"]] == [twin]
    report = cli("duplicates")
    assert report["pairs"]
    of, batch = entries(store)
    assert sorted(of.customer_ids) == sorted([ada, twin]) and of.method == "cli:duplicates"
    assert of.purpose == "dedup" and "given_name" in of.fields
    assert sorted(batch.customer_ids) == sorted([ada, twin]) and "external_ids" in batch.fields
    assert {of.os_user, batch.os_user} == {ACCOUNT}


def test_records_written_before_os_user_existed_read_with_an_empty_one(
    store: StoreHandle, cli: Any
) -> None:
    """Version-2 access records (no os_user) are upcast, not refused: the stored schema is
    extended, never changed."""
    cli("show", register(store, "Ada", "ada@example.org"))
    with store.open() as ledger:
        (stored,) = ledger.recorder.select_notifications(start=1, limit=10, topics=[RECORDED_TOPIC])
        state = ledger.mapper.transcoder.decode(stored.state)
        assert state.pop("os_user") == ACCOUNT and state["class_version"] == 4
        assert state.pop("masked") == []
        state["class_version"] = 2
        old = dataclasses.replace(stored, state=ledger.mapper.transcoder.encode(state))
        event = ledger.mapper.to_domain_event(old)
    assert isinstance(event, AccessRecord.Recorded)
    assert event.os_user == "" and event.principal == "typed-name"
