"""The API's source of truth: the protos lint clean under `buf lint`, and the committed
generated code is exactly what they generate (so nobody edits ledger/v1 by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ledger.api import codegen

ROOT = Path(__file__).resolve().parents[1]


def test_protos_are_lint_clean_under_buf() -> None:
    buf = Path(sys.executable).parent / "buf"
    result = subprocess.run(
        [str(buf), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_reproducible(tmp_path: Path) -> None:
    codegen.generate(tmp_path)
    stale = codegen.differences(tmp_path / codegen.PACKAGE, ROOT / codegen.PACKAGE)
    assert stale == [], f"run `python -m ledger.api.codegen`; differs: {stale}"


def test_every_service_of_the_issue_is_declared() -> None:
    from ledger.v1 import audit_service_pb2, compliance_service_pb2, customer_service_pb2

    def methods(module: object, service: str) -> set[str]:
        descriptor = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
        return {m.name for m in descriptor.methods}

    assert methods(customer_service_pb2, "CustomerService") == {
        "CreateCustomer", "GetCustomer", "ListCustomers", "UpdateCustomer", "AssignOwner",
        "MarkVerified", "MergeCustomers", "UnmergeCustomer", "FindDuplicates",
        "DismissDuplicate",
    }  # fmt: skip
    assert methods(audit_service_pb2, "AuditService") == {
        "StreamEvents", "ListCustomerEvents", "GetCustomerAsOf", "GetFieldHistory",
        "GetTreeHead", "GetInclusionProof", "GetConsistencyProof", "ListAccessLog",
        "ListAccessAlerts",
    }  # fmt: skip
    assert methods(compliance_service_pb2, "ComplianceService") == {
        "EraseCustomer", "ExportCustomerData", "GetPolicy", "HandoverCustomers",
        "GiveConsent", "WithdrawConsent", "ListConsents",
    }  # fmt: skip
