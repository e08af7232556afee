"""Restoring a backup never brings an erased customer back: every erasure's signed
certificate is journaled outside the databases before `erase` returns, and opening the
ledger replays the journal (forged entries refused). A signed restore statement in the
publication file lets the signer and `ledger verify` accept the shorter log; without one a
shorter log stays a failure. Backups here are real copies: SQLite's online backup API, and
PostgreSQL `CREATE DATABASE ... TEMPLATE`."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import psycopg
import pytest

from ledger.application import REAPPLIED_REASON
from ledger.audit import client_check
from ledger.audit.publication import PublicationError, PublishedHeads
from ledger.audit.restores import RestoreStatement
from ledger.audit.storage import AuditStore
from ledger.crypto_shred.certificate import SignedCertificate
from ledger.crypto_shred.journal import JournalWriteFailed
from ledger.domain.erased import ERASED
from ledger.operations import journal_status, record_restore
from ledger.signing import LedgerSigner
from ledger.v1 import resources_pb2
from tests.api_support import customer, fails, start_api
from tests.conftest import _with_dbname
from tests.helpers import (
    PostgresStore,
    SQLiteStore,
    StoreHandle,
    person,
    run_cli,
    use_store_in_cli,
)
from tests.test_no_plaintext_at_rest import leaked

PDS = resources_pb2.PersonalDataState
Code = grpc.StatusCode
ACTOR = "test-suite"
ERIN = person(
    given_name="Erinwyn",
    family_name="Quellbrook",
    emails=["erinwyn.quellbrook@example.org"],
    phones=["+4930123456"],
    # Distinctive: the dump scan looks for every value, and the helper's default "C-1" also
    # occurs by chance in UUID text ("…cc-13e8…").
    external_ids={"CRM": "ERIN-QB-7731"},
)


# Backups --------------------------------------------------------------------------------------


def _sqlite_files(store: SQLiteStore) -> list[Path]:
    path = store.settings.store.sqlite_path
    assert path is not None
    return [path, store.workdir / "keys.db"]


def _copy_sqlite(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _admin(store: PostgresStore) -> psycopg.Connection[Any]:
    return psycopg.connect(_with_dbname(store.dsn, "postgres"), autocommit=True)


def _clone_pg(admin: psycopg.Connection[Any], source: str, target: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (source,)
    )
    admin.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"'.encode())


def backup(store: StoreHandle, tmp_path: Path) -> Any:
    """Both databases (events and keys) as they are now; the ledger must be closed."""
    if isinstance(store, SQLiteStore):
        folder = tmp_path / "backup"
        folder.mkdir()
        for path in _sqlite_files(store):
            _copy_sqlite(path, folder / path.name)
        return folder
    assert isinstance(store, PostgresStore)
    name = store.settings.store.dbname
    with _admin(store) as admin:
        _clone_pg(admin, name, f"{name}_bak")
    return f"{name}_bak"


def restore(store: StoreHandle, snapshot: Any) -> None:
    """Put the backup back over the store, keys included."""
    if isinstance(store, SQLiteStore):
        for path in _sqlite_files(store):
            _copy_sqlite(snapshot / path.name, path)
        return
    assert isinstance(store, PostgresStore)
    name = store.settings.store.dbname
    with _admin(store) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE "{name}"'.encode())
        _clone_pg(admin, snapshot, name)
        admin.execute(f'DROP DATABASE "{snapshot}"'.encode())


# Helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(store: StoreHandle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The CLI and `store.open()` see the same settings, with one journal copy (as if in
    the off-site backup repository's folder). Yields the copy's path."""
    use_store_in_cli(store, monkeypatch, ACTOR)
    copy = tmp_path / "offsite" / "erasure-journal.jsonl"
    monkeypatch.setenv("LEDGER_ERASURE_JOURNAL_COPIES", str(copy))
    store.settings = replace(store.settings, erasure_journal_copies=(copy,))
    yield copy


def journal_lines(path: Path) -> list[SignedCertificate]:
    return [SignedCertificate.from_json(line) for line in path.read_text().splitlines()]


