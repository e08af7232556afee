"""The projection, merge and import commands as a user runs them: real processes, both
stores, JSON output, one-line errors, and the worker stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ledger.cli.main import main
from tests.helpers import StoreHandle

COMMANDS = ["projections", "project", "rebuild", "list", "lookup", "quality", "merge", "unmerge",
            "import"]  # fmt: skip


def env_for(store: StoreHandle | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["LEDGER_ACTOR"] = "cli-test"
    if store is not None:
        env["LEDGER_STORE"] = store.settings.store_url
        env["LEDGER_DATA_DIR"] = str(store.workdir)
    env.update(extra)
    return env


def run(store: StoreHandle | None, *args: str, code: int = 0, **extra: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", *args],
        capture_output=True, text=True, env=env_for(store, **extra), timeout=120,
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    if code != 0:
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result.stderr
    return json.loads(result.stdout) if "--json" in args else result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: ledger " + command in out
    assert "--json" in out


def test_import_list_lookup_merge_quality_rebuild(store: StoreHandle, tmp_path: Path) -> None:
    data = tmp_path / "crm.csv"
    data.write_text(
        "id,first,last,mail,phone,dob\n"
        "1,Ada,Lovelace,ada@example.org,+44 20 7946 0018,1985-12-10\n"
        "2,Ada,Lovelace,ada.l@example.org,+44 20 7946 0019,not a date\n"
        "3,Grace,Hopper,grace@example.com,,\n",
        encoding="utf-8",
    )
    summary = run(store, "import", str(data), "--map", "id=external_id:CRM", "--map",
                  "first=given_name", "--map", "last=family_name", "--map", "mail=emails",
                  "--map", "phone=phones", "--map", "dob=birth_date", "--json")  # fmt: skip
    assert (summary["imported"], summary["rejected"], summary["with_warnings"]) == (3, 0, 1)
    assert summary["problems"] == [
        {"line": 3, "rejected": False,
         "problems": [{"field": "birth_date", "reason": "not a real date (YYYY-MM-DD)"}]}
    ]  # fmt: skip

    listed = run(store, "list", "--json", "--order-by", "created_at", "--page-size", "2")
    assert len(listed["customers"]) == 2 and listed["next_page_token"]
    rest = run(store, "list", "--json", "--order-by", "created_at", "--page-token",
               listed["next_page_token"])  # fmt: skip
    assert [c["given_name"] for c in rest["customers"]] == ["Grace"]

    ada = run(store, "lookup", "--external-id", "CRM:1", "--json")["customers"][0]["id"]
    dup = run(store, "lookup", "--email", "ADA.L@example.org", "--json")["customers"][0]["id"]
    merged = run(store, "merge", ada, dup, "--take", "phones", "--json")
    assert merged["changed_fields"] == ["emails", "phones"]  # CRM: the survivor's id wins
    assert run(store, "lookup", "--id", dup, "--json")["customers"][0]["id"] == ada
    assert run(store, "merge", ada, dup, code=3).startswith("ledger: refused:")
    unmerged = run(store, "unmerge", dup, "--json")
    assert unmerged["target"] == ada and unmerged["kept_fields"] == []

    quality = run(store, "quality", "--json")
    assert quality["customers"] == 3 and quality["with_warnings"] == 1
    status = run(store, "projections", "--json")
    assert {p["name"]: p["lag"] for p in status["projections"]} == {
        "current_view": 0, "data_quality": 0, "duplicate_index": 0
    }  # fmt: skip
    rebuilt = run(store, "rebuild", "current_view", "--json")
    assert rebuilt["rebuilt"] == ["current_view"]
    assert rebuilt["events"] == status["projections"][0]["head"]

    assert "country" in run(store, "list", "--country", "Germany", code=2)
    assert "email" in run(store, "lookup", "--email", "not-an-email", code=2)
    assert "--map" in run(store, "import", str(data), "--map", "id=nonsense", code=2)
    assert "projection" in run(store, "rebuild", "nonsense", code=2)
    nobody = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "lookup", "--email", "nobody@example.org"],
        capture_output=True, text=True, env=env_for(store), timeout=120,
    )  # fmt: skip
    assert (nobody.returncode, nobody.stdout, nobody.stderr) == (1, "no customer found\n", "")


def test_worker_projects_and_stops_gracefully_on_sigterm(store: StoreHandle) -> None:
    # Create the ledger first (the worker attaches to an existing one): the event store
    # library's own PostgreSQL set-up is not safe against two processes creating it at once.
    run(store, "init", LEDGER_PROJECTIONS="worker")
    worker = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli.main", "project", "--interval", "0.1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env_for(store, LEDGER_PROJECTIONS="worker"),
    )  # fmt: skip
    try:
        run(store, "register", "--family-name", "Worker", "--email", "w@example.org",
            LEDGER_PROJECTIONS="worker")  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = run(store, "projections", "--json", LEDGER_PROJECTIONS="worker")
            if all(p["lag"] == 0 and p["head"] == 1 for p in status["projections"]):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the worker did not catch up")
        found = run(store, "lookup", "--email", "w@example.org", "--json",
                    LEDGER_PROJECTIONS="worker")  # fmt: skip
        assert found["customers"][0]["family_name"] == "Worker"
        # The look-up printed personal data, so its access record is the log's next event:
        # the worker passes over it too.
        while time.monotonic() < deadline:
            status = run(store, "projections", "--json", LEDGER_PROJECTIONS="worker")
            if all(p["lag"] == 0 and p["head"] == 2 for p in status["projections"]):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the worker did not pass over the access record")
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert json.loads(out)["applied"] == 2


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_several_processes_start_on_one_store_at_once(store: StoreHandle) -> None:
    """Several servers (or a server and the CLI) start against one PostgreSQL database at
    the same moment: each runs the set-up, and none may fail on another's (the event store
    library re-created a database function on every start: "tuple concurrently updated")."""
    run(store, "init")  # the tables exist; now the starts race on the rest
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "ledger.cli.main", "projections", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(store),
        )
        for _ in range(8)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()[1]) for p in processes]
    assert [code for code, _ in outcomes] == [0] * 8, [err for _, err in outcomes if err]
