"""SQLite backups as an operator runs them: `ledger backup` snapshots the event store and
the key store to every target, `ledger restore` brings the ledger back to what the backup
held, `ledger backup verify` restores into a scratch folder and reports RPO and RTO."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from ledger.audit.key_check import REGISTERED_TOPIC
from ledger.audit.storage import AuditStore
from ledger.bootstrap import open_ledger
from ledger.cli.main import main
from ledger.config import Settings
from ledger.observability.backup_state import last_backup_timestamp, state_file
from ledger.operations.counts import count
from tests.helpers import person


@pytest.fixture
def ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("LEDGER_STORE", f"sqlite:///{data / 'ledger.db'}")
    monkeypatch.setenv("LEDGER_DATA_DIR", str(data))
    monkeypatch.setenv("LEDGER_BACKUP_REPOS", f"{tmp_path / 'local'},file://{tmp_path / 'offsite'}")
    return Settings.from_env()


def _register(settings: Settings, n: int) -> list[str]:
    with open_ledger(settings) as ledger:
        return [
            str(ledger.register(person(emails=[f"p{i}@example.org"]), actor="t")) for i in range(n)
        ]


def _run(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> Any:
    capsys.readouterr()
    assert main([*args, "--json"]) == code, capsys.readouterr().err
    out = capsys.readouterr().out
    return json.loads(out) if out.strip() else None


def test_backup_then_restore_brings_back_what_the_backup_held(
    ledger_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _register(ledger_env, 3)
    taken = _run(capsys, "backup")
    assert [Path(t["folder"]).parent for t in taken] == [tmp_path / "local", tmp_path / "offsite"]
    assert taken[0]["counts"]["customers"] == 3
    for t in taken:  # owner-only copies, checked against the manifest
        for name in ("ledger.db", "keys.db", "manifest.json"):
            assert stat.S_IMODE((Path(t["folder"]) / name).stat().st_mode) == 0o600
    backed_up = count(ledger_env)
    # The metrics endpoint's backup age reads what a successful backup records.
    state = state_file(ledger_env.resolved_data_dir)
    recorded = last_backup_timestamp(state)
    assert recorded is not None and abs(recorded - time.time()) < 120
    assert stat.S_IMODE(state.stat().st_mode) == 0o600

    later = _register(ledger_env, 2)
    with open_ledger(ledger_env) as ledger:
        ledger.erase(UUID(later[0]), actor="t", legal_basis="GDPR Art. 17")
    assert count(ledger_env).customers == 5

    # An existing ledger is not replaced without --force.
    capsys.readouterr()
    assert main(["restore", "--from", "2"]) == 3
    assert "--force" in capsys.readouterr().err
    restored = _run(capsys, "restore", "--from", str(tmp_path / "offsite"), "--force")
    assert restored["finished"] is True

    assert count(ledger_env) == backed_up
    with AuditStore.open(ledger_env) as store:
        assert store.originators(REGISTERED_TOPIC) == set(first)
    db = ledger_env.store.sqlite_path
    assert db is not None and stat.S_IMODE(db.stat().st_mode) == 0o600
    assert main(["verify", "--no-published-heads"]) == 0, capsys.readouterr().err


def test_an_erasure_after_the_backup_survives_its_restore(
    ledger_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Register, back up, erase, restore the backup, start: the erasure, made after the
    backup, comes back from the erasure journal before anything is served."""
    with open_ledger(ledger_env) as ledger:
        erased = str(
            ledger.register(
                person(
                    given_name="Ottilie",
                    family_name="Quenby",
                    emails=["ottilie.quenby@example.org"],
                ),
                actor="t",
            )
        )
        kept = str(ledger.register(person(emails=["kept@example.org"]), actor="t"))
    _run(capsys, "backup")
    erase = ["erase", erased, "--reason", "subject-request", "--legal-basis", "GDPR Art. 17"]
    assert main(erase) == 0, capsys.readouterr().err
    _run(capsys, "restore", "--force")

    shown = _run(capsys, "show", erased)
    assert shown["status"] == "erased" and shown["personal_data"] == "erased", shown
    history = _run(capsys, "history", erased)
    assert "Ottilie" not in json.dumps(history)
    assert _run(capsys, "show", kept)["emails"] == ["kept@example.org"]
    report = _run(capsys, "verify")  # the restore is a signed statement, not a truncation
    assert report["ok"] is True and len(report["restores"]) == 1, report
    # The restored key store held the erased customer's key: destroyed again, so no file
    # the ledger wrote holds the name or the email in any form.
    folder = ledger_env.resolved_data_dir
    for path in [p for p in folder.rglob("*") if p.is_file()]:
        data = path.read_bytes().lower()
        for needle in (b"ottilie", b"quenby", b"ottilie.quenby@example.org"):
            assert needle not in data, f"{needle!r} in {path}"


def test_restore_refuses_a_damaged_backup(
    ledger_env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(ledger_env, 1)
    taken = _run(capsys, "backup", "--to", "1")
    with (Path(taken[0]["folder"]) / "ledger.db").open("r+b") as file:
        file.seek(200)
        file.write(b"\xff")
    before = count(ledger_env)
    capsys.readouterr()
    assert main(["restore", "--force"]) == 4
    assert "does not match its manifest" in capsys.readouterr().err
    assert count(ledger_env) == before


def test_backup_verify_reports_rpo_and_rto(
    ledger_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(ledger_env, 2)
    _run(capsys, "backup")
    _register(ledger_env, 1)
    report = _run(capsys, "backup", "verify")
    assert report["ok"] is True, report
    assert report["restored"]["customers"] == 2
    assert report["live"]["customers"] == 3
    assert (
        report["rpo"]["events"]
        == report["live"]["last_position"] - report["restored"]["last_position"]
        > 0
    )
    assert report["rto_seconds"] > 0
    listed = _run(capsys, "backup", "list")
    assert {row["repo"] for row in listed} == {1, 2}


def test_retention_keeps_the_newest_backups_and_restore_picks_by_time(
    ledger_env: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LEDGER_BACKUP_RETENTION_FULL", "2")
    names = []
    for n in (1, 1, 1):
        _register(ledger_env, n)
        names.append(_run(capsys, "backup", "--to", "1")[0]["name"])
    kept = [row["name"] for row in _run(capsys, "backup", "list")]
    assert kept == names[1:]  # the oldest is gone; repo 2 was not written
    middle = _run(capsys, "backup", "list")[0]
    _run(capsys, "restore", "--time", middle["created_at"], "--force")
    assert count(ledger_env).customers == 2


def test_backup_verify_fails_on_a_backup_whose_log_was_altered(
    ledger_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone who rewrites a backup and its manifest alike is caught by the verify step."""
    _register(ledger_env, 2)
    taken = _run(capsys, "backup", "--to", "1")
    folder = Path(taken[0]["folder"])
    with sqlite3.connect(folder / "ledger.db") as conn:
        (state,) = conn.execute("SELECT state FROM stored_events LIMIT 1").fetchone()
        conn.execute("UPDATE stored_events SET state = ? WHERE rowid = 1", (state[:-1] + b"x",))
    conn.close()
    manifest = json.loads((folder / "manifest.json").read_text())
    digest = hashlib.sha256((folder / "ledger.db").read_bytes()).hexdigest()
    manifest["files"]["ledger.db"]["sha256"] = digest
    (folder / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["backup", "verify", "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["verify"]["ok"] is False
