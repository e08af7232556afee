"""LEDGER_DUPLICATE_POLICY on the API's CreateCustomer, through a real server on loopback:
`refuse` fails the call and writes nothing (no event, no key, no request id), `warn` creates
and names the likely duplicates, `off` does neither; only customers the caller may see are
ever named (a sales principal's own), and a retry with the same request_id is not
re-checked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ledger.client import LIKELY_DUPLICATES_METADATA
from ledger.domain.errors import LikelyDuplicate
from ledger.domain.profile import validate_registration
from ledger.projections.wiring import duplicate_queries
from ledger.v1 import customer_service_pb2 as pb
from tests.api_support import Api, code_of, customer, fails, start_api
from tests.helpers import StoreHandle

Code = grpc.StatusCode
GRACE = {"given_name": "Grace", "family_name": "Hopper", "emails": ["grace@example.org"],
         "phones": [], "external_ids": {}, "addresses": []}  # fmt: skip
PERSONAL = ("Ada", "Lovelace", "ada@", "A-1001", "7946", "SW1Y")


@contextmanager
def serving(store: StoreHandle, policy: str) -> Iterator[Api]:
    """A server whose ledger applies `policy` (the setting is read from the ledger)."""
    handle = replace(store, settings=replace(store.settings, duplicate_policy=policy))
    started = start_api(handle)
    try:
        yield started
    finally:
        started.close()


def seed(store: StoreHandle) -> tuple[str, str]:
    """Ada twice, once per sales owner (registered with the policy off), and Grace."""
    with serving(store, "off") as api:
        admin = api.client("root", "admin")
        alices = admin.create_customer(customer(owner="sales.alice")).name
        bobs = admin.create_customer(customer(owner="sales.bob", emails=["ada.l@example.org"]))
        admin.create_customer(customer(**GRACE))
        return alices, bobs.name


def written(store: StoreHandle, api: Api) -> tuple[int, int, int]:
    """Events, data keys and reserved request ids: what a refused call must not change."""
    requests = store.execute("SELECT COUNT(*) FROM ledger_api_requests")[0][0]
    return api.ledger.recorder.max_notification_id() or 0, store.key_count(), int(requests)


def refusal(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info, status.message
    raise AssertionError("no ErrorInfo in the status")


def refused(call: Callable[[], object]) -> tuple[error_details_pb2.ErrorInfo, str]:
    try:
        call()
    except grpc.RpcError as error:
        assert code_of(error) == Code.FAILED_PRECONDITION
        return refusal(error)
    raise AssertionError("the call was not refused")


def assert_no_personal_value(*texts: str) -> None:
    for text in texts:
        for value in PERSONAL:
            assert value not in text, value


def test_refuse_writes_nothing_and_names_only_what_the_caller_sees(store: StoreHandle) -> None:
    alices, bobs = seed(store)
    with serving(store, "refuse") as api:
        service = api.client("crm-sync", "service")
        before = written(store, api)
        info, message = refused(lambda: service.create_customer(customer(), request_id="r-1"))
        assert (info.reason, info.domain) == ("LIKELY_DUPLICATE", "ledger")
        names = info.metadata["likely_duplicates"].split(",")
        assert set(names) == {alices, bobs}
        scores = [float(s) for s in info.metadata["scores"].split(",")]
        assert len(scores) == 2 and scores == sorted(scores, reverse=True)
        assert_no_personal_value(message, *info.metadata.values())
        assert written(store, api) == before  # no event, no key, no request id reserved

        alice = api.client("sales.alice", "sales")
        info, message = refused(lambda: alice.create_customer(customer(owner="sales.alice")))
        assert info.metadata["likely_duplicates"] == alices
        assert bobs.removeprefix("customers/") not in message + str(info)  # never Bob's
        assert written(store, api) == before

        # A sales principal is checked against its own customers only: Carol has none, so
        # nothing about Alice's or Bob's Ada is revealed, not even that one exists.
        carol = api.client("sales.carol", "sales").create_customer_checked(customer())
        assert carol.customer.owner == "sales.carol" and carol.likely_duplicates == []

        hopper = customer(given_name="Margaret", family_name="Hamilton", emails=[], phones=[],
                          external_ids={}, addresses=[])  # fmt: skip
        first = service.create_customer(hopper, request_id="r-2")
        # A retry is not re-checked: it would now match the customer its first attempt made.
        again = service.create_customer_checked(hopper, request_id="r-2")
        assert again.customer == first and again.likely_duplicates == []
        # The refused request id was never bound: it works for a customer that is no duplicate.
        other = customer(given_name="Katherine", family_name="Johnson", emails=[], phones=[],
                         external_ids={}, addresses=[])  # fmt: skip
        assert service.create_customer(other, request_id="r-1").given_name == "Katherine"


def test_the_customer_a_request_is_creating_is_not_its_duplicate(store: StoreHandle) -> None:
    """A retry racing its first attempt is checked with the reserved id excluded: the
    customer that attempt is writing does not make the retry a likely duplicate."""
    alices, bobs = seed(store)
    with serving(store, "refuse") as api:
        queries = duplicate_queries(api.ledger)
        ada = validate_registration(
            {"given_name": "Ada", "family_name": "Lovelace", "emails": ["ada@example.org"],
             "phones": ["+44 20 7946 0018"]}  # the seeded Adas' phone: more than a name
        )  # fmt: skip
        both = [name.removeprefix("customers/") for name in (alices, bobs)]
        try:
            queries.check_registration(ada, policy="refuse", exclude=both[:1])
        except LikelyDuplicate as refusal:
            assert [customer_id for customer_id, _ in refusal.matches] == both[1:]
        else:
            raise AssertionError("Bob's Ada was not found")
        assert queries.check_registration(ada, policy="refuse", exclude=both) == []


def test_refused_bad_input_is_still_reported_as_bad_input(store: StoreHandle) -> None:
    seed(store)
    with serving(store, "refuse") as api:
        client = api.client("crm-sync", "service")
        details = fails(
            lambda: client.create_customer(customer(emails=["not-an-email"])),
            Code.INVALID_ARGUMENT,
        )
        assert "customer.emails[0]" in details["field_violations"]


def test_warn_creates_and_names_the_likely_duplicates(store: StoreHandle) -> None:
    alices, bobs = seed(store)
    with serving(store, "warn") as api:
        service = api.client("crm-sync", "service")
        created = service.create_customer_checked(customer(), request_id="w-1")
        assert set(created.likely_duplicates) == {alices, bobs}
        assert service.get_customer(created.customer.name).given_name == "Ada"
        # Retried: the same customer, not checked again (it would list itself otherwise).
        retried = service.create_customer_checked(customer(), request_id="w-1")
        assert retried.customer == created.customer and retried.likely_duplicates == []

        request = pb.CreateCustomerRequest(customer=customer())
        response, call = service.customers.CreateCustomer.with_call(request, **service.call_options)
        listed = dict(call.trailing_metadata() or ())[LIKELY_DUPLICATES_METADATA]
        assert isinstance(listed, str)
        assert set(listed.split(",")) == {alices, bobs, created.customer.name}
        assert response.name not in listed
        assert_no_personal_value(listed)

        alice = api.client("sales.alice", "sales").create_customer_checked(customer())
        assert alice.likely_duplicates == [alices]  # Bob's and the unowned ones stay unnamed
        other = customer(given_name="Katherine", family_name="Johnson", emails=[], phones=[],
                         external_ids={}, addresses=[])  # fmt: skip
        assert service.create_customer_checked(other).likely_duplicates == []
        plain = service.create_customer(customer())  # the old signature: just the customer
        assert plain.name.startswith("customers/") and plain.given_name == "Ada"


def test_off_neither_refuses_nor_warns(store: StoreHandle) -> None:
    seed(store)
    with serving(store, "off") as api:
        service = api.client("crm-sync", "service")
        created = service.create_customer_checked(customer(), request_id="o-1")
        assert created.likely_duplicates == [] and created.customer.given_name == "Ada"
        _, call = service.customers.CreateCustomer.with_call(
            pb.CreateCustomerRequest(customer=customer()), **service.call_options
        )
        assert LIKELY_DUPLICATES_METADATA not in dict(call.trailing_metadata() or ())