def live_key_in_store(store: StoreHandle, customer_id: UUID) -> bool:
    key = customer_id if isinstance(store, PostgresStore) else str(customer_id)
    rows = store.execute(
        f"SELECT wrapped_key FROM {store.keys_table} WHERE customer_id = {store.ph}", (key,)
    )
    return bool(rows) and rows[0][0] is not None


def log_size(store: StoreHandle) -> int:
    with AuditStore.open(store.settings) as audit:
        return audit.size()


def signer_of(store: StoreHandle) -> LedgerSigner:
    return LedgerSigner.load_or_create(store.settings.resolved_signing_key_file)


# The restore drill ---------------------------------------------------------------------------


def test_restore_from_before_an_erasure_keeps_the_customer_erased(
    store: StoreHandle,
    cli_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with store.open() as ledger:
        erin = ledger.register(ERIN, actor=ACTOR)
        ledger.change(erin, {"tags": ["vip"]}, actor=ACTOR)
        kai = ledger.register(person(given_name="Kai"), actor=ACTOR)
    snapshot = backup(store, tmp_path)
    with store.open() as ledger:
        late = ledger.register(person(given_name="Lou"), actor=ACTOR)  # after the backup
        late_cert = ledger.erase(late, actor="dpo", legal_basis="GDPR Art. 17")
        cert = ledger.erase(erin, actor="dpo", legal_basis="GDPR Art. 17(1)(a)", reason="request")
    journal = store.settings.resolved_erasure_journal
    for path in (journal, cli_env):  # journaled before erase returned, in every copy
        assert journal_lines(path) == [late_cert, cert]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    published_before = PublishedHeads(store.settings.resolved_tree_head_file).latest(None)
    assert published_before is not None

    restore(store, snapshot)
    restored_size = log_size(store)
    assert restored_size < published_before.tree_size
    # A shorter log with no restore statement is a truncation: verify fails.
    code, err, _ = run_cli(capsys, "verify")
    assert code == 4 and "truncated" in err

    statement = record_restore(store.settings, signer_of(store), restored_size, "restore drill")
    assert statement.abandoned_size == published_before.tree_size

    with caplog.at_level(logging.WARNING, logger="ledger"):
        api = start_api(store)
    try:
        ledger = api.ledger
        report = ledger.journal_replay
        assert report is not None
        assert report.reapplied == [erin] and report.unknown == 1 and not report.refused
        assert not live_key_in_store(store, erin)
        assert ledger.get(erin).personal is ERASED
        history = ledger.history(erin)
        assert [h.event_type for h in history] == ["Registered", "ProfileChanged", "Erased"]
        assert all(h.personal is ERASED for h in history[:2])
        erased = ledger.events.get(erin, desc=True, limit=1)
        last = next(iter(erased))
        assert last.reason.startswith(REAPPLIED_REASON)  # type: ignore[attr-defined]
        assert last.actor == "dpo" and last.legal_basis == cert.certificate.legal_basis  # type: ignore[attr-defined]
        assert last.key_id == cert.certificate.key_id  # type: ignore[attr-defined]
        assert ledger.as_of(erin, version=1).personal is ERASED
        service = api.client("crm-sync", "service")
        dpo = api.client("dpo", "compliance")
        shown = service.get_customer(f"customers/{erin}")
        assert shown.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED
        assert not shown.given_name and not shown.emails
        export = dpo.export_customer_data(f"customers/{erin}").decode("utf-8")
        assert json.loads(export)["customer"]["personal_data"] == "erased"
        assert "Erinwyn" not in export and "erinwyn.quellbrook" not in export
        assert service.get_customer(f"customers/{kai}").given_name == "Kai"
        ledger.change(kai, {"tags": ["after-restore"]}, actor=ACTOR)  # new commands work
    finally:
        api.close()
    assert f"re-applied the journaled erasure of customer {erin}" in caplog.text
    assert "Erinwyn" not in caplog.text

    for argv in (
        ["show", str(erin)],
        ["history", str(erin)],
        ["as-of", str(erin), "--version", "1"],
    ):
        code, _, out = run_cli(capsys, *argv)
        assert code == 0 and "Erinwyn" not in out and "erinwyn" not in out
    code, _, out = run_cli(capsys, "verify")
    assert code == 0, out
    assert f"restored to {restored_size:,} events" in out
    code, _, out = run_cli(capsys, "verify", "--json")
    restores = json.loads(out)["restores"]
    assert restores[0]["lost_events"] == published_before.tree_size - restored_size
    published_after = PublishedHeads(store.settings.resolved_tree_head_file).latest(None)
    assert published_after is not None and published_after.tree_size > restored_size
    assert published_after.timestamp_ms >= statement.timestamp_ms  # signed in the new epoch
    # The journal is unchanged: nothing was missing from it.
    assert journal_lines(journal) == [late_cert, cert]
    # Opening again finds nothing to do.
    with store.open() as ledger:
        assert ledger.journal_replay is not None and not ledger.journal_replay.reapplied
    if isinstance(store, SQLiteStore):  # ciphertext only, in every file of the store
        assert leaked(store.dump_bytes(), [ERIN]) == []


def test_a_tampered_journal_entry_is_refused_and_reported(
    store: StoreHandle, cli_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with store.open() as ledger:
        erin = ledger.register(ERIN, actor=ACTOR)
        kai = ledger.register(person(given_name="Kai"), actor=ACTOR)
    snapshot = backup(store, tmp_path)
    with store.open() as ledger:
        ledger.erase(erin, actor="dpo", legal_basis="GDPR Art. 17")
    restore(store, snapshot)
    for path in (store.settings.resolved_erasure_journal, cli_env):
        entry = json.loads(path.read_text().splitlines()[0])
        altered = json.loads(json.dumps(entry))
        altered["certificate"]["legal_basis"] = "none"  # altered: signature no longer holds
        forged = json.loads(json.dumps(entry))
        forged["certificate"]["customer_id"] = str(kai)  # someone else's erasure, forged
        path.write_text("".join(json.dumps(e) + "\n" for e in (altered, forged)))
    with store.settings.resolved_erasure_journal.open("a") as journal:
        journal.write("not a certificate\n")
    with caplog.at_level(logging.ERROR, logger="ledger"), store.open() as ledger:
        report = ledger.journal_replay
        assert report is not None
        assert sorted(report.refused) == sorted([str(erin), str(kai)])
        assert report.malformed_lines == 1 and report.integrity_problems == 3
        assert not report.reapplied
        personal = ledger.get(kai).personal
        assert isinstance(personal, dict) and personal["given_name"] == "Kai"
        assert live_key_in_store(store, kai)
    assert f"the entry for customer {kai} is not signed by this ledger's key" in caplog.text
    status = journal_status(store.settings, signer_of(store).public_key_pem())
    assert status.entries == 2 and status.invalid == 2 and status.malformed == 1


def test_the_journal_catches_up_from_the_log_after_a_failed_write(
    store: StoreHandle, cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    broken = replace(
        store.settings,
        erasure_journal=blocker / "erasure-journal.jsonl",  # cannot be created
        erasure_journal_copies=(cli_env,),
    )
    good = store.settings
    with store.open() as ledger:
        erin = ledger.register(ERIN, actor=ACTOR)
        kai = ledger.register(person(given_name="Kai"), actor=ACTOR)
    store.settings = broken
    with store.open() as ledger:
        with pytest.raises(JournalWriteFailed, match="recorded in the log") as raised:
            ledger.erase(erin, actor="dpo", legal_basis="GDPR Art. 17")
        assert ledger.get(erin).personal is ERASED  # the erasure itself is durable
        assert not live_key_in_store(store, erin)
    assert "Erinwyn" not in str(raised.value)
    certificate = raised.value.certificate
    assert journal_lines(cli_env) == [certificate]  # the copy that could be written has it
    # Through the CLI: the certificate still printed, the failure said, exit 1.
    os.environ["LEDGER_ERASURE_JOURNAL"] = str(blocker / "erasure-journal.jsonl")
    try:
        code, err, out = run_cli(
            capsys, "erase", str(kai), "--legal-basis", "GDPR Art. 17", "--reason", "request"
        )
    finally:
        del os.environ["LEDGER_ERASURE_JOURNAL"]
    assert code == 1 and "could not be written to the erasure journal" in err
    kai_cert = SignedCertificate.from_json(out)

    store.settings = good
    with store.open() as ledger:
        report = ledger.journal_replay
        assert report is not None and report.journaled_from_log == 2
    # Rebuilt from the log, the certificates are the very ones `erase` issued.
    lines = journal_lines(good.resolved_erasure_journal)
    assert sorted(lines, key=lambda s: s.certificate.customer_id) == sorted(
        [certificate, kai_cert], key=lambda s: s.certificate.customer_id
    )
    public_key = signer_of(store).public_key_pem()
    assert all(line.verify(public_key) for line in lines)
    status = journal_status(good, public_key)
    assert status.entries == 2 and status.invalid == 0 and status.copies[0][1] == 2
    assert status.last_erased_at == max(s.certificate.erased_at for s in lines)


# Restore statements ---------------------------------------------------------------------------


# The publication file is the same for both stores: checked once.
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_restore_statement_not_signed_by_the_ledger_is_a_failure(
    store: StoreHandle, cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open() as ledger:
        ledger.register(person(), actor=ACTOR)
    snapshot = backup(store, tmp_path)
    with store.open() as ledger:
        ledger.register(person(given_name="Kai"), actor=ACTOR)
    restore(store, snapshot)
    size = log_size(store)
    other = LedgerSigner.generate()
    with pytest.raises(PublicationError):  # the published heads are not the other key's
        record_restore(store.settings, other, size, "forged")
    forged = RestoreStatement.issue(size, 99, client_check.EMPTY_ROOT, "forged", other)
    with PublishedHeads(store.settings.resolved_tree_head_file).locked() as file:
        file.append_json(forged.to_json())
    code, err, _ = run_cli(capsys, "verify")
    assert code == 4 and "not signed by this ledger's key" in err
    code, err, _ = run_cli(capsys, "tree-head")
    assert code != 0
    assert "forged or altered" in run_cli(capsys, "verify", "--json")[2]
    # Nothing is signed over a forged line, not even the ledger's own restore statement:
    # the signing stops until someone looks.
    with pytest.raises(PublicationError, match="restore statement"):
        record_restore(store.settings, signer_of(store), size, "restore drill")


# The publication file is the same for both stores: checked once.
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_client_check_reads_a_restore_statement(
    store: StoreHandle, cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with store.open() as ledger:
        ledger.register(person(), actor=ACTOR)
    snapshot = backup(store, tmp_path)
    with store.open() as ledger:
        ledger.register(person(given_name="Kai"), actor=ACTOR)
    heads = store.settings.resolved_tree_head_file
    saved = tmp_path / "saved.json"
    saved.write_text(heads.read_text().splitlines()[-1])
    restore(store, snapshot)
    statement = record_restore(store.settings, signer_of(store), log_size(store), "drill")
    document = tmp_path / "restore.json"
    document.write_text(json.dumps(statement.to_json()))
    public = tmp_path / "ledger.pub"
    public.write_text(signer_of(store).public_key_pem())
    args = ["restore", str(document), "--public-key", str(public)]
    assert client_check.main([*args, "--saved-head", str(saved)]) == 0
    assert "your saved head" in capsys.readouterr().out
    assert RestoreStatement.from_json(statement.to_json()) == statement
    tampered = statement.to_json() | {"restored_size": statement.restored_size + 1}
    document.write_text(json.dumps(tampered))
    assert client_check.main(args) == 1
    assert "invalid" in capsys.readouterr().err


def test_the_api_says_an_erasure_was_done_but_not_journaled(
    store: StoreHandle, cli_env: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store.settings = replace(store.settings, erasure_journal=blocker / "erasure-journal.jsonl")
    api = start_api(store)
    try:
        service = api.client("crm-sync", "service")
        dpo = api.client("dpo", "compliance")
        created = service.create_customer(customer())
        details = fails(
            lambda: dpo.erase_customer(created.name, legal_basis="GDPR Art. 17", reason="req"),
            Code.UNAVAILABLE,
        )
        assert details["reason"] == "ERASURE_NOT_JOURNALED"
        assert str(blocker) not in json.dumps(details)  # no server paths to the caller
        shown = service.get_customer(created.name)
        assert shown.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED
    finally:
        api.close()
    customer_id = created.name.rsplit("/", 1)[-1]
    assert [c.certificate.customer_id for c in journal_lines(cli_env)] == [customer_id]
