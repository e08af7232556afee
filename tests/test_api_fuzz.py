"""Random and malformed requests to every method never get INTERNAL (or UNKNOWN), and never
bring the server down.

Requests are drawn from the methods' own descriptors (every field, nested messages, maps,
oneofs, out-of-range enums and timestamps), seasoned with values that reach deep code paths
(names of existing customers, field-mask paths, etags); a share of them are raw bytes that
are not a valid request at all. Bounded: a few hundred calls per store.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.api.server import SERVICES
from ledger.client import error_details
from ledger.v1 import customer_service_pb2 as pb
from tests.api_support import Api, api, code_of, customer

__all__ = ["api"]

METHODS = [(service, method) for service in SERVICES for method in service.methods]
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
SEASONING = [
    "",
    "*",
    "1",
    "0",
    "-1",
    "99999999999999999999",
    "customers/",
    "customers/x",
    f"customers/{uuid.uuid4()}",
    f"customers/{str(uuid.uuid4()).upper()}",
    "emails",
    "owner",
    "tags",
    "birth_date",
    "external_ids",
    "external_ids.CRM",
    "addresses.country",
    "given_name",
    "sales.alice",
    # Filters of the audit listings (ListAccessLog, ListAccessAlerts), good and bad.
    'principal = "sales.alice"',
    'customer = "customers/x"',
    "outcome = DENIED",
    'access_time >= "2026-01-01T00:00:00Z"',
    'access_time > "never"',
    'principal = "a" OR principal = "b"',
    'principal = "a" AND',
    'method = "GetCustomer" AND purpose = "x"',
    '"',
    "GB",
    "+44 20 7946 0018",
    "ada@example.org",
    "Registered",
    'owner = "sales.alice" AND tags:"vip"',
    "state = MERGED",
    "update_time desc",
    "\x00",
    "é" * 300,
]


def _scalar(field: FieldDescriptor, names: list[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING and field.name in ("name", "parent", "source"):
        # Mostly real names, so that calls get past parsing to the customer itself.
        missing = f"customers/{uuid.uuid4()}"
        return st.sampled_from([*names, missing]) | st.text(max_size=40)
    if kind == FieldDescriptor.TYPE_STRING and field.name in ("etag", "source_etag"):
        return st.sampled_from(["", "1", "2", "3", "x"])
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=40) | st.sampled_from(SEASONING + names)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=40)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        # Small values reach real positions and tree sizes (proofs); the rest probe bounds.
        return st.sampled_from([0, 1, 2, 3, 4, 500, 9_999, -1, 2**62, 2**63 - 1]) | INT64
    return st.sampled_from([0, 1, 2, 10]) | INT32


def messages(
    descriptor: Descriptor, names: list[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    fields = [f for f in descriptor.fields if depth < 3 or f.type != FieldDescriptor.TYPE_MESSAGE]

    def value(field: FieldDescriptor) -> st.SearchStrategy[Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, item = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            return st.dictionaries(_scalar(key, names), _scalar(item, names), max_size=3)
        single = (
            messages(field.message_type, names, depth + 1)
            if field.type == FieldDescriptor.TYPE_MESSAGE
            else _scalar(field, names)
        )
        if field.is_repeated:
            return st.lists(single, max_size=3)
        return single

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field in fields:
            if not draw(st.booleans()):
                continue
            drawn = draw(value(field))
            target = getattr(message, field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                target.update(drawn)
            elif field.is_repeated:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in drawn:
                        target.add().CopyFrom(item)
                else:
                    target.extend(drawn)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(drawn)
            else:
                setattr(message, field.name, drawn)
        if descriptor.name == "StreamEventsRequest":
            message.follow = False  # type: ignore[attr-defined]  # a followed stream never ends
        return message

    return build()


def _call(channel: grpc.Channel, service: Any, method: Any, payload: bytes, token: str) -> None:
    path = f"/{service.full_name}/{method.name}"
    options: dict[str, Any] = {"metadata": [("authorization", f"Bearer {token}")], "timeout": 20}
    if method.server_streaming:
        stream = channel.unary_stream(path, request_serializer=None, response_deserializer=None)
        for _ in stream(payload, **options):
            pass
    else:
        channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
            payload, **options
        )


@pytest.mark.parametrize("role", ["admin", "sales", "auditor"])
def test_random_and_malformed_requests_never_get_internal(api: Api, role: str) -> None:
    admin = api.client("root", "admin")
    names = []
    for _ in range(3):
        names.append(admin.create_customer(customer(owner="sales.alice")).name)
        api.ledger.issue_tree_head()  # signed heads at small sizes: proofs get real work
    principal = "sales.alice" if role == "sales" else f"fuzz.{role}"
    token = api.token(principal, role)
    channel = grpc.insecure_channel(api.target)
    requests = st.sampled_from(METHODS).flatmap(
        lambda sm: st.tuples(
            st.just(sm),
            st.binary(max_size=64)
            | messages(sm[1].input_type, names).map(lambda m: m.SerializeToString()),
        )
    )
    seen: set[grpc.StatusCode] = set()

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(requests)
    def check(drawn: tuple[tuple[Any, Any], bytes]) -> None:
        (service, method), payload = drawn
        try:
            _call(channel, service, method, payload, token)
            seen.add(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            code = code_of(error)
            seen.add(code)
            assert code not in FORBIDDEN, (method.full_name, code, error)

    try:
        check()
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest()).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        assert admin.get_customer(names[0]).name == names[0]  # still serving
        assert grpc.StatusCode.INVALID_ARGUMENT in seen
    finally:
        channel.close()


# ListCustomers and MergeCustomers: requests made of their own grammar's pieces -------------

FILTER_PIECES = [
    "owner",
    "country",
    "tags",
    "state",
    "update_time",
    "given_name",
    "name",
    "owner.x",
    "=",
    ">=",
    ":",
    "<",
    "!=",
    "AND",
    "OR",
    "NOT",
    "and",
    "(",
    ")",
    '"',
    "\\",
    " ",
    "",
    '"sales.alice"',
    '"GB"',
    "gb",
    "vip",
    "ACTIVE",
    "MERGED",
    "ERASED",
    "ANY",
    "any",
    '"2026-01-01T00:00:00Z"',
    '"2026-13-01T00:00:00Z"',
    '"2026-01-01"',
    '"9999-12-31T23:59:59-23:59"',
    '"\\"',
    "*",
    "\x00",
    "é",
    "9" * 30,
]
ORDER_PIECES = ["update_time", "create_time", "name", "desc", "asc", ",", " ", "owner", "DESC"]
MERGEABLE = [
    "given_name",
    "family_name",
    "emails",
    "phones",
    "tags",
    "locale",
    "birth_date",
    "external_ids",
    "addresses",
    "owner",
    "name",
    "*",
    "",
    "emails.0",
]


def _joined(pieces: list[str], max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=max_size).map(" ".join)


def test_list_and_merge_requests_of_their_own_grammar_never_get_internal(api: Api) -> None:
    admin = api.client("root", "admin")
    names = [admin.create_customer(customer(owner="sales.alice")).name for _ in range(4)]
    pages = admin.list_customer_pages(page_size=1, order_by="name")
    tokens = [page.next_page_token for page in pages][:2]
    sales = api.client("sales.alice", "sales")

    lists = st.builds(
        pb.ListCustomersRequest,
        filter=_joined(FILTER_PIECES, 9) | st.text(max_size=30),
        order_by=_joined(ORDER_PIECES, 3) | st.text(max_size=10),
        page_size=st.sampled_from([0, 1, 2, 1000, 1001, -1]) | INT32,
        page_token=st.sampled_from(["", *tokens]) | st.text(max_size=20),
        show_erased=st.booleans(),
    )
    merges = st.builds(
        pb.MergeCustomersRequest,
        name=st.sampled_from(names),
        source=st.sampled_from(names) | st.text(max_size=10),
        etag=st.sampled_from(["", "1", "2", "9", "x"]),
        source_etag=st.sampled_from(["", "1", "2", "9", "x"]),
        request_id=st.sampled_from(["", "r-1", "r-2"]) | st.text(max_size=10),
        take_from_source=st.builds(
            lambda paths: {"paths": paths}, st.lists(st.sampled_from(MERGEABLE), max_size=3)
        ),
    )
    unmerges = st.builds(
        pb.UnmergeCustomerRequest,
        name=st.sampled_from(names),
        etag=st.sampled_from(["", "1", "2", "3"]),
    )
    requests = (
        lists.map(lambda r: ("ListCustomers", r))
        | merges.map(lambda r: ("MergeCustomers", r))
        | unmerges.map(lambda r: ("UnmergeCustomer", r))
    )
    seen: set[grpc.StatusCode] = set()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(requests, st.booleans())
    def check(drawn: tuple[str, Message], as_sales: bool) -> None:
        method, request = drawn
        client = sales if as_sales else admin
        try:
            result = getattr(client.customers, method)(request, **client.call_options)
            seen.add(grpc.StatusCode.OK)
            if as_sales and method == "ListCustomers":
                assert {c.owner for c in result.customers} <= {"sales.alice"}
        except grpc.RpcError as error:
            code = code_of(error)
            seen.add(code)
            assert code not in FORBIDDEN, (method, request, code, error)

    check()
    assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT} <= seen
    assert admin.get_customer(names[0]).name == names[0]  # still serving


# NUL in every string field ------------------------------------------------------------------

NUL_TEXT = "a\x00b"


def _nul_requests(descriptor: Descriptor, depth: int = 0) -> Iterator[tuple[Message, str]]:
    """One request per string field (nested, repeated and map values included) holding NUL,
    with the field's path as the API names it in a BadRequest."""
    cls = message_factory.GetMessageClass(descriptor)
    for field in descriptor.fields:
        name = field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                message = cls()
                getattr(message, name)["CRM"] = NUL_TEXT
                yield message, f'{name}["CRM"]'
        elif field.type == FieldDescriptor.TYPE_STRING:
            message = cls()
            if field.is_repeated:
                getattr(message, name).append(NUL_TEXT)
                yield message, f"{name}[0]"
            else:
                setattr(message, name, NUL_TEXT)
                yield message, name
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            for inner, path in _nul_requests(field.message_type, depth + 1):
                message = cls()
                if field.is_repeated:
                    getattr(message, name).add().CopyFrom(inner)
                    yield message, f"{name}[0].{path}"
                else:
                    getattr(message, name).CopyFrom(inner)
                    yield message, f"{name}.{path}"


