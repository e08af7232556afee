"""Consent and purpose-bound reads through the gRPC API, on both stores: a marketing read is
masked without consent, unmasked with it and masked again after withdrawal (on the very next
call), the access record names the masked fields and why, a purpose the principal is not
granted is refused, a separate consent is not covered by a general one, and the
subject-access export lists consents, lawful bases, retention dates and recipients."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import grpc

from ledger.api.tokens import issue_token
from ledger.audit.access_log import AccessEntry
from ledger.client import LedgerClient
from ledger.signing import LedgerSigner
from ledger.v1 import compliance_service_pb2, resources_pb2
from tests.api_support import Api, api, customer, fails

__all__ = ["api"]

Code = grpc.StatusCode
MARKETING = "marketing.advertising.first_party"
SHARING = "third_party_sharing"
ABROAD = "third_party_sharing.cross_border_transfer"
# What the default policy lets our own marketing use: name, e-mail and phone.
MARKETING_FIELDS = ["emails", "family_name", "given_name", "phones"]
NEVER_FOR_MARKETING = {
    "addresses": "purpose_may_not_use:user.contact.address",
    "birth_date": "purpose_may_not_use:user.demographic.date_of_birth",
    "external_ids": "purpose_may_not_use:user.unique_id",
}


def masked(message: resources_pb2.Customer) -> dict[str, str]:
    return {m.field: m.reason for m in message.masked_fields}


def reads(api: Api, customer_name: str, method: str = "GetCustomer") -> list[AccessEntry]:
    wanted = customer_name.removeprefix("customers/")
    return [
        e
        for e in api.ledger.access_log.entries()
        if e.method.endswith(f"/{method}") and wanted in e.customer_ids
    ]


def client_with_purposes(api: Api, principal: str, roles: list[str], purposes: list[str],
                         purpose: str) -> LedgerClient:  # fmt: skip
    signer = LedgerSigner.load_or_create(api.settings.resolved_token_key_file)
    token = issue_token(signer, principal, roles, timedelta(hours=1), purposes=purposes)
    made = LedgerClient(api.target, token=token, purpose=purpose)
    api.clients.append(made)
    return made


def test_marketing_read_is_masked_without_consent_shown_with_it_and_masked_after_withdrawal(
    api: Api,
) -> None:
    service = api.client("crm-sync", "service")
    ada = service.create_customer(customer(birth_date={"year": 1985, "month": 12, "day": 10}))
    marketing = api.client("mailer", "service", purpose=MARKETING)

    before = marketing.get_customer(ada.name)
    assert (before.given_name, list(before.emails), list(before.phones)) == ("", [], [])
    assert not before.HasField("birth_date") and not before.addresses
    assert masked(before) == {
        **NEVER_FOR_MARKETING,
        **dict.fromkeys(MARKETING_FIELDS, "no_consent"),
    }
    (record,) = reads(api, ada.name)
    assert record.purpose == MARKETING and record.principal == "mailer"
    assert record.fields == []  # nothing personal left: the record still says what was masked
    assert {m["field"]: m["reason"] for m in record.masked} == masked(before)

    given = service.give_consent(ada.name, [MARKETING], source="web", form="signup-v3",
                                 proof="ticket:4711")  # fmt: skip
    assert list(given.in_force) == [MARKETING] and given.changed
    assert given.history[0].separate and given.history[0].form == "signup-v3"

    during = marketing.get_customer(ada.name)
    assert (during.given_name, list(during.emails)) == ("Ada", ["ada@example.org"])
    assert list(during.phones) == ["+442079460018"]
    assert masked(during) == NEVER_FOR_MARKETING  # consent never widens the purpose
    assert not during.HasField("birth_date") and not during.addresses
    record = reads(api, ada.name)[-1]
    assert record.fields == MARKETING_FIELDS
    assert {m["field"]: m["reason"] for m in record.masked} == NEVER_FOR_MARKETING

    withdrawn = service.withdraw_consent(ada.name, MARKETING, source="app")
    assert withdrawn.changed and list(withdrawn.in_force) == []
    after = marketing.get_customer(ada.name)  # the very next call
    assert after.given_name == "" and not after.emails
    assert masked(after) == {
        **NEVER_FOR_MARKETING,
        **dict.fromkeys(MARKETING_FIELDS, "consent_withdrawn"),
    }
    record = reads(api, ada.name)[-1]
    assert record.fields == [] and {m["reason"] for m in record.masked} >= {"consent_withdrawn"}
    # A second withdrawal writes nothing.
    assert not service.withdraw_consent(ada.name, MARKETING, source="app").changed

    # The default purpose (none declared) still serves the customer whole.
    whole = service.get_customer(ada.name)
    assert whole.given_name == "Ada" and whole.HasField("birth_date") and not whole.masked_fields
    assert reads(api, ada.name)[-1].purpose == "essential.service"


def test_list_and_event_streams_mask_per_customer(api: Api) -> None:
    service = api.client("crm-sync", "service")
    ada = service.create_customer(customer())
    grace = service.create_customer(customer(given_name="Grace", emails=["grace@example.org"]))
    service.give_consent(grace.name, [MARKETING], source="web")
    marketing = api.client("mailer", "service", purpose=MARKETING)

    listed = {c.name: c for c in marketing.list_customers()}
    assert listed[grace.name].given_name == "Grace" and listed[ada.name].given_name == ""
    assert masked(listed[ada.name])["given_name"] == "no_consent"
    (record,) = [e for e in api.ledger.access_log.entries() if e.method.endswith("ListCustomers")]
    by_reason = {(m["field"], m["reason"]): m.get("customer_ids") for m in record.masked}
    assert by_reason[("given_name", "no_consent")] == [ada.name.removeprefix("customers/")]
    assert by_reason[("addresses", NEVER_FOR_MARKETING["addresses"])] is None  # everyone's

    events = list(marketing.list_customer_events(ada.name))
    registered = events[0]
    assert registered.event_type == "Registered"
    assert set(registered.personal_data.fields) == set()  # every field masked for Ada
    grace_events = list(marketing.list_customer_events(grace.name))
    assert set(grace_events[0].personal_data.fields) == {"given_name", "family_name", "emails",
                                                         "phones"}  # fmt: skip
    record = reads(api, grace.name, "ListCustomerEvents")[-1]
    assert {m["field"] for m in record.masked} == set(NEVER_FOR_MARKETING)


def test_a_purpose_not_granted_or_not_in_the_policy_is_refused_and_recorded(api: Api) -> None:
    ada = api.client("crm-sync", "service").create_customer(customer())
    auditor = api.client("aud", "auditor", "personal-data", purpose=MARKETING)
    fails(lambda: auditor.get_customer(ada.name), Code.PERMISSION_DENIED)
    unknown = api.client("crm-sync", "service", purpose="marketing.advertising.third_party")
    fails(lambda: unknown.get_customer(ada.name), Code.PERMISSION_DENIED)
    narrow = client_with_purposes(api, "mailer", ["service"], [MARKETING], "essential.service")
    fails(lambda: narrow.get_customer(ada.name), Code.PERMISSION_DENIED)
    # A token naming its purposes may act for them, even beyond its roles' defaults.
    sharer = client_with_purposes(api, "partner-feed", ["service"], [SHARING], SHARING)
    assert masked(sharer.get_customer(ada.name))["given_name"] == "no_consent"
    refused = [e for e in api.client("root", "admin").list_access_log() if e.outcome == e.DENIED]
    assert {(r.principal, r.purpose) for r in refused} == {
        ("aud", MARKETING),
        ("crm-sync", "marketing.advertising.third_party"),
        ("mailer", "essential.service"),
    }
    # Reason codes from before the policy are read under the default purpose.
    legacy = api.client("crm-sync", "service", purpose="kyc-refresh")
    assert legacy.get_customer(ada.name).given_name == "Ada"


def test_separate_consent_is_not_covered_by_a_general_one(api: Api) -> None:
    service = api.client("crm-sync", "service")
    ada = service.create_customer(customer())
    details = fails(
        lambda: service.give_consent(ada.name, [MARKETING, SHARING], source="web"),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"purposes[1]"}
    details = fails(
        lambda: service.give_consent(ada.name, ["marketing.nope"], source="web form"),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"purposes[0]", "source"}
    assert service.get_customer(ada.name).version == 1  # nothing written

    service.give_consent(ada.name, [SHARING], source="web")  # on its own: separate
    abroad = client_with_purposes(api, "transfer", ["service"], [SHARING], ABROAD)
    assert masked(abroad.get_customer(ada.name))["given_name"] == "needs_separate_consent"
    sharing = client_with_purposes(api, "partner", ["service"], [SHARING], SHARING)
    assert sharing.get_customer(ada.name).given_name == "Ada"
    service.give_consent(ada.name, [ABROAD], source="web", form="transfer-v1")
    assert abroad.get_customer(ada.name).given_name == "Ada"
    listed = service.list_consents(ada.name)
    assert list(listed.in_force) == [SHARING, ABROAD]
    assert [e.purpose for e in listed.history] == [SHARING, ABROAD]


def test_export_lists_consents_lawful_bases_retention_and_recipients(api: Api) -> None:
    service = api.client("crm-sync", "service")
    ada = service.create_customer(customer())
    service.give_consent(ada.name, [MARKETING], source="web", proof="ticket:1")
    api.client("mailer", "service", purpose=MARKETING).get_customer(ada.name)
    dpo = api.client("dpo", "compliance", purpose="essential.legal_obligation")
    request = compliance_service_pb2.ExportCustomerDataRequest(name=ada.name)
    response = dpo.compliance.ExportCustomerData(request, **dpo.call_options)
    document: dict[str, Any] = json.loads(response.document)
    assert document["format"] == "ledger.customer-export.v2"
    assert document["consents"]["in_force"] == [MARKETING]
    assert document["consents"]["history"][0]["proof"] == "ticket:1"
    bases = {p["key"]: (p["lawful_basis"], p["applies"]) for p in document["purposes"]}
    assert bases[MARKETING] == ("consent", True)
    assert bases["essential.service"] == ("contract", True)
    assert bases[SHARING] == ("consent", False)
    retention = {row["field"]: row for row in document["retention"]}
    assert retention["emails"]["rule"]["keep_for_days"] == 730
    assert retention["emails"]["due"] > retention["emails"]["counts_from"]
    assert retention["given_name"]["rule"]["after"] == "last_change"
    categories = {c["field"]: c["category"] for c in document["categories"]}
    assert categories["emails"] == "user.contact.email"
    recipients = [(r["principal"], r["purpose"]) for r in document["recipients"]]
    assert ("mailer", MARKETING) in recipients and ("crm-sync", "essential.service") in recipients
    mailer = next(r for r in document["recipients"] if r["principal"] == "mailer")
    assert mailer["fields"] == MARKETING_FIELDS
    assert "Recipients" in response.text and "mailer" in response.text


def test_as_of_field_history_and_the_log_stream_are_masked_too(api: Api) -> None:
    service = api.client("crm-sync", "service")
    ada = service.create_customer(customer())
    marketing = api.client("mailer", "service", purpose=MARKETING)

    past = marketing.get_customer_as_of(ada.name, version=1)
    assert past.given_name == "" and masked(past)["given_name"] == "no_consent"
    (change,) = marketing.get_field_history(ada.name, "emails")
    assert not change.HasField("value") or change.value.WhichOneof("kind") is None
    record = reads(api, ada.name, "GetFieldHistory")[-1]
    assert record.fields == [] and record.masked == [{"field": "emails", "reason": "no_consent"}]
    streamed = [e for e in marketing.stream_events(1) if e.customer == ada.name]
    assert streamed and all(not e.personal_data.fields for e in streamed)

    service.give_consent(ada.name, [MARKETING], source="web")
    (change,) = marketing.get_field_history(ada.name, "emails")
    assert [v.string_value for v in change.value.list_value.values] == ["ada@example.org"]
    streamed = [e for e in marketing.stream_events(1) if e.customer == ada.name]
    assert set(streamed[0].personal_data.fields) == set(MARKETING_FIELDS)
    # Categories the purpose may never use stay out even with consent.
    assert marketing.get_customer_as_of(ada.name, version=1).addresses == []
