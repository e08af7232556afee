"""ComplianceService end to end: erasure with a verifiable certificate, and the subject-access
export before and after erasure."""

from __future__ import annotations

import json

import grpc

from ledger.crypto_shred.certificate import SignedCertificate
from ledger.v1 import resources_pb2
from tests.api_support import ADA, Api, api, customer, fails

__all__ = ["api"]

Code = grpc.StatusCode


def test_erase_returns_a_certificate_that_verifies(api: Api) -> None:
    client = api.client("dpo", "compliance")
    created = api.client("crm-sync", "service").create_customer(customer())
    response = client.erase_customer(
        created.name, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request"
    )
    certificate = response.certificate
    assert certificate.customer == created.name
    assert (certificate.actor, certificate.last_version) == ("dpo", 2)
    assert certificate.legal_basis == "GDPR Art. 17(1)(a)"
    signed = SignedCertificate.from_json(response.certificate_json)
    assert signed.signature == response.signature
    assert signed.verify(api.ledger.signer.public_key_pem())
    for name, reason in (("", "x"), (created.name, "")):
        fails(
            lambda n=name, r=reason: client.erase_customer(n, legal_basis="b", reason=r),
            Code.INVALID_ARGUMENT,
        )
    details = fails(
        lambda: client.erase_customer(created.name, legal_basis=" ", reason="r"),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"legal_basis"}


def test_export_holds_everything_then_only_non_personal_data_after_erasure(api: Api) -> None:
    service = api.client("crm-sync", "service")
    created = service.create_customer(customer(owner="sales.uk", tags=["vip"]))
    service.update_customer(created.name, resources_pb2.Customer(emails=["ada@work.example"]))
    client = api.client("dpo", "compliance")

    before = json.loads(client.export_customer_data(created.name))
    assert before["format"] == "ledger.customer-export.v2"
    assert before["customer"]["given_name"] == "Ada"
    assert before["customer"]["emails"] == ["ada@work.example"]
    assert [e["event_type"] for e in before["history"]] == ["Registered", "ProfileChanged"]
    assert before["history"][0]["personal"]["emails"] == ["ada@example.org"]
    assert before["data_key"]["status"] == "active"

    client.erase_customer(created.name, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request")
    raw = client.export_customer_data(created.name)
    after = json.loads(raw)
    text = raw.decode("utf-8")
    # As JSON strings (quoted): a bare "ada" could be part of a hex id.
    personal_values = ["Ada", "Lovelace", "ada@example.org", "ada@work.example", "+442079460018"]
    personal_values += ["London", "SW1Y 4JH", "A-1001", *ADA["emails"]]
    assert not [v for v in personal_values if json.dumps(v) in text]
    assert "Lovelace" not in text and "London" not in text
    assert after["customer"]["personal_data"] == "erased"
    assert (after["customer"]["owner"], after["customer"]["tags"]) == ("sales.uk", ["vip"])
    assert [e["event_type"] for e in after["history"]] == ["Registered", "ProfileChanged", "Erased"]
    assert {e.get("personal") for e in after["history"]} <= {"erased", None}
    assert after["data_key"]["status"] == "destroyed"
    assert after["history"][-1]["legal_basis"] == "GDPR Art. 17(1)(a)"