def test_nul_in_any_string_field_is_invalid_argument_naming_the_field(api: Api) -> None:
    """PostgreSQL text cannot hold NUL: a request carrying one in any string must be refused
    as bad input, naming the field, before it reaches a store (on PostgreSQL a query with
    one raised DataError, answered INTERNAL)."""
    admin = api.client("root", "admin")
    admin.create_customer(customer(owner="sales.alice"))
    token = api.token("root", "admin")
    channel = grpc.insecure_channel(api.target)
    checked = 0
    try:
        for service, method in METHODS:
            for request, path in _nul_requests(method.input_type):
                if method.input_type.name == "StreamEventsRequest":
                    request.follow = False  # type: ignore[attr-defined]
                with pytest.raises(grpc.RpcError) as caught:
                    _call(channel, service, method, request.SerializeToString(), token)
                code = code_of(caught.value)
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (method.full_name, path, code)
                fields = list(error_details(caught.value)["field_violations"])
                assert fields == [path], (method.full_name, path, fields)
                assert NUL_TEXT not in str(caught.value.details())  # type: ignore[attr-defined]
                checked += 1
    finally:
        channel.close()
    assert checked > 20  # every service's string fields, not a handful


def test_page_token_whose_cursor_holds_nul_is_invalid_argument(api: Api) -> None:
    """The cursor (the last row's sort value) goes into the next page's query: on
    PostgreSQL one holding NUL raised DataError (INTERNAL)."""
    admin = api.client("root", "admin")
    for _ in range(3):
        admin.create_customer(customer(owner="sales.alice"))
    first = admin.customers.ListCustomers(
        pb.ListCustomersRequest(page_size=1, order_by="update_time"), **admin.call_options
    )
    assert first.next_page_token
    token = first.next_page_token
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    body["k"][0] = "x\x00y"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(grpc.RpcError) as caught:
        admin.customers.ListCustomers(
            pb.ListCustomersRequest(page_size=1, order_by="update_time", page_token=forged),
            **admin.call_options,
        )
    assert code_of(caught.value) == grpc.StatusCode.INVALID_ARGUMENT
    fields = list(error_details(caught.value)["field_violations"])
    assert fields == ["page_token"]
