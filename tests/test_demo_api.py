"""`ledger demo` as a user runs it: a real process that starts the gRPC server in-process and
tells the whole story through the API (on the embedded SQLite default, and on PostgreSQL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import StoreHandle

KEY_LINES = [
    r"ledger demo: gRPC server on 127\.0\.0\.1:\d+",
    r"principals: crm-sync \(service\), sales\.emea \(sales\), auditor\.eve \(auditor\), "
    r"dpo \(compliance\)",
    r"same customer as the first attempt: True",
    r"customers listed: 5",
    r"refused: ABORTED STALE_ETAG \(current_etag=4, .*expected_etag=1\)",
    r"sales\.emea lists: Émile Durand\n",
    r"refused: PERMISSION_DENIED \(customers=",
    r"\(etag 2, merged, personal data available\)",
    r"merged into customers/",
    r"listed now: 4 customers",
    r"second Grace: active, personal data available",
    r"v1 Registered +by crm-sync \(demo-onboarding\)  personal data redacted",
    r"as of version 1: owner sales\.emea, active, personal data redacted",
    r"owner history: v1 sales\.emea, v3 sales\.uk",
    r"\(etag 4, active, personal data redacted\)",
    r"certificate verifies with the ledger's public key: True",
    r"\(etag 5, erased, personal data erased\)",
    r"refused: FAILED_PRECONDITION CUSTOMER_ERASED",
    r"customer\.personal_data: erased",
    r"any of Ada's personal values in it: none",
    r"\n    1\.00  customers/\S+ \(张伟\)  agreeing: .*phone",  # pinyin + phone find 张伟
    r"\(Grace Hopper\)  agreeing: given_name, family_name",
    r"auditor\.eve asks who received Ada's personal data: \d+ records",
    r"crm-sync +UpdateCustomer +granted +\d+ field\(s\), demo",
    r"signed tree head: \d+ events, root [0-9a-f]{16}\.\.\., signature verifies",
    r"Ada's registration \(position \d+\) is in that tree: \d+ hashes, checked",
    r"policy 'default' version 0 \(the shipped default\)",
    r"field 'emails' is user\.contact\.email \(personal\)",
    r"destroyed: user\.contact\.address, user\.contact\.email, user\.contact\.phone_number",
    r"erased fields: addresses, emails, phones",
    r"sales\.amer left: 2 customer\(s\) moved to sales\.emea in one audited operation",
    r"sales\.emea lists now: .*Grace",
    r"ledger verify: \d+ events checked against \d+ signed tree head\(s\): OK",
    r"demo finished",
]


def run_demo(cwd: Path, store: StoreHandle | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    if store is not None:
        env["LEDGER_STORE"] = store.settings.store_url
        env["LEDGER_DATA_DIR"] = str(store.workdir)
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_demo_tells_the_story_through_the_api_on_the_embedded_default(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr
    for line in KEY_LINES:
        assert re.search(line, result.stdout), line
    assert "searched 2 files" in result.stdout and "none found" in result.stdout
    assert "Traceback" not in result.stderr
    # Only the demo's own fictional sample is ever shown; Ada's new email is shown before
    # her erasure, and nothing of her after it.
    after_erasure = result.stdout.split("== Exporting Ada's data")[1]
    for value in ("Lovelace", "ada@example.org", "ada.lovelace@", "+44207946"):
        assert value not in after_erasure, value
    # Runs again on the same store (a second story beside the first).
    again = run_demo(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "demo finished" in again.stdout


def test_demo_runs_on_the_configured_store(store: StoreHandle, tmp_path: Path) -> None:
    result = run_demo(tmp_path, store)
    assert result.returncode == 0, result.stderr
    for line in KEY_LINES:
        assert re.search(line, result.stdout), line
