"""Authentication and authorisation end to end: tokens, revocation, mutual TLS, the role
table method by method, the owner rule for sales, masking for auditors, and the record of
every refusal."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from eventsourcing.utils import get_topic

from ledger.api.access import AccessAttempt
from ledger.api.authz import METHOD_ACCESS, Role
from ledger.api.tokens import issue_token
from ledger.cli.main import main as cli
from ledger.client import LedgerClient
from ledger.signing import LedgerSigner
from ledger.v1 import audit_service_pb2 as audit
from ledger.v1 import compliance_service_pb2 as compliance
from ledger.v1 import customer_service_pb2 as customers
from ledger.v1 import resources_pb2
from tests.api_support import Api, CertificateAuthority, api, code_of, customer, fails, start_api
from tests.helpers import StoreHandle

__all__ = ["api"]

Code = grpc.StatusCode
PDS = resources_pb2.PersonalDataState


def denied_records(api: Api) -> list[AccessAttempt.Denied]:
    topic = get_topic(AccessAttempt.Denied)
    notifications = api.ledger.recorder.select_notifications(start=1, limit=10_000, topics=[topic])
    return [api.ledger.mapper.to_domain_event(n) for n in notifications]  # type: ignore[misc]


# Authentication ---------------------------------------------------------------------------


def test_calls_without_valid_credentials_are_unauthenticated(api: Api) -> None:
    name = api.client("root", "admin").create_customer(customer()).name
    details = fails(lambda: api.anonymous().get_customer(name), Code.UNAUTHENTICATED)
    assert details["reason"] == "UNAUTHENTICATED"
    for token in ("garbage", "a.b.c", api.token("root", "admin")[:-4] + "AAAA"):
        fails(
            lambda t=token: LedgerClient(api.target, token=t).get_customer(name),
            Code.UNAUTHENTICATED,
        )
    nested = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
    fails(
        lambda: LedgerClient(api.target, token=f"{nested}.e30.AAAA").get_customer(name),
        Code.UNAUTHENTICATED,
    )
    foreign = issue_token(LedgerSigner.generate(), "root", ["admin"], timedelta(hours=1))
    fails(lambda: LedgerClient(api.target, token=foreign).get_customer(name), Code.UNAUTHENTICATED)
    signer = LedgerSigner.load_or_create(api.settings.resolved_token_key_file)
    expired = issue_token(
        signer, "root", ["admin"], timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2)
    )
    details = fails(
        lambda: LedgerClient(api.target, token=expired).get_customer(name), Code.UNAUTHENTICATED
    )
    assert details["reason"] == "TOKEN_EXPIRED"


def test_revoked_principal_is_refused_from_its_next_call(api: Api) -> None:
    client = api.client("crm-sync", "service")
    name = client.create_customer(customer()).name
    assert cli(["token", "revoke", "crm-sync", "--store", api.settings.store_url]) == 0
    details = fails(lambda: client.get_customer(name), Code.UNAUTHENTICATED)
    assert details["reason"] == "CREDENTIALS_REVOKED"
    other = api.client("billing", "service")  # other principals are unaffected
    assert other.get_customer(name).name == name
    # A token issued after the revocation works again.
    signer = LedgerSigner.load_or_create(api.settings.resolved_token_key_file)
    later = datetime.now(UTC) + timedelta(seconds=2)
    fresh = issue_token(signer, "crm-sync", ["service"], timedelta(hours=1), now=later)
    assert LedgerClient(api.target, token=fresh).get_customer(name).name == name


def test_purpose_must_be_a_code(api: Api) -> None:
    name = api.client("root", "admin").create_customer(customer()).name
    client = api.client("root", "admin", purpose="Calling Ada Lovelace about her bill")
    details = fails(lambda: client.get_customer(name), Code.INVALID_ARGUMENT)
    assert set(details["field_violations"]) == {"ledger-purpose"}
    assert api.client("root", "admin", purpose="support:ticket-42").get_customer(name).name == name


# Authorisation: the role table, method by method --------------------------------------------


def _requests(api: Api, owned: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    """A valid request per method, on a customer owned by sales.alice."""
    admin = api.client("root", "admin")

    def fresh() -> str:
        return admin.create_customer(customer(owner="sales.alice")).name

    def merged() -> str:
        source = fresh()
        admin.merge_customers(fresh(), source)
        return source

    return {
        "CreateCustomer": (
            "customers",
            lambda: customers.CreateCustomerRequest(customer=customer()),
        ),
        "GetCustomer": ("customers", lambda: customers.GetCustomerRequest(name=owned)),
        "ListCustomers": ("customers", customers.ListCustomersRequest),
        "UpdateCustomer": (
            "customers",
            lambda: customers.UpdateCustomerRequest(
                customer=resources_pb2.Customer(name=owned, tags=["x"])
            ),
        ),
        "AssignOwner": (
            "customers",
            lambda: customers.AssignOwnerRequest(name=owned, owner="sales.alice"),
        ),
        "MarkVerified": ("customers", lambda: customers.MarkVerifiedRequest(name=owned)),
        "MergeCustomers": (
            "customers",
            lambda: customers.MergeCustomersRequest(name=fresh(), source=fresh()),
        ),
        "UnmergeCustomer": ("customers", lambda: customers.UnmergeCustomerRequest(name=merged())),
        "FindDuplicates": ("customers", lambda: customers.FindDuplicatesRequest(name=owned)),
        "DismissDuplicate": (
            "customers",
            lambda: customers.DismissDuplicateRequest(name=fresh(), other=fresh()),
        ),
        "StreamEvents": ("audit", audit.StreamEventsRequest),
        "ListCustomerEvents": ("audit", lambda: audit.ListCustomerEventsRequest(parent=owned)),
        "GetCustomerAsOf": ("audit", lambda: audit.GetCustomerAsOfRequest(name=owned, version=1)),
        "GetFieldHistory": (
            "audit",
            lambda: audit.GetFieldHistoryRequest(name=owned, field="tags"),
        ),
        "GetTreeHead": ("audit", audit.GetTreeHeadRequest),
        "GetInclusionProof": ("audit", lambda: audit.GetInclusionProofRequest(position=1)),
        "GetConsistencyProof": (
            "audit",
            lambda: audit.GetConsistencyProofRequest(
                first_tree_size=api.ledger.issue_tree_head().tree_size
            ),
        ),
        "ListAccessLog": ("audit", audit.ListAccessLogRequest),
        "ListAccessAlerts": ("audit", audit.ListAccessAlertsRequest),
        "EraseCustomer": (
            "compliance",
            lambda: compliance.EraseCustomerRequest(
                name=fresh(), legal_basis="GDPR 17", reason="test"
            ),
        ),
        "ExportCustomerData": (
            "compliance",
            lambda: compliance.ExportCustomerDataRequest(name=owned),
        ),
        "GiveConsent": (
            "compliance",
            lambda: compliance.GiveConsentRequest(
                name=owned, purposes=["marketing.advertising.first_party"], source="web"
            ),
        ),
        "WithdrawConsent": (
            "compliance",
            lambda: compliance.WithdrawConsentRequest(
                name=owned, purpose="marketing.advertising.first_party", source="web"
            ),
        ),
        "ListConsents": ("compliance", lambda: compliance.ListConsentsRequest(name=owned)),
        "GetPolicy": ("compliance", compliance.GetPolicyRequest),
        "HandoverCustomers": (
            "compliance",
            lambda: compliance.HandoverCustomersRequest(
                from_principal="departed.one", to_principal="sales.bob", reason="left"
            ),
        ),
    }


def _outcome(client: LedgerClient, group: str, method: str, request: Any) -> grpc.StatusCode:
    call = getattr(getattr(client, group), method)
    try:
        result = call(request, **client.call_options)
        if method == "StreamEvents":
            list(result)
    except grpc.RpcError as error:
        return code_of(error)
    return Code.OK


def test_each_role_is_allowed_exactly_the_methods_of_the_table(api: Api) -> None:
    owned = api.client("root", "admin").create_customer(customer(owner="sales.alice")).name
    requests = _requests(api, owned)
    assert set(requests) == set(METHOD_ACCESS)
    principals = {
        role: ("sales.alice" if role is Role.SALES else f"{role.value}.one") for role in Role
    }
    denials = 0
    for role in (Role.SERVICE, Role.SALES, Role.AUDITOR, Role.COMPLIANCE, Role.ADMIN):
        client = api.client(principals[role], role.value)
        for method, (group, make) in requests.items():
            code = _outcome(client, group, method, make())
            allowed = role in METHOD_ACCESS[method]
            if allowed:
                assert code in (Code.OK, Code.UNIMPLEMENTED), (role, method, code)
            else:
                assert code == Code.PERMISSION_DENIED, (role, method, code)
                denials += 1
    records = denied_records(api)
    assert len(records) == denials
    assert {(r.principal, r.method) for r in records} >= {
        ("auditor.one", "/ledger.v1.CustomerService/CreateCustomer")
    }


# The owner rule for sales -------------------------------------------------------------------


def test_sales_reaches_only_its_own_customers(api: Api) -> None:
    admin = api.client("root", "admin")
    bobs = admin.create_customer(customer(owner="sales.bob")).name
    alice = api.client("sales.alice", "sales")

    mine = alice.create_customer(customer())  # owner defaults to the sales principal
    assert mine.owner == "sales.alice"
    assert alice.get_customer(mine.name).given_name == "Ada"
    alice.update_customer(mine.name, resources_pb2.Customer(tags=["mine"]))

    before = len(denied_records(api))
    for attempt in (
        lambda: alice.get_customer(bobs),
        lambda: alice.update_customer(bobs, resources_pb2.Customer(tags=["taken"])),
        lambda: alice.get_customer_as_of(bobs, version=1),
        lambda: list(alice.list_customer_events(bobs)),
        lambda: alice.get_field_history(bobs, "emails"),
        lambda: alice.assign_owner(mine.name, "sales.bob"),  # no reassigning, even her own
        lambda: alice.create_customer(customer(owner="sales.bob")),
        lambda: alice.get_customer(f"customers/{uuid.uuid4()}"),  # absent looks the same
    ):
        fails(attempt, Code.PERMISSION_DENIED)
    records = denied_records(api)[before:]
    assert len(records) == 8 and all(r.principal == "sales.alice" for r in records)
    assert bobs.removeprefix("customers/") in records[0].customer_ids
    assert admin.get_customer(bobs).tags == []  # nothing was changed
    # Once the customer is assigned to her, she reaches it.
    admin.assign_owner(bobs, "sales.alice")
    assert alice.get_customer(bobs).given_name == "Ada"


# Masking ------------------------------------------------------------------------------------


def test_auditors_see_metadata_not_personal_data_unless_granted(api: Api) -> None:
    created = api.client("root", "admin").create_customer(customer(owner="sales.uk", tags=["vip"]))
    auditor = api.client("auditor.eve", "auditor")
    seen = auditor.get_customer(created.name)
    assert seen.personal_data_state == PDS.PERSONAL_DATA_STATE_REDACTED
    assert (seen.given_name, list(seen.emails), dict(seen.external_ids)) == ("", [], {})
    assert not seen.HasField("birth_date") and not seen.addresses
    assert (seen.owner, list(seen.tags), seen.etag) == ("sales.uk", ["vip"], "1")
    events = list(auditor.stream_events())
    assert events and all(not e.HasField("personal_data") for e in events)
    assert events[0].personal_data_state == PDS.PERSONAL_DATA_STATE_REDACTED
    assert events[0].actor == "root" and events[0].event_type == "Registered"
    history = auditor.get_field_history(created.name, "emails")
    assert [c.value_state for c in history] == [PDS.PERSONAL_DATA_STATE_REDACTED]

    granted = api.client("auditor.eve", "auditor", "personal-data")
    assert granted.get_customer(created.name).given_name == "Ada"
    assert any(e.HasField("personal_data") for e in granted.stream_events())


# Mutual TLS ----------------------------------------------------------------------------------


@pytest.fixture
def mtls(store: StoreHandle, tmp_path: Any) -> Any:
    ca = CertificateAuthority.create()
    server_cert, server_key = ca.issue("localhost", server=True)
    settings = replace(
        store.settings,
        api=replace(
            store.settings.api,
            tls_cert_file=ca.write(tmp_path, "server.pem", server_cert),
            tls_key_file=ca.write(tmp_path, "server.key", server_key),
            tls_client_ca_file=ca.write(tmp_path, "ca.pem", ca.pem),
        ),
    )
    started = start_api(store, settings)
    yield started, ca
    started.close()


def _tls_client(
    api: Api, ca: CertificateAuthority, cert: tuple[bytes, bytes] | None, **kw: Any
) -> LedgerClient:
    made = LedgerClient(
        f"localhost:{api.server.port}",
        root_certificates=ca.pem,
        client_certificate=cert[0] if cert else None,
        client_key=cert[1] if cert else None,
        timeout=10,
        **kw,
    )
    api.clients.append(made)
    return made


def test_mutual_tls_client_certificate_is_the_principal(mtls: Any) -> None:
    api, ca = mtls
    admin = _tls_client(api, ca, ca.issue("ops.root", units=("admin",)))
    created = admin.create_customer(customer())
    assert api.ledger.history(uuid.UUID(created.name.split("/")[1]))[0].actor == "ops.root"

    auditor = _tls_client(api, ca, ca.issue("auditor.eve", units=("auditor",)))
    assert (
        auditor.get_customer(created.name).personal_data_state == PDS.PERSONAL_DATA_STATE_REDACTED
    )
    fails(lambda: auditor.create_customer(customer()), Code.PERMISSION_DENIED)

    # No certificate, or one from another CA: the TLS handshake itself fails.
    fails(lambda: _tls_client(api, ca, None).get_customer(created.name), Code.UNAVAILABLE)
    stranger = CertificateAuthority.create().issue("ops.root", units=("admin",))
    fails(lambda: _tls_client(api, ca, stranger).get_customer(created.name), Code.UNAVAILABLE)

    # A bearer token over mTLS speaks for its own principal.
    token = api.token("crm-sync", "service")
    as_service = _tls_client(api, ca, ca.issue("auditor.eve", units=("auditor",)), token=token)
    assert as_service.get_customer(created.name).given_name == "Ada"

    # Revoking the principal refuses certificates issued before the revocation.
    api.server.store.revoke("auditor.eve", at=datetime.now(UTC) - timedelta(minutes=1))
    details = fails(lambda: auditor.get_customer(created.name), Code.UNAUTHENTICATED)
    assert details["reason"] == "CREDENTIALS_REVOKED"
    after = datetime.now(UTC) - timedelta(seconds=30)
    renewed = _tls_client(api, ca, ca.issue("auditor.eve", units=("auditor",), not_before=after))
    assert renewed.get_customer(created.name).name == created.name
