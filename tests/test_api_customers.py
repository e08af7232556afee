"""CustomerService end to end: a real server on a loopback port, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import grpc

from ledger.audit.access_log import RECORDED_TOPIC
from ledger.client import LedgerClient
from ledger.v1 import customer_service_pb2, resources_pb2
from tests.api_support import Api, api, customer, fails

__all__ = ["api"]  # the fixture

Code = grpc.StatusCode
PDS = resources_pb2.PersonalDataState


def events_written(api: Api) -> int:
    """Events other than access records (every response carrying personal data, a retried
    create's included, is itself recorded as a read)."""
    notifications = api.ledger.recorder.select_notifications(start=1, limit=1_000_000)
    return sum(1 for n in notifications if n.topic != RECORDED_TOPIC)


def test_create_get_update_assign_verify(api: Api) -> None:
    client = api.client("crm-sync", "service")
    created = client.create_customer(customer(tags=["vip"]), reason="onboarding")
    assert created.name.startswith("customers/")
    assert created.personal_data_state == PDS.PERSONAL_DATA_STATE_AVAILABLE
    assert (created.given_name, created.family_name) == ("Ada", "Lovelace")
    assert list(created.phones) == ["+442079460018"]  # normalised by the domain
    assert created.addresses[0].country == "GB"
    assert dict(created.external_ids) == {"CRM": "A-1001"}
    assert (created.version, created.etag, created.state) == (1, "1", resources_pb2.Customer.ACTIVE)

    got = client.get_customer(created.name)
    assert got == created

    changed = client.update_customer(
        created.name,
        resources_pb2.Customer(
            emails=["ada@work.example"], birth_date={"year": 1985, "month": 12, "day": 10}
        ),
        update_mask=["emails", "birth_date", "locale"],  # locale empty in the body: cleared
        etag=created.etag,
    )
    assert list(changed.emails) == ["ada@work.example"]
    assert (changed.birth_date.year, changed.birth_date.month) == (1985, 12)
    assert changed.locale == ""
    assert changed.version == 2

    owned = client.assign_owner(created.name, "sales.uk", etag=changed.etag, reason="territory")
    assert owned.owner == "sales.uk"
    verified = client.mark_verified(created.name, etag=owned.etag, reason="kyc-review")
    assert verified.HasField("verify_time") and verified.version == 4

    trimmed = client.get_customer(created.name, read_mask=["name", "owner", "etag"])
    assert (trimmed.owner, trimmed.etag, trimmed.given_name) == ("sales.uk", "4", "")


def test_update_without_mask_changes_the_set_fields_and_external_id_paths(api: Api) -> None:
    client = api.client("crm-sync", "service")
    created = client.create_customer(customer())
    changed = client.update_customer(created.name, resources_pb2.Customer(tags=["gold"]))
    assert list(changed.tags) == ["gold"] and changed.given_name == "Ada"
    changed = client.update_customer(
        created.name,
        resources_pb2.Customer(external_ids={"ERP": "9"}),
        update_mask=["external_ids.ERP", "external_ids.CRM"],  # CRM absent: cleared
    )
    assert dict(changed.external_ids) == {"ERP": "9"}


def test_create_is_idempotent_by_request_id(api: Api) -> None:
    client = api.client("crm-sync", "service")
    request_id = str(uuid.uuid4())
    first = client.create_customer(customer(), request_id=request_id)
    before = events_written(api)
    again = client.create_customer(customer(given_name="Other"), request_id=request_id)
    assert again == first  # same response, no second customer
    assert events_written(api) == before
    # Still the creation's response after the customer changed since.
    client.update_customer(first.name, resources_pb2.Customer(tags=["later"]))
    assert client.create_customer(customer(), request_id=request_id) == first
    # Another principal's request ids are its own.
    other = api.client("billing", "service").create_customer(customer(), request_id=request_id)
    assert other.name != first.name


def test_a_failed_create_with_a_request_id_can_be_retried_corrected(api: Api) -> None:
    client = api.client("crm-sync", "service")
    fails(
        lambda: client.create_customer(customer(emails=["nope"]), request_id="r-1"),
        Code.INVALID_ARGUMENT,
    )
    created = client.create_customer(customer(), request_id="r-1")
    assert client.create_customer(customer(), request_id="r-1") == created


def test_stale_etag_is_aborted_and_writes_nothing(api: Api) -> None:
    client = api.client("crm-sync", "service")
    created = client.create_customer(customer())
    client.update_customer(created.name, resources_pb2.Customer(tags=["a"]), etag="1")
    before = events_written(api)
    details = fails(
        lambda: client.update_customer(created.name, resources_pb2.Customer(tags=["b"]), etag="1"),
        Code.ABORTED,
    )
    assert details["reason"] == "STALE_ETAG"
    assert details["metadata"]["current_etag"] == "2"
    fails(lambda: client.assign_owner(created.name, "x", etag="1"), Code.ABORTED)
    fails(lambda: client.mark_verified(created.name, etag="1"), Code.ABORTED)
    assert events_written(api) == before


def test_validation_names_every_bad_field_and_writes_nothing(api: Api) -> None:
    client = api.client("crm-sync", "service")
    before = events_written(api)
    bad = customer(
        emails=["ok@example.org", "not-an-email"],
        addresses=[resources_pb2.Address(country="XX")],
        birth_date={"year": 1985, "month": 13, "day": 1},
        external_ids={"CRM": " "},
    )
    details = fails(lambda: client.create_customer(bad), Code.INVALID_ARGUMENT)
    violations = details["field_violations"]
    assert set(violations) == {
        "customer.emails[1]",
        "customer.addresses[0].country",
        "customer.birth_date",
        'customer.external_ids["CRM"]',
    }
    assert "not-an-email" not in str(details) and "XX" not in str(details)  # no value echoed
    assert details["reason"] == "INVALID_ARGUMENT"
    assert events_written(api) == before

    created = client.create_customer(customer())
    before = events_written(api)
    details = fails(
        lambda: client.update_customer(
            created.name, resources_pb2.Customer(), update_mask=["owner"]
        ),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"update_mask.paths[0]"}
    details = fails(
        lambda: client.update_customer(created.name, resources_pb2.Customer(phones=["12"])),
        Code.INVALID_ARGUMENT,
    )
    assert set(details["field_violations"]) == {"customer.phones[0]"}
    details = fails(lambda: client.get_customer("customers/not-a-uuid"), Code.INVALID_ARGUMENT)
    assert set(details["field_violations"]) == {"name"}
    fails(
        lambda: client.update_customer(created.name, resources_pb2.Customer(tags=["x"]), etag="v1"),
        Code.INVALID_ARGUMENT,
    )
    fails(lambda: client.assign_owner(created.name, "not an owner id!"), Code.INVALID_ARGUMENT)
    assert events_written(api) == before


def test_not_found_and_erased(api: Api) -> None:
    client = api.client("root", "admin")
    missing = f"customers/{uuid.uuid4()}"
    details = fails(lambda: client.get_customer(missing), Code.NOT_FOUND)
    assert details["reason"] == "CUSTOMER_NOT_FOUND"
    fails(lambda: client.mark_verified(missing), Code.NOT_FOUND)

    created = client.create_customer(customer())
    client.erase_customer(created.name, legal_basis="GDPR Art. 17(1)(a)", reason="subject-request")
    erased = client.get_customer(created.name)
    assert erased.state == resources_pb2.Customer.ERASED
    assert erased.personal_data_state == PDS.PERSONAL_DATA_STATE_ERASED
    assert erased.given_name == "" and not erased.emails
    details = fails(
        lambda: client.update_customer(created.name, resources_pb2.Customer(tags=["x"])),
        Code.FAILED_PRECONDITION,
    )
    assert details["reason"] == "CUSTOMER_ERASED"
    fails(lambda: client.assign_owner(created.name, "x"), Code.FAILED_PRECONDITION)
    fails(
        lambda: client.erase_customer(created.name, legal_basis="again", reason="again"),
        Code.FAILED_PRECONDITION,
    )


def test_methods_of_the_other_branches_are_unimplemented_with_a_reason(api: Api) -> None:
    client = api.client("root", "admin")
    stub = client.customers
    for call, request in ((stub.FindDuplicates, customer_service_pb2.FindDuplicatesRequest()),):
        details = fails(lambda c=call, r=request: c(r, **client.call_options), Code.UNIMPLEMENTED)
        assert details["reason"] == "NOT_YET_AVAILABLE"


def test_client_accepts_bare_ids(api: Api) -> None:
    client: LedgerClient = api.client("crm-sync", "service")
    created = client.create_customer(customer())
    assert client.get_customer(created.name.removeprefix("customers/")).name == created.name
