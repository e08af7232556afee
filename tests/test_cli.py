"""The `ledger` command as a user runs it: a real process, real stores, exit codes,
stdout for results, stderr for one-line errors (never a traceback for a user mistake)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import StoreHandle

COMMANDS = [
    "register", "change", "assign-owner", "mark-verified", "show", "history", "as-of",
    "erase", "verify-certificate", "public-key", "rotate-kek", "demo", "init", "backup",
    "restore",
]  # fmt: skip


def run(store: StoreHandle | None, *args: str, check: bool = True, cwd: Path | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_ACTOR"] = "cli-test"
    if store is not None:
        env["LEDGER_STORE"] = store.settings.store_url
        env["LEDGER_DATA_DIR"] = str(store.workdir)
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", *args],
        capture_output=True, text=True, env=env, cwd=cwd, input=stdin, timeout=120,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


def run_json(store: StoreHandle, *args: str) -> Any:
    return json.loads(run(store, *args, "--json").stdout)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = run(None, command, "--help")
    assert "usage: ledger " + command in result.stdout
    assert "--store" in result.stdout


def test_cli_story(store: StoreHandle, tmp_path: Path) -> None:
    customer_id = run_json(
        store, "register", "--given-name", "Ada", "--family-name", "Lovelace",
        "--email", "ada@example.org", "--phone", "020 7946 0018", "--country", "GB",
        "--birth-date", "1985-12-10", "--external-id", "CRM:A-1", "--owner", "sales.uk",
    )["id"]  # fmt: skip
    shown = run_json(store, "show", customer_id)
    assert shown["phones"] == ["+442079460018"]
    assert shown["addresses"][0]["country"] == "GB"
    assert shown["external_ids"] == {"CRM": "A-1"}

    changed = run_json(
        store, "change", customer_id, "--set", "emails=ada@example.org,ada@work.example",
        "--set", "external_id:VAT=GB123", "--set", "birth_date=", "--expected-version", "1",
    )  # fmt: skip
    assert changed["changed_fields"] == ["birth_date", "emails", "external_ids"]
    assert changed["version"] == 2

    stale = run(store, "change", customer_id, "--set", "tags=x", "--expected-version", "1",
                check=False)  # fmt: skip
    assert stale.returncode == 3
    assert "version 2" in stale.stderr

    history = run_json(store, "history", customer_id)
    assert [h["event_type"] for h in history] == ["Registered", "ProfileChanged"]
    assert history[1]["changed_fields"] == ["birth_date", "emails", "external_ids"]
    assert history[1]["actor"] == "cli-test"
    as_of = run_json(store, "as-of", customer_id, "--version", "1")
    assert as_of["birth_date"] == "1985-12-10"
    as_of_time = run_json(store, "as-of", customer_id, "--time", history[1]["timestamp"])
    assert as_of_time["version"] == 2

    certificate = run(store, "erase", customer_id, "--reason", "subject-request",
                      "--legal-basis", "GDPR Art. 17").stdout  # fmt: skip
    cert_file = tmp_path / "cert.json"
    cert_file.write_text(certificate)
    public_key = tmp_path / "ledger.pub"
    public_key.write_text(run(store, "public-key").stdout)
    ok = run(store, "verify-certificate", str(cert_file), "--public-key", str(public_key))
    assert "is valid" in ok.stdout
    tampered = certificate.replace("GDPR Art. 17", "GDPR Art. 18")
    bad = run(store, "verify-certificate", "-", check=False, stdin=tampered)
    assert bad.returncode == 4

    erased = run_json(store, "show", customer_id)
    assert erased["status"] == "erased"
    assert erased["personal_data"] == "erased"
    assert erased["given_name"] is None
    text = run(store, "history", customer_id).stdout
    assert "<erased>" in text
    assert "Lovelace" not in text
    refused = run(store, "change", customer_id, "--set", "tags=x", check=False)
    assert refused.returncode == 3
    assert "erased" in refused.stderr


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["register", "--given-name", "A", "--email", "Zqx-not-an-email"], "emails[0]"),
        (["register", "--family-name", "B", "--birth-date", "2001-02-29"], "birth_date"),
        (["register", "--family-name", "B", "--country", "ZZ"], "addresses[0].country"),
        (["register", "--family-name", "B", "--external-id", "noscheme"], "external_ids[0]"),
        (["show", "not-a-uuid"], "id"),
        (["change", "00000000-0000-4000-8000-000000000000", "--set", "nonsense"], "--set"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(
    store: StoreHandle, args: list[str], field: str
) -> None:
    result = run(store, *args, check=False)
    assert result.returncode == 2, result.stderr
    assert field in result.stderr
    assert "Traceback" not in result.stderr
    assert "Zqx-not-an-email" not in result.stderr
    assert result.stdout == ""


def test_unknown_customer_and_bad_store(store: StoreHandle) -> None:
    run(store, "register", "--given-name", "Una", "--family-name", "Known")  # a ledger exists
    missing = run(store, "show", "00000000-0000-4000-8000-000000000000", check=False)
    assert missing.returncode == 1
    assert "not found" in missing.stderr
    env_bad = run(None, "show", "00000000-0000-4000-8000-000000000000", "--store",
                  "mysql://x/y", check=False)  # fmt: skip
    assert env_bad.returncode == 2
    assert "LEDGER_STORE" in env_bad.stderr
    assert "Traceback" not in env_bad.stderr


def test_rotate_kek_keeps_customers_readable(store: StoreHandle) -> None:
    customer_id = run_json(store, "register", "--given-name", "Kim", "--family-name", "Rot")["id"]
    rotated = run_json(store, "rotate-kek")
    assert rotated["rewrapped"] == 1
    assert rotated["active"] != rotated["retired"]
    assert run_json(store, "show", customer_id)["given_name"] == "Kim"


def test_demo_runs_on_the_embedded_default(tmp_path: Path) -> None:
    """The README's first command, minus the install: no settings at all, a fresh folder."""
    result = run(None, "demo", cwd=tmp_path)
    assert "demo finished" in result.stdout
    assert "none found" in result.stdout
    assert "certificate verifies with the ledger's public key: True" in result.stdout
    assert (tmp_path / "ledger-data" / "ledger.db").exists()
    assert (tmp_path / "ledger-data" / "kek.json").stat().st_mode & 0o077 == 0
