"""The audit commands as an auditor uses them: real processes, real stores; the standalone
checker run from a copy of its one file in an isolated interpreter (no ledger importable)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest

from ledger.audit import client_check
from ledger.cli.main import main
from ledger.config import Settings
from ledger.signing import LedgerSigner
from tests import test_cli
from tests.helpers import SQLiteStore, StoreHandle

run, run_json = test_cli.run, test_cli.run_json

AUDIT_COMMANDS = [
    "verify", "tree-head", "prove", "consistency", "events", "field-history", "access-log",
    "access-alerts",
]  # fmt: skip


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_audit_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in AUDIT_COMMANDS:
        text = help_text(command, capsys)
        assert "usage: ledger " + command in text
        assert "--json" in text and "--store" in text


def test_reads_state_their_purpose(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("show", "history", "as-of", "mark-verified", "field-history"):
        assert "--purpose" in help_text(command, capsys)


def register(store: StoreHandle, given: str) -> str:
    """Set-up goes through the service in-process; what is under test runs as a process."""
    with store.open() as ledger:
        profile = {"given_name": given, "family_name": "Lovelace",
                   "emails": [f"{given.lower()}@example.org"]}  # fmt: skip
        return str(ledger.register(profile, actor="clerk"))


def check(tmp_path: Path, what: str, document: str, public_key: Path, *extra: str) -> str:
    """Run the auditor's copy of client_check.py in isolated mode (-I: no ledger on the
    path, no site customisation beyond the interpreter's own packages)."""
    folder = tmp_path / "auditor"
    folder.mkdir(exist_ok=True)
    script = folder / "client_check.py"
    shutil.copyfile(Path(client_check.__file__), script)
    target = folder / f"{what}.json"
    target.write_text(document)
    result = subprocess.run(
        [sys.executable, "-I", str(script), what, str(target), "--public-key", str(public_key),
         *extra],
        capture_output=True, text=True, cwd=folder, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_an_auditor_checks_everything_with_the_public_key_before_and_after_erasure(
    store: StoreHandle, tmp_path: Path
) -> None:
    ada = register(store, "Ada")
    register(store, "Grace")
    public_key = tmp_path / "ledger.pub"
    public_key.write_text(run(store, "public-key").stdout)
    saved = tmp_path / "saved-head.json"
    saved.write_text(run(store, "tree-head").stdout)
    assert json.loads(saved.read_text())["tree_size"] == 2
    assert run(store, "verify", "--public-key", str(public_key)).returncode == 0

    with store.open() as ledger:
        ledger.erase(UUID(ada), actor="dpo", legal_basis="GDPR Art. 17(1)(a)", reason="request")
    after = run_json(store, "verify", "--from-tree-head", str(saved), "--public-key",
                     str(public_key))  # fmt: skip
    assert after["ok"] and after["saved_tree_head_size"] == 2

    # Proofs, checked by the auditor's own copy of the checker.
    prove = run(store, "prove", ada, "2").stdout  # the Erased event
    assert "leaf 2 of 3" in check(tmp_path, "inclusion", prove, public_key)
    consistency = run(store, "consistency", "2").stdout
    assert "extends the tree of size 2" in check(tmp_path, "consistency", consistency, public_key)
    head = run(store, "tree-head").stdout
    assert "tree head of size 3" in check(tmp_path, "tree-head", head, public_key)
    export = run(store, "events", "--json").stdout
    head_file = tmp_path / "head.json"
    head_file.write_text(head)
    assert "hash to the signed root" in check(
        tmp_path, "export", export, public_key, "--tree-head", str(head_file)
    )
    lines = export.splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["topic"].endswith("Customer.Erased")
    assert b"Lovelace" not in export.encode() and b"ada@example.org" not in export.encode()


def test_reads_through_the_cli_land_in_the_access_log(tmp_path: Path) -> None:
    """One store suffices here: the recording is the service's (tested on both stores in
    test_audit_log); this checks that the CLI's reads go through it."""
    store = sqlite_store(tmp_path)
    ada = register(store, "Ada")
    run(store, "show", ada, "--purpose", "kyc-review")
    run(store, "history", ada)
    run(store, "as-of", ada, "--version", "1", "--purpose", "dispute")
    run(store, "field-history", ada, "emails", "--purpose", "audit")
    run(store, "field-history", ada, "owner")  # not personal: not a recorded read
    entries = run_json(store, "access-log", "--customer", ada)
    assert [(e["principal"], e["purpose"]) for e in entries] == [
        ("cli-test", "kyc-review"),
        ("cli-test", "essential.service"),
        ("cli-test", "dispute"),
        ("cli-test", "audit"),
    ]
    assert entries[3]["fields"] == ["emails"]
    assert "given_name" in entries[0]["fields"]
    assert run_json(store, "access-log", "--principal", "someone-else") == []
    assert run_json(store, "verify")["ok"]


def test_events_stream_from_a_position(store: StoreHandle) -> None:
    for name in ("Ada", "Grace", "Emmy"):
        register(store, name)
    lines = run(store, "events", "--from", "2", "--json").stdout.splitlines()
    positions = [json.loads(line)["position"] for line in lines]
    assert positions == sorted(positions) and len(positions) == 2 and positions[0] >= 2
    text = run(store, "events", "--limit", "1").stdout
    assert len(text.splitlines()) == 1 and "Customer.Registered" in text


def sqlite_store(tmp_path: Path) -> SQLiteStore:
    data = tmp_path / "ledger-data"
    settings = Settings(store_url=f"sqlite:///{data / 'ledger.db'}", data_dir=data)
    return SQLiteStore(settings=settings, workdir=data)


def test_mistakes_get_one_line_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main()` in-process (the same code a process runs, minus interpreter start-up)."""
    store = sqlite_store(tmp_path)
    monkeypatch.setenv("LEDGER_STORE", store.settings.store_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(store.workdir))
    ada = register(store, "Ada")
    cases: list[tuple[list[str], int, str]] = [
        (["prove", "not-a-uuid", "1"], 2, "id: not a customer id"),
        (["prove", ada, "7"], 1, f"no event {ada} v7"),
        (["prove", ada, "1", "--tree-size", "5"], 1, "no signed tree head of size 5"),
        (["consistency", "9"], 1, "no signed tree head of size 9"),
        (["events", "--from", "0"], 2, "from: positions start at 1"),
        (["access-log", "--since", "yesterday"], 2, "since: not an ISO-8601 time"),
        (["access-log", "--since", "2026-01-01T00:00:00"], 2, "since: needs a UTC offset"),
        (["field-history", ada, "shoe_size"], 2, "field: unknown field"),
        (["show", ada, "--purpose", ""], 2, "purpose: must be a non-empty text"),
        (["verify", "--public-key", str(tmp_path / "none.pem")], 2, "public_key: cannot be read"),
    ]
    other = tmp_path / "other.pem"
    other.write_text(LedgerSigner.generate().public_key_pem())
    cases.append((["verify", "--public-key", str(other)], 4, "not the key given"))
    cases.append((["verify", "--store", f"sqlite:///{tmp_path / 'none.db'}", "--public-key",
                   str(other)], 1, "no store at"))  # fmt: skip
    assert main(["events"]) == 0
    before = capsys.readouterr().out
    for args, code, message in cases:
        assert main(args) == code, args
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert main(["events"]) == 0
    assert capsys.readouterr().out == before  # no access record, no event written
